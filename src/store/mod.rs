//! The run store: one SQLite file holding every run, every model call and every model seen.
//!
//! Architecture Invariant: the schema only moves forward through the numbered files in
//! `store/migrations/`, embedded in the binary; a shipped migration is never edited.
//! Connection pragmas (WAL, `synchronous = NORMAL`, foreign keys) are set here, in code.

mod artifacts;
mod audit;
mod calls;
mod error;
mod evals;
mod jobs;
mod optimizations;
mod runs;
mod traces;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension};

pub use artifacts::StoredArtifact;
pub use audit::{BundleRecord, ReplayRow};
pub use calls::{CallRecord, NewCall};
pub use error::StoreError;
pub use evals::EvalRecord;
pub use jobs::{CycleRecord, JobRecord, JobStatus, NewJob, WorkerId};
pub use optimizations::{CandidateRow, OptimizationRow, ResultRow, ScoredAt};
pub use runs::{new_uid, LoopStatus, ModelShare, NewRun, RunRecord, RunStatus, RunSummary};
pub use traces::{NewTrace, Pruned, Retention, TraceFilter, TraceRecord};

use crate::models::{HashMemo, ModelPin};

/// The default store location, relative to the working directory.
pub const DEFAULT_PATH: &str = "runs/tuningfork.sqlite";

/// Forward-only migrations: (version, what it does, SQL).
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "initial schema",
        include_str!("migrations/0001_initial.sql"),
    ),
    (
        2,
        "evaluation results",
        include_str!("migrations/0002_evaluations.sql"),
    ),
    (
        3,
        "program artifacts and promotions",
        include_str!("migrations/0003_artifacts.sql"),
    ),
    (
        4,
        "optimization loops, candidates and their results",
        include_str!("migrations/0004_optimizations.sql"),
    ),
    (
        5,
        "replays and imported runs",
        include_str!("migrations/0005_replays.sql"),
    ),
    (
        6,
        "traces of served requests",
        include_str!("migrations/0006_traces.sql"),
    ),
    (
        7,
        "the optimization queue",
        include_str!("migrations/0007_jobs.sql"),
    ),
];

/// A handle on the store. Cheap operations run under one connection guarded by a mutex; the
/// store is shared between tasks behind an `Arc`.
pub struct Store {
    conn: Mutex<Connection>,
    path: Option<PathBuf>,
}

impl Store {
    /// Opens (creating if needed) the store at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| StoreError::Io {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        let conn = Connection::open(path).map_err(|e| StoreError::open(path, e))?;
        let store = Store {
            conn: Mutex::new(conn),
            path: Some(path.to_path_buf()),
        };
        store.configure()?;
        store.migrate()?;
        Ok(store)
    }

    /// A store that lives only in memory (tests, dry runs).
    pub fn open_in_memory() -> Result<Store, StoreError> {
        let conn =
            Connection::open_in_memory().map_err(|e| StoreError::open(Path::new(":memory:"), e))?;
        let store = Store {
            conn: Mutex::new(conn),
            path: None,
        };
        store.configure()?;
        store.migrate()?;
        Ok(store)
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent (statements are
        // atomic), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn sql_error(&self, e: rusqlite::Error) -> StoreError {
        StoreError::sql(self.path.as_deref(), e)
    }

    fn configure(&self) -> Result<(), StoreError> {
        let conn = self.conn();
        conn.pragma_update(None, "foreign_keys", "ON")
            .and_then(|_| conn.busy_timeout(std::time::Duration::from_secs(10)))
            .map_err(|e| self.sql_error(e))?;
        if self.path.is_some() {
            conn.pragma_update(None, "journal_mode", "WAL")
                .and_then(|_| conn.pragma_update(None, "synchronous", "NORMAL"))
                .map_err(|e| self.sql_error(e))?;
        }
        Ok(())
    }

    /// The schema version (the number of the last applied migration).
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        self.conn()
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(|e| self.sql_error(e))
    }

    /// Applies every migration newer than the store, each in its own transaction.
    pub fn migrate(&self) -> Result<(), StoreError> {
        let current = self.schema_version()?;
        let latest = MIGRATIONS.last().map_or(0, |m| m.0);
        if current > latest {
            return Err(StoreError::TooNew {
                path: self.path.clone().unwrap_or_default(),
                version: current,
                supported: latest,
            });
        }
        let mut conn = self.conn();
        for &(version, what, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
            let tx = conn.transaction().map_err(|e| self.sql_error(e))?;
            tx.execute_batch(sql)
                .and_then(|_| tx.pragma_update(None, "user_version", version))
                .and_then(|_| tx.commit())
                .map_err(|e| StoreError::Migration {
                    version,
                    what,
                    message: e.to_string(),
                })?;
        }
        Ok(())
    }

    /// Records a model by content (first time only).
    pub fn record_model(
        &self,
        pin: &ModelPin,
        metadata: Option<&serde_json::Value>,
    ) -> Result<(), StoreError> {
        let pin_json = serde_json::to_string(pin).expect("pins serialize");
        let metadata = metadata.map(|m| m.to_string());
        self.conn()
            .execute(
                "INSERT INTO models (sha256, name, file, size, pin_json, metadata_json)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT(sha256) DO UPDATE SET
                   metadata_json = COALESCE(excluded.metadata_json, models.metadata_json)",
                rusqlite::params![
                    pin.sha256,
                    pin.name,
                    pin.file,
                    pin.size as i64,
                    pin_json,
                    metadata
                ],
            )
            .map_err(|e| self.sql_error(e))?;
        Ok(())
    }

    /// How many models the store has seen.
    pub fn model_count(&self) -> Result<i64, StoreError> {
        self.conn()
            .query_row("SELECT COUNT(*) FROM models", [], |r| r.get(0))
            .map_err(|e| self.sql_error(e))
    }
}

