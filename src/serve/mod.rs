//! `tuningfork serve`: pinned models and optimized programs over an OpenAI-compatible HTTP API,
//! on the shared engine pool, with every request recorded as a trace.
//!
//! The server is one run of kind `serve`: every model call a request makes is recorded under it
//! (and answered from the exact cache when an identical call is stored), and every request —
//! answered, refused or failed — becomes a row of `traces` with the calls it made.
//!
//! Architecture Invariant: the server is a front end like the command line. It reaches models
//! only through [`Generator`]s of its run, and programs only through `Program::forward`; the
//! wire format stops at [`openai`].
//!
//! Architecture Invariant: safe by default — loopback unless told otherwise, an API key for any
//! other address, bounded bodies, `max_tokens` and concurrency; a full server answers 429 with
//! `Retry-After`, never by dropping a request; shutdown stops accepting, finishes what is in
//! flight and records it.

mod api;
pub mod bench;
pub mod metrics;
pub mod openai;
pub mod programs;
pub mod schema;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::generator::{GenerateError, Generator};
use crate::lm::LmError;
use crate::program::ProgramError;
use crate::store::{NewTrace, Retention, Store};
use crate::task::Task;
use crate::workspace::{RunHandle, RunKind, Workspace, WorkspaceError};
use metrics::Metrics;
use openai::{ApiError, Usage};
pub use programs::ProgramSpec;
use programs::ServedProgram;

/// The environment variable that holds the API key when `--api-key` is not given.
pub const API_KEY_ENV: &str = "TUNINGFORK_API_KEY";

/// What to serve and how.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub addr: SocketAddr,
    /// Pinned models served by name for plain completions.
    pub models: Vec<String>,
    pub programs: Vec<ProgramSpec>,
    /// Required (as `Authorization: Bearer KEY`) on every request but `/health` when set;
    /// must be set to bind anything but loopback.
    pub api_key: Option<String>,
    /// Request bodies larger than this are refused with 413.
    pub max_body_bytes: usize,
    /// `max_tokens` is capped at this (and defaults to it).
    pub max_tokens: u32,
    /// Requests handled at once; one more is answered 429.
    pub max_concurrent: usize,
    pub use_cache: bool,
    pub retention: Retention,
}

impl ServeConfig {
    pub fn new(addr: SocketAddr) -> Self {
        ServeConfig {
            addr,
            models: Vec::new(),
            programs: Vec::new(),
            api_key: None,
            max_body_bytes: 1 << 20,
            max_tokens: 1024,
            max_concurrent: 64,
            use_cache: true,
            retention: Retention::default(),
        }
    }
}

/// A pinned model served for plain completions.
struct ServedModel {
    name: String,
    sha256: String,
    generator: Generator,
}

/// Everything a request handler reads.
struct State {
    store: Arc<Store>,
    run: RunHandle,
    models: Vec<ServedModel>,
    programs: Vec<ServedProgram>,
    metrics: Arc<Metrics>,
    slots: Arc<Semaphore>,
    config: ServeConfig,
    fingerprint_id: String,
    started_unix: u64,
}

/// What a request's `model` names.
enum Target<'a> {
    Model(&'a ServedModel),
    Program(&'a ServedProgram),
}

impl State {
    fn target(&self, model: &str) -> Result<Target<'_>, ApiError> {
        if let Some(m) = self.models.iter().find(|m| m.name == model) {
            return Ok(Target::Model(m));
        }
        if let Some(p) = self.programs.iter().find(|p| p.answers_to(model)) {
            return Ok(Target::Program(p));
        }
        Err(ApiError::not_found(format!(
            "this server has no model `{model}`; it serves {} (GET /v1/models lists them)",
            self.served_names().join(", ")
        ))
        .param("model"))
    }

    fn served_names(&self) -> Vec<String> {
        self.models
            .iter()
            .map(|m| m.name.clone())
            .chain(self.programs.iter().map(|p| p.id.clone()))
            .collect()
    }
}

/// A server bound to its address, its models loaded and its run begun.
pub struct Server {
    state: Arc<State>,
    listener: tokio::net::TcpListener,
    cancel: CancellationToken,
}

