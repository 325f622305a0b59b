//! Store errors, naming the store file and what to do.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store {path}: {message}; pass --store to use another file")]
    Open { path: PathBuf, message: String },
    #[error(
        "the store {path} is read-only: {reason}. This command writes to the store: pass \
         --store PATH (or set TUNINGFORK_STORE) to use a writable file, or copy the store \
         somewhere writable. Commands that only read (runs list|show|audit|export, artifacts \
         list|show|diff|export, queue list|show, status, report) work on it as it is"
    )]
    ReadOnly { path: PathBuf, reason: String },
    #[error("store {path}: {message}")]
    Sql { path: PathBuf, message: String },
    #[error(
        "store {path} has schema version {version}, newer than this tuningfork supports ({supported}); upgrade tuningfork"
    )]
    TooNew {
        path: PathBuf,
        version: i64,
        supported: i64,
    },
    #[error("migration {version} ({what}) failed: {message}; the store was left at the previous version")]
    Migration {
        version: i64,
        what: &'static str,
        message: String,
    },
    #[error("cannot create {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no run {0} in the store; `tuningfork runs list` shows the stored runs")]
    NoSuchRun(String),
    #[error(
        "no artifact or promoted name `{0}` in the store; `tuningfork artifacts list` shows them"
    )]
    NoSuchArtifact(String),
    #[error("`{0}` is the start of more than one artifact hash; give more digits")]
    AmbiguousArtifact(String),
    #[error("`{0}` has never pointed at another artifact; there is nothing to roll back to")]
    NothingToRollBack(String),
    #[error("`{0}` looks like a hash; choose a name with other characters")]
    HashLikeName(String),
    #[error("no trace {0} in the store; `tuningfork traces list` shows the stored traces")]
    NoSuchTrace(String),
    #[error("{0}")]
    Invalid(String),
    #[error("the store holds data this tuningfork cannot read: {0}")]
    Corrupt(String),
}

impl StoreError {
    pub(crate) fn open(path: &Path, e: rusqlite::Error) -> Self {
        StoreError::Open {
            path: path.to_path_buf(),
            message: e.to_string(),
        }
    }

    pub(crate) fn sql(path: Option<&Path>, e: rusqlite::Error) -> Self {
        let mut message = e.to_string();
        if let rusqlite::Error::SqliteFailure(code, _) = &e {
            match code.code {
                rusqlite::ErrorCode::DiskFull => {
                    message = format!(
                        "disk full ({message}): free space on the disk that holds the store, \
                         then resume the run; nothing stored so far is lost"
                    )
                }
                rusqlite::ErrorCode::ReadOnly => message
                    .push_str("; the store is read-only: pass --store PATH to use a writable file"),
                rusqlite::ErrorCode::NotADatabase => {
                    message.push_str("; the file is not a tuningfork store")
                }
                _ => {}
            }
        }
        StoreError::Sql {
            path: path.map_or_else(|| PathBuf::from(":memory:"), Path::to_path_buf),
            message,
        }
    }
}
