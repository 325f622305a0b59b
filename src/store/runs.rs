//! Runs: one invocation of tuningfork that produced model calls.

use rusqlite::{OptionalExtension, Row};
use serde::{Deserialize, Serialize};

use super::{json_column, Store, StoreError};
use crate::engine::EngineFingerprint;

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Running,
    Completed,
    Failed,
    Interrupted,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Interrupted => "interrupted",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "running" => RunStatus::Running,
            "completed" => RunStatus::Completed,
            "failed" => RunStatus::Failed,
            "interrupted" => RunStatus::Interrupted,
            _ => return None,
        })
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// Where an optimization loop stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoopStatus {
    Running,
    /// The optimizer finished.
    Completed,
    /// A budget ran out; the loop ended with the best program scored so far.
    Stopped,
    Failed,
}

impl LoopStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            LoopStatus::Running => "running",
            LoopStatus::Completed => "completed",
            LoopStatus::Stopped => "stopped",
            LoopStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "running" => LoopStatus::Running,
            "completed" => LoopStatus::Completed,
            "stopped" => LoopStatus::Stopped,
            "failed" => LoopStatus::Failed,
            _ => return None,
        })
    }

    /// Whether the loop has its outcome (a resumed run leaves it as it is).
    pub fn is_finished(self) -> bool {
        matches!(self, LoopStatus::Completed | LoopStatus::Stopped)
    }
}

impl std::fmt::Display for LoopStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// Column `i` read as a status; an unknown word is a conversion error naming the column.
pub(crate) fn status_column<T>(
    row: &Row<'_>,
    i: usize,
    parse: fn(&str) -> Option<T>,
) -> rusqlite::Result<T> {
    let text: String = row.get(i)?;
    parse(&text).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Text,
            format!("unknown status `{text}`").into(),
        )
    })
}

/// What a new run records up front.
#[derive(Debug, Clone)]
pub struct NewRun<'a> {
    pub kind: &'a str,
    pub config: serde_json::Value,
    pub seed: Option<u64>,
    pub model_sha256: Option<&'a str>,
    pub fingerprint: &'a EngineFingerprint,
}

/// A stored run.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    pub id: i64,
    pub uid: String,
    pub kind: String,
    pub config: serde_json::Value,
    pub seed: Option<i64>,
    pub status: RunStatus,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub model_sha256: Option<String>,
    pub engine_fingerprint: serde_json::Value,
    pub engine_fingerprint_id: String,
    pub host: String,
    pub error: Option<String>,
}

/// A run with its call counts, for listings.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub run: RunRecord,
    pub calls: i64,
    pub cache_hits: i64,
    pub failed_calls: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    /// Calls and tokens (prompt plus completion) per model, by the model's pinned name, in
    /// the order each model was first called: a run with a proposer or a judge model shows
    /// their share apart from the task model's.
    pub by_model: Vec<ModelShare>,
}

/// One model's share of a run's calls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelShare {
    pub model: String,
    pub calls: i64,
    pub tokens: i64,
}

const RUN_COLUMNS: &str = "id, uid, kind, config_json, seed, status, started_at, ended_at, \
     model_sha256, engine_fingerprint_json, engine_fingerprint_id, host, error";

fn run_from_row(row: &Row<'_>) -> rusqlite::Result<RunRecord> {
    Ok(RunRecord {
        id: row.get(0)?,
        uid: row.get(1)?,
        kind: row.get(2)?,
        config: json_column(row, 3)?,
        seed: row.get(4)?,
        status: status_column(row, 5, RunStatus::parse)?,
        started_at: row.get(6)?,
        ended_at: row.get(7)?,
        model_sha256: row.get(8)?,
        engine_fingerprint: json_column(row, 9)?,
        engine_fingerprint_id: row.get(10)?,
        host: row.get(11)?,
        error: row.get(12)?,
    })
}

