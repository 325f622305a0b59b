//! `tuningfork replay` and `tuningfork runs export|import|verify|audit`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use tuningfork::audit::{self, bundle, replay, ReplayOptions};
use tuningfork::engine::EngineFingerprint;
use tuningfork::generator::Generator;
use tuningfork::store::{NewRun, RunStatus};

use super::args::{GlobalArgs, ReplayArgs};
use super::{engine_config, finish_run, open_registry, open_store, runtime};

pub fn replay(global: &GlobalArgs, args: ReplayArgs) -> Result<()> {
    let store = open_store(global)?;
    let run = store.run(&args.run)?;
    let calls = store.run_calls(run.id)?;
    let shas = replay::models_of(&calls);
    if calls.is_empty() {
        bail!(
            "run {} recorded no model calls; there is nothing to replay",
            run.uid
        );
    }
    let registry = open_registry(global)?;
    let config = engine_config(&args.engine);
    let engines = replay::load_engines(&registry, &store, &shas, &config)?;
    let differences =
        replay::fingerprint_differences(&run.engine_fingerprint, &EngineFingerprint::current());
    for difference in &differences {
        eprintln!("warning: the engine differs from the run's: {difference}");
    }
    let options = ReplayOptions {
        sample: args.sample,
        seed: args.seed,
        jobs: args.jobs,
    };
    let first = &engines[&shas[0]];
    let replay_run_id = store.begin_run(&NewRun {
        kind: "replay",
        config: serde_json::json!({
            "replayed": run.uid,
            "options": options,
            "engine": config,
        }),
        seed: Some(args.seed),
        model_sha256: Some(first.model_sha256()),
        fingerprint: first.fingerprint(),
    })?;
    let replay_run = store.run(&replay_run_id.to_string())?;
    let generators: BTreeMap<String, Generator> = engines
        .iter()
        .map(|(sha, engine)| {
            (
                sha.clone(),
                Generator::new(Arc::clone(engine), Arc::clone(&store), replay_run_id)
                    .with_cache(false),
            )
        })
        .collect();
    let distinct: std::collections::BTreeSet<&str> = calls
        .iter()
        .filter(|c| c.error.is_none())
        .map(|c| c.request_hash.as_str())
        .collect();
    let total = args
        .sample
        .map_or(distinct.len(), |n| n.min(distinct.len()));
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} replaying [{bar:30}] {pos}/{len} calls {elapsed_precise} eta {eta}",
        )
        .expect("the template is valid")
        .progress_chars("=> "),
    );
    let on_done = || bar.inc(1);
    let result = runtime()?.block_on(replay::replay(
        &run,
        &calls,
        &replay_run,
        &generators,
        &options,
        &on_done,
    ));
    bar.finish_and_clear();
    let mut report = finish_run(&store, replay_run_id, result)?;
    report.fingerprint_differences = differences;
    replay::record(&store, &run, &replay_run, &report)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "replay of run {} ({} calls, model {}):",
            run.uid,
            report.calls,
            report
                .models
                .iter()
                .map(|m| &m[..12])
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!(
            "  {} calls checked ({} distinct requests recomputed): {} identical, {} diverged; {} failed calls skipped",
            report.checked, report.recomputed, report.identical, report.diverged, report.skipped
        );
        if report.fingerprint_differences.is_empty() {
            println!("  engine fingerprint: the same as the run's");
        } else {
            println!("  engine fingerprint differs:");
            for d in &report.fingerprint_differences {
                println!("    {d}");
            }
        }
        for d in &report.divergences {
            println!();
            println!(
                "  call {} ({}): differs from token {} (character {}){}",
                d.call_id,
                &d.request_hash[..12],
                d.token_position,
                d.char_position,
                if d.prompt_changed {
                    "; the prompt renders differently now"
                } else {
                    ""
                }
            );
            println!("    stored:   {:?}", d.stored);
            println!("    replayed: {:?}", d.replayed);
        }
        println!("  recorded as replay run {}", replay_run.uid);
    }
    if report.diverged > 0 {
        bail!(
            "{} of {} calls of run {} diverged",
            report.diverged,
            report.checked,
            run.uid
        );
    }
    Ok(())
}