/// How a server's run ended.
#[derive(Debug, Clone)]
pub struct ServeReport {
    pub run_id: i64,
    pub requests: u64,
}

fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

impl Server {
    /// Loads every model and program, begins the `serve` run and binds the address. Nothing
    /// is begun when a model or a task is missing, or when a non-loopback address has no key.
    pub async fn start(
        ws: &Workspace,
        mut config: ServeConfig,
        cancel: CancellationToken,
    ) -> Result<Server, WorkspaceError> {
        if !is_loopback(&config.addr) && config.api_key.as_deref().is_none_or(str::is_empty) {
            return Err(WorkspaceError::Invalid(format!(
                "serving on {} (not a loopback address) needs an API key: pass --api-key or set \
                 {API_KEY_ENV}, or bind 127.0.0.1",
                config.addr
            )));
        }
        if config.models.is_empty() && config.programs.is_empty() {
            config.models.push(crate::task::default_model());
        }
        let mut engines = Vec::new();
        for name in &config.models {
            engines.push((name.clone(), ws.engine(name)?));
        }
        let mut tasks = Vec::new();
        for spec in &config.programs {
            let task = Task::load(&spec.task)?;
            let engine = ws.engine(&task.task.model)?;
            let own = ws.artifact_for(&task, task.program.clone())?;
            let pin = ws.registry().get(&task.task.model)?;
            let (_, embedders) = ws.corpus_uses(&task.program, &task.task.model)?;
            tasks.push((
                spec.clone(),
                task,
                engine,
                own,
                (pin.name.clone(), pin.sha256.clone()),
                embedders,
            ));
        }
        let main = engines
            .first()
            .map(|(_, e)| e)
            .or(tasks.first().map(|t| &t.2))
            .expect("at least one model is served");
        let run = ws.begin_run(
            RunKind::Serve,
            serde_json::json!({
                "addr": config.addr.to_string(),
                "models": config.models,
                "programs": config.programs.iter().map(|p| serde_json::json!({
                    "task": p.task, "artifact": p.artifact,
                })).collect::<Vec<_>>(),
                "max_tokens": config.max_tokens,
                "max_concurrent": config.max_concurrent,
                "cache": config.use_cache,
                "engine": ws.engine_config(),
            }),
            None,
            main,
            cancel.clone(),
        )?;
        let fingerprint_id = main.fingerprint().id();
        let models = engines
            .into_iter()
            .enumerate()
            .map(|(i, (name, engine))| ServedModel {
                name,
                sha256: engine.model_sha256().to_string(),
                generator: run.generator(engine, run.group(i), config.use_cache),
            })
            .collect::<Vec<_>>();
        let mut programs: Vec<ServedProgram> = Vec::new();
        for (i, (spec, task, engine, own, pin, embedders)) in tasks.into_iter().enumerate() {
            let group = run.group(models.len() + i);
            let generator = run.generator(engine, group, config.use_cache);
            let mut retriever = crate::retriever::CorpusRetriever::new(Arc::clone(ws.store()))
                .with_default_model(&task.task.model);
            for (name, engine) in embedders {
                retriever =
                    retriever.with_embedder(&name, run.generator(engine, group, config.use_cache));
            }
            let served = ServedProgram::new(
                task,
                spec.artifact.as_deref(),
                &own,
                pin,
                ws.store(),
                (generator, Arc::new(retriever)),
            );
            let served = match served {
                Ok(s) => s,
                Err(e) => {
                    run.finish::<()>(&Err(WorkspaceError::Invalid(e.to_string())))?;
                    return Err(e);
                }
            };
            let taken = programs.iter().any(|p| {
                p.id == served.id || served.alias.as_ref().is_some_and(|a| p.answers_to(a))
            });
            if taken || models.iter().any(|m| served.answers_to(&m.name)) {
                let error = WorkspaceError::Invalid(format!(
                    "two served programs would both answer to `{}`; serve one of them",
                    served.id
                ));
                run.finish::<()>(&Err(WorkspaceError::Invalid(error.to_string())))?;
                return Err(error);
            }
            programs.push(served);
        }
        let listener = match tokio::net::TcpListener::bind(config.addr).await {
            Ok(l) => l,
            Err(e) => {
                let error = WorkspaceError::Invalid(format!(
                    "cannot listen on {}: {e}; choose another --addr",
                    config.addr
                ));
                run.finish::<()>(&Err(WorkspaceError::Invalid(error.to_string())))?;
                return Err(error);
            }
        };
        let state = State {
            store: Arc::clone(ws.store()),
            run,
            models,
            programs,
            metrics: Arc::new(Metrics::default()),
            slots: Arc::new(Semaphore::new(config.max_concurrent.max(1))),
            config,
            fingerprint_id,
            started_unix: openai::now_unix(),
        };
        Ok(Server {
            state: Arc::new(state),
            listener,
            cancel,
        })
    }

