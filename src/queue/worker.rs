//! The worker: claims one job at a time, runs a cycle of it through the workspace's engine
//! pool, gates promotion on the held-out test split, tells `--notify`, and sleeps when nothing
//! is due. A job left running by a worker that died is taken over and its cycle resumed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::{cycle_loops, input_hash, job_inputs, job_spec, read_tasks, JobSpec, TaskSnapshot};
use crate::observe::Observer;
use crate::optimize::{LoopOutcome, Tracker};
use crate::store::{JobRecord, JobStatus, WorkerId};
use crate::workspace::{
    optimize_loops, resume, LoopObservers, OptimizeReport, Workspace, WorkspaceError,
};

/// How a worker behaves.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// How long to sleep when nothing is due.
    pub poll: Duration,
    /// How long a claim holds without a heartbeat; another worker may then take the job.
    pub lease_seconds: u64,
    /// How often a running job's claim is renewed and its progress recorded.
    pub heartbeat: Duration,
    /// Run each job that is due at most once, then return instead of sleeping.
    pub drain: bool,
    /// How long a `--notify` command may run.
    pub notify_timeout: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            poll: Duration::from_secs(30),
            lease_seconds: 120,
            heartbeat: Duration::from_secs(5),
            drain: false,
            notify_timeout: Duration::from_secs(60),
        }
    }
}

/// What a worker tells its front end.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerEvent {
    /// A cycle began (or an abandoned one is resumed).
    Started {
        job: i64,
        cycle: i64,
        trigger: String,
        what: String,
    },
    /// A cycle ended; `text` says how, with the promotion decision.
    Ended {
        job: i64,
        cycle: i64,
        status: String,
        text: String,
    },
    /// Nothing is due; the worker sleeps for this long.
    Idle { seconds: u64 },
}

/// What a worker did before it returned.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct WorkerSummary {
    pub cycles: usize,
    pub completed: usize,
    pub failed: usize,
    pub promoted: usize,
}

/// What a running job is doing, recorded with each heartbeat for `tuningfork status`.
#[derive(Debug, Default)]
pub struct Progress {
    run: Mutex<Option<String>>,
    loops: Mutex<BTreeMap<String, LoopProgress>>,
    tracker: Mutex<Option<Arc<Tracker>>>,
}

#[derive(Debug, Clone, Default, Serialize)]
struct LoopProgress {
    stage: String,
    done: u64,
    total: u64,
    best: Option<f64>,
}

impl Progress {
    fn to_json(&self) -> serde_json::Value {
        let tracker = self.tracker.lock().unwrap_or_else(|p| p.into_inner());
        let budget = tracker.as_ref().map(|t| {
            serde_json::json!({
                "calls": t.calls(),
                "tokens": t.tokens(),
                "calls_limit": t.budget().calls,
                "tokens_limit": t.budget().tokens,
                "time_left_s": t.time_left().map(|d| d.as_secs()),
            })
        });
        serde_json::json!({
            "run": *self.run.lock().unwrap_or_else(|p| p.into_inner()),
            "loops": *self.loops.lock().unwrap_or_else(|p| p.into_inner()),
            "budget": budget,
        })
    }

    /// A recorded progress value as one line: each loop's stage, progress and best score,
    /// then the budget used and left.
    pub fn line(progress: &serde_json::Value) -> String {
        let mut parts = Vec::new();
        if let Some(loops) = progress["loops"].as_object() {
            for (label, l) in loops {
                let best = l["best"]
                    .as_f64()
                    .map_or(String::new(), |b| format!(", best val {b:.3}"));
                parts.push(format!(
                    "{label}: {} {}/{}{best}",
                    l["stage"].as_str().unwrap_or("?"),
                    l["done"],
                    l["total"]
                ));
            }
        }
        let b = &progress["budget"];
        if b.is_object() {
            let limit = |k: &str| b[k].as_u64().map_or(String::new(), |v| format!(" of {v}"));
            let mut budget = format!(
                "{} calls{}, {} tokens{}",
                b["calls"],
                limit("calls_limit"),
                b["tokens"],
                limit("tokens_limit")
            );
            if let Some(left) = b["time_left_s"].as_u64() {
                budget.push_str(&format!(
                    ", {} left",
                    crate::optimize::budget::format_duration(left)
                ));
            }
            parts.push(budget);
        }
        if let Some(run) = progress["run"].as_str() {
            parts.push(format!("run {run}"));
        }
        parts.join("; ")
    }
}

