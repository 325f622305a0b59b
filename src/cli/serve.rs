//! `tuningfork serve`, `traces …` and `dataset …`.

use std::io::Write;

use anyhow::{Context, Result};
use tuningfork::serve::{ServeConfig, Server};
use tuningfork::store::{Retention, TraceFilter};
use tuningfork::task::Task;

use super::args::{DatasetCommand, GlobalArgs, ServeArgs, TraceFilterArgs, TracesCommand};
use super::{open_store, read_store, workspace, Runner};

pub fn serve(global: &GlobalArgs, args: ServeArgs) -> Result<()> {
    let ws = workspace(global, &args.engine)?;
    let runner = Runner::new()?;
    let config = ServeConfig {
        models: args.models,
        programs: args.programs,
        api_key: args.api_key,
        max_body_bytes: args.max_body,
        max_tokens: args.max_tokens,
        max_concurrent: args.max_concurrent,
        use_cache: !args.no_cache,
        retention: Retention {
            keep_days: args.keep_days,
            keep_max: args.keep_max,
        },
        ..ServeConfig::new(args.addr)
    };
    let server = runner.run(Server::start(&ws, config, runner.token()))?;
    println!(
        "listening on http://{} (run {}): {}",
        server.local_addr(),
        server.run_id(),
        server.served().join(", ")
    );
    std::io::stdout().flush().ok();
    let report = runner.run(server.run())?;
    eprintln!(
        "stopped: run {} answered {} requests",
        report.run_id, report.requests
    );
    Ok(())
}

fn filter(args: TraceFilterArgs, limit: Option<usize>) -> TraceFilter {
    TraceFilter {
        program: args.program,
        since: args.since,
        until: args.until,
        errors: match (args.errors, args.ok) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        },
        min_score: args.min_score,
        max_score: args.max_score,
        limit,
    }
}

pub fn traces(global: &GlobalArgs, command: TracesCommand) -> Result<()> {
    let store = open_store(global)?;
    match command {
        TracesCommand::List {
            filter: args,
            limit,
            json,
        } => {
            let traces = store.traces(&filter(args, Some(limit)))?;
            if json {
                super::print_json(&traces)?;
            } else if traces.is_empty() {
                println!("no traces in {}", global.store.display());
            } else {
                print!("{}", tuningfork::serve::traces_table(&traces));
            }
        }
        TracesCommand::Show { id } => {
            let trace = store.trace(&id)?;
            super::print_json(&trace)?;
        }
        TracesCommand::Export { filter: args, out } => {
            let mut traces = store.traces(&filter(args, None))?;
            traces.reverse();
            let lines: Vec<serde_json::Value> = traces
                .iter()
                .map(serde_json::to_value)
                .collect::<Result<_, _>>()?;
            write_jsonl(&out, &lines)?;
            println!("wrote {} traces to {}", lines.len(), out.display());
        }
    }
    Ok(())
}

fn write_jsonl(path: &std::path::Path, rows: &[serde_json::Value]) -> Result<()> {
    let mut text = String::new();
    for row in rows {
        text.push_str(&row.to_string());
        text.push('\n');
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

pub fn dataset(global: &GlobalArgs, command: DatasetCommand) -> Result<()> {
    match command {
        DatasetCommand::FromTraces { filter: args, out } => {
            if args.program.is_none() {
                anyhow::bail!("give --program NAME: the program whose traces become rows");
            }
            let traces = read_store(global)?.traces(&filter(args, None))?;
            let rows = tuningfork::serve::dataset_rows(&traces);
            write_jsonl(&out, &rows)?;
            println!(
                "wrote {} rows to {} from {} traces; review each row's labels, then remove \
                 its \"_review\" marker (or set it to \"reviewed\") and run `tuningfork \
                 dataset add TASK {}`",
                rows.len(),
                out.display(),
                traces.len(),
                out.display()
            );
        }
        DatasetCommand::Add { task, file } => {
            let task = Task::load(&task)?;
            let added = tuningfork::dataset::add_reviewed(
                &task.dataset,
                &task.base_dir,
                &task.example_fields(),
                &task.example_inputs(),
                &file,
            )?;
            println!(
                "added {} rows to {}; left out {} unreviewed, {} duplicates, {} rows whose \
                 inputs are validation or test examples",
                added.added,
                added.file.display(),
                added.unreviewed,
                added.duplicates,
                added.leaks
            );
            println!(
                "train split {} -> {}; dataset {}",
                tuningfork::artifact::short(&added.train_hash.0),
                tuningfork::artifact::short(&added.train_hash.1),
                tuningfork::artifact::short(&added.dataset_hash)
            );
        }
    }
    Ok(())
}
