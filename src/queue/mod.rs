//! Continuous optimization: a queue of optimization jobs in the store, and the worker that
//! runs them — once, on a schedule, or whenever a task's data changes — promoting a result
//! only when it beats production on the held-out test split.
//!
//! A job holds its full configuration and a snapshot of its tasks and data, taken when it is
//! added and again whenever a cycle finds the files changed; a cycle runs from the snapshot, so
//! a task file that moved or was deleted does not stop a schedule.
//!
//! Architecture Invariant: a job is checked completely (tasks, data, models, starting program,
//! options) when it is added, and a cycle that fails later fails only itself: the worker
//! records why and goes on to the next job.

mod worker;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::dataset::{self, DataCleaning, Datasets, Example, Split, TestSet, TrainSet, ValSet};
use crate::optimize::{Budget, LoopSpec, OptimizerConfig};
use crate::store::{CycleRecord, JobRecord, NewJob, Store};
use crate::task::Task;
use crate::workspace::{loop_specs, unique_optimizers, TaskInput, Workspace, WorkspaceError};

pub use worker::{run_worker, Progress, WorkerConfig, WorkerEvent, WorkerSummary};

/// What `queue add` asks for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobRequest {
    pub tasks: Vec<PathBuf>,
    pub optimizers: Vec<OptimizerConfig>,
    pub budget: Budget,
    pub seed: Option<u64>,
    /// The program to start from while `promote` points nowhere (a hash or promoted name).
    pub program: Option<String>,
    pub proposer: Option<String>,
    /// Promote a result under this name when it beats what the name points at.
    pub promote: Option<String>,
    /// How much better on test a result must be to be promoted.
    pub margin: f64,
    /// A command (program and arguments, run without a shell) told about every cycle.
    pub notify: Vec<String>,
    /// Run again this many seconds after a cycle started.
    pub every_seconds: Option<u64>,
    /// Run again when a task or its data changes.
    pub on_change: bool,
}

/// A job's configuration as stored: everything but the tasks' contents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    /// The task files, absolute, re-read before each cycle while they exist.
    pub tasks: Vec<PathBuf>,
    pub optimizers: Vec<OptimizerConfig>,
    pub budget: Budget,
    pub seed: Option<u64>,
    pub program: Option<String>,
    pub proposer: Option<String>,
    pub promote: Option<String>,
    pub margin: f64,
    pub notify: Vec<String>,
}

/// A task file and its data as read at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSnapshot {
    pub file: PathBuf,
    /// The task file as written.
    pub source: String,
    pub train: Vec<Example>,
    pub val: Vec<Example>,
    pub test: Vec<Example>,
    /// Lines skipped and rows dropped or accepted when the data was read.
    #[serde(default, skip_serializing_if = "DataCleaning::is_empty")]
    pub cleaning: DataCleaning,
}

impl TaskSnapshot {
    /// Reads a task file and its data.
    pub fn read(file: &Path) -> Result<TaskSnapshot, WorkspaceError> {
        let task = Task::load(file)?;
        let data = dataset::load(&task.dataset, &task.base_dir, &task.example_fields())?;
        Ok(TaskSnapshot {
            file: file.to_path_buf(),
            source: task.source,
            train: data.train.0.examples,
            val: data.val.0.examples,
            test: data.test.0.examples,
            cleaning: data.cleaning,
        })
    }

    /// The task parsed from the snapshot, and its data.
    pub fn task(&self) -> Result<(Task, Datasets), WorkspaceError> {
        let base = self
            .file
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let task = Task::parse(&self.source, &self.file, base)?;
        Ok((task, self.data()))
    }

    fn data(&self) -> Datasets {
        Datasets {
            train: TrainSet(Split::new("train", self.train.clone())),
            val: ValSet(Split::new("val", self.val.clone())),
            test: TestSet(Split::new("test", self.test.clone())),
            cleaning: self.cleaning.clone(),
        }
    }
}

/// One hash over the tasks as written and their data: a change re-runs an `--on-change` job.
pub fn input_hash(snapshots: &[TaskSnapshot]) -> String {
    let mut hasher = Sha256::new();
    for snapshot in snapshots {
        hasher.update(snapshot.source.as_bytes());
        hasher.update(b"\n");
        hasher.update(snapshot.data().hash().as_bytes());
        hasher.update(b"\n");
    }
    hex::encode(hasher.finalize())
}

