//! `tuningfork runs …`.

use anyhow::{bail, Result};
use tuningfork::audit::show::{self, RunView};
use tuningfork::store::{Retention, RunSelection};

use super::args::{GlobalArgs, RunsCommand};
use super::{open_store, read_store};

pub fn run(global: &GlobalArgs, command: RunsCommand) -> Result<()> {
    match command {
        RunsCommand::Export { id, out } => super::audit::export(global, &id, &out),
        RunsCommand::Import { file } => super::audit::import(global, &file),
        RunsCommand::Verify { file } => super::audit::verify(&file),
        RunsCommand::Audit { id, json } => super::audit::audit_report(global, &id, json),
        RunsCommand::List { limit } => list(global, limit),
        RunsCommand::Show { id, full, json } => show(global, &id, full, json),
        RunsCommand::Gc {
            older_than,
            runs,
            keep_days,
            keep_max,
            vacuum,
            dry_run,
        } => gc(
            global,
            RunSelection { older_than, runs },
            Retention {
                keep_days,
                keep_max,
            },
            vacuum,
            dry_run,
        ),
    }
}

fn gc(
    global: &GlobalArgs,
    selection: RunSelection,
    retention: Retention,
    vacuum: bool,
    dry_run: bool,
) -> Result<()> {
    let by_runs = selection.older_than.is_some() || !selection.runs.is_empty();
    let by_traces = retention.keep_days.is_some() || retention.keep_max.is_some();
    if !(by_runs || by_traces || vacuum) {
        bail!(
            "say what to collect: --older-than AGE or --run ID (runs), --keep-days N or \
             --keep-max N (traces), --vacuum (free pages); add --dry-run to see first"
        );
    }
    let store = open_store(global)?;
    let would = if dry_run { "would delete" } else { "deleted" };
    if by_runs {
        let collected = store.collect_runs(&selection, dry_run)?;
        for run in &collected.deleted {
            println!(
                "{would} run {:>4} {} {:<9} {:<11} {} ({} calls)",
                run.id, run.uid, run.kind, run.status, run.started_at, run.calls
            );
        }
        for run in &collected.kept {
            println!(
                "kept run {:>4} {} {:<9}: {}",
                run.id,
                run.uid,
                run.kind,
                run.kept_because.as_deref().unwrap_or_default()
            );
        }
        let rows: Vec<String> = collected
            .rows
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(table, n)| format!("{n} {table}"))
            .collect();
        println!(
            "{would} {} runs ({}); kept {}; {:.2} MiB free in the store file after that{}",
            collected.deleted.len(),
            if rows.is_empty() {
                "no rows".to_string()
            } else {
                rows.join(", ")
            },
            collected.kept.len(),
            collected.free_bytes as f64 / (1024.0 * 1024.0),
            if vacuum {
                ""
            } else {
                " (--vacuum gives it back)"
            }
        );
    }
    if by_traces {
        let pruned = store.prune_traces_or_count(&retention, dry_run)?;
        println!(
            "{would} {} traces, {} calls and {} empty server runs",
            pruned.traces, pruned.calls, pruned.runs
        );
    }
    if vacuum {
        let v = store.vacuum(dry_run)?;
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        println!(
            "store {}: {:.2} MiB {} {:.2} MiB{}",
            global.store.display(),
            mib(v.bytes_before),
            if dry_run { "could shrink to" } else { "→" },
            mib(v.bytes_after),
            if dry_run && by_runs {
                " (before this collection's deletions; see above for after)"
            } else {
                ""
            }
        );
    }
    Ok(())
}

fn list(global: &GlobalArgs, limit: usize) -> Result<()> {
    let runs = read_store(global)?.list_runs(limit)?;
    if runs.is_empty() {
        println!("no runs in {}", global.store.display());
    } else {
        print!("{}", show::runs_table(&runs));
    }
    Ok(())
}

fn show(global: &GlobalArgs, id: &str, full: bool, json: bool) -> Result<()> {
    let view = RunView::load(&read_store(global)?, id)?;
    if json {
        let value = serde_json::json!({ "run": view.summary, "calls": view.calls });
        super::print_json(&value)?;
    } else {
        print!("{}", view.render(full));
    }
    Ok(())
}