/// Column `i`, JSON text, as a value; text that is not JSON is kept as a string.
pub(crate) fn json_column(
    row: &rusqlite::Row<'_>,
    i: usize,
) -> rusqlite::Result<serde_json::Value> {
    let text: String = row.get(i)?;
    Ok(parse_json(text))
}

/// Column `i`, nullable JSON text, as a value.
pub(crate) fn optional_json(
    row: &rusqlite::Row<'_>,
    i: usize,
) -> rusqlite::Result<Option<serde_json::Value>> {
    let text: Option<String> = row.get(i)?;
    Ok(text.map(parse_json))
}

/// Column `i`, JSON text, as a typed value; text that does not decode is an error naming the
/// column, never a silently dropped row.
pub(crate) fn typed_column<T: serde::de::DeserializeOwned>(
    row: &rusqlite::Row<'_>,
    i: usize,
) -> rusqlite::Result<T> {
    let text: String = row.get(i)?;
    serde_json::from_str(&text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn parse_json(text: String) -> serde_json::Value {
    serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
}

impl HashMemo for Store {
    fn recall(&self, path: &Path, size: u64, mtime_ns: i128) -> Option<String> {
        let key = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        self.conn()
            .query_row(
                "SELECT sha256 FROM verified_files WHERE path = ?1 AND size = ?2 AND mtime_ns = ?3",
                rusqlite::params![key.to_string_lossy(), size as i64, mtime_ns.to_string()],
                |row| row.get(0),
            )
            .optional()
            .ok()
            .flatten()
    }

    fn remember(&self, path: &Path, size: u64, mtime_ns: i128, sha256: &str) {
        let key = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        let result = self.conn().execute(
            "INSERT INTO verified_files (path, size, mtime_ns, sha256) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(path) DO UPDATE SET size = excluded.size, mtime_ns = excluded.mtime_ns,
               sha256 = excluded.sha256,
               verified_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
            rusqlite::params![
                key.to_string_lossy(),
                size as i64,
                mtime_ns.to_string(),
                sha256
            ],
        );
        // Forgetting a verification only costs a re-hash next time.
        if let Err(e) = result {
            tracing::warn!(
                "could not remember the verified hash of {}: {e}",
                path.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_apply_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/store.sqlite");
        let store = Store::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), MIGRATIONS.len() as i64);
        store.migrate().unwrap();
        drop(store);
        let store = Store::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), MIGRATIONS.len() as i64);
        let mode: String = store
            .conn()
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn refuses_a_store_from_the_future() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sqlite");
        {
            let store = Store::open(&path).unwrap();
            store
                .conn()
                .pragma_update(None, "user_version", 999)
                .unwrap();
        }
        let err = Store::open(&path).err().unwrap().to_string();
        assert!(err.contains("999") && err.contains("s.sqlite"), "{err}");
    }

    #[test]
    fn not_a_database_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junk.sqlite");
        std::fs::write(&path, vec![b'x'; 4096]).unwrap();
        let err = Store::open(&path).err().unwrap().to_string();
        assert!(err.contains("junk.sqlite"), "{err}");
    }

    #[test]
    fn hash_memo_is_keyed_by_size_and_mtime() {
        let store = Store::open_in_memory().unwrap();
        let p = Path::new("/nonexistent/model.gguf");
        store.remember(p, 10, 5, "abc");
        assert_eq!(store.recall(p, 10, 5).as_deref(), Some("abc"));
        assert_eq!(store.recall(p, 10, 6), None);
        assert_eq!(store.recall(p, 11, 5), None);
    }
}