/// Reads every task of a job from its file.
pub fn read_tasks(files: &[PathBuf]) -> Result<Vec<TaskSnapshot>, WorkspaceError> {
    files.iter().map(|f| TaskSnapshot::read(f)).collect()
}

/// Checks a job completely — tasks, data, pinned models and their files, the starting program,
/// the optimizers and options — and adds it to the queue; returns its id.
pub fn add_job(ws: &Workspace, request: &JobRequest) -> Result<i64, WorkspaceError> {
    let invalid = |m: String| Err(WorkspaceError::Invalid(m));
    if request.tasks.is_empty() {
        return invalid("a job needs at least one task file".into());
    }
    let optimizers = unique_optimizers(&request.optimizers)?;
    if !(0.0..=1.0).contains(&request.margin) {
        return invalid(format!(
            "--margin {} is not a score difference between 0 and 1",
            request.margin
        ));
    }
    if request.every_seconds == Some(0) {
        return invalid("--every must be longer than zero".into());
    }
    if let Some(name) = &request.promote {
        if request.tasks.len() != 1 {
            return invalid(format!(
                "--promote names the result of one task, but this job has {} tasks; add one job per task",
                request.tasks.len()
            ));
        }
        if name.len() >= 6 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
            return invalid(format!(
                "`{name}` looks like a hash; choose a promoted name with other characters"
            ));
        }
    }
    if let Some(program) = request.notify.first() {
        find_program(program)?;
    }
    let tasks = request
        .tasks
        .iter()
        .map(|t| {
            std::path::absolute(t).map_err(|e| {
                WorkspaceError::Invalid(format!(
                    "cannot resolve the task file {}: {e}",
                    t.display()
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let snapshots = read_tasks(&tasks)?;
    let spec = JobSpec {
        tasks,
        optimizers,
        budget: request.budget.clone(),
        seed: request.seed,
        program: request.program.clone(),
        proposer: request.proposer.clone(),
        promote: request.promote.clone(),
        margin: request.margin,
        notify: request.notify.clone(),
    };
    // Everything a cycle will need, checked now: the starting program fits each task, every
    // model is pinned and its file is where the pin says.
    let loops = cycle_loops(ws, &spec, &snapshots)?;
    for model in loops
        .iter()
        .flat_map(|l| std::iter::once(&l.model).chain(&l.proposer))
    {
        let pin = ws.registry().get(&model.name)?;
        let file = ws.registry().file_path(pin);
        if !file.exists() {
            return invalid(format!(
                "the model file {} of `{}` is missing; run scripts/fetch-models.sh or `tuningfork models download {}`",
                file.display(),
                model.name,
                model.name
            ));
        }
    }
    let id = ws.store().add_job(&NewJob {
        spec: serde_json::to_value(&spec).expect("job specs serialize"),
        inputs: serde_json::to_value(&snapshots).expect("snapshots serialize"),
        input_hash: input_hash(&snapshots),
        every_seconds: request.every_seconds,
        on_change: request.on_change,
    })?;
    Ok(id)
}

/// The loops of a cycle over `snapshots`, each task starting from the program `promote`
/// points at (else the job's `program`, else the task's own).
pub(crate) fn cycle_loops(
    ws: &Workspace,
    spec: &JobSpec,
    snapshots: &[TaskSnapshot],
) -> Result<Vec<LoopSpec>, WorkspaceError> {
    let start = match &spec.promote {
        Some(name) if ws.store().promoted(name)?.is_some() => Some(name.clone()),
        _ => spec.program.clone(),
    };
    let inputs = snapshots
        .iter()
        .map(|snapshot| {
            let (mut task, data) = snapshot.task()?;
            let parent = ws.use_artifact(&mut task, start.as_deref())?;
            Ok(TaskInput {
                file: snapshot.file.display().to_string(),
                task,
                parent,
                data,
            })
        })
        .collect::<Result<Vec<_>, WorkspaceError>>()?;
    loop_specs(
        ws,
        &inputs,
        &spec.optimizers,
        spec.seed,
        spec.proposer.as_deref(),
    )
}

/// The program a notification command names, found as the operating system would (a path,
/// or a name on `PATH`).
fn find_program(program: &str) -> Result<PathBuf, WorkspaceError> {
    let path = Path::new(program);
    let found = if path.components().count() > 1 {
        path.is_file().then(|| path.to_path_buf())
    } else {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(program))
                .find(|candidate| candidate.is_file())
        })
    };
    found.ok_or_else(|| {
        WorkspaceError::Invalid(format!(
            "the --notify program `{program}` was not found (it runs without a shell: give a program on PATH or a path to one)"
        ))
    })
}

/// A job's stored configuration, read back.
pub fn job_spec(job: &JobRecord) -> Result<JobSpec, WorkspaceError> {
    serde_json::from_value(job.spec.clone()).map_err(|e| {
        WorkspaceError::Invalid(format!(
            "job {} cannot be read back ({e}); the store was altered",
            job.id
        ))
    })
}

/// A job's stored snapshot of its tasks, read back.
pub fn job_inputs(job: &JobRecord) -> Result<Vec<TaskSnapshot>, WorkspaceError> {
    serde_json::from_value(job.inputs.clone()).map_err(|e| {
        WorkspaceError::Invalid(format!(
            "the task snapshot of job {} cannot be read back ({e}); the store was altered",
            job.id
        ))
    })
}

/// The queue, what the worker is doing and the latest results: `tuningfork status`.
#[derive(Debug, Clone)]
pub struct QueueStatus {
    pub jobs: Vec<JobRecord>,
    pub recent: Vec<CycleRecord>,
}

impl QueueStatus {
    /// Every job not yet finished (all jobs with `all`), and the last `recent` cycles.
    pub fn read(store: &Store, all: bool, recent: usize) -> Result<QueueStatus, WorkspaceError> {
        Ok(QueueStatus {
            jobs: store.jobs(all)?,
            recent: store.recent_cycles(recent)?,
        })
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "jobs": self.jobs.iter().map(job_json).collect::<Vec<_>>(),
            "recent": self.recent.iter().map(cycle_json).collect::<Vec<_>>(),
        })
    }
}