    /// The address actually bound (port 0 becomes a free port).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.state.config.addr)
    }

    /// The names clients can use as `model`.
    pub fn served(&self) -> Vec<String> {
        let mut names = self.state.served_names();
        names.extend(self.state.programs.iter().filter_map(|p| p.alias.clone()));
        names
    }

    pub fn run_id(&self) -> i64 {
        self.state.run.id
    }

    /// Serves until the cancellation token fires, then stops accepting, lets requests in
    /// flight finish (and be recorded), and ends the run as completed.
    pub async fn run(self) -> Result<ServeReport, WorkspaceError> {
        let state = Arc::clone(&self.state);
        let retention = state.config.retention;
        if retention.keep_days.is_some() || retention.keep_max.is_some() {
            let store = Arc::clone(&state.store);
            let stop = self.cancel.clone();
            tokio::spawn(async move {
                loop {
                    if let Err(e) = store.prune_traces(&retention) {
                        tracing::warn!("pruning traces failed: {e}");
                    }
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_secs(60)) => {}
                    }
                }
            });
        }
        let app = api::router(Arc::clone(&state));
        let served = axum::serve(self.listener, app)
            .with_graceful_shutdown(self.cancel.clone().cancelled_owned())
            .await;
        let result = served.map_err(|e| WorkspaceError::Invalid(format!("the server failed: {e}")));
        state.run.finish(&result)?;
        result?;
        let requests = state.store.trace_count(state.run.id)?;
        Ok(ServeReport {
            run_id: state.run.id,
            requests,
        })
    }
}

/// What a request ended with, for its trace and the metrics.
#[derive(Debug, Default)]
struct Outcome {
    status: u16,
    response: Option<serde_json::Value>,
    error: Option<String>,
    program: Option<String>,
    artifact: Option<String>,
    steps: Option<serde_json::Value>,
    call_ids: Vec<i64>,
    usage: Usage,
    engine_seconds: f64,
}

impl Outcome {
    fn failed(error: &ApiError) -> Outcome {
        Outcome {
            status: error.status,
            response: Some(error.body()),
            error: Some(error.message.clone()),
            ..Outcome::default()
        }
    }
}

/// One request from arrival to its recorded trace.
struct Exchange {
    state: Arc<State>,
    endpoint: &'static str,
    started: Instant,
    uid: String,
    _in_flight: metrics::InFlight,
}

impl Exchange {
    fn new(state: &Arc<State>, endpoint: &'static str) -> Exchange {
        Exchange {
            state: Arc::clone(state),
            endpoint,
            started: Instant::now(),
            uid: crate::store::new_uid(),
            _in_flight: state.metrics.start(),
        }
    }

    /// Records the trace and the metrics; a store failure is logged, never turned into a
    /// different answer to a client that already has one.
    fn record(
        &self,
        model: &str,
        request: &serde_json::Value,
        user: Option<&str>,
        outcome: Outcome,
    ) {
        let seconds = self.started.elapsed().as_secs_f64();
        let usage = outcome.usage;
        let recorded = self.state.store.record_trace(&NewTrace {
            uid: &self.uid,
            run_id: self.state.run.id,
            endpoint: self.endpoint,
            model,
            program: outcome.program.as_deref(),
            artifact_hash: outcome.artifact.as_deref(),
            user,
            request: request.clone(),
            response: outcome.response,
            steps: outcome.steps,
            call_ids: outcome.call_ids,
            status: outcome.status,
            error: outcome.error.as_deref(),
            latency_ms: seconds * 1e3,
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
        });
        if let Err(e) = recorded {
            tracing::error!("cannot record trace {}: {e}", self.uid);
        }
        self.state.metrics.observe(
            self.endpoint,
            outcome.status,
            seconds,
            (usage.prompt_tokens, usage.completion_tokens),
            outcome.engine_seconds,
        );
    }
}

