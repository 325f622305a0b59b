//! The evaluation benchmark: a task's program on one of its splits, with the cache off, once
//! decoding grammar-forced text step by step and once with jump-forward spans, each on a fresh
//! engine; with the engine's own account of where the time and tokens went.

use serde::Serialize;

use crate::engine::EngineStats;

/// One mode of the evaluation benchmark.
#[derive(Debug, Clone, Serialize)]
pub struct EvalModeReport {
    pub mode: String,
    pub run_id: i64,
    pub examples: usize,
    pub wall_s: f64,
    pub examples_per_s: f64,
    pub mean_score: f64,
    /// Examples whose reply could not be parsed.
    pub failed: usize,
    /// Examples with a value the token budget cut short.
    pub cut: usize,
    pub stats: EngineStats,
}

/// Both modes, and whether they produced the same outputs.
#[derive(Debug, Clone, Serialize)]
pub struct EvalBenchReport {
    pub task: String,
    pub split: String,
    pub model: String,
    pub modes: Vec<EvalModeReport>,
    /// Every example's outputs were identical in every mode.
    pub identical_outputs: bool,
}

impl std::fmt::Display for EvalBenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "task {} on {}, model {}; outputs identical across modes: {}",
            self.task,
            self.split,
            self.model,
            if self.identical_outputs { "yes" } else { "NO" }
        )?;
        let width = 16;
        write!(f, "{:<34}", "")?;
        for mode in &self.modes {
            write!(f, "{:>width$}", mode.mode)?;
        }
        writeln!(f)?;
        let row = |f: &mut std::fmt::Formatter<'_>,
                   label: &str,
                   value: &dyn Fn(&EvalModeReport) -> String|
         -> std::fmt::Result {
            write!(f, "{label:<34}")?;
            for mode in &self.modes {
                write!(f, "{:>width$}", value(mode))?;
            }
            writeln!(f)
        };
        let share = |part: f64, whole: f64| {
            if whole > 0.0 {
                format!("{:.0}%", 100.0 * part / whole)
            } else {
                "-".to_string()
            }
        };
        row(f, "examples", &|m| m.examples.to_string())?;
        row(f, "wall time (s)", &|m| format!("{:.1}", m.wall_s))?;
        row(f, "examples/s", &|m| format!("{:.2}", m.examples_per_s))?;
        row(f, "mean score", &|m| format!("{:.3}", m.mean_score))?;
        row(f, "unparsable / cut short", &|m| {
            format!("{} / {}", m.failed, m.cut)
        })?;
        row(f, "prompt tokens computed", &|m| {
            (m.stats.prompt_tokens - m.stats.prompt_reused).to_string()
        })?;
        row(f, "prompt tokens reused", &|m| {
            m.stats.prompt_reused.to_string()
        })?;
        row(f, "generated tokens", &|m| {
            m.stats.generated_tokens.to_string()
        })?;
        row(f, "  decoded one step at a time", &|m| {
            (m.stats.generated_tokens - m.stats.forced_tokens).to_string()
        })?;
        row(f, "  jump-forwarded", &|m| {
            format!(
                "{} ({})",
                m.stats.forced_tokens,
                share(
                    m.stats.forced_tokens as f64,
                    m.stats.generated_tokens as f64
                )
            )
        })?;
        row(f, "  span tokens dropped", &|m| {
            m.stats.dropped_span_tokens.to_string()
        })?;
        row(f, "model passes", &|m| m.stats.passes.to_string())?;
        row(f, "batches (tokens)", &|m| {
            format!("{} ({})", m.stats.batches, m.stats.batch_tokens)
        })?;
        writeln!(f, "worker time (s, share of wall time)")?;
        let part = |f: &mut std::fmt::Formatter<'_>,
                    label: &str,
                    value: &dyn Fn(&EngineStats) -> f64|
         -> std::fmt::Result {
            row(f, label, &|m| {
                let v = value(&m.stats);
                format!("{v:.2} {:>4}", share(v, m.wall_s))
            })
        };
        part(f, "  llama.cpp: evaluating batches", &|s| s.llama_s)?;
        part(f, "  grammar masks (llama.cpp)", &|s| s.grammar_s)?;
        part(f, "  budget and forced text", &|s| s.budget_s)?;
        part(f, "  token choice", &|s| s.sample_s)?;
        part(f, "  prefix copies", &|s| s.copy_s)?;
        part(f, "  other (scheduling, requests)", &|s| s.other_s())?;
        row(f, "  idle (waiting for requests)", &|m| {
            let v = (m.wall_s - m.stats.busy_s).max(0.0);
            format!("{v:.2} {:>4}", share(v, m.wall_s))
        })?;
        Ok(())
    }
}
