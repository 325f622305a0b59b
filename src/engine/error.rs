//! Errors of the engine boundary. llama.cpp failures become one of these, never a panic.

use std::path::PathBuf;

#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    #[error("cannot initialise llama.cpp: {0}")]
    Backend(String),
    #[error("cannot load model {path}: {reason}")]
    ModelLoad { path: PathBuf, reason: String },
    #[error("cannot create a llama.cpp context: {0}; try a smaller --ctx-size")]
    Context(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error(
        "invalid grammar ({0}): llama.cpp could not parse it (its parser prints the position above); the grammar must be GBNF with a `root` rule"
    )]
    Grammar(String),
    #[error("cannot apply the model's chat template: {0}")]
    Template(String),
    #[error(
        "the prompt is {tokens} tokens but the context holds {n_ctx}; shorten the prompt or raise --ctx-size"
    )]
    PromptTooLong { tokens: usize, n_ctx: u32 },
    #[error(
        "max_tokens = {max_tokens} cannot hold a complete reply: the shortest reply the grammar allows takes {needed} tokens; raise max_tokens to at least {needed}"
    )]
    BudgetTooSmall { max_tokens: u32, needed: usize },
    #[error("llama.cpp failed to evaluate the batch: {0}")]
    Decode(String),
    #[error("the request was cancelled")]
    Cancelled,
    #[error("the engine has stopped")]
    Stopped,
}
