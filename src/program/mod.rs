//! Programs: one or more predictors, each with a typed signature, run through the generator.
//!
//! A [`Program`] is async-first: [`Program::forward`] awaits model calls made through an
//! [`Lm`] (the generator, or a fake model in tests), so evaluations and optimizers run many
//! examples concurrently on one engine.
//! Multi-step programs pass values by name: each step reads its inputs from the example's
//! inputs and the outputs of earlier steps. `retrieve` steps ([`RetrieveStep`]) search a
//! corpus through a [`Retriever`] and give later steps a list of passages, which prompts show
//! as numbered passages; they have nothing to optimize. A predictor marked fixed
//! (`optimize = false`) keeps its instructions and demonstrations through every optimizer.
//!
//! Architecture Invariant: every call is decoded under the grammar generated from the
//! predictor's output fields, so a reply that parses is the normal case; a reply that still
//! does not parse is an error value carrying the raw text, never a panic.

pub mod adapter;
pub mod grammar;
pub mod nearest;
pub mod signature;

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::corpus::{self, Method, Passage, Query, RetrieveError, Retriever};
use crate::engine::{GenerationRequest, Prompt, SamplingParams};
use crate::lm::{Lm, LmError};

pub use adapter::{Demo, ParseError, Values, ADAPTER_VERSION};
pub use nearest::NearestDemos;
pub use signature::{FieldType, InputField, OutputField, Signature, SignatureError};

/// How a predictor answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PredictorKind {
    /// The outputs directly.
    Predict,
    /// A `reasoning` line first, then the outputs.
    ChainOfThought,
}

/// One step of a program. Unknown fields are refused, so a program written by a newer
/// version is not read as a different one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Predictor {
    pub name: String,
    pub kind: PredictorKind,
    pub signature: Signature,
    /// Demonstrations shown before the input (what few-shot optimizers choose).
    #[serde(default)]
    pub demos: Vec<Demo>,
    /// Demonstrations chosen per input from a pool, shown after `demos`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nearest: Option<NearestDemos>,
    /// `false`: optimizers leave this step's instructions and demonstrations as they are.
    #[serde(default = "yes", skip_serializing_if = "is_yes")]
    pub optimize: bool,
}

fn yes() -> bool {
    true
}

fn is_yes(value: &bool) -> bool {
    *value
}

/// A step that searches a corpus: the `query` field's text, the `k` best passages by
/// `method`, given to later steps as the field `output` (a list of passages: id, text, score).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrieveStep {
    pub name: String,
    /// How many predictors run before it (its place among the task file's steps).
    pub after: usize,
    /// The field whose text is the query: an example input or an earlier step's output.
    pub query: String,
    pub corpus: String,
    pub k: usize,
    #[serde(default)]
    pub method: Method,
    /// The field the passages are given as.
    pub output: String,
    /// The pinned model whose embeddings rank passages (default: the task's model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

impl Predictor {
    pub fn reasoning(&self) -> bool {
        self.kind == PredictorKind::ChainOfThought
    }

    /// The messages this predictor sends for `inputs`.
    pub fn render(&self, inputs: &Values) -> Vec<crate::engine::Message> {
        adapter::render(
            &self.signature,
            self.reasoning(),
            &self.demos_for(inputs),
            inputs,
        )
    }

    /// The demonstrations shown for `inputs`: the fixed ones, then those chosen from the pool.
    pub fn demos_for(&self, inputs: &Values) -> Cow<'_, [Demo]> {
        match &self.nearest {
            None => Cow::Borrowed(&self.demos),
            Some(nearest) => {
                let mut demos = self.demos.clone();
                demos.extend(nearest.select(&self.signature, inputs));
                Cow::Owned(demos)
            }
        }
    }

    /// Whether an example holding the fields `has` accepts makes a labeled demonstration of
    /// this step: it has every input and at least one output.
    pub fn labeled_by(&self, has: impl Fn(&str) -> bool) -> bool {
        self.signature.inputs.iter().all(|f| has(&f.name))
            && self.signature.outputs.iter().any(|f| has(&f.name))
    }

    /// The fields of a reply: the outputs, after the reasoning for chain of thought.
    pub fn reply_fields(&self) -> Vec<OutputField> {
        adapter::reply_fields(&self.signature, self.reasoning())
    }

    /// The grammar replies are decoded under.
    pub fn grammar(&self) -> String {
        grammar::for_outputs(&self.reply_fields())
    }

    /// Parses a reply of this predictor.
    pub fn parse(&self, reply: &str) -> Result<Values, ParseError> {
        adapter::parse(&self.reply_fields(), reply)
    }
}

