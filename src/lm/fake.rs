//! [`FakeLm`]: a deterministic model for unit tests of logic that does not depend on what a
//! real model says.
//!
//! A reply depends only on the request and the fake's seed, never on call order or
//! concurrency. Under a grammar it is a sample of the grammar ([`crate::gbnf`]) drawn with a
//! generator seeded from a hash of the prompt and the sampling settings; without one, a few
//! words from the same hash. A script can answer chosen requests instead; its answers are
//! held to the request's grammar, so a test cannot hand a program a reply that a real model
//! decoding under that grammar could never give.

use std::sync::{Mutex, MutexGuard, PoisonError};

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{Generated, Lm, LmError, LmFuture};
use crate::engine::{Completion, GenerationRequest, Prompt, SamplingParams, StopReason, Timings};
use crate::gbnf::Grammar;
use crate::random::Rng;

/// One call the fake model answered.
#[derive(Debug, Clone)]
pub struct FakeCall {
    /// The prompt as the fake renders it: a `role: content` line per message of a chat, or
    /// the raw prompt as it is.
    pub prompt: String,
    pub request: GenerationRequest,
    /// The reply; empty in the call a script is shown.
    pub reply: String,
    /// From 1, in the order the calls were answered; 0 in the call a script is shown.
    pub call_id: i64,
}

type Script = dyn Fn(&FakeCall) -> Option<String> + Send + Sync;

/// A deterministic fake model: see the module documentation.
pub struct FakeLm {
    seed: u64,
    script: Option<Box<Script>>,
    calls: Mutex<Vec<FakeCall>>,
}

impl FakeLm {
    /// A fake model whose replies derive from `seed` and each request.
    pub fn new(seed: u64) -> FakeLm {
        FakeLm {
            seed,
            script: None,
            calls: Mutex::new(Vec::new()),
        }
    }

    /// Answers with `script`'s reply where it gives one, and as without a script where it
    /// says `None`. The call shown to the script has an empty reply and call id 0. A scripted
    /// reply the request's grammar does not admit fails the call.
    pub fn with_script(
        mut self,
        script: impl Fn(&FakeCall) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        let script: Box<Script> = Box::new(script);
        self.script = Some(script);
        self
    }

    /// The calls answered so far, in the order they were answered. Failed calls (a grammar
    /// that does not parse, a script that breaks the grammar) are not recorded.
    pub fn calls(&self) -> Vec<FakeCall> {
        self.record().clone()
    }

    /// How many calls have been answered.
    pub fn call_count(&self) -> usize {
        self.record().len()
    }

    fn record(&self) -> MutexGuard<'_, Vec<FakeCall>> {
        // A panic while the lock was held cannot leave the list half-written.
        self.calls.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn answer(&self, request: GenerationRequest) -> Result<Generated, LmError> {
        let prompt = render(&request.prompt);
        let text = self.reply(&prompt, &request)?;
        let request_hash = request_hash(&prompt, &request);
        let prompt_tokens = words(&prompt);
        let completion_tokens = words(&text).max(1);
        let call_id = {
            let mut calls = self.record();
            let call_id = i64::try_from(calls.len()).unwrap_or(i64::MAX - 1) + 1;
            calls.push(FakeCall {
                prompt,
                request,
                reply: text.clone(),
                call_id,
            });
            call_id
        };
        Ok(Generated {
            completion: Completion {
                text,
                prompt_tokens,
                completion_tokens,
                stop_reason: StopReason::EndOfText,
                cut_at: None,
                forced_tokens: 0,
                timings: Timings::default(),
            },
            cached: false,
            call_id,
            request_hash,
        })
    }

    fn reply(&self, prompt: &str, request: &GenerationRequest) -> Result<String, LmError> {
        let grammar = match &request.grammar {
            Some(text) => Some(
                Grammar::parse(text)
                    .map_err(|e| failed(format!("the request's grammar does not parse: {e}")))?,
            ),
            None => None,
        };
        if let Some(script) = &self.script {
            let call = FakeCall {
                prompt: prompt.to_string(),
                request: request.clone(),
                reply: String::new(),
                call_id: 0,
            };
            if let Some(reply) = script(&call) {
                if grammar.as_ref().is_some_and(|g| !g.matches(&reply)) {
                    return Err(failed(format!(
                        "the fake model's script replied {reply:?}, which breaks the request's \
                         grammar"
                    )));
                }
                return Ok(reply);
            }
        }
        let mut rng = Rng::new(self.reply_seed(prompt, request));
        Ok(match &grammar {
            Some(grammar) => grammar.sample(&mut rng),
            None => format!("fake reply {:04x}", rng.next_u64() & 0xffff),
        })
    }

