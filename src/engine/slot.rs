//! One sequence's generation state: from the prompt's last logits to a finished [`Completion`].
//!
//! A [`Generation`] sees only its own logits, in its own order, with its own random generator;
//! nothing in it depends on which other sequences share the batch.

use std::time::Instant;

use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::data::LlamaTokenData;
use llama_cpp_2::token::data_array::LlamaTokenDataArray;
use llama_cpp_2::token::LlamaToken;

use super::budget::{self, Budget};
use super::sampling::{self, Rng};
use super::stats::{timed, SampleCosts};
use super::{Completion, EngineError, GenerationRequest, PreparedRequest, StopReason, Timings};

/// What the sampler settled on.
enum Choice {
    Token(LlamaToken),
    /// No token is allowed: the grammar is complete.
    Nothing,
    /// The shortest completion of the reply, to append whole.
    Plan(Vec<LlamaToken>),
}

/// What happened after one token was chosen.
pub(super) enum Step {
    /// Feed this token back and continue.
    Continue(LlamaToken),
    /// Generation ended.
    Finished(Completion),
}

/// Sampling, grammar and stop-string state of one request.
pub(super) struct Generation {
    rng: Rng,
    grammar: Option<LlamaSampler>,
    /// Keeps a grammar reply within `max_tokens` (when our interpreter reads the grammar).
    budget: Option<Budget>,
    /// Byte offset of the text where the token budget first overrode the model.
    cut_at: Option<u32>,
    /// Tokens taken from jump-forward spans (appended unsampled, then confirmed).
    forced_tokens: u32,
    /// Time spent choosing tokens, by part.
    costs: SampleCosts,
    masked: Vec<f32>,
    bytes: Vec<u8>,
    /// Bytes of `bytes` already handed out by [`Generation::take_delta`].
    streamed: usize,
    generated: u32,
    prompt_tokens: u32,
    started: Instant,
    prefill_done: Option<Instant>,
}

impl Generation {
    pub(super) fn new(model: &LlamaModel, prepared: &PreparedRequest) -> Result<Self, EngineError> {
        let request = &prepared.request;
        let grammar = match &request.grammar {
            Some(text) => Some(
                LlamaSampler::grammar(model, text, "root")
                    .map_err(|e| EngineError::Grammar(e.to_string()))?,
            ),
            None => None,
        };
        Ok(Generation {
            rng: Rng::new(request.sampling.seed),
            grammar,
            budget: prepared.reply_grammar.clone().map(Budget::new),
            cut_at: None,
            forced_tokens: 0,
            costs: SampleCosts::default(),
            masked: Vec::new(),
            bytes: Vec::new(),
            streamed: 0,
            generated: 0,
            prompt_tokens: prepared.tokens.len() as u32,
            started: Instant::now(),
            prefill_done: None,
        })
    }

