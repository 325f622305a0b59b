//! The run layer every front end shares: the command line today, a server or a queue worker
//! next. A [`Workspace`] holds the store, the model registry and the engine pool; it hands out
//! models by role and owns each run's lifecycle, and its functions — [`optimize()`],
//! [`resume()`], [`rerun()`], [`evaluate()`], [`predict()`], [`replay()`], [`bench()`],
//! [`generate()`] — take plain config structs and return reports.
//!
//! Architecture Invariant: nothing here parses arguments, prints or exits; progress goes out
//! through [`Observer`](crate::observe::Observer)s and cancellation comes in through a
//! cancellation token.

mod audit;
mod check;
mod corpus;
mod evaluate;
mod lifecycle;
mod optimize;
mod pool;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use tokio_util::sync::CancellationToken;

pub use audit::{replay, ReplayRequest};
pub use check::{check, CheckReport, CheckRequest, PreviousCheck, Regression};
pub use corpus::{
    add_corpus, bench_retrieval, corpus_details, corpus_json, corpus_table, embed, search,
    AddCorpusRequest, CorpusAdded, CorpusEmbedded, CorpusUse,
};
pub use evaluate::{
    bench, bench_batched, bench_eval, bench_scheduler, evaluate, generate, predict,
    EvalBenchRequest, EvalRequest, Evaluated, PredictRequest, SplitName,
};
pub use lifecycle::{RunHandle, RunKind};
pub use optimize::{
    loop_specs, optimize, optimize_loops, rerun, resume, unique_optimizers, LoopObservers,
    OptimizeReport, OptimizeRequest, RerunReport, TaskInput,
};
pub use pool::{EnginePool, RoleModels, DEFAULT_PROPOSER};

use crate::artifact::{Artifact, ArtifactError, ArtifactModel};
use crate::audit::AuditError;
use crate::dataset::DatasetError;
use crate::engine::{Engine, EngineConfig};
use crate::eval::EvalError;
use crate::generator::{load_engine, GenerateError};
use crate::lm::Lm;
use crate::metrics::Judges;
use crate::models::{ModelError, Registry};
use crate::optimize::OptimizeError;
use crate::program::{Program, ProgramError};
use crate::store::{Store, StoreError};
use crate::task::{Task, TaskError};