    fn reply_seed(&self, prompt: &str, request: &GenerationRequest) -> u64 {
        let mut hasher = Sha256::new();
        hasher.update(self.seed.to_le_bytes());
        hasher.update((prompt.len() as u64).to_le_bytes());
        hasher.update(prompt.as_bytes());
        hasher.update(request.sampling.seed.to_le_bytes());
        hasher.update(request.sampling.temperature.to_bits().to_le_bytes());
        let digest = hasher.finalize();
        digest
            .iter()
            .take(8)
            .fold(0u64, |seed, &byte| (seed << 8) | u64::from(byte))
    }
}

impl std::fmt::Debug for FakeLm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeLm")
            .field("seed", &self.seed)
            .field("scripted", &self.script.is_some())
            .field("calls", &self.call_count())
            .finish()
    }
}

impl Lm for FakeLm {
    fn generate(&self, request: GenerationRequest) -> LmFuture<'_> {
        Box::pin(async move {
            // Concurrent callers interleave here, as they would waiting on a real model.
            tokio::task::yield_now().await;
            self.answer(request)
        })
    }
}

fn failed(message: String) -> LmError {
    LmError::Failed(message.into())
}

fn render(prompt: &Prompt) -> String {
    match prompt {
        Prompt::Chat(messages) => messages
            .iter()
            .map(|m| format!("{}: {}\n", m.role.as_str(), m.content))
            .collect(),
        Prompt::Raw(text) => text.clone(),
    }
}

fn words(text: &str) -> u32 {
    u32::try_from(text.split_whitespace().count()).unwrap_or(u32::MAX)
}

/// What the request hash covers besides the rendered prompt.
#[derive(Serialize)]
struct HashedSettings<'a> {
    sampling: &'a SamplingParams,
    max_tokens: u32,
    grammar: Option<&'a str>,
}

