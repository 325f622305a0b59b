//! Reproducibility audits: replay a stored run's calls, compare a rerun with its original,
//! carry a run to another store as a hash-chained bundle, and report on a run.
//!
//! Architecture Invariant: audits read runs from the store only — never from task or data
//! files on disk — so a run can be audited on a machine that never saw those files.

pub mod bundle;
pub mod replay;
pub mod show;

use serde::Serialize;

use crate::dataset::DataCleaning;
use crate::engine::EngineError;
use crate::generator::GenerateError;
use crate::optimize::LoopOutcome;
use crate::store::{LoopStatus, ReplayRow, RunSummary, Store, StoreError};

pub use bundle::{BundleError, BundleSummary};
pub use replay::{Divergence, ReplayOptions, ReplayReport};

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("the run used the model with sha256 {sha256}, which no pin in {registry} has (pinned: {pinned}); pin that exact file with `tuningfork models add FILE --name NAME`, or pass --models-dir")]
    ModelNotPinned {
        sha256: String,
        registry: String,
        pinned: String,
    },
    #[error(transparent)]
    Generate(#[from] GenerateError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error("{0}")]
    Invalid(String),
}

/// Where a rerun departs from its original: one line per difference, empty when it matches.
pub fn compare_runs(store: &Store, original: i64, rerun: i64) -> Result<Vec<String>, AuditError> {
    let (a, b) = (store.optimizations(original)?, store.optimizations(rerun)?);
    let mut departures = Vec::new();
    if a.len() != b.len() {
        departures.push(format!("{} loops, then {}", a.len(), b.len()));
    }
    for (x, y) in a.iter().zip(&b) {
        let name = format!("loop {} ({} · {})", x.loop_index, x.task, x.optimizer);
        let (cx, cy) = (store.candidates(x.id)?, store.candidates(y.id)?);
        for i in 0..cx.len().max(cy.len()) {
            match (cx.get(i), cy.get(i)) {
                (Some(p), Some(q)) => {
                    if p.program_hash != q.program_hash {
                        departures.push(format!(
                            "{name}: candidate #{i} `{}` has program {}, the rerun {}",
                            p.label,
                            crate::artifact::short(&p.program_hash),
                            crate::artifact::short(&q.program_hash)
                        ));
                    } else if p.val_score != q.val_score {
                        departures.push(format!(
                            "{name}: candidate #{i} `{}` scored {:?} on val, the rerun {:?}",
                            p.label, p.val_score, q.val_score
                        ));
                    }
                }
                (Some(p), None) => departures.push(format!(
                    "{name}: candidate #{i} `{}` is missing from the rerun",
                    p.label
                )),
                (None, Some(q)) => departures.push(format!(
                    "{name}: the rerun has an extra candidate #{i} `{}`",
                    q.label
                )),
                (None, None) => {}
            }
        }
        // The first example of each subject and split whose result differs.
        let subjects: std::collections::BTreeSet<(String, String)> = store
            .result_counts(x.id)?
            .into_iter()
            .chain(store.result_counts(y.id)?)
            .map(|(subject, split, _)| (subject, split))
            .collect();
        for (subject, split) in subjects {
            let (rx, ry) = (
                store.results(x.id, &subject, &split)?,
                store.results(y.id, &subject, &split)?,
            );
            let differing = rx
                .iter()
                .zip(&ry)
                .find(|(p, q)| p.score != q.score || p.outputs != q.outputs);
            if let Some((p, q)) = differing {
                departures.push(format!(
                    "{name}: {} on {split} example {} ({}): output {} score {}, the rerun output {} score {}",
                    short(&subject),
                    p.example_index,
                    p.source,
                    p.outputs.as_ref().map_or("-".to_string(), |o| o.to_string()),
                    p.score,
                    q.outputs.as_ref().map_or("-".to_string(), |o| o.to_string()),
                    q.score
                ));
            } else if rx.len() != ry.len() {
                departures.push(format!(
                    "{name}: {} on {split}: {} results, the rerun {}",
                    short(&subject),
                    rx.len(),
                    ry.len()
                ));
            }
        }
        let outcome = |s: &Option<serde_json::Value>| {
            s.clone()
                .and_then(|v| serde_json::from_value::<LoopOutcome>(v).ok())
        };
        match (outcome(&x.summary), outcome(&y.summary)) {
            (Some(p), Some(q)) => {
                if p.artifact_hash != q.artifact_hash {
                    departures.push(format!(
                        "{name}: the result is artifact {}, the rerun's {}",
                        crate::artifact::short(&p.artifact_hash),
                        crate::artifact::short(&q.artifact_hash)
                    ));
                }
                if p.baseline != q.baseline || p.optimized != q.optimized {
                    departures.push(format!(
                        "{name}: scores baseline {:?} optimized {:?}, the rerun baseline {:?} optimized {:?}",
                        p.baseline, p.optimized, q.baseline, q.optimized
                    ));
                }
            }
            (p, q) => {
                if p.is_some() != q.is_some() {
                    departures.push(format!(
                        "{name}: ended {}, the rerun {}",
                        x.status, y.status
                    ));
                }
            }
        }
    }
    Ok(departures)
}

