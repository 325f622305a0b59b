//! The run store: one SQLite file holding every run, every model call and every model seen.
//!
//! Architecture Invariant: the schema only moves forward through the numbered files in
//! `store/migrations/`, embedded in the binary; a shipped migration is never edited.
//! Connection pragmas (WAL, `synchronous = NORMAL`, foreign keys) are set here, in code.

mod artifacts;
mod audit;
mod calls;
mod corpora;
mod error;
mod evals;
mod gc;
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
pub use corpora::{CorpusFileRecord, CorpusRecord, FileIndex, IndexChange, StoredVectors};
pub use error::StoreError;
pub use evals::EvalRecord;
pub use gc::{Collected, GcRun, RunSelection, Vacuumed};
pub use jobs::{CycleRecord, JobRecord, JobStatus, NewJob, WorkerId};
pub use optimizations::{CandidateRow, OptimizationRow, ResultRow, ScoredAt};
pub use runs::{new_uid, LoopStatus, ModelShare, NewRun, RunRecord, RunStatus, RunSummary};
pub use traces::{NewTrace, Pruned, Retention, TraceFilter, TraceRecord};

use crate::models::{HashMemo, ModelPin};

/// The default store location, relative to the working directory.
pub const DEFAULT_PATH: &str = "runs/tuningfork.sqlite";

/// How long a write waits for another connection (or process) to finish its own.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Space set aside beside a store file, released when the disk is full: enough for the
/// writes that record how runs ended.
pub const RESERVE_BYTES: u64 = 256 * 1024;

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
    (
        8,
        "retrieval corpora",
        include_str!("migrations/0008_corpora.sql"),
    ),
    (
        9,
        "where the token budget cut a reply short",
        include_str!("migrations/0009_cut_replies.sql"),
    ),
];

/// A handle on the store. Cheap operations run under one connection guarded by a mutex; the
/// store is shared between tasks behind an `Arc`.
pub struct Store {
    conn: Mutex<Connection>,
    path: Option<PathBuf>,
    /// Set when a write failed because the disk was full, so that whoever ends the run can
    /// say so, whatever error type carried the failure up.
    disk_full: std::sync::atomic::AtomicBool,
}