impl Store {
    /// Records the start of a run and returns its id.
    pub fn begin_run(&self, run: &NewRun<'_>) -> Result<i64, StoreError> {
        let uid = new_uid();
        let conn = self.conn();
        conn.execute(
            "INSERT INTO runs (uid, kind, config_json, seed, status, model_sha256,
                               engine_fingerprint_json, engine_fingerprint_id, host)
             VALUES (?1, ?2, ?3, ?4, 'running', ?5, ?6, ?7, ?8)",
            rusqlite::params![
                uid,
                run.kind,
                run.config.to_string(),
                run.seed.map(|s| s as i64),
                run.model_sha256,
                serde_json::to_string(run.fingerprint).expect("fingerprint serializes"),
                run.fingerprint.id(),
                hostname(),
            ],
        )
        .map_err(|e| self.sql_error(e))?;
        Ok(conn.last_insert_rowid())
    }

    /// Marks a run as ended.
    pub fn finish_run(
        &self,
        id: i64,
        status: RunStatus,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "UPDATE runs SET status = ?2, error = ?3,
                   ended_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = ?1",
                rusqlite::params![id, status.as_str(), error],
            )
            .map_err(|e| self.sql_error(e))?;
        Ok(())
    }

    /// One run by numeric id or uid.
    pub fn run(&self, id_or_uid: &str) -> Result<RunRecord, StoreError> {
        let conn = self.conn();
        let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1 OR uid = ?2");
        let id: i64 = id_or_uid.parse().unwrap_or(-1);
        conn.query_row(&sql, rusqlite::params![id, id_or_uid], run_from_row)
            .optional()
            .map_err(|e| self.sql_error(e))?
            .ok_or_else(|| StoreError::NoSuchRun(id_or_uid.to_string()))
    }

    /// The most recent runs with their call counts, newest first.
    pub fn list_runs(&self, limit: usize) -> Result<Vec<RunSummary>, StoreError> {
        let conn = self.conn();
        let sql = format!("SELECT {RUN_COLUMNS} FROM runs ORDER BY id DESC LIMIT ?1");
        let mut statement = conn.prepare(&sql).map_err(|e| self.sql_error(e))?;
        let runs = statement
            .query_map([limit as i64], run_from_row)
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| self.sql_error(e))?;
        drop(statement);
        drop(conn);
        runs.into_iter().map(|run| self.summarize(run)).collect()
    }

    /// Counts of a run's calls.
    pub fn summarize(&self, run: RunRecord) -> Result<RunSummary, StoreError> {
        let conn = self.conn();
        let (calls, cache_hits, failed_calls, prompt_tokens, completion_tokens) = conn
            .query_row(
                "SELECT COUNT(*), COALESCE(SUM(cached), 0),
                        COALESCE(SUM(error IS NOT NULL), 0),
                        COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0)
                 FROM calls WHERE run_id = ?1",
                [run.id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .map_err(|e| self.sql_error(e))?;
        let mut statement = conn
            .prepare(
                "SELECT COALESCE(m.name, substr(c.model_sha256, 1, 12)), COUNT(*),
                        COALESCE(SUM(c.prompt_tokens + c.completion_tokens), 0)
                 FROM calls c LEFT JOIN models m ON m.sha256 = c.model_sha256
                 WHERE c.run_id = ?1 GROUP BY c.model_sha256 ORDER BY MIN(c.id)",
            )
            .map_err(|e| self.sql_error(e))?;
        let by_model = statement
            .query_map([run.id], |r| {
                Ok(ModelShare {
                    model: r.get(0)?,
                    calls: r.get(1)?,
                    tokens: r.get(2)?,
                })
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| self.sql_error(e))?;
        drop(statement);
        Ok(RunSummary {
            run,
            calls,
            cache_hits,
            failed_calls,
            prompt_tokens,
            completion_tokens,
            by_model,
        })
    }
}

/// A run id that is unique across machines, for moving runs between stores.
/// A new unique id for a run or a trace: 16 hex digits from the host, process, time and a
/// counter.
pub fn new_uid() -> String {
    use sha2::{Digest, Sha256};
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut hasher = Sha256::new();
    hasher.update(hostname().as_bytes());
    hasher.update(std::process::id().to_le_bytes());
    hasher.update(nanos.to_le_bytes());
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    hasher.update(
        COUNTER
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .to_le_bytes(),
    );
    hex::encode(&hasher.finalize()[..8])
}

pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .unwrap_or_else(|| "unknown".to_string())
}