/// `teacher:…` subjects and program hashes, shortened for messages.
fn short(subject: &str) -> String {
    match subject.strip_prefix("teacher:") {
        Some(rest) => format!("teacher {}", crate::artifact::short(rest)),
        None => format!("program {}", crate::artifact::short(subject)),
    }
}

/// One loop's inputs and outcome, as the audit report lists them.
#[derive(Debug, Clone, Serialize)]
pub struct LoopAudit {
    pub loop_index: i64,
    pub task: String,
    pub task_file: String,
    pub optimizer: serde_json::Value,
    pub seed: serde_json::Value,
    pub splits: serde_json::Value,
    /// Lines skipped and rows dropped or accepted when the data was read.
    pub cleaning: DataCleaning,
    pub status: LoopStatus,
    pub stop_reason: Option<String>,
    pub outcome: Option<serde_json::Value>,
}

/// Everything an auditor reads about a run: inputs, environment, calls, outcome, replays,
/// and the digest its bundle would have.
#[derive(Debug, Clone, Serialize)]
pub struct AuditReport {
    /// The run and its call counts.
    #[serde(flatten)]
    pub summary: RunSummary,
    pub models: Vec<serde_json::Value>,
    pub loops: Vec<LoopAudit>,
    pub replays: Vec<ReplayRow>,
    /// The digest a bundle of the run exported from this store has.
    pub digest: String,
    /// For a run imported from a bundle: that bundle's digest, file and import time.
    pub imported_from: Option<serde_json::Value>,
}

/// Gathers the audit report of a run.
pub fn report(store: &Store, run_id: i64) -> Result<AuditReport, AuditError> {
    let summary = store.summarize(store.run(&run_id.to_string())?)?;
    // One read of the run's rows serves both the models and the digest.
    let records = store.run_records(run_id)?;
    let models = records
        .iter()
        .filter(|r| r.kind == "model")
        .map(|r| {
            let mut data = r.data.clone();
            // The pin is stored as JSON text; show it as JSON.
            if let Some(pin) = data.get("pin_json").and_then(|p| p.as_str()) {
                let pin = serde_json::from_str(pin).unwrap_or(serde_json::Value::Null);
                data.insert("pin".into(), pin);
            }
            data.remove("pin_json");
            data.remove("metadata_json");
            serde_json::Value::Object(data)
        })
        .collect();
    let loops = store
        .optimizations(run_id)?
        .into_iter()
        .map(|o| {
            let c = &o.config;
            let split = |name: &str| {
                serde_json::json!({
                    "rows": c[name].as_array().map_or(0, Vec::len),
                    "hash": c[format!("{name}_hash")],
                })
            };
            LoopAudit {
                loop_index: o.loop_index,
                task: o.task.clone(),
                task_file: c["task_file"].as_str().unwrap_or_default().to_string(),
                optimizer: c["optimizer"].clone(),
                seed: c["seed"].clone(),
                splits: serde_json::json!({
                    "train": split("train"),
                    "val": split("val"),
                    "test": split("test"),
                }),
                cleaning: serde_json::from_value(c["cleaning"].clone()).unwrap_or_default(),
                status: o.status,
                stop_reason: o.stop_reason.clone(),
                outcome: o.summary.clone(),
            }
        })
        .collect();
    Ok(AuditReport {
        digest: bundle::digest(&summary.run.uid, records)?,
        summary,
        models,
        loops,
        replays: store.replays(run_id)?,
        imported_from: store.run_import(run_id)?.map(|(digest, source, at)| {
            serde_json::json!({ "bundle_digest": digest, "source": source, "imported_at": at })
        }),
    })
}

