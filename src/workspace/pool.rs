//! The engine pool and model roles: one loaded engine per model file and engine
//! configuration, shared by every run in the process, handed out by the role a model plays.
//!
//! A backend is identified by the model sha256 it serves and the configuration that can change
//! its output; a later backend (a remote OpenAI-compatible server serving a pinned model) slots
//! in under the same key without the runs above noticing.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::engine::{Engine, EngineConfig};
use crate::generator::{load_engine, GenerateError};
use crate::models::Registry;
use crate::store::Store;
use crate::task::Task;

/// The part a model plays in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ModelRole {
    /// Runs the program being evaluated or optimized.
    Task,
    /// Grades predictions for a judge metric.
    Judge,
    /// Writes and reflects on instructions for instruction optimizers.
    Proposer,
}

impl ModelRole {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelRole::Task => "task",
            ModelRole::Judge => "judge",
            ModelRole::Proposer => "proposer",
        }
    }
}

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
    /// The roles of `task`'s models, with no proposer.
    pub fn of(task: &Task) -> Self {
        RoleModels {
            task: task.task.model.clone(),
            judges: task.metric.judge_models(&task.task.model),
            proposer: None,
        }
    }

    /// Every distinct model, the task's first.
    pub fn all(&self) -> Vec<&str> {
        let mut all = vec![self.task.as_str()];
        for model in self.judges.iter().chain(&self.proposer) {
            if !all.contains(&model.as_str()) {
                all.push(model);
            }
        }
        all
    }
}

/// Loaded engines, by model sha256 and engine configuration.
pub struct EnginePool {
    engines: Mutex<BTreeMap<(String, String), Arc<Engine>>>,
}

impl EnginePool {
    pub fn new() -> Self {
        EnginePool {
            engines: Mutex::new(BTreeMap::new()),
        }
    }

    /// The engine of the pinned model `name` under `config`: loaded (after verifying the
    /// file) the first time, shared afterwards. `force_verify` re-hashes the file even when
    /// the engine is already loaded (a replay trusts only the file itself).
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
        if let Some(engine) = engines.get(&key) {
            if force_verify {
                registry.verify(name, store, true)?;
            }
            return Ok(Arc::clone(engine));
        }
        let engine = Arc::new(load_engine(
            registry,
            store,
            name,
            force_verify,
            config.clone(),
        )?);
        engines.insert(key, Arc::clone(&engine));
        Ok(engine)
    }

    /// How many engines are loaded.
    pub fn len(&self) -> usize {
        self.engines.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for EnginePool {
    fn default() -> Self {
        EnginePool::new()
    }
}
