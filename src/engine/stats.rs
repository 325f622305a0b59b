//! Where an engine's time and tokens went: counters the worker keeps, read by benchmarks.
//!
//! The worker adds to them as it goes (one lock per batch, per admission and per finished
//! request); [`super::Engine::stats`] returns a copy. Nothing here affects outputs.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

/// Counters since the engine was loaded. Times are in seconds of the worker thread.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EngineStats {
    /// Generation requests admitted to a slot.
    pub requests: u64,
    /// Prompt tokens of those requests.
    pub prompt_tokens: u64,
    /// Prompt tokens not evaluated because a slot held them already (or a copy of them).
    pub prompt_reused: u64,
    /// Prefix copies from one slot's sequence to another's.
    pub prefix_copies: u64,
    /// Generated tokens (the ones a completion counts).
    pub generated_tokens: u64,
    /// Generated tokens that came from jump-forward spans.
    pub forced_tokens: u64,
    /// Span tokens evaluated and then dropped (the model went another way).
    pub dropped_span_tokens: u64,
    /// Passes llama.cpp makes over the model for all those batches: it splits a batch into
    /// passes that give each sequence the same number of tokens and take sequences only in a
    /// run of consecutive ids (see [`passes`]).
    pub passes: u64,
    /// Batches given to llama.cpp (one per scheduling step), and the tokens in them.
    pub batches: u64,
    pub batch_tokens: u64,
    /// Time in llama.cpp evaluating batches.
    pub llama_s: f64,
    /// Time applying llama.cpp's grammar sampler to the logits.
    pub grammar_s: f64,
    /// Time in the budget's grammar analysis and the forced-text search.
    pub budget_s: f64,
    /// Time choosing tokens from the (masked) logits.
    pub sample_s: f64,
    /// Time copying prefix state between slots.
    pub copy_s: f64,
    /// Time the worker was busy (from taking in work until it waits for more).
    pub busy_s: f64,
}

impl EngineStats {
    /// Busy time not spent in llama.cpp, sampling or copies: scheduling, admission,
    /// bookkeeping per request.
    pub fn other_s(&self) -> f64 {
        (self.busy_s - self.llama_s - self.grammar_s - self.budget_s - self.sample_s - self.copy_s)
            .max(0.0)
    }
}

/// How many passes llama.cpp makes for a batch holding `counts[i] = (sequence id, tokens)`,
/// sequences in ascending order, with a non-unified KV cache: each pass takes the first
/// sequence with tokens left and the run of consecutive ids after it that still have tokens,
/// and as many tokens from each as the one with the fewest left (within `n_ubatch`).
pub fn passes(counts: &[(i32, usize)], n_ubatch: usize) -> u64 {
    let mut left: Vec<(i32, usize)> = counts.iter().copied().filter(|c| c.1 > 0).collect();
    let mut passes = 0;
    while let Some(first) = left.iter().position(|c| c.1 > 0) {
        let mut end = first + 1;
        while end < left.len() && left[end].1 > 0 && left[end].0 == left[end - 1].0 + 1 {
            end += 1;
        }
        let width = end - first;
        let fewest = left[first..end].iter().map(|c| c.1).min().unwrap_or(1);
        let take = fewest.min((n_ubatch / width).max(1));
        for c in &mut left[first..end] {
            c.1 -= take;
        }
        passes += 1;
    }
    passes
}

/// The worker's handle on the shared counters.
#[derive(Debug, Clone, Default)]
pub(super) struct Shared(Arc<Mutex<EngineStats>>);

impl Shared {
    pub(super) fn update(&self, f: impl FnOnce(&mut EngineStats)) {
        if let Ok(mut stats) = self.0.lock() {
            f(&mut stats);
        }
    }

    pub(super) fn snapshot(&self) -> EngineStats {
        self.0.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// Time spent in parts of one request's sampling.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct SampleCosts {
    pub grammar: Duration,
    pub budget: Duration,
    pub sample: Duration,
}

/// Adds the time `f` takes to `total`.
pub(super) fn timed<T>(total: &mut Duration, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = f();
    *total += start.elapsed();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_follow_llama_cpp_equal_split() {
        // Consecutive decode tokens: one pass.
        assert_eq!(passes(&[(0, 1), (1, 1), (2, 1), (3, 1)], 512), 1);
        // A gap in the ids splits the batch.
        assert_eq!(passes(&[(0, 1), (1, 1), (3, 1)], 512), 2);
        // Unequal shares: the longer sequence's rest goes alone.
        assert_eq!(passes(&[(0, 1), (1, 9)], 512), 2);
        assert_eq!(passes(&[(0, 4), (1, 4), (2, 4)], 512), 1);
        // Bounded by the ubatch size.
        assert_eq!(passes(&[(0, 100)], 32), 4);
        assert_eq!(passes(&[], 512), 0);
    }
}