struct LoopWatcher {
    label: String,
    progress: Arc<Progress>,
}

impl LoopWatcher {
    fn update(&self, change: impl FnOnce(&mut LoopProgress)) {
        let mut loops = self
            .progress
            .loops
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        change(loops.entry(self.label.clone()).or_default());
    }
}

impl Observer for LoopWatcher {
    fn stage(&self, stage: &str, total: u64) {
        self.update(|l| {
            l.stage = stage.to_string();
            l.done = 0;
            l.total = total;
        });
    }
    fn advance(&self) {
        self.update(|l| l.done += 1);
    }
    fn scored(&self, _label: &str, _score: f64, best: f64) {
        self.update(|l| l.best = Some(best));
    }
}

impl LoopObservers for Arc<Progress> {
    fn observer(&self, label: &str, tracker: &Arc<Tracker>) -> Arc<dyn Observer> {
        *self.tracker.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::clone(tracker));
        Arc::new(LoopWatcher {
            label: label.to_string(),
            progress: Arc::clone(self),
        })
    }
}

/// Whether a process of this host still runs.
fn alive(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        std::path::Path::new(&format!("/proc/{pid}")).exists()
    } else {
        // Elsewhere only the lease decides.
        true
    }
}

/// Runs jobs until `cancel` fires (or, with `drain`, until nothing is due).
pub async fn run_worker(
    ws: &Workspace,
    config: &WorkerConfig,
    events: &(dyn Fn(WorkerEvent) + Send + Sync),
    cancel: CancellationToken,
) -> Result<WorkerSummary, WorkspaceError> {
    let me = WorkerId::this_process();
    let mut summary = WorkerSummary::default();
    // Draining runs each job at most once, so a schedule shorter than a cycle still ends.
    let mut ran = std::collections::BTreeSet::new();
    while !cancel.is_cancelled() {
        let skip = if config.drain {
            &ran
        } else {
            &Default::default()
        };
        let Some((job, trigger)) = claim_next(ws, &me, config, skip)? else {
            if config.drain {
                break;
            }
            events(WorkerEvent::Idle {
                seconds: config.poll.as_secs(),
            });
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(config.poll) => continue,
            }
        };
        ran.insert(job.id);
        let outcome = run_claimed(ws, &me, config, &job, &trigger, events, &cancel).await?;
        summary.cycles += 1;
        match outcome {
            Some(Cycle::Completed { promoted }) => {
                summary.completed += 1;
                summary.promoted += promoted as usize;
            }
            Some(Cycle::Failed) => summary.failed += 1,
            None => {}
        }
    }
    Ok(summary)
}

/// The next job to run and why: an abandoned one first (its cycle resumes), then queued ones
/// in order, then waiting ones whose schedule is due or whose inputs changed.
fn claim_next(
    ws: &Workspace,
    me: &WorkerId,
    config: &WorkerConfig,
    skip: &std::collections::BTreeSet<i64>,
) -> Result<Option<(JobRecord, String)>, WorkspaceError> {
    let store = ws.store();
    for job in store.abandoned_jobs(&alive)? {
        if store.claim_job(
            job.id,
            JobStatus::Running,
            job.worker.as_deref(),
            me,
            config.lease_seconds,
        )? {
            return Ok(Some((job, "resumed".into())));
        }
    }
    for job in store
        .jobs(false)?
        .into_iter()
        .filter(|j| !skip.contains(&j.id))
    {
        let trigger = match job.status {
            JobStatus::Queued => "queued",
            JobStatus::Waiting if store.job_due(job.id)? => "schedule",
            JobStatus::Waiting if job.on_change && inputs_changed(&job) => "change",
            _ => continue,
        };
        if store.claim_job(job.id, job.status, None, me, config.lease_seconds)? {
            return Ok(Some((job, trigger.into())));
        }
    }
    Ok(None)
}