/// Generation settings for every call of a program.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CallSettings {
    /// `temperature`, `top_k`, `top_p`, `min_p`, `seed`, written directly in `[generation]`.
    #[serde(flatten)]
    pub sampling: SamplingParams,
    /// Token limit of one predictor's reply.
    pub max_tokens: u32,
}

impl Default for CallSettings {
    fn default() -> Self {
        CallSettings {
            sampling: SamplingParams::greedy(),
            max_tokens: 256,
        }
    }
}

/// A sequence of predictors, with `retrieve` steps between them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Program {
    pub steps: Vec<Predictor>,
    /// Searches, each placed after `after` predictors (in order among equal places).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retrievals: Vec<RetrieveStep>,
}

/// What one step did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepTrace {
    pub predictor: String,
    pub inputs: Values,
    /// The parsed outputs (reasoning included), when the reply parsed.
    pub outputs: Option<Values>,
    pub raw: String,
    pub call_id: i64,
    pub cached: bool,
    /// Prompt plus completion tokens of the call.
    #[serde(default)]
    pub tokens: u64,
    /// Output fields whose values the token budget cut short (so that the reply could still
    /// finish within `max_tokens`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cut_short: Vec<String>,
}

impl StepTrace {
    /// The step's reasoning, when its predictor reasons first and the reply parsed.
    pub fn reasoning(&self) -> Option<&str> {
        self.outputs.as_ref()?.get("reasoning")?.as_str()
    }
}

/// What a program did on one example: every step that ran, in order (the failing one last
/// when a reply could not be used). Serialized as a JSON array of steps, only where it is
/// stored or exported.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Trace {
    pub steps: Vec<StepTrace>,
}

impl Trace {
    /// Prompt plus completion tokens of every call.
    pub fn tokens(&self) -> u64 {
        self.steps.iter().map(|s| s.tokens).sum()
    }
}

/// A program's run on one example: the final values and every step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prediction {
    /// Every output of every step, by name.
    pub outputs: Values,
    pub trace: Trace,
}

