//! Pinning new models: a local GGUF file (`models add`) or one downloaded from a hub at a
//! revision (`models pull`) is copied into the models directory, hashed, and recorded.

use std::path::{Path, PathBuf};

use super::gguf_info;
use super::hashing::sha256_file;
use super::hub::{self, HubFile};
use super::{ModelError, ModelPin, Registry, Source};

impl Registry {
    /// Pins the GGUF file at `path` as `name`, copying it into the models directory (unless
    /// it is already there).
    pub fn pin_local(&mut self, path: &Path, name: &str) -> Result<ModelPin, ModelError> {
        self.refuse_taken(name)?;
        let summary = gguf_info::inspect(path).map_err(|e| ModelError::Pin {
            path: path.to_path_buf(),
            message: format!("{e}; only GGUF models can be pinned"),
        })?;
        let file_name = file_name(path)?;
        let target = self.dir().join(&file_name);
        let same_file = target.exists()
            && std::fs::canonicalize(&target).ok() == std::fs::canonicalize(path).ok();
        if target.exists() && !same_file {
            return Err(ModelError::Pin {
                path: target,
                message: "the file already exists; rename yours or remove the existing one".into(),
            });
        }
        if !same_file {
            self.copy_in(path, &target)?;
        }
        let original = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        self.record(
            name,
            &target,
            file_name,
            summary.name,
            Source::Local { path: original },
        )
    }

    /// Downloads `spec` into `cache_dir` and pins it as `name` (default: the file's stem).
    pub fn pin_from_hub(
        &mut self,
        spec: HubFile,
        name: Option<String>,
        cache_dir: &Path,
    ) -> Result<ModelPin, ModelError> {
        let name = name.unwrap_or_else(|| {
            Path::new(&spec.file)
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("model")
                .to_lowercase()
        });
        self.refuse_taken(&name)?;
        let downloaded = hub::download(&spec, cache_dir, true)?;
        let file_name = file_name(Path::new(&spec.file))?;
        let target = self.dir().join(&file_name);
        if target.exists() {
            return Err(ModelError::Pin {
                path: target,
                message: "the file already exists; remove it or pull under another name".into(),
            });
        }
        self.copy_in(&downloaded, &target)?;
        let description = gguf_info::inspect(&target).ok().and_then(|s| s.name);
        let source = Source::Huggingface {
            repo: spec.repo,
            revision: spec.revision,
            file: spec.file,
        };
        self.record(&name, &target, file_name, description, source)
    }

    fn refuse_taken(&self, name: &str) -> Result<(), ModelError> {
        if self.get(name).is_ok() {
            return Err(ModelError::DuplicateName {
                name: name.to_string(),
                registry: self.path(),
            });
        }
        Ok(())
    }

    fn copy_in(&self, from: &Path, to: &Path) -> Result<(), ModelError> {
        let io = |e: std::io::Error| ModelError::Pin {
            path: to.to_path_buf(),
            message: format!("cannot copy {} there: {e}", from.display()),
        };
        std::fs::create_dir_all(self.dir()).map_err(io)?;
        std::fs::copy(from, to).map_err(io)?;
        Ok(())
    }

    fn record(
        &mut self,
        name: &str,
        target: &Path,
        file: String,
        description: Option<String>,
        source: Source,
    ) -> Result<ModelPin, ModelError> {
        let sha256 = sha256_file(target)?;
        let size = std::fs::metadata(target)
            .map_err(|source| ModelError::Io {
                path: target.to_path_buf(),
                source,
            })?
            .len();
        let pin = ModelPin {
            name: name.to_string(),
            file,
            sha256,
            size,
            description,
            source,
        };
        self.add(pin.clone())?;
        Ok(pin)
    }
}

/// Whether a hub revision is a commit hash (a branch or tag can move under the pin).
pub fn is_commit(revision: &str) -> bool {
    revision.len() == 40 && revision.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Where downloads are cached: `$TUNINGFORK_CACHE`, else `$XDG_CACHE_HOME/tuningfork`, else
/// `~/.cache/tuningfork`; then `hub/`.
pub fn hub_cache_dir() -> PathBuf {
    std::env::var_os("TUNINGFORK_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|p| PathBuf::from(p).join("tuningfork")))
        .or_else(|| std::env::var_os("HOME").map(|p| PathBuf::from(p).join(".cache/tuningfork")))
        .unwrap_or_else(|| PathBuf::from(".cache/tuningfork"))
        .join("hub")
}

fn file_name(path: &Path) -> Result<String, ModelError> {
    path.file_name()
        .and_then(|f| f.to_str())
        .map(str::to_string)
        .ok_or_else(|| ModelError::Pin {
            path: path.to_path_buf(),
            message: "the path has no usable file name".into(),
        })
}