/// Whether a job's task files now read differently from what it last ran on. Files that
/// cannot be read count as unchanged: the job keeps its snapshot.
fn inputs_changed(job: &JobRecord) -> bool {
    let Ok(spec) = job_spec(job) else {
        return false;
    };
    read_tasks(&spec.tasks).is_ok_and(|snapshots| input_hash(&snapshots) != job.input_hash)
}

enum Cycle {
    Completed { promoted: bool },
    Failed,
}

/// Runs one cycle of a claimed job under a heartbeat; releases the job afterwards. `None`
/// when the cycle was interrupted (the worker stopping, or the job cancelled).
async fn run_claimed(
    ws: &Workspace,
    me: &WorkerId,
    config: &WorkerConfig,
    job: &JobRecord,
    trigger: &str,
    events: &(dyn Fn(WorkerEvent) + Send + Sync),
    cancel: &CancellationToken,
) -> Result<Option<Cycle>, WorkspaceError> {
    let store = ws.store();
    let progress = Arc::new(Progress::default());
    let token = cancel.child_token();
    // The heartbeat renews the claim and records progress; when the claim is lost (the job
    // was cancelled, or taken over after a stall) it stops the cycle.
    let heartbeat = {
        let (store, progress, token) = (Arc::clone(store), Arc::clone(&progress), token.clone());
        let (job, worker, lease, every) = (
            job.id,
            me.id.clone(),
            config.lease_seconds,
            config.heartbeat,
        );
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = tokio::time::sleep(every) => {}
                }
                match store.heartbeat_job(job, &worker, lease, Some(&progress.to_json())) {
                    Ok(true) => {}
                    Ok(false) => {
                        token.cancel();
                        break;
                    }
                    Err(e) => tracing::warn!("job {job}: heartbeat failed: {e}"),
                }
            }
        })
    };
    let result = cycle(ws, job, trigger, &progress, events, config, &token).await;
    let lost = token.is_cancelled() && !cancel.is_cancelled();
    token.cancel();
    let _ = heartbeat.await;
    let (cycle, error) = match result {
        Ok(cycle) => (cycle, None),
        Err(e) => (Some(Cycle::Failed), Some(e)),
    };
    if cancel.is_cancelled() || lost || cycle.is_none() {
        if !lost {
            // The worker is stopping: let the claim lapse now, so the next worker resumes the
            // cycle without waiting out the lease.
            store.heartbeat_job(job.id, &me.id, 0, None)?;
        }
        return Ok(None);
    }
    let recurring = job.recurring();
    let status = match (&cycle, recurring) {
        (_, true) => JobStatus::Waiting,
        (Some(Cycle::Completed { .. }), false) => JobStatus::Done,
        _ => JobStatus::Failed,
    };
    let message = error.as_ref().map(|e| e.to_string());
    store.release_job(
        job.id,
        &me.id,
        status,
        job.every_seconds,
        message.as_deref(),
    )?;
    Ok(cycle)
}