/// Why a program run did not produce a prediction.
#[derive(Debug, thiserror::Error)]
pub enum ProgramError {
    #[error("step `{step}` needs the input `{field}`, which neither the example nor an earlier step provides")]
    MissingInput { step: String, field: String },
    #[error("step `{step}`: {error} (reply: {raw:?})")]
    Unparsable {
        step: String,
        raw: String,
        error: ParseError,
        /// The steps that ran, the failing one last.
        trace: Trace,
    },
    #[error(transparent)]
    Lm(#[from] LmError),
    #[error("step `{step}`: {error}")]
    Retrieve { step: String, error: RetrieveError },
}

/// Why a program definition is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ProgramDefinitionError(pub String);

impl Program {
    /// Checks every signature, unique step names, and that every step's inputs come from the
    /// example (`example_fields`) or an earlier step.
    pub fn validate(&self, example_fields: &[String]) -> Result<(), ProgramDefinitionError> {
        if self.steps.is_empty() && self.retrievals.is_empty() {
            return Err(ProgramDefinitionError(
                "a program needs at least one step".into(),
            ));
        }
        let mut available: std::collections::BTreeSet<String> =
            example_fields.iter().cloned().collect();
        let mut names = std::collections::BTreeSet::new();
        for retrieval in &self.retrievals {
            if retrieval.after > self.steps.len() {
                return Err(ProgramDefinitionError(format!(
                    "retrieve step `{}` comes after {} predictors, but the program has {}",
                    retrieval.name,
                    retrieval.after,
                    self.steps.len()
                )));
            }
        }
        let retrieve_at = |index: usize| self.retrievals.iter().filter(move |r| r.after == index);
        let check_retrieval = |retrieval: &RetrieveStep,
                               available: &mut std::collections::BTreeSet<String>,
                               names: &mut std::collections::BTreeSet<String>|
         -> Result<(), ProgramDefinitionError> {
            if !names.insert(retrieval.name.clone()) {
                return Err(ProgramDefinitionError(format!(
                    "two steps are named `{}`",
                    retrieval.name
                )));
            }
            if !available.contains(&retrieval.query) {
                return Err(ProgramDefinitionError(format!(
                    "retrieve step `{}` queries with `{}`, which is neither an input field of the dataset nor an output of an earlier step",
                    retrieval.name, retrieval.query
                )));
            }
            if retrieval.k == 0 {
                return Err(ProgramDefinitionError(format!(
                    "retrieve step `{}`: k must be at least 1",
                    retrieval.name
                )));
            }
            if !available.insert(retrieval.output.clone()) {
                return Err(ProgramDefinitionError(format!(
                    "retrieve step `{}` outputs `{}`, a field that already exists",
                    retrieval.name, retrieval.output
                )));
            }
            Ok(())
        };
        for (index, step) in self.steps.iter().enumerate() {
            for retrieval in retrieve_at(index) {
                check_retrieval(retrieval, &mut available, &mut names)?;
            }
            if !names.insert(step.name.clone()) {
                return Err(ProgramDefinitionError(format!(
                    "two steps are named `{}`",
                    step.name
                )));
            }
            step.signature
                .validate()
                .map_err(|e| ProgramDefinitionError(format!("step `{}`: {e}", step.name)))?;
            for input in &step.signature.inputs {
                if !available.contains(&input.name) {
                    return Err(ProgramDefinitionError(format!(
                        "step `{}` reads `{}`, which is neither an input field of the dataset nor an output of an earlier step",
                        step.name, input.name
                    )));
                }
            }
            for output in adapter::reply_fields(&step.signature, step.reasoning()) {
                available.insert(output.name);
            }
        }
        for retrieval in retrieve_at(self.steps.len()) {
            check_retrieval(retrieval, &mut available, &mut names)?;
        }
        Ok(())
    }

    /// The corpora the program searches, each once, in step order.
    pub fn corpora(&self) -> Vec<&RetrieveStep> {
        let mut seen = Vec::<&RetrieveStep>::new();
        for retrieval in &self.retrievals {
            if !seen
                .iter()
                .any(|r| r.corpus == retrieval.corpus && r.model == retrieval.model)
            {
                seen.push(retrieval);
            }
        }
        seen
    }

    /// Names of the predictors optimizers may change.
    pub fn optimized_steps(&self) -> Vec<&str> {
        self.steps
            .iter()
            .filter(|s| s.optimize)
            .map(|s| s.name.as_str())
            .collect()
    }

    /// The names of the fields the program produces, in step order (reasoning excluded).
    pub fn output_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        for (index, step) in self.steps.iter().enumerate() {
            names.extend(
                self.retrievals
                    .iter()
                    .filter(|r| r.after == index)
                    .map(|r| r.output.clone()),
            );
            names.extend(step.signature.outputs.iter().map(|f| f.name.clone()));
        }
        names.extend(
            self.retrievals
                .iter()
                .filter(|r| r.after == self.steps.len())
                .map(|r| r.output.clone()),
        );
        names
    }