pub fn export(global: &GlobalArgs, id: &str, out: &Path) -> Result<()> {
    let store = open_store(global)?;
    let run = store.run(id)?;
    if run.status == RunStatus::Running.as_str() {
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
        return Ok(());
    }
    let r = &report.summary.run;
    println!("AUDIT REPORT — run {} ({})", r.uid, r.kind);
    println!();
    println!(
        "status       {}{}",
        r.status,
        r.error
            .as_deref()
            .map_or(String::new(), |e| format!(" ({e})"))
    );
    println!("started      {}", r.started_at);
    println!("ended        {}", r.ended_at.as_deref().unwrap_or("-"));
    println!("host         {}", r.host);
    println!(
        "seed         {}",
        r.seed.map_or("-".to_string(), |s| s.to_string())
    );
    println!(
        "digest       {} (the head of its bundle's hash chain)",
        report.digest
    );
    println!();
    println!("Environment");
    if let Some(fp) = r.engine_fingerprint.as_object() {
        for (k, v) in fp {
            println!(
                "  {k:<16} {}",
                v.as_str().map_or_else(|| v.to_string(), str::to_string)
            );
        }
    }
    println!("  {:<16} {}", "fingerprint id", r.engine_fingerprint_id);
    println!();
    println!("Models");
    for m in &report.models {
        println!(
            "  {} {} ({} bytes) sha256 {}",
            m["name"].as_str().unwrap_or("?"),
            m["file"].as_str().unwrap_or("?"),
            m["size"],
            m["sha256"].as_str().unwrap_or("?")
        );
        if let Some(source) = m["pin"].get("source") {
            println!("    source {source}");
        }
    }
    println!();
    println!("Inputs and outcome");
    if report.loops.is_empty() {
        println!("  config {}", r.config);
    }
    for l in &report.loops {
        println!(
            "  loop {}: task {} ({}), optimizer {}, seed {}",
            l.loop_index, l.task, l.task_file, l.optimizer, l.seed
        );
        for split in ["train", "val", "test"] {
            println!(
                "    {split:<5} {} rows, sha256 {}",
                l.splits[split]["rows"],
                l.splits[split]["hash"].as_str().unwrap_or("?")
            );
        }
        match &l.outcome {
            Some(o) if o.get("artifact_hash").is_some() => println!(
                "    {}: baseline val {} test {}; optimized val {} test {}; artifact {}",
                l.status,
                o["baseline"]["val"],
                o["baseline"]["test"],
                o["optimized"]["val"],
                o["optimized"]["test"],
                o["artifact_hash"].as_str().unwrap_or("?")
            ),
            _ => println!(
                "    {}{}",
                l.status,
                l.stop_reason
                    .as_deref()
                    .map_or(String::new(), |s| format!(": {s}"))
            ),
        }
    }
    println!();
    println!(
        "Calls        {} ({} from the cache, {} failed), {} prompt + {} generated tokens",
        report.summary.calls,
        report.summary.cache_hits,
        report.summary.failed_calls,
        report.summary.prompt_tokens,
        report.summary.completion_tokens
    );
    println!();
    println!("Replays");
    if report.replays.is_empty() {
        println!("  none yet: run `tuningfork replay {}`", r.uid);
    }
    for replay in &report.replays {
        println!(
            "  {}: {} calls checked, {} identical, {} diverged, {} skipped{}",
            replay.created_at,
            replay.checked,
            replay.identical,
            replay.diverged,
            replay.skipped,
            match replay.fingerprint_differences.as_array() {
                Some(d) if !d.is_empty() => format!("; engine differed in {} fields", d.len()),
                _ => "; same engine".to_string(),
            }
        );
    }
    Ok(())
}
