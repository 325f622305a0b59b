//! Downloading a model file from a Hugging Face hub at a pinned revision (hf-hub).
//!
//! The endpoint comes from `HF_ENDPOINT` or `--endpoint`, so a mirror or a local test server
//! can stand in for the public hub.

use std::path::{Path, PathBuf};

use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Repo, RepoType};

use super::ModelError;

/// What to download.
#[derive(Debug, Clone)]
pub struct HubFile {
    pub repo: String,
    pub revision: String,
    pub file: String,
    /// Base URL of the hub; `None` uses `HF_ENDPOINT` or the public hub.
    pub endpoint: Option<String>,
}

/// Downloads `spec` into hf-hub's cache under `cache_dir` with a progress bar, returning the
/// path of the downloaded file.
pub fn download(spec: &HubFile, cache_dir: &Path, progress: bool) -> Result<PathBuf, ModelError> {
    let fail = |message: String| ModelError::Download {
        repo: spec.repo.clone(),
        revision: spec.revision.clone(),
        file: spec.file.clone(),
        message,
    };
    let mut builder = ApiBuilder::new()
        .with_cache_dir(cache_dir.to_path_buf())
        .with_progress(progress)
        .with_retries(2);
    if let Some(endpoint) = spec
        .endpoint
        .clone()
        .or_else(|| std::env::var("HF_ENDPOINT").ok())
    {
        builder = builder.with_endpoint(endpoint.trim_end_matches('/').to_string());
    }
    let api = builder.build().map_err(|e| fail(e.to_string()))?;
    let repo = api.repo(Repo::with_revision(
        spec.repo.clone(),
        RepoType::Model,
        spec.revision.clone(),
    ));
    repo.download(&spec.file).map_err(|e| fail(e.to_string()))
}