    /// Runs every step on `inputs`; `retrieve` steps search through `retriever`.
    pub async fn forward(
        &self,
        lm: &dyn Lm,
        retriever: &dyn Retriever,
        inputs: &Values,
        settings: &CallSettings,
    ) -> Result<Prediction, ProgramError> {
        let mut values = inputs.clone();
        let mut outputs = Values::new();
        let mut trace = Vec::with_capacity(self.steps.len() + self.retrievals.len());
        for index in 0..=self.steps.len() {
            for retrieval in self.retrievals.iter().filter(|r| r.after == index) {
                let step = retrieve(retriever, retrieval, &values).await?;
                if let Some(found) = step.outputs.as_ref().and_then(|o| o.get(&retrieval.output)) {
                    values.insert(retrieval.output.clone(), found.clone());
                    outputs.insert(retrieval.output.clone(), found.clone());
                }
                trace.push(step);
            }
            let Some(step) = self.steps.get(index) else {
                break;
            };
            let mut step_inputs = Values::new();
            for field in &step.signature.inputs {
                let value = values
                    .get(&field.name)
                    .ok_or_else(|| ProgramError::MissingInput {
                        step: step.name.clone(),
                        field: field.name.clone(),
                    })?;
                step_inputs.insert(field.name.clone(), value.clone());
            }
            let request = GenerationRequest::new(
                Prompt::Chat(step.render(&step_inputs)),
                settings.max_tokens,
            )
            .with_sampling(settings.sampling.clone())
            .with_grammar(step.grammar());
            let generated = lm.generate(request).await?;
            let raw = generated.completion.text;
            let parsed = step.parse(&raw);
            let cut_short = generated.completion.cut_at.map_or_else(Vec::new, |at| {
                adapter::cut_fields(&step.reply_fields(), &raw, at as usize)
            });
            trace.push(StepTrace {
                predictor: step.name.clone(),
                inputs: step_inputs,
                outputs: parsed.as_ref().ok().cloned(),
                raw: raw.clone(),
                call_id: generated.call_id,
                cached: generated.cached,
                tokens: u64::from(generated.completion.prompt_tokens)
                    + u64::from(generated.completion.completion_tokens),
                cut_short,
            });
            match parsed {
                Ok(parsed) => {
                    for (name, value) in parsed {
                        values.insert(name.clone(), value.clone());
                        outputs.insert(name, value);
                    }
                }
                Err(error) => {
                    return Err(ProgramError::Unparsable {
                        step: step.name.clone(),
                        raw,
                        error,
                        trace: Trace { steps: trace },
                    })
                }
            }
        }
        Ok(Prediction {
            outputs,
            trace: Trace { steps: trace },
        })
    }
}

