//! `tuningfork runs …`.

use anyhow::Result;
use tuningfork::audit::show::{self, RunView};

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
            keep_days,
            keep_max,
        } => {
            let pruned = open_store(global)?.prune_traces(&tuningfork::store::Retention {
                keep_days,
                keep_max,
            })?;
            println!(
                "removed {} traces, {} calls and {} empty server runs",
                pruned.traces, pruned.calls, pruned.runs
            );
            Ok(())
        }
    }
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
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print!("{}", view.render(full));
    }
    Ok(())
}
