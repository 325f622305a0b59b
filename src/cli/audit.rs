//! `tuningfork replay` and `tuningfork runs export|import|verify|audit`.

use std::path::Path;

use anyhow::{bail, Result};
use tuningfork::audit::{self, bundle, ReplayOptions};
use tuningfork::store::RunStatus;
use tuningfork::workspace::{self, ReplayRequest};

use super::args::{GlobalArgs, ReplayArgs};
use super::progress::CountBar;
use super::{open_store, read_store, workspace, Runner};

pub fn replay(global: &GlobalArgs, args: ReplayArgs) -> Result<()> {
    let ws = workspace(global, &args.engine)?;
    let request = ReplayRequest {
        run: args.run.clone(),
        options: ReplayOptions {
            sample: args.sample,
            seed: args.seed,
            jobs: args.jobs,
        },
    };
    let bar = CountBar::new(
        "replaying",
        "{spinner} {msg} [{bar:30}] {pos}/{len} calls {elapsed_precise} eta {eta}",
    );
    let runner = Runner::new()?;
    let on_done = || bar.inc();
    let report = runner.run(workspace::replay(&ws, &request, &on_done, runner.token()));
    drop(bar);
    let report = report?;
    if args.json {
        super::print_json(&report)?;
    } else {
        println!("{report}");
    }
    if report.diverged > 0 {
        bail!(
            "{} of {} calls of run {} diverged",
            report.diverged,
            report.checked,
            report.run
        );
    }
    Ok(())
}

pub fn export(global: &GlobalArgs, id: &str, out: &Path) -> Result<()> {
    let store = read_store(global)?;
    let run = store.run(id)?;
    if run.status == RunStatus::Running {
        eprintln!(
            "warning: run {} is still marked running; the bundle holds what is stored so far",
            run.uid
        );
    }
    let summary = bundle::export_file(&store, run.id, out)?;
    println!(
        "wrote run {} to {}: {} records ({}), digest {}",
        summary.run_uid,
        out.display(),
        summary.records,
        summary.counts_text(),
        summary.head
    );
    Ok(())
}

pub fn import(global: &GlobalArgs, file: &Path) -> Result<()> {
    let store = open_store(global)?;
    let name = file.display().to_string();
    let (run_id, summary) = bundle::import(&store, &mut bundle::open_file(file)?, &name)?;
    println!(
        "imported run {} as run {run_id}: {} records ({}), digest {}",
        summary.run_uid,
        summary.records,
        summary.counts_text(),
        summary.head
    );
    println!("check it here with: tuningfork replay {}", summary.run_uid);
    Ok(())
}

pub fn verify(file: &Path) -> Result<()> {
    let name = file.display().to_string();
    let (_, summary) = bundle::read(&mut bundle::open_file(file)?, &name)?;
    println!(
        "{name}: intact; run {}, {} records ({}), digest {}",
        summary.run_uid,
        summary.records,
        summary.counts_text(),
        summary.head
    );
    Ok(())
}

pub fn audit_report(global: &GlobalArgs, id: &str, json: bool) -> Result<()> {
    let store = read_store(global)?;
    let run = store.run(id)?;
    let report = audit::report(&store, run.id)?;
    if json {
        super::print_json(&report)?;
    } else {
        print!("{report}");
    }
    Ok(())
}