/// One cycle: the run (new, or the abandoned one resumed), the gate, the notification. An
/// error here fails the cycle, which is recorded; `Ok(None)` when it was interrupted.
async fn cycle(
    ws: &Workspace,
    job: &JobRecord,
    trigger: &str,
    progress: &Arc<Progress>,
    events: &(dyn Fn(WorkerEvent) + Send + Sync),
    config: &WorkerConfig,
    token: &CancellationToken,
) -> Result<Option<Cycle>, WorkspaceError> {
    let store = ws.store();
    let spec = job_spec(job)?;
    let what = super::describe(job);
    // An abandoned cycle resumes; anything else starts a new one.
    let unfinished = store
        .cycles(job.id)?
        .pop()
        .filter(|c| trigger == "resumed" && (c.status == "running" || c.status == "interrupted"));
    let (cycle_id, run_uid, inputs) = match unfinished {
        Some(c) => {
            let run = match &c.run_uid {
                Some(uid) => Some(uid.clone()),
                None => store.cycle_run(c.id)?,
            };
            (c.id, run, None)
        }
        None => match current_inputs(ws, job, &spec) {
            Ok((snapshots, hash)) => {
                let id = store.begin_cycle(job.id, trigger, &hash)?;
                (id, None, Some((snapshots, hash)))
            }
            Err(e) => {
                let id = store.begin_cycle(job.id, trigger, &job.input_hash)?;
                return Err(fail_cycle(ws, events, job.id, id, e));
            }
        },
    };
    events(WorkerEvent::Started {
        job: job.id,
        cycle: cycle_id,
        trigger: trigger.into(),
        what,
    });
    *progress.run.lock().unwrap_or_else(|p| p.into_inner()) = run_uid.clone();
    let result = match run_uid {
        Some(uid) => resume(ws, &uid, progress, token.clone()).await,
        None => {
            // A cycle abandoned before its run began starts it from the stored snapshot.
            let (snapshots, hash) = match inputs {
                Some(inputs) => inputs,
                None => (job_inputs(job)?, job.input_hash.clone()),
            };
            let started = Started {
                job: job.id,
                cycle: cycle_id,
                trigger,
                snapshots: &snapshots,
                hash: &hash,
            };
            start_run(ws, &spec, started, progress, token).await
        }
    };
    let report = match result {
        Ok(report) => report,
        Err(WorkspaceError::Interrupted { run, .. }) => {
            store.set_cycle_run(cycle_id, &run)?;
            store.finish_cycle(cycle_id, "interrupted", None, None, None, None)?;
            return Ok(None);
        }
        Err(WorkspaceError::Cancelled) => {
            store.finish_cycle(cycle_id, "interrupted", None, None, None, None)?;
            return Ok(None);
        }
        Err(e) => {
            if let Some(uid) = store.cycle_run(cycle_id)? {
                store.set_cycle_run(cycle_id, &uid)?;
            }
            return Err(fail_cycle(ws, events, job.id, cycle_id, e));
        }
    };
    store.set_cycle_run(cycle_id, &report.run.uid)?;
    if report.run.status == crate::store::RunStatus::Interrupted {
        // Stopped by a full disk: like any interruption, the cycle is resumed later.
        store.finish_cycle(cycle_id, "interrupted", None, None, None, None)?;
        return Ok(None);
    }
    let error = report.first_error().map(str::to_string);
    let decision = match (&spec.promote, &error) {
        (Some(name), None) => Some(gate(ws, name, spec.margin, &report)?),
        _ => None,
    };
    let promoted = decision
        .as_ref()
        .is_some_and(|d| d["promoted"].as_bool() == Some(true));
    let chosen = best_loop(&report).map(|o| o.artifact_hash.clone());
    let status = if error.is_some() {
        "failed"
    } else {
        "completed"
    };
    let mut summary = summary_json(job, cycle_id, trigger, status, &report, &decision, &error);
    if let Some(program) = spec.notify.first() {
        summary["notify"] =
            notify(program, &spec.notify[1..], &summary, config.notify_timeout).await;
    }
    store.finish_cycle(
        cycle_id,
        status,
        chosen.as_deref(),
        decision.as_ref(),
        Some(&summary),
        error.as_deref(),
    )?;
    let mut text = format!("run {}", report.run.uid);
    if let Some(d) = &decision {
        text.push_str(&format!("; {}", super::decision_line(d)));
    }
    if let Some(e) = &error {
        text.push_str(&format!("; {e}"));
    }
    events(WorkerEvent::Ended {
        job: job.id,
        cycle: cycle_id,
        status: status.into(),
        text,
    });
    match error {
        Some(e) => Err(WorkspaceError::Invalid(e)),
        None => Ok(Some(Cycle::Completed { promoted })),
    }
}

