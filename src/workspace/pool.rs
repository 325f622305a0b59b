//! The engine pool and model roles: one loaded engine per model file and engine
//! configuration, shared by every run in the process, handed out by the role a model plays.
//!
//! A backend is identified by the model sha256 it serves and the configuration that can change
//! its output; a later backend (a remote OpenAI-compatible server serving a pinned model) slots
//! in under the same key without the runs above noticing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use crate::engine::{Engine, EngineConfig};
use crate::generator::{load_engine, GenerateError};
use crate::models::{ModelError, Registry};
use crate::store::Store;
use crate::task::Task;

/// Which pinned model plays which role for a task: written once, here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleModels {
    pub task: String,
    /// Every model a judge of the task's metric runs on (the task's model for a judge that
    /// names none), each once.
    pub judges: Vec<String>,
    /// The model that proposes instructions, when the run has one.
    pub proposer: Option<String>,
}

impl RoleModels {
    /// The roles of `task`'s models, with no proposer (see [`RoleModels::with_proposer`]).
    pub fn of(task: &Task) -> Self {
        RoleModels {
            task: task.task.model.clone(),
            judges: task.metric.judge_models(&task.task.model),
            proposer: None,
        }
    }
}

/// The model that proposes instructions when none is chosen, if it is pinned and present.
pub const DEFAULT_PROPOSER: &str = "qwen2.5-coder-0.5b";

impl RoleModels {
    /// Adds the proposer: `chosen` when given (it must be pinned), else
    /// [`DEFAULT_PROPOSER`] when it is pinned and its file is present, else the task's model.
    pub fn with_proposer(
        mut self,
        registry: &Registry,
        chosen: Option<&str>,
    ) -> Result<Self, ModelError> {
        let proposer = match chosen {
            Some(name) => registry.get(name)?.name.clone(),
            None => match registry.get(DEFAULT_PROPOSER) {
                Ok(pin) if registry.file_path(pin).exists() => pin.name.clone(),
                _ => self.task.clone(),
            },
        };
        self.proposer = Some(proposer);
        Ok(self)
    }
}

/// Loaded engines, by model sha256 and engine configuration.
pub struct EnginePool {
    engines: Mutex<BTreeMap<Key, Arc<Engine>>>,
    /// Files re-hashed in this process on request (`force_verify`): hashed once, not at
    /// every request for the engine.
    rehashed: Mutex<BTreeSet<String>>,
}

/// A model sha256 and the engine configuration, as JSON.
type Key = (String, String);

impl EnginePool {
    pub fn new() -> Self {
        EnginePool {
            engines: Mutex::new(BTreeMap::new()),
            rehashed: Mutex::new(BTreeSet::new()),
        }
    }

    /// The engine of the pinned model `name` under `config`: loaded (after verifying the
    /// file) the first time, shared afterwards. `force_verify` re-hashes the file whatever the
    /// store remembers, once per process, even when the engine is already loaded (a replay
    /// trusts only the file itself).
    pub fn get(
        &self,
        registry: &Registry,
        store: &Store,
        name: &str,
        config: &EngineConfig,
        force_verify: bool,
    ) -> Result<Arc<Engine>, GenerateError> {
        let pin = registry.get(name)?;
        let key = (
            pin.sha256.clone(),
            serde_json::to_string(config).expect("engine configs serialize"),
        );
        // Held while loading, so that two runs asking at once load the model once.
        let mut engines = self.engines.lock().unwrap_or_else(|p| p.into_inner());
        let rehash = force_verify
            && self
                .rehashed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(pin.sha256.clone());
        if let Some(engine) = engines.get(&key) {
            if rehash {
                registry.verify(name, store, true)?;
            }
            return Ok(Arc::clone(engine));
        }
        let engine = Arc::new(load_engine(registry, store, name, rehash, config.clone())?);
        engines.insert(key, Arc::clone(&engine));
        Ok(engine)
    }
}

impl Default for EnginePool {
    fn default() -> Self {
        EnginePool::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(dir: &std::path::Path, with_proposer_file: bool) -> Registry {
        let pin = |name: &str, file: &str| {
            format!(
                "[[model]]\nname = \"{name}\"\nfile = \"{file}\"\nsha256 = \"{}\"\nsize = 1\n\n[model.source]\nkind = \"local\"\npath = \"/nowhere\"\n\n",
                "a".repeat(64)
            )
        };
        std::fs::write(
            dir.join("models.toml"),
            pin("small", "small.gguf") + &pin(DEFAULT_PROPOSER, "proposer.gguf"),
        )
        .unwrap();
        if with_proposer_file {
            std::fs::write(dir.join("proposer.gguf"), b"x").unwrap();
        }
        Registry::open(dir).unwrap()
    }

    fn roles(task: &str) -> RoleModels {
        RoleModels {
            task: task.into(),
            judges: Vec::new(),
            proposer: None,
        }
    }

    #[test]
    fn the_proposer_is_the_chosen_model_the_default_when_present_or_the_task_model() {
        let dir = tempfile::tempdir().unwrap();
        let absent = registry(dir.path(), false);
        let proposer = |r: &Registry, chosen| {
            roles("small")
                .with_proposer(r, chosen)
                .map(|roles| roles.proposer.unwrap())
        };
        assert_eq!(proposer(&absent, None).unwrap(), "small");
        assert_eq!(proposer(&absent, Some("small")).unwrap(), "small");
        assert!(proposer(&absent, Some("missing"))
            .unwrap_err()
            .to_string()
            .contains("missing"));
        let present = registry(dir.path(), true);
        assert_eq!(proposer(&present, None).unwrap(), DEFAULT_PROPOSER);
    }
}