/// Why a workspace call failed.
#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Generate(#[from] GenerateError),
    #[error(transparent)]
    Eval(#[from] EvalError),
    #[error(transparent)]
    Optimize(#[from] OptimizeError),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error(transparent)]
    Task(#[from] TaskError),
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error(transparent)]
    Program(#[from] ProgramError),
    /// The request cannot be carried out as given.
    #[error("{0}")]
    Invalid(String),
    /// One or more optimization loops failed (their errors, joined); the others' outcomes
    /// are reported with them.
    #[error("{0}")]
    LoopsFailed(String),
    /// The run's cancellation token fired; everything finished so far is stored.
    #[error("run {run} was interrupted; everything finished so far is stored")]
    Interrupted { run: String, kind: RunKind },
    /// The token fired before any run began (while models were verified or loaded).
    #[error("cancelled before a run began; nothing was stored")]
    Cancelled,
}

/// Refuses a task whose `max_tokens` cannot hold even the shortest complete reply of one of
/// its predictors (with this model's tokenizer), before anything runs.
pub fn check_reply_budget(engine: &Engine, task: &Task) -> Result<(), WorkspaceError> {
    let max_tokens = task.generation.max_tokens;
    for step in &task.program.steps {
        let Some(needed) = engine.min_reply_tokens(&step.grammar()) else {
            continue;
        };
        if (max_tokens as usize) < needed {
            return Err(WorkspaceError::Invalid(format!(
                "task `{}`, step `{}`: max_tokens = {max_tokens} cannot hold a complete reply; \
                 the shortest reply its output fields allow takes {needed} tokens with this \
                 model; set max_tokens in [generation] to at least {needed}",
                task.task.name, step.name
            )));
        }
    }
    Ok(())
}

/// Where a workspace keeps things, and how it runs engines.
#[derive(Debug, Clone)]
pub struct WorkspaceConfig {
    /// The SQLite store.
    pub store: PathBuf,
    /// The folder of `models.toml` and the model files.
    pub models_dir: PathBuf,
    /// How every engine this workspace loads runs.
    pub engine: EngineConfig,
    /// Re-hash model files even when the store remembers them unchanged.
    pub verify: bool,
}

impl WorkspaceConfig {
    /// The defaults of the command line: `runs/tuningfork.sqlite` and `models/`.
    pub fn new(store: impl AsRef<Path>, models_dir: impl AsRef<Path>) -> Self {
        WorkspaceConfig {
            store: store.as_ref().to_path_buf(),
            models_dir: models_dir.as_ref().to_path_buf(),
            engine: EngineConfig::default(),
            verify: false,
        }
    }
}

/// The store, the registry and the engine pool of one process.
pub struct Workspace {
    store: Arc<Store>,
    registry: Registry,
    pool: EnginePool,
    engine_config: EngineConfig,
    verify: bool,
}

/// A task's models by role, ready to call.
#[derive(Clone)]
pub struct TaskModels {
    /// The task model's engine (the run records its model and fingerprint).
    pub engine: Arc<Engine>,
    pub judges: Vec<(String, Arc<Engine>)>,
    /// The proposer's engine, for an optimizer that proposes instructions.
    pub proposer: Option<Arc<Engine>>,
    /// The engines that embed the queries of `retrieve` steps, by model name.
    pub embedders: Vec<(String, Arc<Engine>)>,
    /// The corpora the program searches, as runs record them.
    pub corpora: Vec<CorpusUse>,
}

impl Workspace {
    /// Opens (or creates) the store and reads the registry; loads no model.
    pub fn open(config: &WorkspaceConfig) -> Result<Workspace, WorkspaceError> {
        Ok(Workspace {
            store: Arc::new(Store::open(&config.store)?),
            registry: Registry::open(&config.models_dir)?,
            pool: EnginePool::new(),
            engine_config: config.engine.clone(),
            verify: config.verify,
        })
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn engine_config(&self) -> &EngineConfig {
        &self.engine_config
    }

    /// The engine of the pinned model `name`, loaded once per process.
    pub fn engine(&self, name: &str) -> Result<Arc<Engine>, WorkspaceError> {
        self.engine_with(name, &self.engine_config)
    }

    /// The engine of `name` after re-hashing its file, whatever the store remembers (once per
    /// process): what a replay runs on.
    pub fn verified_engine(&self, name: &str) -> Result<Arc<Engine>, WorkspaceError> {
        Ok(self
            .pool
            .get(&self.registry, &self.store, name, &self.engine_config, true)?)
    }

    /// The engine of `name` under another configuration (the scheduler benchmark's modes).
    pub fn engine_with(
        &self,
        name: &str,
        config: &EngineConfig,
    ) -> Result<Arc<Engine>, WorkspaceError> {
        Ok(self
            .pool
            .get(&self.registry, &self.store, name, config, self.verify)?)
    }

    /// A newly loaded engine of `name`, outside the pool (a benchmark that must start cold).
    pub fn fresh_engine(
        &self,
        name: &str,
        config: &EngineConfig,
    ) -> Result<Engine, WorkspaceError> {
        Ok(load_engine(
            &self.registry,
            &self.store,
            name,
            self.verify,
            config.clone(),
        )?)
    }

    /// Loads the engines of every model `task` needs, by role.
    pub fn task_models(&self, task: &Task) -> Result<TaskModels, WorkspaceError> {
        let roles = RoleModels::of(task);
        let engine = self.engine(&roles.task)?;
        let judges = roles
            .judges
            .iter()
            .map(|model| Ok((model.clone(), self.engine(model)?)))
            .collect::<Result<_, WorkspaceError>>()?;
        let (corpora, embedders) = self.corpus_uses(&task.program, &roles.task)?;
        check_reply_budget(&engine, task)?;
        Ok(TaskModels {
            engine,
            judges,
            proposer: None,
            embedders,
            corpora,
        })
    }

    /// Begins a run of `kind` whose main engine is `engine`.
    pub fn begin_run(
        &self,
        kind: RunKind,
        config: serde_json::Value,
        seed: Option<u64>,
        engine: &Engine,
        cancel: CancellationToken,
    ) -> Result<RunHandle, WorkspaceError> {
        RunHandle::begin(
            &self.store,
            kind,
            config,
            seed,
            (Some(engine.model_sha256()), engine.fingerprint()),
            cancel,
        )
    }

    /// An artifact of `program` for `task` and the model `task` is pinned to, with no history
    /// (a task's program as written, or one imported from DSPy).
    pub fn artifact_for(&self, task: &Task, program: Program) -> Result<Artifact, WorkspaceError> {
        let pin = self.registry.get(&task.task.model)?;
        Ok(Artifact::new(
            &task.task.name,
            program,
            ArtifactModel {
                name: pin.name.clone(),
                sha256: pin.sha256.clone(),
            },
        ))
    }

    /// Replaces `task`'s program with a stored artifact's (by hash, prefix or promoted name)
    /// after checking that it may run on this task and its model; returns the artifact's hash.
    pub fn use_artifact(
        &self,
        task: &mut Task,
        reference: Option<&str>,
    ) -> Result<Option<String>, WorkspaceError> {
        let Some(reference) = reference else {
            return Ok(None);
        };
        let stored = self.store.artifact(reference)?;
        let pin = self.registry.get(&task.task.model)?;
        stored.artifact.check_runs_on(
            &stored.hash,
            &task.task.name,
            (&pin.name, &pin.sha256),
            &task.example_inputs(),
        )?;
        task.program = stored.artifact.program;
        Ok(Some(stored.hash))
    }
}

impl TaskModels {
    /// The task's generator and judges for `run`, in the scheduler queue `group`.
    pub fn for_run(
        &self,
        run: &RunHandle,
        task_model: &str,
        group: u64,
        use_cache: bool,
    ) -> (Arc<dyn Lm>, Judges) {
        let lm: Arc<dyn Lm> = Arc::new(run.generator(Arc::clone(&self.engine), group, use_cache));
        let judges = self
            .judges
            .iter()
            .fold(Judges::new(task_model), |judges, (model, engine)| {
                judges.with(
                    model.clone(),
                    Arc::new(run.generator(Arc::clone(engine), group, use_cache)),
                )
            });
        (lm, judges)
    }

    /// The proposer's generator for `run`, in the scheduler queue `group`.
    pub fn proposer_for_run(
        &self,
        run: &RunHandle,
        group: u64,
        use_cache: bool,
    ) -> Option<Arc<dyn Lm>> {
        self.proposer.as_ref().map(|engine| {
            Arc::new(run.generator(Arc::clone(engine), group, use_cache)) as Arc<dyn Lm>
        })
    }
}
