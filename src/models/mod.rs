//! Model files pinned by sha256: the registry (`models/models.toml`), verification, GGUF
//! inspection and downloads.
//!
//! Architecture Invariant: a [`PinnedModel`] exists only after its file was checked against its
//! pin (size and sha256), so the engine can only ever load a verified file.

mod error;
pub mod gguf_info;
pub mod hashing;
pub mod hub;
pub mod pinning;
mod registry;

pub use error::ModelError;
pub use registry::{ModelPin, PypiPart, Registry, Source};

use std::path::{Path, PathBuf};

/// A model file whose content matched its pin when it was opened.
#[derive(Debug, Clone)]
pub struct PinnedModel {
    pin: ModelPin,
    path: PathBuf,
}

impl PinnedModel {
    pub fn name(&self) -> &str {
        &self.pin.name
    }
    pub fn sha256(&self) -> &str {
        &self.pin.sha256
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn pin(&self) -> &ModelPin {
        &self.pin
    }
}

/// Remembers verified hashes by (path, size, mtime), so a multi-GB file is not re-hashed on
/// every start. The store implements it; tests may use a map.
pub trait HashMemo {
    fn recall(&self, path: &Path, size: u64, mtime_ns: i128) -> Option<String>;
    fn remember(&self, path: &Path, size: u64, mtime_ns: i128, sha256: &str);
}

/// A memo that remembers nothing: every verification hashes the whole file.
pub struct NoMemo;

impl HashMemo for NoMemo {
    fn recall(&self, _: &Path, _: u64, _: i128) -> Option<String> {
        None
    }
    fn remember(&self, _: &Path, _: u64, _: i128, _: &str) {}
}