/// Runs one `retrieve` step: its trace carries the query as input and the passages as output
/// (`raw` lists the passage ids found, one per line).
async fn retrieve(
    retriever: &dyn Retriever,
    step: &RetrieveStep,
    values: &Values,
) -> Result<StepTrace, ProgramError> {
    let query = values
        .get(&step.query)
        .ok_or_else(|| ProgramError::MissingInput {
            step: step.name.clone(),
            field: step.query.clone(),
        })?;
    let text = adapter::format_value(query);
    let found = retriever
        .retrieve(Query {
            corpus: step.corpus.clone(),
            text: text.clone(),
            k: step.k,
            method: step.method,
            model: step.model.clone(),
        })
        .await
        .map_err(|error| match error {
            RetrieveError::Lm(e) => ProgramError::Lm(e),
            error => ProgramError::Retrieve {
                step: step.name.clone(),
                error,
            },
        })?;
    let raw = found
        .passages
        .iter()
        .map(|p| p.id.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    let passages = serde_json::to_value(&found.passages).expect("passages serialize");
    Ok(StepTrace {
        predictor: step.name.clone(),
        inputs: Values::from([(step.query.clone(), serde_json::Value::String(text))]),
        outputs: Some(Values::from([(step.output.clone(), passages)])),
        raw,
        call_id: found.call_id.unwrap_or(0),
        cached: found.cached,
        tokens: found.tokens,
        cut_short: Vec::new(),
    })
}

/// The passages of a field value that a `retrieve` step produced (`None` for other values).
pub fn passages_of(value: &serde_json::Value) -> Option<Vec<Passage>> {
    let items = value.as_array()?;
    if items.is_empty() {
        return Some(Vec::new());
    }
    items
        .iter()
        .all(|item| item.get("id").is_some() && item.get("text").is_some())
        .then(|| serde_json::from_value(value.clone()).ok())
        .flatten()
}

/// A field value as a prompt shows it: passages numbered, one per line; anything else as text.
pub fn render_value(value: &serde_json::Value) -> String {
    match passages_of(value) {
        Some(passages) if !passages.is_empty() => {
            format!("\n{}", corpus::render_passages(&passages))
        }
        _ => adapter::format_value(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(name: &str, inputs: &[&str], outputs: &[&str]) -> Predictor {
        Predictor {
            nearest: None,
            name: name.into(),
            kind: PredictorKind::Predict,
            signature: Signature {
                instructions: "Do it.".into(),
                inputs: inputs
                    .iter()
                    .map(|n| InputField {
                        name: n.to_string(),
                        description: None,
                    })
                    .collect(),
                outputs: outputs
                    .iter()
                    .map(|n| OutputField {
                        name: n.to_string(),
                        description: None,
                        ty: FieldType::Text,
                        max_chars: None,
                    })
                    .collect(),
            },
            demos: Vec::new(),
            optimize: true,
        }
    }

    #[test]
    fn steps_read_example_fields_and_earlier_outputs() {
        let program = Program {
            steps: vec![
                step("a", &["text"], &["summary"]),
                step("b", &["summary"], &["label"]),
            ],
            retrievals: Vec::new(),
        };
        assert!(program.validate(&["text".into()]).is_ok());
        assert_eq!(program.output_names(), ["summary", "label"]);
        let err = program.validate(&["other".into()]).unwrap_err();
        assert!(err.0.contains("step `a` reads `text`"), "{err}");
        let backwards = Program {
            steps: vec![
                step("b", &["summary"], &["label"]),
                step("a", &["text"], &["summary"]),
            ],
            retrievals: Vec::new(),
        };
        assert!(backwards.validate(&["text".into()]).is_err());
    }

    /// Returns two passages whatever the query, and remembers the queries.
    struct Scripted(std::sync::Mutex<Vec<Query>>);

    impl Retriever for Scripted {
        fn retrieve(&self, query: Query) -> corpus::RetrieveFuture<'_> {
            self.0.lock().unwrap().push(query);
            Box::pin(async {
                Ok(corpus::Retrieved {
                    passages: vec![
                        Passage {
                            id: "h7".into(),
                            text: "The red ferry leaves\nat noon.".into(),
                            score: 2.5,
                        },
                        Passage {
                            id: "h2".into(),
                            text: "The blue ferry leaves at dawn.".into(),
                            score: 1.0,
                        },
                    ],
                    call_id: None,
                    cached: false,
                    tokens: 0,
                })
            })
        }
    }

    #[test]
    fn retrieve_steps_give_later_steps_numbered_passages() {
        let program = Program {
            steps: vec![step("answer", &["question", "passages"], &["answer"])],
            retrievals: vec![RetrieveStep {
                name: "search".into(),
                after: 0,
                query: "question".into(),
                corpus: "town".into(),
                k: 2,
                method: Method::Bm25,
                output: "passages".into(),
                model: None,
            }],
        };
        program.validate(&["question".into()]).unwrap();
        assert_eq!(program.output_names(), ["passages", "answer"]);
        let lm = crate::lm::FakeLm::new(1);
        let retriever = Scripted(Default::default());
        let inputs = Values::from([("question".to_string(), "When?".into())]);
        let prediction = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(program.forward(&lm, &retriever, &inputs, &CallSettings::default()))
            .unwrap();
        let asked = retriever.0.lock().unwrap();
        assert_eq!((asked[0].text.as_str(), asked[0].k), ("When?", 2));
        // The prompt shows the passages numbered, one line each.
        let prompt = &lm.calls()[0].prompt;
        assert!(
            prompt.contains("passages: \n[1] The red ferry leaves at noon.\n[2] The blue ferry"),
            "{prompt}"
        );
        // The trace has the search first, with the passages found.
        let search = &prediction.trace.steps[0];
        assert_eq!(
            (search.predictor.as_str(), search.raw.as_str()),
            ("search", "h7\nh2")
        );
        assert_eq!(
            passages_of(&prediction.outputs["passages"]).unwrap()[0].id,
            "h7"
        );
        assert_eq!(prediction.trace.steps.len(), 2);

        // A search that reads a field nobody provides is refused up front.
        let mut broken = program.clone();
        broken.retrievals[0].query = "topic".into();
        assert!(broken
            .validate(&["question".into()])
            .unwrap_err()
            .0
            .contains("queries with `topic`"));
    }
}
