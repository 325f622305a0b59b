//! Throughput figures for a model: prompt processing (prefill) and generation (decode) speed.
//!
//! Every measured call goes through the [`Generator`] with the cache off, so it is recorded like
//! any other call and never served from the store.

use serde::Serialize;

use crate::engine::{GenerationRequest, Prompt};
use crate::generator::{GenerateError, Generator};

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Approximate prompt length in tokens.
    pub prompt_tokens: usize,
    /// Tokens to generate per repetition.
    pub gen_tokens: u32,
    pub repetitions: usize,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            prompt_tokens: 256,
            gen_tokens: 64,
            repetitions: 3,
        }
    }
}

/// One repetition's figures.
#[derive(Debug, Clone, Serialize)]
pub struct BenchSample {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub prefill_ms: f64,
    pub decode_ms: f64,
}

/// The result: medians over repetitions.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub samples: Vec<BenchSample>,
    pub prefill_tokens_per_s: f64,
    pub decode_tokens_per_s: f64,
}

/// A prompt that a model continues for as long as it is allowed to (a counting sequence), so
/// that decode speed is measured over the requested number of tokens.
pub fn counting_prompt(generator: &Generator, target_tokens: usize) -> String {
    let mut text = String::from("Count upwards without stopping: 1");
    let mut n = 1;
    while generator.engine().count_tokens(&text) < target_tokens {
        n += 1;
        text.push_str(&format!(", {n}"));
    }
    text.push(',');
    text
}

/// Measures prefill and decode speed. The first repetition warms up caches and is discarded
/// when there is more than one.
pub async fn run(
    generator: &Generator,
    options: &BenchOptions,
) -> Result<BenchReport, GenerateError> {
    let prompt = counting_prompt(generator, options.prompt_tokens);
    let repetitions = options.repetitions.max(1);
    let mut samples = Vec::new();
    for rep in 0..repetitions + usize::from(repetitions > 1) {
        // A distinct leading line per repetition keeps every call a real computation.
        let request = GenerationRequest::new(
            Prompt::Raw(format!("Run {rep}. {prompt}")),
            options.gen_tokens.max(1),
        );
        let generated = generator.generate(request).await?;
        if repetitions > 1 && rep == 0 {
            continue;
        }
        let c = generated.completion;
        samples.push(BenchSample {
            prompt_tokens: c.prompt_tokens,
            completion_tokens: c.completion_tokens,
            prefill_ms: c.timings.prefill_ms,
            decode_ms: c.timings.decode_ms,
        });
    }
    let prefill = median(
        samples
            .iter()
            .map(|s| f64::from(s.prompt_tokens) / (s.prefill_ms / 1e3)),
    );
    let decode = median(samples.iter().map(|s| {
        // The first generated token's logits come from prefill; decode steps = tokens - 1.
        f64::from(s.completion_tokens.saturating_sub(1)) / (s.decode_ms / 1e3).max(1e-9)
    }));
    Ok(BenchReport {
        samples,
        prefill_tokens_per_s: prefill,
        decode_tokens_per_s: decode,
    })
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    }
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median([3.0, 1.0, 2.0].into_iter()), 2.0);
        assert_eq!(median([4.0, 1.0, 2.0, 3.0].into_iter()), 2.5);
        assert_eq!(median(std::iter::empty()), 0.0);
    }
}
