//! `tuningfork replay` and `tuningfork runs export|import|verify|audit`.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use tuningfork::audit::{self, bundle, ReplayOptions};
use tuningfork::store::RunStatus;
use tuningfork::workspace::{self, ReplayRequest};

use super::args::{GlobalArgs, ReplayArgs};
use super::progress::CountBar;
use super::{open_store, workspace, Runner};

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
        println!("{}", serde_json::to_string_pretty(&report)?);
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
    let store = open_store(global)?;
    let run = store.run(id)?;
    if run.status == RunStatus::Running {
        eprintln!(
            "warning: run {} is still marked running; the bundle holds what is stored so far",
            run.uid
        );
    }
    // Written next to the target and renamed, so a failed export leaves no partial bundle.
    let partial = out.with_extension("partial");
    let file = std::fs::File::create(&partial)
        .with_context(|| format!("cannot create {}", partial.display()))?;
    let mut writer = std::io::BufWriter::new(file);
    let summary = bundle::export(&store, run.id, &mut writer)?;
    std::io::Write::flush(&mut writer)
        .with_context(|| format!("cannot write {}", partial.display()))?;
    std::fs::rename(&partial, out).with_context(|| format!("cannot write {}", out.display()))?;
    println!(
        "wrote run {} to {}: {} records ({}), digest {}",
        summary.run_uid,
        out.display(),
        summary.records,
        counts(&summary.counts),
        summary.head
    );
    Ok(())
}

fn counts(counts: &BTreeMap<String, u64>) -> String {
    counts
        .iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn open_bundle(file: &Path) -> Result<std::io::BufReader<std::fs::File>> {
    let f = std::fs::File::open(file).with_context(|| format!("cannot read {}", file.display()))?;
    Ok(std::io::BufReader::new(f))
}

pub fn import(global: &GlobalArgs, file: &Path) -> Result<()> {
    let store = open_store(global)?;
    let (run_id, summary) =
        bundle::import(&store, &mut open_bundle(file)?, &file.display().to_string())?;
    println!(
        "imported run {} as run {run_id}: {} records ({}), digest {}",
        summary.run_uid,
        summary.records,
        counts(&summary.counts),
        summary.head
    );
    println!("check it here with: tuningfork replay {}", summary.run_uid);
    Ok(())
}

pub fn verify(file: &Path) -> Result<()> {
    let (_, summary) = bundle::read(&mut open_bundle(file)?, &file.display().to_string())?;
    println!(
        "{}: intact; run {}, {} records ({}), digest {}",
        file.display(),
        summary.run_uid,
        summary.records,
        counts(&summary.counts),
        summary.head
    );
    Ok(())
}

pub fn audit_report(global: &GlobalArgs, id: &str, json: bool) -> Result<()> {
    let store = open_store(global)?;
    let run = store.run(id)?;
    let report = audit::report(&store, run.id)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    Ok(())
}