/// An engine or store failure as the client sees it.
fn generate_error(e: &GenerateError) -> ApiError {
    use crate::engine::EngineError;
    match e {
        GenerateError::Engine(EngineError::PromptTooLong { .. }) => {
            ApiError::invalid(e.to_string())
                .param("messages")
                .code("context_length_exceeded")
        }
        GenerateError::Engine(
            EngineError::InvalidRequest(_) | EngineError::Grammar(_) | EngineError::Template(_),
        ) => ApiError::invalid(e.to_string()),
        GenerateError::Engine(EngineError::Cancelled | EngineError::Stopped) => {
            ApiError::server(format!("{e}; the server is shutting down"))
                .status(503, "server_error")
        }
        _ => ApiError::server(e.to_string()),
    }
}

fn program_error(e: &ProgramError) -> ApiError {
    match e {
        ProgramError::MissingInput { .. } => ApiError::invalid(e.to_string()),
        ProgramError::Unparsable { .. } => ApiError::server(e.to_string()).code("unparsable_reply"),
        ProgramError::Lm(LmError::Cancelled) => {
            ApiError::server("the request was cancelled; the server is shutting down")
                .status(503, "server_error")
        }
        ProgramError::Lm(LmError::Failed(inner)) => match inner.downcast_ref::<GenerateError>() {
            Some(g) => generate_error(g),
            None => ApiError::server(e.to_string()),
        },
        ProgramError::Retrieve { .. } => ApiError::server(e.to_string()),
    }
}

/// Dataset rows from program traces: each successful program call's inputs, with its outputs
/// as proposed labels, marked unreviewed (`"_review": "unreviewed"`) and naming its trace
/// (`"_trace"`). Traces of plain model calls and failed requests give no row. Oldest first.
pub fn dataset_rows(traces: &[crate::store::TraceRecord]) -> Vec<serde_json::Value> {
    let mut rows: Vec<serde_json::Value> = traces
        .iter()
        .filter(|t| t.status < 400 && t.program.is_some())
        .filter_map(|t| {
            let inputs = t.steps.as_ref()?.get("inputs")?.as_object()?;
            let outputs = t.response.as_ref()?.as_object()?;
            let mut row = inputs.clone();
            for (name, value) in outputs {
                row.entry(name.clone()).or_insert_with(|| value.clone());
            }
            row.insert(
                crate::dataset::REVIEW_KEY.into(),
                serde_json::Value::String("unreviewed".into()),
            );
            row.insert("_trace".into(), serde_json::Value::String(t.uid.clone()));
            Some(serde_json::Value::Object(row))
        })
        .collect();
    rows.reverse();
    rows
}

/// Traces as a text table, a line each: uid, time, endpoint, model, status, latency, tokens,
/// score.
pub fn traces_table(traces: &[crate::store::TraceRecord]) -> String {
    let mut out = format!(
        "{:<17} {:<24} {:<18} {:<22} {:>6} {:>9} {:>7} {:>6}\n",
        "trace", "time", "endpoint", "model", "status", "latency", "tokens", "score"
    );
    for t in traces {
        out.push_str(&format!(
            "{:<17} {:<24} {:<18} {:<22} {:>6} {:>7.0}ms {:>7} {:>6}\n",
            t.uid,
            t.created_at,
            t.endpoint,
            t.model,
            t.status,
            t.latency_ms,
            t.prompt_tokens + t.completion_tokens,
            t.score.map_or("-".to_string(), |s| format!("{s:.2}")),
        ));
    }
    out
}
