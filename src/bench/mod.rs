//! Throughput figures for a model: prompt processing (prefill) and generation (decode) speed.
//!
//! Every measured call goes through the [`Generator`] with the cache off, so it is recorded like
//! any other call and never served from the store.

pub mod batched;
pub mod eval;
pub mod retrieval;

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

/// Each repetition's figures, then the medians.
impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{:>4} {:>14} {:>14} {:>12} {:>12}",
            "rep", "prompt tokens", "gen tokens", "prefill ms", "decode ms"
        )?;
        for (i, s) in self.samples.iter().enumerate() {
            writeln!(
                f,
                "{:>4} {:>14} {:>14} {:>12.1} {:>12.1}",
                i + 1,
                s.prompt_tokens,
                s.completion_tokens,
                s.prefill_ms,
                s.decode_ms
            )?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "prefill    {:.1} tokens/s (median)",
            self.prefill_tokens_per_s
        )?;
        write!(
            f,
            "decode     {:.1} tokens/s (median)",
            self.decode_tokens_per_s
        )
    }
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

/// The shared-prefix workload of the scheduler benchmark: `requests` few-shot prompts that
/// share a long prefix (instructions and demonstrations) and differ in a short question.
pub fn shared_prefix_workload(requests: usize, max_tokens: u32) -> Vec<GenerationRequest> {
    use crate::engine::Message;
    let mut prefix = vec![Message::system(
        "You are a support assistant for a hardware store. Read the customer's message and \
         answer in one short, friendly sentence that names the department they need: tools, \
         garden, paint, plumbing, electrical or returns. Be precise, do not invent products, \
         and never promise delivery dates. Examples of good answers follow.",
    )];
    let shots = [
        (
            "My kitchen tap drips all night, what do I need?",
            "Plumbing can help you with a new washer or cartridge for the tap.",
        ),
        (
            "I want to repaint my fence before summer.",
            "Paint has outdoor wood stains and brushes for fences.",
        ),
        (
            "The drill I bought last week does not charge.",
            "Returns will exchange the drill or its battery for you.",
        ),
        (
            "Which cable do I need for a new ceiling light?",
            "Electrical can match the cable to your ceiling light.",
        ),
        (
            "Our lawn has brown patches everywhere.",
            "Garden has lawn feed and seed to repair brown patches.",
        ),
        (
            "I need a saw that cuts metal pipes.",
            "Tools carries hacksaws and pipe cutters for metal.",
        ),
        (
            "Can I bring back paint that was mixed for me?",
            "Returns can check whether mixed paint can be taken back.",
        ),
        (
            "Our shower drain is blocked again.",
            "Plumbing has drain cleaners and snakes for blocked showers.",
        ),
    ];
    for (question, answer) in shots {
        prefix.push(Message::user(question));
        prefix.push(Message::assistant(answer));
    }
    let subjects = [
        "hedge",
        "ladder",
        "wallpaper",
        "socket",
        "radiator",
        "hammer",
        "tiles",
        "lamp",
    ];
    let problems = [
        "is broken and I need a replacement before the weekend",
        "looks old and I would like something more modern for the hallway",
        "was delivered in the wrong size and I kept the receipt",
        "keeps failing and my neighbour says it is unsafe",
        "needs to be installed but I have never done this before",
        "is too expensive at the other store, do you have a cheaper one",
        "came without instructions and some parts seem to be missing",
        "has to match the colour of the living room walls exactly",
    ];
    (0..requests)
        .map(|i| {
            let question = format!(
                "Request {i}: the {} in our house {}. Which department?",
                subjects[i % subjects.len()],
                problems[(i / subjects.len()) % problems.len()]
            );
            let mut messages = prefix.clone();
            messages.push(Message::user(question));
            GenerationRequest::chat(messages, max_tokens)
        })
        .collect()
}

/// Wall time and throughput of one scheduler mode.
#[derive(Debug, Clone, Serialize)]
pub struct ModeReport {
    pub mode: String,
    pub wall_s: f64,
    pub requests: usize,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cache_hits: usize,
}

impl ModeReport {
    /// Prompt and generated tokens handled per second of wall time.
    pub fn tokens_per_s(&self) -> f64 {
        (self.prompt_tokens + self.completion_tokens) as f64 / self.wall_s.max(1e-9)
    }

    /// The modes side by side, with each one's speed-up over the first.
    pub fn table(reports: &[ModeReport]) -> String {
        let baseline = reports.first().map_or(1.0, |r| r.wall_s);
        let mut out = format!(
            "{:<30} {:>9} {:>12} {:>12} {:>10} {:>8}\n",
            "mode", "wall s", "prompt tok", "gen tok", "tok/s", "speedup"
        );
        for r in reports {
            out.push_str(&format!(
                "{:<30} {:>9.2} {:>12} {:>12} {:>10.0} {:>7.1}x\n",
                r.mode,
                r.wall_s,
                r.prompt_tokens,
                r.completion_tokens,
                r.tokens_per_s(),
                baseline / r.wall_s.max(1e-9)
            ));
        }
        out
    }
}

/// Submits every request at once and returns their results in request order.
pub async fn generate_all(
    generator: &Generator,
    requests: Vec<GenerationRequest>,
) -> Result<Vec<crate::generator::Generated>, GenerateError> {
    let mut set = tokio::task::JoinSet::new();
    for (i, request) in requests.into_iter().enumerate() {
        let generator = generator.clone();
        set.spawn(async move { (i, generator.generate(request).await) });
    }
    let mut results = Vec::with_capacity(set.len());
    while let Some(joined) = set.join_next().await {
        let (i, result) = joined.expect("benchmark tasks do not panic");
        results.push((i, result?));
    }
    results.sort_by_key(|(i, _)| *i);
    Ok(results.into_iter().map(|(_, g)| g).collect())
}

/// Runs every request of `workload` through `generator`, all at once (`concurrent`) or one
/// after another, and measures the wall time.
pub async fn run_workload(
    generator: &Generator,
    workload: &[GenerationRequest],
    concurrent: bool,
    mode: &str,
) -> Result<ModeReport, GenerateError> {
    let started = std::time::Instant::now();
    let results = if concurrent {
        generate_all(generator, workload.to_vec()).await?
    } else {
        let mut results = Vec::with_capacity(workload.len());
        for request in workload {
            results.push(generator.generate(request.clone()).await?);
        }
        results
    };
    Ok(ModeReport {
        mode: mode.to_string(),
        wall_s: started.elapsed().as_secs_f64(),
        requests: results.len(),
        prompt_tokens: results
            .iter()
            .map(|g| u64::from(g.completion.prompt_tokens))
            .sum(),
        completion_tokens: results
            .iter()
            .map(|g| u64::from(g.completion.completion_tokens))
            .sum(),
        cache_hits: results.iter().filter(|g| g.cached).count(),
    })
}