/// Records a cycle as failed with `error`, tells the front end, and hands the error back.
fn fail_cycle(
    ws: &Workspace,
    events: &(dyn Fn(WorkerEvent) + Send + Sync),
    job: i64,
    cycle: i64,
    error: WorkspaceError,
) -> WorkspaceError {
    let message = error.to_string();
    let recorded = ws
        .store()
        .finish_cycle(cycle, "failed", None, None, None, Some(&message));
    if let Err(e) = recorded {
        return e.into();
    }
    events(WorkerEvent::Ended {
        job,
        cycle,
        status: "failed".into(),
        text: message,
    });
    error
}

/// The job's tasks as they are now, with their hash: re-read from their files (recording the
/// new snapshot when they changed), or the stored snapshot when a task file is gone.
fn current_inputs(
    ws: &Workspace,
    job: &JobRecord,
    spec: &JobSpec,
) -> Result<(Vec<TaskSnapshot>, String), WorkspaceError> {
    if spec.tasks.iter().any(|t| !t.exists()) {
        return Ok((job_inputs(job)?, job.input_hash.clone()));
    }
    let snapshots = read_tasks(&spec.tasks)?;
    let hash = input_hash(&snapshots);
    if hash != job.input_hash {
        ws.store().update_job_inputs(
            job.id,
            &serde_json::to_value(&snapshots).expect("snapshots serialize"),
            &hash,
        )?;
    }
    Ok((snapshots, hash))
}

/// The cycle a run is begun for, and the inputs it runs on.
struct Started<'a> {
    job: i64,
    cycle: i64,
    trigger: &'a str,
    snapshots: &'a [TaskSnapshot],
    hash: &'a str,
}

/// Begins the cycle's optimization run from the snapshot; the run's config names the job and
/// cycle, so a worker that dies before linking the two still finds it.
async fn start_run(
    ws: &Workspace,
    spec: &JobSpec,
    started: Started<'_>,
    progress: &Arc<Progress>,
    token: &CancellationToken,
) -> Result<OptimizeReport, WorkspaceError> {
    let loops = cycle_loops(ws, spec, started.snapshots)?;
    let gate = match &spec.promote {
        Some(name) => serde_json::json!({
            "name": name,
            "margin": spec.margin,
            "production": ws.store().promoted(name)?,
        }),
        None => serde_json::Value::Null,
    };
    let config = serde_json::json!({
        "tasks": spec.tasks,
        "optimizers": spec.optimizers,
        "budget": spec.budget,
        "seed": spec.seed,
        "engine": ws.engine_config(),
        "proposer": spec.proposer,
        "job": {
            "id": started.job,
            "cycle": started.cycle,
            "trigger": started.trigger,
            "input_hash": started.hash,
        },
        "gate": gate,
    });
    optimize_loops(ws, loops, config, &spec.budget, progress, token.clone()).await
}

/// The loop whose result a cycle offers: the best on validation (never chosen by test, which
/// would leak the held-out split into the choice); the first on a tie.
fn best_loop(report: &OptimizeReport) -> Option<&LoopOutcome> {
    let mut best: Option<&LoopOutcome> = None;
    for outcome in report.outcomes.iter().flatten() {
        let val = outcome.optimized.val.unwrap_or(f64::NEG_INFINITY);
        if best.is_none_or(|b| val > b.optimized.val.unwrap_or(f64::NEG_INFINITY)) {
            best = Some(outcome);
        }
    }
    best
}