impl Store {
    /// Opens (creating if needed) the store at `path` and brings its schema up to date. A
    /// store that cannot be written (see [`read_only_reason`]) is refused here, before a
    /// command loads a model or starts work it could not record.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let store = Store::open_without_reserve(path)?;
        store.keep_reserve();
        Ok(store)
    }

    /// [`Store::open`] without setting space aside (commands that only read).
    fn open_without_reserve(path: &Path) -> Result<Store, StoreError> {
        if let Some(reason) = read_only_reason(path) {
            return Err(StoreError::ReadOnly {
                path: path.to_path_buf(),
                reason,
            });
        }
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
            disk_full: Default::default(),
        };
        store.configure()?;
        store.migrate()?;
        Ok(store)
    }

    /// The file of space set aside beside the store (see [`Store::release_reserve`]).
    fn reserve_path(&self) -> Option<PathBuf> {
        let path = self.path.as_ref()?;
        let mut name = path.file_name()?.to_os_string();
        name.push("-reserve");
        Some(path.with_file_name(name))
    }

    /// Sets [`RESERVE_BYTES`] aside beside the store, if they are not already: when the disk
    /// fills up during a run, releasing them is what lets the run be recorded as interrupted.
    /// The bytes are not zeros, which a compressing file system would not store.
    pub(crate) fn keep_reserve(&self) {
        let Some(reserve) = self.reserve_path() else {
            return;
        };
        let have = std::fs::metadata(&reserve).map_or(0, |m| m.len());
        if have < RESERVE_BYTES {
            let mut rng = crate::random::Rng::new(RESERVE_BYTES);
            let bytes: Vec<u8> = (0..RESERVE_BYTES / 8)
                .flat_map(|_| rng.next_u64().to_le_bytes())
                .collect();
            let written = std::fs::write(&reserve, bytes);
            if let Err(e) = written {
                let _ = std::fs::remove_file(&reserve);
                tracing::warn!("cannot set space aside in {}: {e}", reserve.display());
            }
        }
    }

    /// Frees the space set aside beside the store, so that the writes recording how a run
    /// ended fit on a full disk. The next run to begin sets it aside again.
    pub fn release_reserve(&self) {
        if let Some(reserve) = self.reserve_path() {
            let _ = std::fs::remove_file(reserve);
        }
    }

    /// Opens the store for commands that only read it. A writable store is opened as by
    /// [`Store::open`] (and upgraded); one that cannot be written — no write permission on the
    /// file or its directory, or a read-only mount — is opened read-only, and must already be
    /// at this version's schema. A missing store is an error, never created.
    pub fn open_for_reading(path: &Path) -> Result<Store, StoreError> {
        if !path.exists() {
            return Err(StoreError::Open {
                path: path.to_path_buf(),
                message: "no such file".into(),
            });
        }
        if read_only_reason(path).is_none() {
            return Store::open_without_reserve(path);
        }
        // A read-only connection to a store in WAL mode needs its shared-memory file; where
        // that cannot be created (a read-only directory or mount), SQLite can still read the
        // file as immutable — but only when no write-ahead log holds newer pages.
        let wal = {
            let mut name = path.as_os_str().to_os_string();
            name.push("-wal");
            std::fs::metadata(PathBuf::from(name)).map_or(0, |m| m.len())
        };
        let modes: &[&str] = if wal == 0 {
            &["mode=ro", "immutable=1"]
        } else {
            &["mode=ro"]
        };
        let conn = modes
            .iter()
            .find_map(|mode| {
                let uri = format!("{}?{mode}", uri(path));
                let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                    | rusqlite::OpenFlags::SQLITE_OPEN_URI
                    | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
                let conn = Connection::open_with_flags(uri, flags).ok()?;
                conn.busy_timeout(BUSY_TIMEOUT).ok()?;
                conn.query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| {
                    r.get::<_, i64>(0)
                })
                .ok()?;
                Some(conn)
            })
            .ok_or_else(|| StoreError::Open {
                path: path.to_path_buf(),
                message: "it is read-only, and SQLite cannot read it either".into(),
            })?;
        let store = Store {
            conn: Mutex::new(conn),
            path: Some(path.to_path_buf()),
            disk_full: Default::default(),
        };
        let (version, latest) = store.supported_version()?;
        if version < latest {
            return Err(StoreError::Open {
                path: path.to_path_buf(),
                message: format!(
                    "it has schema version {version}, older than this tuningfork's ({latest}), \
                     and cannot be upgraded because it is read-only; open it once with write \
                     access (or read a writable copy with --store)"
                ),
            });
        }
        Ok(store)
    }

    /// A store that lives only in memory (tests, dry runs).
    pub fn open_in_memory() -> Result<Store, StoreError> {
        let conn =
            Connection::open_in_memory().map_err(|e| StoreError::open(Path::new(":memory:"), e))?;
        let store = Store {
            conn: Mutex::new(conn),
            path: None,
            disk_full: Default::default(),
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
        if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull) {
            self.disk_full
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
        StoreError::sql(self.path.as_deref(), e)
    }

    /// Whether a write has failed because the disk (or the store's size limit) was full
    /// since the last call; the answer is for one run's ending, so asking clears it.
    pub fn take_disk_full(&self) -> bool {
        self.disk_full
            .swap(false, std::sync::atomic::Ordering::SeqCst)
    }

    fn configure(&self) -> Result<(), StoreError> {
        let conn = self.conn();
        conn.pragma_update(None, "foreign_keys", "ON")
            .and_then(|_| conn.busy_timeout(BUSY_TIMEOUT))
            .map_err(|e| self.sql_error(e))?;
        if self.path.is_some() {
            // Switching a new store to WAL needs it to itself, and SQLite does not wait for
            // that: when other processes are opening the same new store, try again.
            let started = std::time::Instant::now();
            loop {
                match conn.pragma_update(None, "journal_mode", "WAL") {
                    Err(e)
                        if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy)
                            && started.elapsed() < BUSY_TIMEOUT =>
                    {
                        std::thread::sleep(std::time::Duration::from_millis(10));
                    }
                    result => break result.map_err(|e| self.sql_error(e))?,
                }
            }
            conn.pragma_update(None, "synchronous", "NORMAL")
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

    /// The store's schema version and this binary's latest; a store newer than the binary
    /// is refused.
    fn supported_version(&self) -> Result<(i64, i64), StoreError> {
        let current = self.schema_version()?;
        let latest = MIGRATIONS.last().map_or(0, |m| m.0);
        if current > latest {
            return Err(StoreError::TooNew {
                path: self.path.clone().unwrap_or_default(),
                version: current,
                supported: latest,
            });
        }
        Ok((current, latest))
    }

    /// Applies every migration newer than the store, each in its own transaction.
    pub fn migrate(&self) -> Result<(), StoreError> {
        let (current, _) = self.supported_version()?;
        let mut conn = self.conn();
        for &(version, what, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
            // Another process opening the store at the same moment may be migrating too:
            // take the write lock first, then look again at what is left to do.
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(|e| self.sql_error(e))?;
            let now: i64 = tx
                .pragma_query_value(None, "user_version", |row| row.get(0))
                .map_err(|e| self.sql_error(e))?;
            if now >= version {
                continue;
            }
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

/// Why the store at `path` cannot be written, if it cannot: its file or directory has no
/// write permission (for anyone: a file made read-only stays read-only to root as well), this
/// user may not write it, or it is on a read-only mount. SQLite writes a log file beside the
/// store, so the directory must be writable too.
pub fn read_only_reason(path: &Path) -> Option<String> {
    let dir = match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => parent.to_path_buf(),
        None => PathBuf::from("."),
    };
    let nearest = |p: &Path| p.ancestors().find(|a| a.exists()).map(Path::to_path_buf);
    if path.exists() {
        if let Some(reason) = unwritable(path) {
            return Some(format!("the file {reason}"));
        }
    }
    // A directory yet to be created is as writable as its nearest existing ancestor.
    let dir = nearest(&dir)?;
    unwritable(&dir).map(|reason| format!("its directory {} {reason}", dir.display()))
}

#[cfg(unix)]
fn unwritable(path: &Path) -> Option<String> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    if mode & 0o222 == 0 {
        return Some("has no write permission".into());
    }
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: `c_path` is a valid NUL-terminated string that outlives the call.
    if unsafe { libc::access(c_path.as_ptr(), libc::W_OK) } == 0 {
        return None;
    }
    Some(match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::EROFS) => "is on a read-only file system".into(),
        _ => "is not writable by this user".into(),
    })
}