/// A job as JSON, without its task snapshot.
pub fn job_json(job: &JobRecord) -> serde_json::Value {
    serde_json::json!({
        "id": job.id,
        "status": job.status,
        "created_at": job.created_at,
        "spec": job.spec,
        "input_hash": job.input_hash,
        "every_seconds": job.every_seconds,
        "on_change": job.on_change,
        "next_at": job.next_at,
        "worker": job.worker.as_ref().map(|w| serde_json::json!({
            "id": w, "pid": job.worker_pid, "host": job.worker_host, "lease_until": job.lease_until,
        })),
        "progress": job.progress,
        "error": job.error,
    })
}

pub fn cycle_json(cycle: &CycleRecord) -> serde_json::Value {
    serde_json::json!({
        "id": cycle.id,
        "job": cycle.job_id,
        "trigger": cycle.trigger,
        "status": cycle.status,
        "run": cycle.run_uid,
        "artifact": cycle.artifact_hash,
        "decision": cycle.decision,
        "summary": cycle.summary,
        "error": cycle.error,
        "started_at": cycle.started_at,
        "ended_at": cycle.ended_at,
    })
}

/// `every 1d · on change`, or `once`.
pub fn schedule(job: &JobRecord) -> String {
    let mut parts = Vec::new();
    if let Some(every) = job.every_seconds {
        parts.push(format!(
            "every {}",
            crate::optimize::budget::format_duration(every)
        ));
    }
    if job.on_change {
        parts.push("on change".to_string());
    }
    if parts.is_empty() {
        "once".to_string()
    } else {
        parts.join(" · ")
    }
}