    /// The completion as it stands, ended for `reason`.
    fn finish(&self, text: String, reason: StopReason) -> Completion {
        let now = Instant::now();
        let prefill_done = self.prefill_done.unwrap_or(now);
        Completion {
            text,
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.generated,
            stop_reason: reason,
            cut_at: self.cut_at,
            forced_tokens: self.forced_tokens,
            timings: Timings {
                prefill_ms: (prefill_done - self.started).as_secs_f64() * 1e3,
                decode_ms: (now - prefill_done).as_secs_f64() * 1e3,
            },
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    /// Chooses the next token from `logits`. `position` is where that token would go;
    /// `n_ctx` the sequence's context size.
    pub(super) fn next(
        &mut self,
        model: &LlamaModel,
        request: &GenerationRequest,
        logits: &[f32],
        position: usize,
        n_ctx: usize,
    ) -> Result<Step, EngineError> {
        if self.prefill_done.is_none() {
            self.prefill_done = Some(Instant::now());
        }
        // `max_tokens >= 1` (checked in `Engine::prepare`), and the limit is checked after
        // every generated token below, so it cannot be reached here.
        if position >= n_ctx {
            return Ok(Step::Finished(
                self.finish(self.text(), StopReason::ContextFull),
            ));
        }
        let token = match self.choose(model, request, logits)? {
            Choice::Token(token) => token,
            Choice::Nothing => {
                return Ok(Step::Finished(
                    self.finish(self.text(), StopReason::GrammarComplete),
                ))
            }
            Choice::Plan(tokens) => {
                // The shortest completion, appended whole: the budget is spent.
                for token in tokens {
                    self.take(model, token)?;
                }
                return Ok(Step::Finished(
                    self.finish(self.text(), StopReason::MaxTokens),
                ));
            }
        };
        let vocab = model.vocab();
        if vocab.is_eog(token) {
            return Ok(Step::Finished(
                self.finish(self.text(), StopReason::EndOfText),
            ));
        }
        self.take(model, token)?;
        if !request.stop.is_empty() {
            let text = self.text();
            if let Some(cut) = earliest_stop(&text, &request.stop) {
                return Ok(Step::Finished(
                    self.finish(text[..cut].to_string(), StopReason::StopString),
                ));
            }
        }
        if self.generated >= request.max_tokens {
            // The value in progress, if the grammar would have let it go on, was cut short.
            if self
                .budget
                .as_ref()
                .and_then(Budget::now)
                .is_some_and(|now| now.can_continue)
            {
                self.cut_at.get_or_insert(self.bytes.len() as u32);
            }
            return Ok(Step::Finished(
                self.finish(self.text(), StopReason::MaxTokens),
            ));
        }
        Ok(Step::Continue(token))
    }

    /// Appends a chosen token to the reply.
    fn take(&mut self, model: &LlamaModel, token: LlamaToken) -> Result<(), EngineError> {
        if let Some(grammar) = self.grammar.as_mut() {
            grammar
                .try_accept(token)
                .map_err(|e| EngineError::Grammar(e.to_string()))?;
        }
        self.generated += 1;
        model
            .vocab()
            .token_to_piece_into(token, &mut self.bytes, false, None);
        Ok(())
    }

    /// The next token: the model's (masked by the grammar), unless the reply could then not
    /// be finished within `max_tokens`.
    fn choose(
        &mut self,
        model: &LlamaModel,
        request: &GenerationRequest,
        logits: &[f32],
    ) -> Result<Choice, EngineError> {
        let rng = &mut self.rng;
        let Some(grammar) = self.grammar.as_mut() else {
            let token = timed(&mut self.costs.sample, || {
                sampling::sample(logits, &request.sampling, rng)
            });
            return Ok(token.map_or(Choice::Nothing, |t| Choice::Token(LlamaToken(t as i32))));
        };
        // Greedy decoding's choice under the grammar is the overall most likely token
        // whenever the grammar allows it (ties go to the lowest id either way), and asking the
        // grammar about one token is far cheaper than masking the whole vocabulary.
        let top = request
            .sampling
            .is_greedy()
            .then(|| sampling::argmax(logits))
            .flatten()
            .filter(|&t| timed(&mut self.costs.grammar, || allows(grammar, logits, t)));
        let masked_whole = top.is_none();
        let token = match top {
            Some(token) => token,
            None => {
                let masked = &mut self.masked;
                timed(&mut self.costs.grammar, || {
                    apply_grammar(grammar, logits, masked)
                });
                let Some(token) = timed(&mut self.costs.sample, || {
                    sampling::sample(masked, &request.sampling, rng)
                }) else {
                    return Ok(Choice::Nothing);
                };
                token
            }
        };
        let token = LlamaToken(token as i32);
        if self.budget.as_ref().and_then(Budget::now).is_none() || model.vocab().is_eog(token) {
            return Ok(Choice::Token(token));
        }
        // Tokens left after this one.
        let left = request.max_tokens.saturating_sub(self.generated + 1) as usize;
        let start = std::time::Instant::now();
        let fits = self.fits(model, token, left);
        self.costs.budget += start.elapsed();
        if fits {
            return Ok(Choice::Token(token));
        }
        // The model's choice would leave the reply unfinishable: from here on the budget
        // decides. Only tokens that begin the shortest completion remain, and the model picks
        // among them.
        self.cut_at.get_or_insert(self.bytes.len() as u32);
        if !masked_whole {
            if let Some(grammar) = self.grammar.as_mut() {
                apply_grammar(grammar, logits, &mut self.masked);
            }
        }
        let Some(plan) = self
            .budget
            .as_ref()
            .and_then(Budget::now)
            .map(|n| n.shortest.clone())
        else {
            return Ok(Choice::Token(token));
        };
        let vocab = model.vocab();
        let mut piece = Vec::new();
        for (id, logit) in self.masked.iter_mut().enumerate() {
            if !logit.is_finite() {
                continue;
            }
            piece.clear();
            vocab.token_to_piece_into(LlamaToken(id as i32), &mut piece, false, None);
            if piece.is_empty() || !plan.as_bytes().starts_with(&piece) {
                *logit = f32::NEG_INFINITY;
            }
        }
        if let Some(narrowed) = sampling::sample(&self.masked, &request.sampling, &mut self.rng) {
            let narrowed = LlamaToken(narrowed as i32);
            if self.fits(model, narrowed, left) {
                return Ok(Choice::Token(narrowed));
            }
        }
        match budget::exact_tokens(model, &plan) {
            Some(tokens) if !tokens.is_empty() => Ok(Choice::Plan(tokens)),
            // Nothing to append, or no tokens that spell it: leave the choice to the model.
            _ => Ok(Choice::Token(token)),
        }
    }

    /// Whether the reply can still be finished in `left` tokens after `token`; when it can,
    /// the budget moves on to where the reply stands after it.
    fn fits(&mut self, model: &LlamaModel, token: LlamaToken, left: usize) -> bool {
        let Some(budget) = self.budget.as_mut() else {
            return true;
        };
        let mut text = self.bytes.clone();
        model
            .vocab()
            .token_to_piece_into(token, &mut text, false, None);
        let after = budget.after(&text);
        let fits = after
            .as_ref()
            .is_none_or(|a| budget::tokens_needed(model, &a.shortest) <= left);
        if fits {
            budget.advance(after);
        }
        fits
    }

    /// The tokens the grammar forces next (at most `limit`, and no more than the token
    /// budget has left), spelled the way the tokenizer spells them; empty when there is a
    /// choice, or when the text so far ends inside a character.
    pub(super) fn forced(
        &self,
        model: &LlamaModel,
        request: &GenerationRequest,
        limit: usize,
    ) -> Vec<LlamaToken> {
        let Some(now) = self.budget.as_ref().and_then(Budget::now) else {
            return Vec::new();
        };
        if now.forced.is_empty() || std::str::from_utf8(&self.bytes).is_err() {
            return Vec::new();
        }
        let left = request.max_tokens.saturating_sub(self.generated) as usize;
        let mut tokens = budget::exact_tokens(model, &now.forced).unwrap_or_default();
        tokens.truncate(limit.min(left));
        tokens
    }

    /// Time spent choosing tokens so far.
    pub(super) fn costs(&self) -> SampleCosts {
        self.costs
    }

    /// Counts a token that came from a jump-forward span.
    pub(super) fn confirmed_forced(&mut self) {
        self.forced_tokens += 1;
    }
}

impl Generation {
    /// The text generated since the last call that can be shown for sure: complete UTF-8
    /// characters only, and without a tail that could still become one of `stops` (which would
    /// be cut from the completion).
    pub(super) fn take_delta(&mut self, stops: &[String]) -> Option<String> {
        let valid = match std::str::from_utf8(&self.bytes) {
            Ok(text) => text,
            Err(e) => std::str::from_utf8(&self.bytes[..e.valid_up_to()]).unwrap_or_default(),
        };
        let end = valid.len() - held_back(valid, stops);
        if end <= self.streamed {
            return None;
        }
        let delta = valid[self.streamed..end].to_string();
        self.streamed = end;
        Some(delta)
    }
}

/// The length of the longest tail of `text` that is a proper start of some stop string (on a
/// character boundary): text a later token could turn into a stop.
fn held_back(text: &str, stops: &[String]) -> usize {
    stops
        .iter()
        .filter(|s| !s.is_empty())
        .flat_map(|stop| {
            (1..stop.len().min(text.len() + 1))
                .filter(|&n| text.is_char_boundary(text.len() - n) && stop.is_char_boundary(n))
                .filter(|&n| text.ends_with(&stop[..n]))
        })
        .max()
        .unwrap_or(0)
}

/// Whether the grammar accepts `token` next.
fn allows(grammar: &mut LlamaSampler, logits: &[f32], token: u32) -> bool {
    let Some(&logit) = logits.get(token as usize) else {
        return false;
    };
    let mut one = LlamaTokenDataArray::from_iter(
        [LlamaTokenData::new(LlamaToken(token as i32), logit, 0.0)],
        false,
    );
    one.apply_sampler(grammar);
    one.data.iter().any(|d| d.logit().is_finite())
}

/// Writes `logits` into `out` with every token the grammar rejects set to `-inf`.
fn apply_grammar(grammar: &mut LlamaSampler, logits: &[f32], out: &mut Vec<f32>) {
    let mut array = LlamaTokenDataArray::from_iter(
        logits
            .iter()
            .enumerate()
            .map(|(i, &l)| LlamaTokenData::new(LlamaToken(i as i32), l, 0.0)),
        false,
    );
    array.apply_sampler(grammar);
    out.clear();
    out.resize(logits.len(), f32::NEG_INFINITY);
    for data in &array.data {
        let id = data.id().0 as usize;
        if id < out.len() {
            out[id] = data.logit();
        }
    }
}

/// The byte offset of the earliest stop string in `text`, if any.
fn earliest_stop(text: &str, stops: &[String]) -> Option<usize> {
    stops
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(s.as_str()))
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earliest_stop_wins() {
        let stops = vec!["\n\n".to_string(), "END".to_string(), String::new()];
        assert_eq!(earliest_stop("abc END\n\n", &stops), Some(4));
        assert_eq!(earliest_stop("a\n\nEND", &stops), Some(1));
        assert_eq!(earliest_stop("nothing", &stops), None);
    }

    #[test]
    fn streamed_text_holds_back_what_a_stop_could_still_cut() {
        let stops = vec!["END".to_string(), "\n\n".to_string()];
        assert_eq!(held_back("value E", &stops), 1);
        assert_eq!(held_back("value EN", &stops), 2);
        assert_eq!(held_back("value\n", &stops), 1);
        assert_eq!(held_back("value", &stops), 0);
        // A whole stop string is not held back: the completion ends before it instead.
        assert_eq!(held_back("", &stops), 0);
        assert_eq!(held_back("é", &["éa".to_string()]), 2);
    }
}