/// The report as an auditor reads it.
impl std::fmt::Display for AuditReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = &self.summary.run;
        writeln!(f, "AUDIT REPORT — run {} ({})", r.uid, r.kind)?;
        writeln!(f)?;
        writeln!(
            f,
            "status       {}{}",
            r.status,
            r.error
                .as_deref()
                .map_or(String::new(), |e| format!(" ({e})"))
        )?;
        writeln!(f, "started      {}", r.started_at)?;
        writeln!(f, "ended        {}", r.ended_at.as_deref().unwrap_or("-"))?;
        writeln!(f, "host         {}", r.host)?;
        writeln!(
            f,
            "seed         {}",
            r.seed.map_or("-".to_string(), |s| s.to_string())
        )?;
        writeln!(
            f,
            "digest       {} (the head of its bundle's hash chain)",
            self.digest
        )?;
        writeln!(f)?;
        writeln!(f, "Environment")?;
        if let Some(fp) = r.engine_fingerprint.as_object() {
            for (k, v) in fp {
                writeln!(
                    f,
                    "  {k:<16} {}",
                    v.as_str().map_or_else(|| v.to_string(), str::to_string)
                )?;
            }
        }
        writeln!(f, "  {:<16} {}", "fingerprint id", r.engine_fingerprint_id)?;
        writeln!(f)?;
        writeln!(f, "Models")?;
        for m in &self.models {
            writeln!(
                f,
                "  {} {} ({} bytes) sha256 {}",
                m["name"].as_str().unwrap_or("?"),
                m["file"].as_str().unwrap_or("?"),
                m["size"],
                m["sha256"].as_str().unwrap_or("?")
            )?;
            if let Some(source) = m["pin"].get("source") {
                writeln!(f, "    source {source}")?;
            }
        }
        writeln!(f)?;
        writeln!(f, "Inputs and outcome")?;
        if self.loops.is_empty() {
            writeln!(f, "  config {}", r.config)?;
        }
        for l in &self.loops {
            writeln!(
                f,
                "  loop {}: task {} ({}), optimizer {}, seed {}",
                l.loop_index, l.task, l.task_file, l.optimizer, l.seed
            )?;
            for split in ["train", "val", "test"] {
                writeln!(
                    f,
                    "    {split:<5} {} rows, sha256 {}",
                    l.splits[split]["rows"],
                    l.splits[split]["hash"].as_str().unwrap_or("?")
                )?;
            }
            if !l.cleaning.is_empty() {
                writeln!(f, "    data  {}", l.cleaning)?;
            }
            match &l.outcome {
                Some(o) if o.get("artifact_hash").is_some() => writeln!(
                    f,
                    "    {}: baseline val {} test {}; optimized val {} test {}; artifact {}",
                    l.status,
                    o["baseline"]["val"],
                    o["baseline"]["test"],
                    o["optimized"]["val"],
                    o["optimized"]["test"],
                    o["artifact_hash"].as_str().unwrap_or("?")
                ),
                _ => writeln!(
                    f,
                    "    {}{}",
                    l.status,
                    l.stop_reason
                        .as_deref()
                        .map_or(String::new(), |s| format!(": {s}"))
                ),
            }?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "Calls        {} ({} from the cache, {} failed), {} prompt + {} generated tokens",
            self.summary.calls,
            self.summary.cache_hits,
            self.summary.failed_calls,
            self.summary.prompt_tokens,
            self.summary.completion_tokens
        )?;
        writeln!(f)?;
        writeln!(f, "Replays")?;
        if self.replays.is_empty() {
            writeln!(f, "  none yet: run `tuningfork replay {}`", r.uid)?;
        }
        for replay in &self.replays {
            writeln!(
                f,
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
            )?;
        }
        Ok(())
    }
}
