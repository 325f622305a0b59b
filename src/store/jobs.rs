//! The optimization queue: jobs, the workers' claims on them, and each job's cycles.
//!
//! A claim is one conditional `UPDATE` (compare and swap on the job's status and holder), so
//! two workers on one store never hold the same job. A worker renews its claim with a
//! heartbeat; a claim whose lease ran out, or whose worker process is gone from this host, can
//! be taken over, and the job's unfinished cycle resumes.

use rusqlite::OptionalExtension;

use super::{json_column, optional_json, runs::hostname, Store, StoreError};

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Runs as soon as a worker is free.
    Queued,
    /// A worker holds it.
    Running,
    /// A recurring job between cycles.
    Waiting,
    Done,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Waiting => "waiting",
            JobStatus::Done => "done",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => JobStatus::Queued,
            "running" => JobStatus::Running,
            "waiting" => JobStatus::Waiting,
            "done" => JobStatus::Done,
            "failed" => JobStatus::Failed,
            "cancelled" => JobStatus::Cancelled,
            _ => return None,
        })
    }

    /// Whether the job will never run again.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobStatus::Done | JobStatus::Failed | JobStatus::Cancelled
        )
    }
}

impl std::fmt::Display for JobStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job to add.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub spec: serde_json::Value,
    pub inputs: serde_json::Value,
    pub input_hash: String,
    pub every_seconds: Option<u64>,
    pub on_change: bool,
}

/// A stored job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    pub id: i64,
    pub created_at: String,
    pub spec: serde_json::Value,
    pub inputs: serde_json::Value,
    pub input_hash: String,
    pub every_seconds: Option<u64>,
    pub on_change: bool,
    pub status: JobStatus,
    pub next_at: Option<String>,
    pub worker: Option<String>,
    pub worker_pid: Option<u32>,
    pub worker_host: Option<String>,
    pub lease_until: Option<String>,
    pub progress: Option<serde_json::Value>,
    pub error: Option<String>,
    pub updated_at: String,
}

impl JobRecord {
    /// Whether the job runs more than once.
    pub fn recurring(&self) -> bool {
        self.every_seconds.is_some() || self.on_change
    }
}

/// One run of a job.
#[derive(Debug, Clone, PartialEq)]
pub struct CycleRecord {
    pub id: i64,
    pub job_id: i64,
    pub trigger: String,
    pub status: String,
    pub input_hash: String,
    pub run_uid: Option<String>,
    pub artifact_hash: Option<String>,
    pub decision: Option<serde_json::Value>,
    pub summary: Option<serde_json::Value>,
    pub error: Option<String>,
    pub started_at: String,
    pub ended_at: Option<String>,
}

/// Who holds a claim: a worker's id, its process and its host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerId {
    pub id: String,
    pub pid: u32,
    pub host: String,
}

impl WorkerId {
    /// This process, under a new id.
    pub fn this_process() -> WorkerId {
        WorkerId {
            id: super::new_uid(),
            pid: std::process::id(),
            host: hostname(),
        }
    }
}

const NOW: &str = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

const JOB_COLUMNS: &str = "id, created_at, spec_json, inputs_json, input_hash, every_seconds,
    on_change, status, next_at, worker, worker_pid, worker_host, lease_until, progress_json,
    error, updated_at";

fn job_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<JobRecord> {
    let status: String = row.get(7)?;
    Ok(JobRecord {
        id: row.get(0)?,
        created_at: row.get(1)?,
        spec: json_column(row, 2)?,
        inputs: json_column(row, 3)?,
        input_hash: row.get(4)?,
        every_seconds: row.get::<_, Option<i64>>(5)?.map(|s| s as u64),
        on_change: row.get::<_, i64>(6)? == 1,
        status: JobStatus::parse(&status).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                7,
                rusqlite::types::Type::Text,
                format!("unknown job status `{status}`").into(),
            )
        })?,
        next_at: row.get(8)?,
        worker: row.get(9)?,
        worker_pid: row.get::<_, Option<i64>>(10)?.map(|p| p as u32),
        worker_host: row.get(11)?,
        lease_until: row.get(12)?,
        progress: optional_json(row, 13)?,
        error: row.get(14)?,
        updated_at: row.get(15)?,
    })
}