/// The promotion gate: the chosen result is promoted under `name` only when its test score
/// beats production's — the program the run started from, evaluated in the same run on the
/// same split and model — by at least `margin`, and `name` still points where it did when the
/// run began.
fn gate(
    ws: &Workspace,
    name: &str,
    margin: f64,
    report: &OptimizeReport,
) -> Result<serde_json::Value, WorkspaceError> {
    let Some(best) = best_loop(report) else {
        return Err(WorkspaceError::Invalid(
            "the run has no finished loop".into(),
        ));
    };
    let at_start = report.run.config["gate"]["production"].as_str();
    let current = ws.store().promoted(name)?;
    let production_test = best.baseline.test;
    let candidate_test = best.optimized.test;
    let (promoted, reason) = if current.as_deref() != at_start {
        (
            false,
            format!(
                "`{name}` was moved to {} while the run went on; nothing promoted",
                current.as_deref().map_or("-", crate::artifact::short)
            ),
        )
    } else if best.artifact_hash == best.baseline_hash {
        (
            false,
            "no candidate beat the starting program on validation".to_string(),
        )
    } else if candidate_test < production_test + margin - 1e-12 {
        (
            false,
            format!(
                "{candidate_test:.3} does not beat {production_test:.3} by the margin {margin:.3}"
            ),
        )
    } else {
        ws.store().promote(name, &best.artifact_hash)?;
        (
            true,
            format!("{candidate_test:.3} beats {production_test:.3} by at least {margin:.3}"),
        )
    };
    Ok(serde_json::json!({
        "name": name,
        "promoted": promoted,
        "reason": reason,
        "candidate": best.artifact_hash,
        "candidate_val": best.optimized.val,
        "candidate_test": candidate_test,
        "production": at_start,
        "production_val": best.baseline.val,
        "production_test": production_test,
        "margin": margin,
        "split": "test",
        "task": best.task,
        "optimizer": best.optimizer,
    }))
}

/// What `--notify` gets on stdin, and what the cycle records.
fn summary_json(
    job: &JobRecord,
    cycle: i64,
    trigger: &str,
    status: &str,
    report: &OptimizeReport,
    decision: &Option<serde_json::Value>,
    error: &Option<String>,
) -> serde_json::Value {
    let loops: Vec<serde_json::Value> = report
        .outcomes
        .iter()
        .map(|o| match o {
            Ok(o) => serde_json::json!({
                "task": o.task,
                "optimizer": o.optimizer,
                "status": o.status,
                "baseline": o.baseline,
                "optimized": o.optimized,
                "artifact": o.artifact_hash,
                "parent": o.baseline_hash,
            }),
            Err(e) => serde_json::json!({ "error": e }),
        })
        .collect();
    serde_json::json!({
        "job": job.id,
        "cycle": cycle,
        "trigger": trigger,
        "status": status,
        "run": report.run.uid,
        "loops": loops,
        "artifact": best_loop(report).map(|o| &o.artifact_hash),
        "decision": decision,
        "error": error,
        "calls": report.summary.calls,
        "tokens": report.summary.prompt_tokens + report.summary.completion_tokens,
        "wall_seconds": report.wall_seconds,
    })
}

/// Runs the notification command (no shell) with the summary on stdin; returns what happened.
/// A failing command is recorded, never fatal.
async fn notify(
    program: &str,
    args: &[String],
    summary: &serde_json::Value,
    timeout: Duration,
) -> serde_json::Value {
    use tokio::io::AsyncWriteExt;
    let spawned = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => return serde_json::json!({ "command": program, "error": e.to_string() }),
    };
    if let Some(mut stdin) = child.stdin.take() {
        let text = serde_json::to_string_pretty(summary).expect("summaries serialize");
        // A command that does not read its input is its own business.
        let _ = stdin.write_all(text.as_bytes()).await;
    }
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(output)) => serde_json::json!({
            "command": program,
            "exit": output.status.code(),
            "stderr": String::from_utf8_lossy(&output.stderr).chars().take(2000).collect::<String>(),
        }),
        Ok(Err(e)) => serde_json::json!({ "command": program, "error": e.to_string() }),
        Err(_) => serde_json::json!({
            "command": program,
            "error": format!("still running after {} s; killed", timeout.as_secs()),
        }),
    }
}
