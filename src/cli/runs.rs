//! `tuningfork runs …`.

use anyhow::Result;

use super::args::{GlobalArgs, RunsCommand};
use super::open_store;

pub fn run(global: &GlobalArgs, command: RunsCommand) -> Result<()> {
    match command {
        RunsCommand::Export { id, out } => super::audit::export(global, &id, &out),
        RunsCommand::Import { file } => super::audit::import(global, &file),
        RunsCommand::Verify { file } => super::audit::verify(&file),
        RunsCommand::Audit { id, json } => super::audit::audit_report(global, &id, json),
        RunsCommand::List { limit } => list(global, limit),
        RunsCommand::Show { id, full, json } => show(global, &id, full, json),
    }
}

fn list(global: &GlobalArgs, limit: usize) -> Result<()> {
    let store = open_store(global)?;
    let runs = store.list_runs(limit)?;
    if runs.is_empty() {
        println!("no runs in {}", global.store.display());
        return Ok(());
    }
    println!(
        "{:>5}  {:<16}  {:<10}  {:<11}  {:<24}  {:>6}  {:>6}  {:>9}",
        "ID", "UID", "KIND", "STATUS", "STARTED", "CALLS", "CACHED", "TOKENS"
    );
    for s in runs {
        println!(
            "{:>5}  {:<16}  {:<10}  {:<11}  {:<24}  {:>6}  {:>6}  {:>9}",
            s.run.id,
            s.run.uid,
            s.run.kind,
            s.run.status,
            s.run.started_at,
            s.calls,
            s.cache_hits,
            s.prompt_tokens + s.completion_tokens
        );
    }
    Ok(())
}

fn show(global: &GlobalArgs, id: &str, full: bool, json: bool) -> Result<()> {
    let store = open_store(global)?;
    let run = store.run(id)?;
    let calls = store.run_calls(run.id)?;
    let summary = store.summarize(run)?;
    if json {
        let value = serde_json::json!({ "run": summary, "calls": calls });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    let run = &summary.run;
    println!("run          {} ({})", run.id, run.uid);
    println!("kind         {}", run.kind);
    println!("status       {}", run.status);
    println!("started      {}", run.started_at);
    println!("ended        {}", run.ended_at.as_deref().unwrap_or("-"));
    println!("host         {}", run.host);
    println!(
        "model        {}",
        run.model_sha256.as_deref().unwrap_or("-")
    );
    println!(
        "engine       {} {}",
        run.engine_fingerprint_id, run.engine_fingerprint
    );
    println!(
        "seed         {}",
        run.seed.map_or("-".to_string(), |s| s.to_string())
    );
    // Configs hold the task file and dataset rows; --full shows them whole.
    let config = run.config.to_string();
    if full {
        println!("config       {config}");
    } else {
        println!("config       {}", abbreviate(&config, 300));
    }
    if let Some(error) = &run.error {
        println!("error        {error}");
    }
    println!(
        "calls        {} ({} from cache, {} failed), {} prompt + {} generated tokens",
        summary.calls,
        summary.cache_hits,
        summary.failed_calls,
        summary.prompt_tokens,
        summary.completion_tokens
    );
    for split in ["train", "val", "test"] {
        let results = store.eval_results(run.id, split)?;
        if results.is_empty() {
            continue;
        }
        let mean = results.iter().map(|r| r.score).sum::<f64>() / results.len() as f64;
        let failed = results.iter().filter(|r| r.error.is_some()).count();
        println!(
            "evaluation   {split}: {} examples, mean score {mean:.3}, {failed} failed",
            results.len()
        );
    }
    for loop_row in store.optimizations(run.id)? {
        println!();
        println!(
            "loop {}       {} · {} — {}{}",
            loop_row.loop_index,
            loop_row.task,
            loop_row.optimizer,
            loop_row.status,
            loop_row
                .stop_reason
                .as_deref()
                .map_or(String::new(), |r| format!(" ({r})"))
        );
        for candidate in store.candidates(loop_row.id)? {
            println!(
                "  #{:<3} {:<36} val {:>6}  program {}",
                candidate.ordinal,
                candidate.label,
                candidate
                    .val_score
                    .map_or("-".to_string(), |v| format!("{v:.3}")),
                tuningfork::artifact::short(&candidate.program_hash)
            );
        }
        if let Some(hash) = &loop_row.artifact_hash {
            println!("  result: artifact {hash}");
        }
    }
    for call in calls {
        println!();
        println!(
            "call {}  {}  {} + {} tokens  {:.0} ms  {}{}",
            call.id,
            tuningfork::artifact::short(&call.request_hash),
            call.prompt_tokens,
            call.completion_tokens,
            call.latency_ms,
            call.stop_reason.as_deref().unwrap_or("-"),
            if call.cached { "  (cache hit)" } else { "" }
        );
        if let Some(error) = &call.error {
            println!("  error: {error}");
        }
        let (prompt, output) = if full {
            (call.prompt.clone(), call.output.clone())
        } else {
            (abbreviate(&call.prompt, 160), abbreviate(&call.output, 160))
        };
        println!("  prompt: {prompt}");
        println!("  output: {output}");
    }
    Ok(())
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