const CYCLE_COLUMNS: &str = "id, job_id, trigger, status, input_hash, run_uid, artifact_hash,
    decision_json, summary_json, error, started_at, ended_at";

fn cycle_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<CycleRecord> {
    Ok(CycleRecord {
        id: row.get(0)?,
        job_id: row.get(1)?,
        trigger: row.get(2)?,
        status: row.get(3)?,
        input_hash: row.get(4)?,
        run_uid: row.get(5)?,
        artifact_hash: row.get(6)?,
        decision: optional_json(row, 7)?,
        summary: optional_json(row, 8)?,
        error: row.get(9)?,
        started_at: row.get(10)?,
        ended_at: row.get(11)?,
    })
}

impl Store {
    /// Adds a job, queued to run as soon as a worker is free; returns its id.
    pub fn add_job(&self, job: &NewJob) -> Result<i64, StoreError> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO jobs (spec_json, inputs_json, input_hash, every_seconds, on_change, status)
             VALUES (?1, ?2, ?3, ?4, ?5, 'queued')",
            rusqlite::params![
                job.spec.to_string(),
                job.inputs.to_string(),
                job.input_hash,
                job.every_seconds.map(|s| s as i64),
                job.on_change as i64,
            ],
        )
        .map_err(|e| self.sql_error(e))?;
        Ok(conn.last_insert_rowid())
    }

    /// One job by id.
    pub fn job(&self, id: i64) -> Result<JobRecord, StoreError> {
        self.conn()
            .query_row(
                &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"),
                [id],
                job_from_row,
            )
            .optional()
            .map_err(|e| self.sql_error(e))?
            .ok_or_else(|| {
                StoreError::Invalid(format!(
                    "no job {id} in the store; `tuningfork queue list` shows the jobs"
                ))
            })
    }

    /// Every job, oldest first; finished ones only when `all`.
    pub fn jobs(&self, all: bool) -> Result<Vec<JobRecord>, StoreError> {
        let filter = if all {
            ""
        } else {
            "WHERE status NOT IN ('done', 'failed', 'cancelled')"
        };
        let conn = self.conn();
        let mut statement = conn
            .prepare(&format!(
                "SELECT {JOB_COLUMNS} FROM jobs {filter} ORDER BY id"
            ))
            .map_err(|e| self.sql_error(e))?;
        let rows = statement
            .query_map([], job_from_row)
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| self.sql_error(e))?;
        Ok(rows)
    }

    /// Takes `job` for `worker` if it is still `from` (and, for a running job, still held by
    /// `holder`): one conditional update, so of two workers trying at once exactly one wins.
    /// The claim holds for `lease_seconds` unless renewed.
    pub fn claim_job(
        &self,
        job: i64,
        from: JobStatus,
        holder: Option<&str>,
        worker: &WorkerId,
        lease_seconds: u64,
    ) -> Result<bool, StoreError> {
        let changed = self
            .conn()
            .execute(
                &format!(
                    "UPDATE jobs SET status = 'running', worker = ?4, worker_pid = ?5,
                       worker_host = ?6, lease_until = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?7),
                       progress_json = NULL, updated_at = {NOW}
                     WHERE id = ?1 AND status = ?2 AND worker IS ?3"
                ),
                rusqlite::params![
                    job,
                    from.as_str(),
                    holder,
                    worker.id,
                    worker.pid as i64,
                    worker.host,
                    format!("+{lease_seconds} seconds"),
                ],
            )
            .map_err(|e| self.sql_error(e))?;
        Ok(changed == 1)
    }

    /// Running jobs whose claim can be taken over: the lease ran out, or the holding process
    /// is gone from this host (`alive` says whether a pid on this host still runs).
    pub fn abandoned_jobs(
        &self,
        alive: &dyn Fn(u32) -> bool,
    ) -> Result<Vec<JobRecord>, StoreError> {
        let host = hostname();
        let conn = self.conn();
        let mut statement = conn
            .prepare(&format!(
                "SELECT {JOB_COLUMNS}, lease_until < {NOW} FROM jobs
                 WHERE status = 'running' ORDER BY id"
            ))
            .map_err(|e| self.sql_error(e))?;
        let rows = statement
            .query_map([], |row| Ok((job_from_row(row)?, row.get::<_, bool>(16)?)))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| self.sql_error(e))?;
        Ok(rows
            .into_iter()
            .filter(|(job, expired)| {
                *expired
                    || (job.worker_host.as_deref() == Some(host.as_str())
                        && job.worker_pid.is_some_and(|pid| !alive(pid)))
            })
            .map(|(job, _)| job)
            .collect())
    }

    /// Renews `worker`'s claim on `job` and records its progress. `false` when the worker no
    /// longer holds the job (it was cancelled or taken over): the worker must stop.
    pub fn heartbeat_job(
        &self,
        job: i64,
        worker: &str,
        lease_seconds: u64,
        progress: Option<&serde_json::Value>,
    ) -> Result<bool, StoreError> {
        let changed = self
            .conn()
            .execute(
                &format!(
                    "UPDATE jobs SET lease_until = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?3),
                       progress_json = COALESCE(?4, progress_json), updated_at = {NOW}
                     WHERE id = ?1 AND worker = ?2 AND status = 'running'"
                ),
                rusqlite::params![
                    job,
                    worker,
                    format!("+{lease_seconds} seconds"),
                    progress.map(|p| p.to_string()),
                ],
            )
            .map_err(|e| self.sql_error(e))?;
        Ok(changed == 1)
    }

    /// Releases `worker`'s claim: the job becomes `status` (waiting for a recurring job, else
    /// done or failed); with `every_seconds` it is due that long after its latest cycle
    /// started. `false` when the worker no longer held it.
    pub fn release_job(
        &self,
        job: i64,
        worker: &str,
        status: JobStatus,
        every_seconds: Option<u64>,
        error: Option<&str>,
    ) -> Result<bool, StoreError> {
        let changed = self
            .conn()
            .execute(
                &format!(
                    "UPDATE jobs SET status = ?3, worker = NULL, worker_pid = NULL,
                       worker_host = NULL, lease_until = NULL, error = ?4, progress_json = NULL,
                       next_at = CASE WHEN ?5 IS NULL THEN NULL ELSE strftime(
                           '%Y-%m-%dT%H:%M:%fZ',
                           COALESCE((SELECT MAX(started_at) FROM job_cycles WHERE job_id = ?1),
                                    'now'),
                           ?5) END,
                       updated_at = {NOW}
                     WHERE id = ?1 AND worker = ?2 AND status = 'running'"
                ),
                rusqlite::params![
                    job,
                    worker,
                    status.as_str(),
                    error,
                    every_seconds.map(|s| format!("+{s} seconds")),
                ],
            )
            .map_err(|e| self.sql_error(e))?;
        Ok(changed == 1)
    }

    /// Records the inputs a job now runs on (its tasks re-read after they changed).
    pub fn update_job_inputs(
        &self,
        job: i64,
        inputs: &serde_json::Value,
        input_hash: &str,
    ) -> Result<(), StoreError> {
        self.conn()
            .execute(
                &format!(
                    "UPDATE jobs SET inputs_json = ?2, input_hash = ?3, updated_at = {NOW}
                     WHERE id = ?1"
                ),
                rusqlite::params![job, inputs.to_string(), input_hash],
            )
            .map_err(|e| self.sql_error(e))?;
        Ok(())
    }

    /// Cancels a job: it never runs again, and a worker running it stops at its next
    /// heartbeat. Returns the status it had.
    pub fn cancel_job(&self, id: i64) -> Result<JobStatus, StoreError> {
        let job = self.job(id)?;
        if job.status.is_final() {
            return Err(StoreError::Invalid(format!(
                "job {id} is already {}; nothing to cancel",
                job.status
            )));
        }
        self.conn()
            .execute(
                &format!(
                    "UPDATE jobs SET status = 'cancelled', worker = NULL, worker_pid = NULL,
                       worker_host = NULL, lease_until = NULL, updated_at = {NOW}
                     WHERE id = ?1"
                ),
                [id],
            )
            .map_err(|e| self.sql_error(e))?;
        Ok(job.status)
    }

    /// Starts a cycle of a job; returns its id.
    pub fn begin_cycle(
        &self,
        job: i64,
        trigger: &str,
        input_hash: &str,
    ) -> Result<i64, StoreError> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO job_cycles (job_id, trigger, status, input_hash)
             VALUES (?1, ?2, 'running', ?3)",
            rusqlite::params![job, trigger, input_hash],
        )
        .map_err(|e| self.sql_error(e))?;
        Ok(conn.last_insert_rowid())
    }

    /// Links a cycle to the optimization run it started.
    pub fn set_cycle_run(&self, cycle: i64, run_uid: &str) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "UPDATE job_cycles SET run_uid = ?2 WHERE id = ?1",
                rusqlite::params![cycle, run_uid],
            )
            .map_err(|e| self.sql_error(e))?;
        Ok(())
    }

    /// Records how a cycle ended: its status, the artifact, the promotion decision, the
    /// summary sent to `--notify`, the error.
    pub fn finish_cycle(
        &self,
        cycle: i64,
        status: &str,
        artifact_hash: Option<&str>,
        decision: Option<&serde_json::Value>,
        summary: Option<&serde_json::Value>,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        self.conn()
            .execute(
                &format!(
                    "UPDATE job_cycles SET status = ?2, artifact_hash = ?3, decision_json = ?4,
                       summary_json = ?5, error = ?6, ended_at = {NOW} WHERE id = ?1"
                ),
                rusqlite::params![
                    cycle,
                    status,
                    artifact_hash,
                    decision.map(|d| d.to_string()),
                    summary.map(|s| s.to_string()),
                    error,
                ],
            )
            .map_err(|e| self.sql_error(e))?;
        Ok(())
    }

    /// A job's cycles, oldest first.
    pub fn cycles(&self, job: i64) -> Result<Vec<CycleRecord>, StoreError> {
        self.cycles_where("WHERE job_id = ?1 ORDER BY id", job)
    }

    /// The latest cycles of every job, newest first.
    pub fn recent_cycles(&self, limit: usize) -> Result<Vec<CycleRecord>, StoreError> {
        self.cycles_where("ORDER BY id DESC LIMIT ?1", limit as i64)
    }

    fn cycles_where(&self, clause: &str, param: i64) -> Result<Vec<CycleRecord>, StoreError> {
        let conn = self.conn();
        let mut statement = conn
            .prepare(&format!("SELECT {CYCLE_COLUMNS} FROM job_cycles {clause}"))
            .map_err(|e| self.sql_error(e))?;
        let rows = statement
            .query_map([param], cycle_from_row)
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| self.sql_error(e))?;
        Ok(rows)
    }

    /// The optimization run a cycle began, found from the run's config even when the worker
    /// died before linking it.
    pub fn cycle_run(&self, cycle: i64) -> Result<Option<String>, StoreError> {
        self.conn()
            .query_row(
                "SELECT uid FROM runs WHERE kind = 'optimize'
                   AND json_extract(config_json, '$.job.cycle') = ?1
                 ORDER BY id DESC LIMIT 1",
                [cycle],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.sql_error(e))
    }

    /// Whether a waiting job's schedule says it is due.
    pub fn job_due(&self, job: i64) -> Result<bool, StoreError> {
        self.conn()
            .query_row(
                &format!("SELECT next_at IS NOT NULL AND next_at <= {NOW} FROM jobs WHERE id = ?1"),
                [job],
                |r| r.get(0),
            )
            .map_err(|e| self.sql_error(e))
    }

    /// Every name's promotions, oldest first: (name, hash, when).
    pub fn promotion_history(
        &self,
        name: Option<&str>,
    ) -> Result<Vec<(String, String, String)>, StoreError> {
        let conn = self.conn();
        let mut statement = conn
            .prepare(
                "SELECT name, hash, promoted_at FROM promotions
                 WHERE ?1 IS NULL OR name = ?1 ORDER BY id",
            )
            .map_err(|e| self.sql_error(e))?;
        let rows = statement
            .query_map([name], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| self.sql_error(e))?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn job(store: &Store) -> i64 {
        store
            .add_job(&NewJob {
                spec: serde_json::json!({"optimizers": ["bootstrap"]}),
                inputs: serde_json::json!([]),
                input_hash: "h".into(),
                every_seconds: None,
                on_change: false,
            })
            .unwrap()
    }

    fn worker(id: &str, pid: u32) -> WorkerId {
        WorkerId {
            id: id.into(),
            pid,
            host: hostname(),
        }
    }

    #[test]
    fn claims_heartbeats_and_releases() {
        let store = Store::open_in_memory().unwrap();
        let id = job(&store);
        let a = worker("a", 1);
        assert!(store
            .claim_job(id, JobStatus::Queued, None, &a, 60)
            .unwrap());
        // Already taken: the second claim fails.
        assert!(!store
            .claim_job(id, JobStatus::Queued, None, &worker("b", 2), 60)
            .unwrap());
        let progress = serde_json::json!({"stage": "baseline"});
        assert!(store.heartbeat_job(id, "a", 60, Some(&progress)).unwrap());
        assert!(!store.heartbeat_job(id, "b", 60, None).unwrap());
        assert_eq!(store.job(id).unwrap().progress, Some(progress));
        assert!(store
            .release_job(id, "a", JobStatus::Waiting, Some(3600), None)
            .unwrap());
        let released = store.job(id).unwrap();
        assert_eq!(released.status, JobStatus::Waiting);
        assert!(released.worker.is_none() && released.next_at.is_some());
        assert!(!store.job_due(id).unwrap());
    }

    #[test]
    fn a_dead_or_silent_worker_s_job_can_be_taken_over_and_a_cancelled_one_cannot() {
        let store = Store::open_in_memory().unwrap();
        let id = job(&store);
        assert!(store
            .claim_job(id, JobStatus::Queued, None, &worker("a", 41), 60)
            .unwrap());
        // Alive and within its lease: nobody takes it.
        assert!(store.abandoned_jobs(&|_| true).unwrap().is_empty());
        // Its process is gone from this host.
        let abandoned = store.abandoned_jobs(&|pid| pid != 41).unwrap();
        assert_eq!(abandoned.len(), 1);
        assert!(store
            .claim_job(id, JobStatus::Running, Some("a"), &worker("b", 42), 60)
            .unwrap());
        // The old holder's heartbeat now fails, so it stops.
        assert!(!store.heartbeat_job(id, "a", 60, None).unwrap());
        // A lease that ran out (a worker on another host that went silent).
        assert!(store.heartbeat_job(id, "b", 0, None).unwrap());
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert_eq!(store.abandoned_jobs(&|_| true).unwrap().len(), 1);
        assert_eq!(store.cancel_job(id).unwrap(), JobStatus::Running);
        assert!(!store.heartbeat_job(id, "b", 60, None).unwrap());
        assert!(store.abandoned_jobs(&|_| false).unwrap().is_empty());
        assert!(store.cancel_job(id).is_err());
    }

    #[test]
    fn workers_racing_on_one_store_file_never_claim_the_same_job() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.sqlite");
        let store = Store::open(&path).unwrap();
        let ids: Vec<i64> = (0..40).map(|_| job(&store)).collect();
        let claimed: Vec<Vec<i64>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|w| {
                    let (path, ids) = (path.clone(), ids.clone());
                    scope.spawn(move || {
                        // Each worker has its own connection, as separate processes do.
                        let store = Arc::new(Store::open(&path).unwrap());
                        let me = worker(&format!("w{w}"), 100 + w);
                        ids.iter()
                            .copied()
                            .filter(|&id| {
                                store
                                    .claim_job(id, JobStatus::Queued, None, &me, 60)
                                    .unwrap()
                            })
                            .collect::<Vec<i64>>()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut all: Vec<i64> = claimed.concat();
        all.sort();
        assert_eq!(all, ids, "every job claimed exactly once: {claimed:?}");
        // And each is held by the worker that won it.
        for (w, won) in claimed.iter().enumerate() {
            for id in won {
                assert_eq!(store.job(*id).unwrap().worker.unwrap(), format!("w{w}"));
            }
        }
    }
}