#[cfg(not(unix))]
fn unwritable(path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    meta.permissions()
        .readonly()
        .then(|| "is read-only".to_string())
}

/// `path` as an SQLite `file:` URI, every byte outside a safe set percent-encoded; an
/// absolute path gets an empty authority (`file:///…`), so `//x` is never read as a host.
fn uri(path: &Path) -> String {
    #[cfg(unix)]
    let bytes = {
        use std::os::unix::ffi::OsStrExt;
        path.as_os_str().as_bytes().to_vec()
    };
    #[cfg(not(unix))]
    let bytes = path.to_string_lossy().into_owned().into_bytes();
    let mut out = String::from(if path.is_absolute() {
        "file://"
    } else {
        "file:"
    });
    for b in bytes {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
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
    fn processes_opening_a_new_store_at_once_migrate_it_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sqlite");
        let opened: Vec<_> = (0..6)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || Store::open(&path).map(|s| s.schema_version()))
            })
            .collect();
        for handle in opened {
            let version = handle.join().unwrap().unwrap().unwrap();
            assert_eq!(version, MIGRATIONS.len() as i64);
        }
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

    #[cfg(unix)]
    #[test]
    fn a_read_only_store_is_refused_for_writing_and_still_read() {
        use std::os::unix::fs::PermissionsExt;
        let chmod = |p: &Path, mode: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sqlite");
        drop(Store::open(&path).unwrap());

        // The file without write permission (read-only to root as well).
        chmod(&path, 0o444);
        let err = Store::open(&path).err().unwrap();
        assert!(matches!(err, StoreError::ReadOnly { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("s.sqlite") && text.contains("no write permission"),
            "{text}"
        );
        assert!(text.contains("--store"), "{text}");
        let store = Store::open_for_reading(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), MIGRATIONS.len() as i64);
        drop(store);
        chmod(&path, 0o644);

        // The directory without write permission: SQLite's log could not be written.
        chmod(dir.path(), 0o555);
        let err = Store::open(&path).err().unwrap().to_string();
        assert!(err.contains("its directory"), "{err}");
        let store = Store::open_for_reading(&path).unwrap();
        assert_eq!(store.model_count().unwrap(), 0);
        drop(store);
        // A store to be made in a directory that cannot be written is refused too.
        let err = Store::open(&dir.path().join("new/s.sqlite"))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("read-only"), "{err}");
        chmod(dir.path(), 0o755);

        // Reading never creates a store.
        let missing = dir.path().join("missing.sqlite");
        assert!(Store::open_for_reading(&missing).is_err());
        assert!(!missing.exists());
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
