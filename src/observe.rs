//! Progress reports from long work (evaluations, optimization loops) to whatever front end
//! shows them: the command line draws bars, a server or a worker records a status.
//!
//! Architecture Invariant: the library reports progress only through [`Observer`]; it never
//! draws on a terminal itself.

/// Told about progress.
pub trait Observer: Send + Sync {
    /// A new stage begins with `total` examples to run.
    fn stage(&self, _stage: &str, _total: u64) {}
    /// One example of the stage finished.
    fn advance(&self) {}
    /// An evaluated example scored `score` (told before its `advance`).
    fn example_scored(&self, _score: f64) {}
    /// A candidate was scored on the whole validation split.
    fn scored(&self, _label: &str, _score: f64, _best: f64) {}
}

/// An observer that ignores everything.
pub struct Silent;
impl Observer for Silent {}
