//! A stored run as a person reads it: the list of runs, and one run with its evaluation
//! results, optimization loops, candidates and calls.

use std::fmt::Write;

use crate::store::{
    CallRecord, CandidateRow, EvalRecord, OptimizationRow, RunSummary, Store, StoreError,
};

/// The runs as a table, newest first.
pub fn runs_table(runs: &[RunSummary]) -> String {
    let mut out = String::new();
    write_runs(&mut out, runs).expect("writing to a String cannot fail");
    out
}

fn write_runs(out: &mut String, runs: &[RunSummary]) -> std::fmt::Result {
    writeln!(
        out,
        "{:>5}  {:<16}  {:<10}  {:<11}  {:<24}  {:>6}  {:>6}  {:>9}",
        "ID", "UID", "KIND", "STATUS", "STARTED", "CALLS", "CACHED", "TOKENS"
    )?;
    for s in runs {
        writeln!(
            out,
            "{:>5}  {:<16}  {:<10}  {:<11}  {:<24}  {:>6}  {:>6}  {:>9}",
            s.run.id,
            s.run.uid,
            s.run.kind,
            s.run.status,
            s.run.started_at,
            s.calls,
            s.cache_hits,
            s.prompt_tokens + s.completion_tokens
        )?;
    }
    Ok(())
}

/// One run as stored: its record and totals, evaluation results by split, optimization loops
/// with their candidates, and every call.
#[derive(Debug, Clone)]
pub struct RunView {
    pub summary: RunSummary,
    pub evaluations: Vec<(&'static str, Vec<EvalRecord>)>,
    pub loops: Vec<(OptimizationRow, Vec<CandidateRow>)>,
    pub calls: Vec<CallRecord>,
}

impl RunView {
    /// Reads run `id` (id or uid) and everything stored under it.
    pub fn load(store: &Store, id: &str) -> Result<RunView, StoreError> {
        let run = store.run(id)?;
        let mut evaluations = Vec::new();
        for split in ["train", "val", "test"] {
            let results = store.eval_results(run.id, split)?;
            if !results.is_empty() {
                evaluations.push((split, results));
            }
        }
        let mut loops = Vec::new();
        for row in store.optimizations(run.id)? {
            let candidates = store.candidates(row.id)?;
            loops.push((row, candidates));
        }
        Ok(RunView {
            calls: store.run_calls(run.id)?,
            summary: store.summarize(run)?,
            evaluations,
            loops,
        })
    }

    /// The run for a person: prompts and outputs cut to a line unless `full`.
    pub fn render(&self, full: bool) -> String {
        let mut out = String::new();
        self.write(&mut out, full)
            .expect("writing to a String cannot fail");
        out
    }