/// What a job runs, in a few words: `sentiment · bootstrap, mipro → prod`.
pub fn describe(job: &JobRecord) -> String {
    let Ok(spec) = job_spec(job) else {
        return "(unreadable spec)".into();
    };
    let tasks: Vec<String> = job_inputs(job)
        .ok()
        .map(|inputs| {
            inputs
                .iter()
                .map(|i| i.task().map_or("?".into(), |(t, _)| t.task.name))
                .collect()
        })
        .unwrap_or_default();
    let optimizers: Vec<&str> = spec.optimizers.iter().map(|o| o.name()).collect();
    let mut text = format!("{} · {}", tasks.join(", "), optimizers.join(", "));
    if let Some(name) = &spec.promote {
        text.push_str(&format!(" → {name}"));
    }
    text
}

/// One line about a cycle's promotion decision.
pub fn decision_line(decision: &serde_json::Value) -> String {
    let score = |k: &str| {
        decision[k]
            .as_f64()
            .map_or("-".into(), |v| format!("{v:.3}"))
    };
    format!(
        "{} `{}`: candidate {} vs production {} on test (margin {}){}",
        if decision["promoted"].as_bool() == Some(true) {
            "promoted"
        } else {
            "not promoted"
        },
        decision["name"].as_str().unwrap_or("?"),
        score("candidate_test"),
        score("production_test"),
        score("margin"),
        decision["reason"]
            .as_str()
            .map_or(String::new(), |r| format!(" — {r}")),
    )
}

impl std::fmt::Display for QueueStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.jobs.is_empty() {
            writeln!(
                f,
                "the queue is empty (`tuningfork queue add TASK…` adds a job)"
            )?;
        } else {
            writeln!(
                f,
                "{:<5} {:<10} {:<22} {:<36} NEXT",
                "JOB", "STATUS", "SCHEDULE", "WHAT"
            )?;
            for job in &self.jobs {
                let next = match job.status {
                    crate::store::JobStatus::Waiting => job.next_at.clone().unwrap_or_else(|| {
                        if job.on_change {
                            "when the data changes".into()
                        } else {
                            "-".into()
                        }
                    }),
                    crate::store::JobStatus::Queued => "now".into(),
                    _ => "-".into(),
                };
                writeln!(
                    f,
                    "{:<5} {:<10} {:<22} {:<36} {next}",
                    job.id,
                    job.status.as_str(),
                    schedule(job),
                    describe(job)
                )?;
                if let Some(progress) = &job.progress {
                    writeln!(f, "      {}", Progress::line(progress))?;
                }
                if let Some(host) = &job.worker_host {
                    writeln!(
                        f,
                        "      worker pid {} on {host}, claim until {}",
                        job.worker_pid.unwrap_or(0),
                        job.lease_until.as_deref().unwrap_or("-")
                    )?;
                }
                if let Some(error) = &job.error {
                    writeln!(f, "      last error: {error}")?;
                }
            }
        }
        if !self.recent.is_empty() {
            writeln!(f)?;
            writeln!(f, "latest results:")?;
            for cycle in &self.recent {
                write!(
                    f,
                    "  job {} cycle {} ({}) {} {}",
                    cycle.job_id,
                    cycle.id,
                    cycle.trigger,
                    cycle.status,
                    cycle.ended_at.as_deref().unwrap_or(&cycle.started_at)
                )?;
                if let Some(run) = &cycle.run_uid {
                    write!(f, " run {run}")?;
                }
                writeln!(f)?;
                if let Some(loops) = cycle.summary.as_ref().and_then(|s| s["loops"].as_array()) {
                    for l in loops {
                        let s = |k: &str, split: &str| {
                            l[k][split]
                                .as_f64()
                                .map_or("-".into(), |v| format!("{v:.3}"))
                        };
                        writeln!(
                            f,
                            "    {} · {}: test {} → {} (val {} → {})",
                            l["task"].as_str().unwrap_or("?"),
                            l["optimizer"].as_str().unwrap_or("?"),
                            s("baseline", "test"),
                            s("optimized", "test"),
                            s("baseline", "val"),
                            s("optimized", "val"),
                        )?;
                    }
                }
                if let Some(decision) = &cycle.decision {
                    writeln!(f, "    {}", decision_line(decision))?;
                }
                if let Some(error) = &cycle.error {
                    writeln!(f, "    error: {error}")?;
                }
            }
        }
        Ok(())
    }
}