fn request_hash(prompt: &str, request: &GenerationRequest) -> String {
    let settings = HashedSettings {
        sampling: &request.sampling,
        max_tokens: request.max_tokens,
        grammar: request.grammar.as_deref(),
    };
    let mut hasher = Sha256::new();
    hasher.update(prompt.as_bytes());
    hasher.update(
        serde_json::to_string(&settings)
            .unwrap_or_default()
            .as_bytes(),
    );
    hex::encode(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Arc;

    use super::*;
    use crate::engine::Message;
    use crate::program::adapter;
    use crate::program::grammar::for_outputs;
    use crate::program::{FieldType, OutputField};

    fn field(name: &str, ty: FieldType) -> OutputField {
        OutputField {
            name: name.to_string(),
            description: None,
            ty,
            max_chars: None,
        }
    }

    fn ask(question: &str) -> GenerationRequest {
        GenerationRequest::chat(
            vec![Message::system("Answer."), Message::user(question)],
            64,
        )
    }

    async fn reply(lm: &FakeLm, request: GenerationRequest) -> String {
        let generated = lm.generate(request).await.expect("the fake model answers");
        generated.completion.text
    }

    /// Replies under the grammar for a text field and a field of type `ty` all parse.
    async fn assert_replies_parse(ty: FieldType) {
        let fields = vec![field("reasoning", FieldType::Text), field("answer", ty)];
        let grammar = for_outputs(&fields);
        let lm = FakeLm::new(11);
        for i in 0..40 {
            let request = ask(&format!("case {i}")).with_grammar(grammar.clone());
            let text = reply(&lm, request).await;
            if let Err(e) = adapter::parse(&fields, &text) {
                panic!("{e}: {text:?} under\n{grammar}");
            }
        }
    }

    #[tokio::test]
    async fn the_same_request_gets_the_same_reply() {
        let grammar = for_outputs(&[field("answer", FieldType::Integer)]);
        let requests = [
            ask("2 + 2?"),
            ask("2 + 2?").with_grammar(grammar),
            GenerationRequest::raw("once upon a time", 16),
        ];
        for request in requests {
            let first = reply(&FakeLm::new(7), request.clone()).await;
            assert_eq!(first, reply(&FakeLm::new(7), request).await);
        }
    }

    #[tokio::test]
    async fn different_prompts_usually_get_different_replies() {
        let lm = FakeLm::new(7);
        let mut replies = BTreeSet::new();
        for i in 0..10 {
            replies.insert(reply(&lm, ask(&format!("question {i}"))).await);
        }
        assert!(replies.len() >= 9, "{replies:?}");
    }

    #[tokio::test]
    async fn replies_under_output_grammars_parse() {
        let choice = FieldType::Choice {
            choices: vec!["yes".into(), "say \"no\"".into()],
        };
        let kinds = [
            FieldType::Text,
            choice,
            FieldType::Integer,
            FieldType::Number,
            FieldType::Boolean,
            FieldType::List,
        ];
        for ty in kinds {
            assert_replies_parse(ty).await;
        }
    }

    #[tokio::test]
    async fn json_replies_parse() {
        assert_replies_parse(FieldType::Json).await;
    }

    #[tokio::test]
    async fn scripts_answer_and_are_held_to_the_grammar() {
        let grammar = for_outputs(&[field("answer", FieldType::Text)]);
        let lm = FakeLm::new(1).with_script(|call| {
            if call.prompt.contains("capital") {
                Some("answer: Paris".to_string())
            } else if call.prompt.contains("broken") {
                Some("Paris".to_string())
            } else {
                None
            }
        });
        let capital = ask("capital of France?").with_grammar(grammar.clone());
        assert_eq!(reply(&lm, capital).await, "answer: Paris");
        let weather = ask("weather?").with_grammar(grammar.clone());
        let unscripted = reply(&FakeLm::new(1), weather.clone()).await;
        assert_eq!(reply(&lm, weather).await, unscripted);
        match lm.generate(ask("broken?").with_grammar(grammar)).await {
            Err(LmError::Failed(e)) => assert!(e.to_string().contains("\"Paris\""), "{e}"),
            other => panic!("expected the script's reply to be refused, got {other:?}"),
        }
        assert_eq!(lm.call_count(), 2);
    }

    #[tokio::test]
    async fn a_grammar_that_does_not_parse_fails_the_call() {
        let request = ask("anything").with_grammar("root ::= missing");
        match FakeLm::new(1).generate(request).await {
            Err(LmError::Failed(e)) => assert!(e.to_string().contains("`missing`"), "{e}"),
            other => panic!("expected a grammar error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn calls_are_recorded_in_order() {
        let lm = FakeLm::new(3);
        let chat = GenerationRequest::chat(vec![Message::user("hi there")], 8);
        let first = lm.generate(chat).await.expect("an answer");
        let raw = GenerationRequest::raw("raw prompt", 8);
        let second = lm.generate(raw.clone()).await.expect("an answer");
        assert_eq!((first.call_id, second.call_id), (1, 2));
        assert_eq!(first.completion.prompt_tokens, 3);
        assert!(!first.cached);
        assert_ne!(first.request_hash, second.request_hash);
        let calls = lm.calls();
        assert_eq!(lm.call_count(), 2);
        assert_eq!(calls[0].prompt, "user: hi there\n");
        assert_eq!(calls[1].prompt, "raw prompt");
        assert_eq!(calls[1].request, raw);
        assert_eq!(calls[1].reply, second.completion.text);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replies_do_not_depend_on_concurrency() {
        let lm = Arc::new(FakeLm::new(5));
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let lm = Arc::clone(&lm);
                tokio::spawn(async move { lm.generate(ask(&format!("q{i}"))).await })
            })
            .collect();
        let mut concurrent = Vec::new();
        for task in tasks {
            let generated = task.await.expect("the task ends").expect("an answer");
            concurrent.push(generated.completion.text);
        }
        let alone = FakeLm::new(5);
        for (i, text) in concurrent.iter().enumerate().rev() {
            assert_eq!(&reply(&alone, ask(&format!("q{i}"))).await, text);
        }
        assert_eq!(lm.call_count(), 16);
    }
}