    fn write(&self, out: &mut String, full: bool) -> std::fmt::Result {
        let (summary, calls) = (&self.summary, &self.calls);
        let run = &summary.run;
        writeln!(out, "run          {} ({})", run.id, run.uid)?;
        writeln!(out, "kind         {}", run.kind)?;
        writeln!(out, "status       {}", run.status)?;
        writeln!(out, "started      {}", run.started_at)?;
        writeln!(
            out,
            "ended        {}",
            run.ended_at.as_deref().unwrap_or("-")
        )?;
        writeln!(out, "host         {}", run.host)?;
        writeln!(
            out,
            "model        {}",
            run.model_sha256.as_deref().unwrap_or("-")
        )?;
        writeln!(
            out,
            "engine       {} {}",
            run.engine_fingerprint_id, run.engine_fingerprint
        )?;
        writeln!(
            out,
            "seed         {}",
            run.seed.map_or("-".to_string(), |s| s.to_string())
        )?;
        // Configs hold the task file and dataset rows; --full shows them whole.
        let config = run.config.to_string();
        if full {
            writeln!(out, "config       {config}")?;
        } else {
            writeln!(out, "config       {}", abbreviate(&config, 300))?;
        }
        if let Some(error) = &run.error {
            writeln!(out, "error        {error}")?;
        }
        writeln!(
            out,
            "calls        {} ({} from cache, {} failed), {} prompt + {} generated tokens",
            summary.calls,
            summary.cache_hits,
            summary.failed_calls,
            summary.prompt_tokens,
            summary.completion_tokens
        )?;
        for (split, results) in &self.evaluations {
            let mean = results.iter().map(|r| r.score).sum::<f64>() / results.len() as f64;
            let failed = results.iter().filter(|r| r.error.is_some()).count();
            writeln!(
                out,
                "evaluation   {split}: {} examples, mean score {mean:.3}, {failed} failed",
                results.len()
            )?;
        }
        for (loop_row, candidates) in &self.loops {
            writeln!(out)?;
            writeln!(
                out,
                "loop {}       {} · {} — {}{}",
                loop_row.loop_index,
                loop_row.task,
                loop_row.optimizer,
                loop_row.status,
                loop_row
                    .stop_reason
                    .as_deref()
                    .map_or(String::new(), |r| format!(" ({r})"))
            )?;
            // Each candidate's instructions are shown where they differ from the first's.
            let base = candidates
                .first()
                .map(|c| instructions_of(&c.program))
                .unwrap_or_default();
            for candidate in candidates {
                writeln!(
                    out,
                    "  #{:<3} {:<36} val {:>6}  program {}",
                    candidate.ordinal,
                    candidate.label,
                    candidate
                        .val_score
                        .map_or("-".to_string(), |v| format!("{v:.3}")),
                    crate::artifact::short(&candidate.program_hash)
                )?;
                for (step, instruction) in changed_instructions(&base, candidate) {
                    writeln!(out, "       {step}: {instruction:?}")?;
                }
            }
            let notes = loop_row
                .summary
                .as_ref()
                .and_then(|s| s.get("notes"))
                .and_then(|n| n.as_array());
            if let Some(notes) = notes.filter(|n| !n.is_empty()) {
                writeln!(out, "  notes:")?;
                for note in notes.iter().filter_map(|n| n.as_str()) {
                    writeln!(out, "    {note}")?;
                }
            }
            if let Some(hash) = &loop_row.artifact_hash {
                writeln!(out, "  result: artifact {hash}")?;
            }
        }
        for call in calls {
            writeln!(out)?;
            writeln!(
                out,
                "call {}  {}  {} + {} tokens  {:.0} ms  {}{}",
                call.id,
                crate::artifact::short(&call.request_hash),
                call.prompt_tokens,
                call.completion_tokens,
                call.latency_ms,
                call.stop_reason.as_deref().unwrap_or("-"),
                if call.cached { "  (cache hit)" } else { "" }
            )?;
            if let Some(error) = &call.error {
                writeln!(out, "  error: {error}")?;
            }
            let (prompt, output) = if full {
                (call.prompt.clone(), call.output.clone())
            } else {
                (abbreviate(&call.prompt, 160), abbreviate(&call.output, 160))
            };
            writeln!(out, "  prompt: {prompt}")?;
            writeln!(out, "  output: {output}")?;
        }
        Ok(())
    }
}

/// One line, at most `max` characters, ending in `…` when cut.
fn abbreviate(text: &str, max: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c == '\n' { '⏎' } else { c })
        .collect();
    if flat.chars().count() <= max {
        flat
    } else {
        let cut: String = flat.chars().take(max).collect();
        format!("{cut}…")
    }
}

/// Each step's name and instruction in a stored program (none when it does not read as one).
fn instructions_of(program: &serde_json::Value) -> Vec<(String, String)> {
    serde_json::from_value::<crate::program::Program>(program.clone())
        .map(|p| {
            p.steps
                .into_iter()
                .map(|s| (s.name, s.signature.instructions))
                .collect()
        })
        .unwrap_or_default()
}

/// The steps of `candidate` whose instruction is not the one in `base`, with the instruction.
fn changed_instructions(
    base: &[(String, String)],
    candidate: &CandidateRow,
) -> Vec<(String, String)> {
    instructions_of(&candidate.program)
        .into_iter()
        .filter(|step| !base.contains(step))
        .collect()
}
