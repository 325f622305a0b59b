//! What programs, metrics and evaluators need of a model: "generate this request".
//!
//! [`Lm`] is the seam between plain program data and whatever answers it. The real
//! [`Generator`](crate::generator::Generator) implements it (cache, engine, store), and so does
//! [`FakeLm`], a deterministic model for unit tests of logic that does not depend on what a
//! real model says: replies derived from a hash of the prompt, or scripted, always obeying the
//! request's grammar.
//!
//! Architecture Invariant: this module knows the request and completion types and nothing of
//! the store, the engine's worker or the cache; programs and metrics depend on it, not on the
//! generator.

mod fake;

use std::future::Future;
use std::pin::Pin;

pub use fake::{FakeCall, FakeLm};

use crate::engine::{Completion, GenerationRequest};

/// A completion and how it was obtained.
#[derive(Debug, Clone)]
pub struct Generated {
    pub completion: Completion,
    /// Served from the exact cache, without inference.
    pub cached: bool,
    /// The recorded call's id (the fake model numbers its calls from 1).
    pub call_id: i64,
    /// The cache key of the request.
    pub request_hash: String,
}

/// Why a model call produced nothing.
#[derive(Debug, thiserror::Error)]
pub enum LmError {
    /// The caller gave up on the call (a run cancelled, a future dropped).
    #[error("the model call was cancelled")]
    Cancelled,
    /// The model, the engine or the record of the call failed.
    #[error(transparent)]
    Failed(Box<dyn std::error::Error + Send + Sync>),
}

/// The future a model call returns: boxed, so that `dyn Lm` works.
pub type LmFuture<'a> = Pin<Box<dyn Future<Output = Result<Generated, LmError>> + Send + 'a>>;

/// A model that answers generation requests.
pub trait Lm: Send + Sync {
    /// Generates (or recalls) one completion.
    fn generate(&self, request: GenerationRequest) -> LmFuture<'_>;
}

impl<T: Lm + ?Sized> Lm for std::sync::Arc<T> {
    fn generate(&self, request: GenerationRequest) -> LmFuture<'_> {
        (**self).generate(request)
    }
}
