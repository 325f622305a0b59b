//! Errors about model files and pins, each naming the file and the fix.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read the model registry {path}: {source}")]
    RegistryRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the model registry {path} is malformed: {message}")]
    RegistryParse { path: PathBuf, message: String },
    #[error("cannot write the model registry {path}: {source}")]
    RegistryWrite {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no model named `{name}` in {registry}; known models: {known}")]
    UnknownModel {
        name: String,
        registry: PathBuf,
        known: String,
    },
    #[error("a model named `{name}` is already pinned in {registry}; choose another name")]
    DuplicateName { name: String, registry: PathBuf },
    #[error("model `{name}` is pinned but its file {path} is missing; {fix}")]
    Missing {
        name: String,
        path: PathBuf,
        fix: String,
    },
    #[error(
        "model file {path} has {actual_size} bytes, the pin for `{name}` says {expected_size}; the file is incomplete or a different file; {fix}"
    )]
    SizeMismatch {
        name: String,
        path: PathBuf,
        expected_size: u64,
        actual_size: u64,
        fix: String,
    },
    #[error(
        "model file {path} has sha256 {actual}, the pin for `{name}` says {expected}; refusing to load it; {fix}"
    )]
    HashMismatch {
        name: String,
        path: PathBuf,
        expected: String,
        actual: String,
        fix: String,
    },
    #[error("cannot pin {path}: {message}")]
    Pin { path: PathBuf, message: String },
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a readable GGUF file: {message}")]
    Gguf { path: PathBuf, message: String },
    #[error("download of {repo}@{revision}/{file} failed: {message}")]
    Download {
        repo: String,
        revision: String,
        file: String,
        message: String,
    },
    #[error("invalid model name `{0}`: use letters, digits, '.', '-' and '_' only")]
    InvalidName(String),
}
