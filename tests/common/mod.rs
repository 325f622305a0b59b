//! Helpers shared by the integration tests: the real models in `models/`, fresh stores.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::Value;
use tuningfork::engine::{Completion, Engine, EngineConfig, GenerationRequest};
use tuningfork::generator::{load_engine, GenerateError, Generator};
use tuningfork::models::Registry;
use tuningfork::store::{NewRun, Store};

pub const SMOLLM: &str = "smollm2-135m";
pub const GEMMA: &str = "gemma3-270m";

pub fn models_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models")
}

pub fn registry() -> Registry {
    Registry::open(&models_dir()).expect("models/models.toml parses")
}

/// Loads a shipped model; fails with the fix when the file is missing.
pub fn load(name: &str, config: EngineConfig) -> Arc<Engine> {
    let store = Store::open_in_memory().unwrap();
    let engine = load_engine(&registry(), &store, name, false, config).unwrap_or_else(|e| {
        panic!("{e}\n(the tests need the real models: run scripts/fetch-models.sh)")
    });
    Arc::new(engine)
}

/// One generation through a [`Generator`] with the cache off, recorded in a throwaway store:
/// the library offers no way around the store.
pub async fn complete(
    engine: &Arc<Engine>,
    request: GenerationRequest,
) -> Result<Completion, GenerateError> {
    generator(Arc::clone(engine), memory_store())
        .with_cache(false)
        .generate(request)
        .await
        .map(|generated| generated.completion)
}

/// One engine per model per test binary: tests in a binary run in parallel threads, and two
/// engines side by side would fight over the CPU cores.
pub fn shared(name: &str) -> Arc<Engine> {
    static SMOL: OnceLock<Arc<Engine>> = OnceLock::new();
    static GEM: OnceLock<Arc<Engine>> = OnceLock::new();
    let cell = match name {
        SMOLLM => &SMOL,
        GEMMA => &GEM,
        other => panic!("no shared engine for {other}"),
    };
    Arc::clone(cell.get_or_init(|| load(name, EngineConfig::default())))
}

/// A generator over `engine` writing into `store` under a new run.
pub fn generator(engine: Arc<Engine>, store: Arc<Store>) -> Generator {
    let run_id = store
        .begin_run(&NewRun {
            kind: "test",
            config: serde_json::json!({}),
            seed: None,
            model_sha256: Some(engine.model_sha256()),
            fingerprint: engine.fingerprint(),
        })
        .unwrap();
    Generator::new(engine, store, run_id)
}

pub fn memory_store() -> Arc<Store> {
    Arc::new(Store::open_in_memory().unwrap())
}

/// A runtime with two worker threads, for tests that submit work from several tasks at once.
pub fn multi_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

/// A temporary directory with its own store, for running the binary as a user does.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Self {
        Sandbox {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    pub fn store(&self) -> PathBuf {
        self.dir.path().join("store.sqlite")
    }
    /// The binary with this sandbox's store and the given models directory.
    pub fn command_in(&self, models: &Path, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tuningfork"));
        command
            .args(args)
            .env("TUNINGFORK_STORE", self.store())
            .env("TUNINGFORK_MODELS", models)
            .env_remove("TUNINGFORK_LOG")
            .env_remove("RUST_BACKTRACE");
        command
    }
    /// Runs the binary with this sandbox's store and the given models directory.
    pub fn run_in(&self, models: &Path, args: &[&str]) -> Output {
        self.command_in(models, args).output().unwrap()
    }
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_in(&models_dir(), args)
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A small copy of the bundled sentiment task: the first rows of its data as train, val and
/// test files. Returns the task file and the test split's reviews.
pub fn small_task(dir: &Path, train: usize, val: usize, test: usize) -> (PathBuf, Vec<String>) {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/examples/sentiment");
    let data = std::fs::read_to_string(examples.join("data.jsonl")).unwrap();
    let lines: Vec<&str> = data.lines().collect();
    let write = |name: &str, rows: &[&str]| {
        std::fs::write(dir.join(name), rows.join("\n") + "\n").unwrap();
    };
    write("train.jsonl", &lines[..train]);
    write("val.jsonl", &lines[train..train + val]);
    let test_rows = &lines[train + val..train + val + test];
    write("test.jsonl", test_rows);
    let task = std::fs::read_to_string(examples.join("task.toml")).unwrap();
    let dataset_start = task.find("[dataset]").unwrap();
    let dataset_end = task.find("[metric]").unwrap();
    let task = format!(
        "{}[dataset]\ntrain = \"train.jsonl\"\nval = \"val.jsonl\"\ntest = \"test.jsonl\"\n\n{}",
        &task[..dataset_start],
        &task[dataset_end..]
    );
    let path = dir.join("task.toml");
    std::fs::write(&path, task).unwrap();
    let reviews = test_rows
        .iter()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["review"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    (path, reviews)
}

pub fn db(sandbox: &Sandbox) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(sandbox.store()).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn
}

pub fn count(conn: &rusqlite::Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

/// The standard output of a command that must have succeeded.
pub fn ok(output: &std::process::Output) -> String {
    assert!(
        output.status.success(),
        "stdout:\n{}\nstderr:\n{}",
        stdout(output),
        stderr(output)
    );
    stdout(output)
}

/// The run's report from `--json` output.
pub fn report(output: &std::process::Output) -> Value {
    let out = ok(output);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// Optimization runs use both cores; running two at once would only slow both.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// Waits until `sql` counts at least `at_least` rows, then kills the process with SIGKILL.
pub fn kill_when(
    sandbox: &Sandbox,
    mut child: std::process::Child,
    sql: &str,
    at_least: i64,
) -> i64 {
    let started = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended ({status}) before it could be killed");
        }
        let reached = rusqlite::Connection::open(sandbox.store())
            .and_then(|c| c.query_row(sql, [], |r| r.get::<_, i64>(0)))
            .unwrap_or(0);
        if reached >= at_least {
            child.kill().unwrap();
            child.wait().unwrap();
            return reached;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the run made no progress"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
