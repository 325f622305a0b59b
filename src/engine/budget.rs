//! Budget-aware decoding under a grammar: a reply always completes within `max_tokens`.
//!
//! llama.cpp's grammar sampler says which tokens may come next; it does not say whether the
//! reply can still be finished in the tokens left. Our own GBNF interpreter
//! ([`crate::gbnf`]) does: from the text so far it gives the shortest completion, whose
//! tokens are the least the reply still needs. A token is taken only if the reply can still
//! be finished after it; when the model's choice cannot, the choice is narrowed to tokens
//! that follow the shortest completion (the model still picks among them), and as a last
//! resort the shortest completion itself is appended. The first place where the budget
//! overrode the model is reported as the completion's `cut_at`.
//!
//! The same analysis gives the text the grammar forces next (field names, separators, the
//! rest of a choice), which the worker appends without sampling it token by token.

use std::sync::Arc;

use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;

use crate::gbnf::{Continuation, Grammar};

/// A request's grammar as our interpreter reads it, with where the reply stands.
#[derive(Debug, Clone)]
pub(super) struct Budget {
    grammar: Arc<Grammar>,
    /// Where the reply stands after the tokens taken so far (`None` once the interpreter lost
    /// track, which leaves the reply to llama.cpp's grammar alone).
    now: Option<Continuation>,
}

impl Budget {
    /// The budget of a request whose grammar is `grammar` (already parsed).
    pub(super) fn new(grammar: Arc<Grammar>) -> Budget {
        let now = grammar.continuation("");
        Budget { grammar, now }
    }

    /// Where the reply stands, while the interpreter can tell.
    pub(super) fn now(&self) -> Option<&Continuation> {
        self.now.as_ref()
    }

    /// Where the reply would stand after `text` (the whole reply so far).
    pub(super) fn after(&self, text: &[u8]) -> Option<Continuation> {
        self.now.as_ref()?;
        self.grammar.continuation(&valid_prefix(text))
    }

    pub(super) fn advance(&mut self, to: Option<Continuation>) {
        self.now = to;
    }
}

/// The longest prefix of `bytes` that is whole UTF-8 characters (a token may end inside one).
pub(super) fn valid_prefix(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_string(),
        Err(e) => String::from_utf8_lossy(&bytes[..e.valid_up_to()]).into_owned(),
    }
}

/// Tokens whose pieces spell exactly `text`, or `None` when the tokenizer's pieces would not
/// (a tokenizer that adds a leading space, say).
pub(super) fn exact_tokens(model: &LlamaModel, text: &str) -> Option<Vec<LlamaToken>> {
    if text.is_empty() {
        return Some(Vec::new());
    }
    let vocab = model.vocab();
    let tokens = vocab.tokenize(text.as_bytes(), false, false);
    let mut spelled = Vec::with_capacity(text.len());
    for &token in &tokens {
        vocab.token_to_piece_into(token, &mut spelled, false, None);
    }
    (spelled == text.as_bytes()).then_some(tokens)
}

/// The tokens `text` needs: its exact tokenization, or one per byte where there is none (no
/// token is shorter than a byte, so that never undercounts).
pub(super) fn tokens_needed(model: &LlamaModel, text: &str) -> usize {
    exact_tokens(model, text).map_or(text.len(), |tokens| tokens.len())
}

/// The fewest tokens any reply under `grammar` takes, or `None` when our interpreter cannot
/// read the grammar.
pub(super) fn min_reply_tokens(model: &LlamaModel, grammar: &Grammar) -> Option<usize> {
    let start = grammar.continuation("")?;
    Some(tokens_needed(model, &start.shortest))
}
