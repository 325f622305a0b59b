//! Command-line arguments. Only the binary sees these types.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "tuningfork",
    version,
    about = "A fully local optimization appliance for LLM prompt programs"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// The SQLite store holding every run and model call.
    #[arg(long, global = true, env = "TUNINGFORK_STORE", default_value = tuningfork::store::DEFAULT_PATH)]
    pub store: PathBuf,
    /// The directory holding models.toml and the GGUF files.
    #[arg(
        long,
        global = true,
        env = "TUNINGFORK_MODELS",
        default_value = "models"
    )]
    pub models_dir: PathBuf,
    /// More log output (-v: info, -vv: debug). TUNINGFORK_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Args, Clone)]
pub struct EngineArgs {
    /// CPU threads (default: the number of physical cores).
    #[arg(long, env = "TUNINGFORK_THREADS")]
    pub threads: Option<u32>,
    /// Context window of each sequence, in tokens.
    #[arg(long, default_value_t = 4096)]
    pub ctx_size: u32,
    /// Tokens evaluated per step (decode tokens plus prompt chunks).
    #[arg(long, default_value_t = 512)]
    pub batch_size: u32,
    /// Sequences decoded together.
    #[arg(long, default_value_t = 4)]
    pub slots: u32,
    /// Do not reuse the KV cache of shared prompt prefixes.
    #[arg(long)]
    pub no_prefix_reuse: bool,
    /// Decode grammar-forced text (field names, separators) one token at a time instead of
    /// appending it as one chunk (outputs are the same; this is for measuring).
    #[arg(long)]
    pub no_jump_forward: bool,
    /// Layers to offload to the GPU (CUDA, Metal and Vulkan builds).
    #[arg(long, default_value_t = 0)]
    pub gpu_layers: u32,
    /// Re-hash the model file even if the store remembers it as verified.
    #[arg(long)]
    pub verify: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate a completion with a pinned model and record the call.
    Generate(GenerateArgs),
    /// List, inspect, verify, add and download pinned models.
    #[command(subcommand)]
    Models(ModelsCommand),
    /// Show stored runs.
    #[command(subcommand)]
    Runs(RunsCommand),
    /// Measure prefill and decode speed of a model.
    Bench(BenchArgs),
    /// Evaluate a task's program on one of its splits.
    Eval(EvalArgs),
    /// Run a task's program on one input.
    Predict(PredictArgs),
    /// Versioned programs: create, list, show, diff, export, import, promote, roll back.
    #[command(subcommand)]
    Artifacts(ArtifactsCommand),
    /// Optimize tasks' programs: few-shot and instruction optimizers scored on validation,
    /// reported on test.
    Optimize(OptimizeArgs),
    /// Continue an interrupted optimization run without redoing its stored work.
    Resume(ResumeArgs),
    /// Recompute a stored run's model calls and compare every output byte for byte.
    Replay(ReplayArgs),
    /// Run a stored optimization again from its stored inputs and compare the two.
    Rerun(RerunArgs),
    /// Serve pinned models and programs over an OpenAI-compatible HTTP API, tracing every
    /// request.
    Serve(ServeArgs),
    /// Traces of served requests: list, show, export.
    #[command(subcommand)]
    Traces(TracesCommand),
    /// Turn traces into dataset rows; append reviewed rows to a task's dataset.
    #[command(subcommand)]
    Dataset(DatasetCommand),
    /// Optimizations to run later, on a schedule or when the data changes: add, list, show,
    /// cancel.
    #[command(subcommand)]
    Queue(QueueCommand),
    /// Run queued optimizations one at a time, promoting only results that beat production
    /// on the held-out test split.
    Worker(WorkerArgs),
    /// The queue, what the worker is doing, and the latest results.
    Status(StatusArgs),
    /// Write a self-contained HTML report of a run, or a task's promotion history.
    Report(ReportArgs),
    /// Evaluate a program and fail (exit 1) when it scores below a bar or regressed since the
    /// last check.
    Check(CheckArgs),
    /// Retrieval corpora in the store: add files, embed, search, list, show, remove.
    #[command(subcommand)]
    Corpus(CorpusCommand),
}

#[derive(Debug, Subcommand)]
pub enum CorpusCommand {
    /// Index files into a corpus (created when new): JSONL with `id` and `text` (other keys
    /// kept as metadata), plain text and Markdown split into passages; directories are read
    /// for such files. Unchanged files are skipped; a changed file updates only the passages
    /// that changed.
    Add(CorpusAddArgs),
    /// Embed every passage of a corpus that has no embedding from a pinned model.
    Embed {
        name: String,
        #[arg(long, default_value = "smollm2-135m")]
        model: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        engine: EngineArgs,
    },
    /// What a retrieve step would return for a query.
    Search {
        name: String,
        query: String,
        #[arg(short, long, default_value_t = 3)]
        k: usize,
        #[arg(long, value_enum, default_value_t = MethodArg::Bm25)]
        method: MethodArg,
        /// The embedding model (embedding and hybrid).
        #[arg(long, default_value = "smollm2-135m")]
        model: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        engine: EngineArgs,
    },
    /// The corpora in the store.
    List {
        #[arg(long)]
        json: bool,
    },
    /// One corpus: its files, content hash, embeddings and first passages.
    Show {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Delete a corpus with its passages, index and embeddings.
    Remove { name: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MethodArg {
    Bm25,
    Embedding,
    Hybrid,
}

#[derive(Debug, Args)]
pub struct CorpusAddArgs {
    pub name: String,
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Longest passage cut from text and Markdown, in characters.
    #[arg(long, default_value_t = 600)]
    pub max_chars: usize,
    /// Characters repeated from the end of a passage at the start of the next when a long
    /// paragraph is cut.
    #[arg(long, default_value_t = 0)]
    pub overlap: usize,
    /// Then embed the corpus with this pinned model.
    #[arg(long)]
    pub embed: Option<String>,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub engine: EngineArgs,
}

#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Check a job completely and add it to the queue.
    Add(Box<QueueAddArgs>),
    /// The jobs not yet finished (all with --all).
    List {
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// One job: its configuration, its cycles and their decisions.
    Show {
        id: i64,
        #[arg(long)]
        json: bool,
    },
    /// Stop a job from running again; a worker running it stops within seconds and the run is
    /// kept as interrupted.
    Cancel { id: i64 },
}

#[derive(Debug, Args)]
pub struct QueueAddArgs {
    /// Task files (TOML); the job keeps a snapshot of each with its data.
    #[arg(required = true)]
    pub tasks: Vec<PathBuf>,
    #[command(flatten)]
    pub search: SearchArgs,
    /// Run again this long after each cycle started (e.g. 1d, 12h, 30m).
    #[arg(long)]
    pub every: Option<String>,
    /// Run again whenever a task file or its data changes (rows added with `dataset add`, a
    /// file edited).
    #[arg(long)]
    pub on_change: bool,
    /// Point this name at a result only when it beats what the name points at on the test
    /// split by --margin (each cycle starts from that program).
    #[arg(long)]
    pub promote: Option<String>,
    /// How much better on test a result must score to be promoted.
    #[arg(long, default_value_t = 0.01, requires = "promote")]
    pub margin: f64,
    /// A command run (without a shell) after each cycle with a JSON summary on stdin, e.g.
    /// --notify "/usr/local/bin/send-mail ops@example.com". Quote arguments with spaces.
    #[arg(long)]
    pub notify: Option<String>,
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// How long to sleep when nothing is due (e.g. 30s, 5m).
    #[arg(long, default_value = "30s")]
    pub poll: String,
    /// Run each job that is due once, then exit instead of sleeping (for cron or a CI job).
    #[arg(long)]
    pub drain: bool,
    #[command(flatten)]
    pub engine: EngineArgs,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Include finished jobs.
    #[arg(long)]
    pub all: bool,
    /// How many of the latest cycles to show.
    #[arg(long, default_value_t = 5)]
    pub recent: usize,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The optimization run's id or uid (`tuningfork runs list`).
    #[arg(required_unless_present = "task", conflicts_with = "task")]
    pub run: Option<String>,
    /// Instead of a run: the history of a task's promoted programs.
    #[arg(long)]
    pub task: Option<String>,
    /// Where to write the HTML file.
    #[arg(long, default_value = "report.html")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The task file (TOML).
    pub task: PathBuf,
    /// The program to check: a promoted name, hash or prefix (default: the task's own).
    #[arg(long)]
    pub program: Option<String>,
    /// The lowest acceptable mean score.
    #[arg(long)]
    pub min_score: f64,
    /// How far below the last check of the same program the score may fall.
    #[arg(long, default_value_t = 0.02)]
    pub tolerance: f64,
    #[arg(long, value_enum, default_value = "test")]
    pub split: SplitName,
    /// Recompute every call instead of reading the cache.
    #[arg(long)]
    pub no_cache: bool,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub engine: EngineArgs,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A program to serve: TASK.toml (its program as written, model `program:TASK-NAME`) or
    /// TASK.toml=ARTIFACT (a hash, or a promoted name followed on every request: model
    /// `program:NAME` or just `NAME`). Repeatable.
    #[arg(long = "program", value_name = "TASK[=ARTIFACT]")]
    pub programs: Vec<tuningfork::serve::ProgramSpec>,
    /// A pinned model to serve for plain completions. Repeatable; the default model when
    /// neither --model nor --program is given.
    #[arg(long = "model", value_name = "NAME")]
    pub models: Vec<String>,
    /// Address to listen on. Anything but loopback needs an API key.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: std::net::SocketAddr,
    /// The key clients must send as `Authorization: Bearer KEY`.
    #[arg(long, env = tuningfork::serve::API_KEY_ENV, hide_env_values = true)]
    pub api_key: Option<String>,
    /// Cap (and default) of `max_tokens`.
    #[arg(long, default_value_t = 1024)]
    pub max_tokens: u32,
    /// Requests handled at once; beyond that clients get 429 with Retry-After.
    #[arg(long, default_value_t = 64)]
    pub max_concurrent: usize,
    /// Largest request body, in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    pub max_body: usize,
    /// Compute every request, even when an identical call is stored.
    #[arg(long)]
    pub no_cache: bool,
    /// Delete traces (and their calls) older than this many days, checked every minute.
    #[arg(long)]
    pub keep_days: Option<u32>,
    /// Keep at most this many traces, the newest.
    #[arg(long)]
    pub keep_max: Option<u64>,
    #[command(flatten)]
    pub engine: EngineArgs,
}

#[derive(Debug, Args, Clone, Default)]
pub struct TraceFilterArgs {
    /// Only traces of this program (task name, served id or promoted name) or model.
    #[arg(long)]
    pub program: Option<String>,
    /// From this time on: a UTC timestamp (2026-11-22, 2026-11-22T08:00) or an age (30m, 12h, 7d).
    #[arg(long)]
    pub since: Option<String>,
    /// Before this time (same forms as --since).
    #[arg(long)]
    pub until: Option<String>,
    /// Only requests answered with an error.
    #[arg(long, conflicts_with = "ok")]
    pub errors: bool,
    /// Only requests answered successfully.
    #[arg(long)]
    pub ok: bool,
    /// Only traces a client scored at least this.
    #[arg(long)]
    pub min_score: Option<f64>,
    /// Only traces a client scored at most this.
    #[arg(long)]
    pub max_score: Option<f64>,
}

#[derive(Debug, Subcommand)]
pub enum TracesCommand {
    /// The most recent traces.
    List {
        #[command(flatten)]
        filter: TraceFilterArgs,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// One trace in full: request, response, program steps, calls.
    Show { id: String },
    /// Traces as JSON Lines, oldest first.
    Export {
        #[command(flatten)]
        filter: TraceFilterArgs,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum DatasetCommand {
    /// Write a program's traced inputs as dataset rows, its outputs as proposed labels
    /// marked `"_review": "unreviewed"`.
    FromTraces {
        #[command(flatten)]
        filter: TraceFilterArgs,
        #[arg(long)]
        out: PathBuf,
    },
    /// Append reviewed rows to a task's dataset (its `added` file), refusing unreviewed rows,
    /// duplicates and rows that would leak validation or test examples.
    Add { task: PathBuf, file: PathBuf },
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The run's id or uid.
    pub run: String,
    /// Recompute only N distinct requests, chosen with --seed.
    #[arg(long)]
    pub sample: Option<usize>,
    /// The seed that chooses the sample.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Requests submitted at once (the engine batches them as it can).
    #[arg(long, default_value_t = 32)]
    pub jobs: usize,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub engine: EngineArgs,
}

#[derive(Debug, Args)]
pub struct RerunArgs {
    /// The optimization run's id or uid.
    pub run: String,
    /// Answer calls from the cache where possible (by default every call is recomputed).
    #[arg(long)]
    pub use_cache: bool,
    /// Print the outcome as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// An optimizer on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OptimizerName {
    /// k labeled demonstrations sampled from train (k = --max-labeled).
    Labeled,
    /// Each input shown its --nearest most similar training examples (KNNFewShot).
    Knn,
    /// Demonstrations from the teacher's passing traces, filled up with labeled ones.
    Bootstrap,
    /// Zero-shot, labeled, bootstrap and --candidates shuffled bootstraps, best on val.
    RandomSearch,
    /// Instructions evolved by a proposer model reflecting on the metric's feedback, with a
    /// Pareto front of candidates and merges (--auto, --metric-calls, --proposer).
    Gepa,
    /// MIPROv2: grounded instruction proposals and demonstration sets, chosen together by a
    /// seeded Bayesian (TPE) search on validation minibatches (--auto, --trials, --proposer).
    Mipro,
}

/// How much an instruction optimizer tries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AutoLevel {
    Light,
    Medium,
    Heavy,
}

#[derive(Debug, Args)]
pub struct OptimizeArgs {
    /// Task files (TOML). Each task and optimizer pair runs as its own loop; all loops share
    /// one engine per model.
    #[arg(required = true)]
    pub tasks: Vec<PathBuf>,
    #[command(flatten)]
    pub search: SearchArgs,
    /// Point this name at the result (with a single loop).
    #[arg(long)]
    pub promote: Option<String>,
    /// Print the outcome as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// The optimizers, their settings and the budget: shared by `optimize` and `queue add`.
#[derive(Debug, Args)]
pub struct SearchArgs {
    /// The optimizer (repeatable: each one runs on every task).
    #[arg(long = "optimizer", value_enum, default_values_t = [OptimizerName::RandomSearch])]
    pub optimizers: Vec<OptimizerName>,
    /// Stop after this long with the best program so far (e.g. 8h, 90m, 1h30m).
    #[arg(long)]
    pub budget_time: Option<String>,
    /// Stop before making more than this many model calls (cached ones included).
    #[arg(long)]
    pub budget_calls: Option<u64>,
    /// Stop after this many prompt and completion tokens.
    #[arg(long)]
    pub budget_tokens: Option<u64>,
    /// The seed of every random choice (default: each task's `[task] seed`).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Demonstrations per predictor in total (labeled: k).
    #[arg(long, default_value_t = 8)]
    pub max_labeled: usize,
    /// Demonstrations taken from passing teacher traces, per predictor.
    #[arg(long, default_value_t = 4)]
    pub max_bootstrapped: usize,
    /// Passes of the teacher over train; later ones sample at temperature 0.7.
    #[arg(long, default_value_t = 1)]
    pub max_rounds: usize,
    /// A teacher trace passes when its metric score is at least this.
    #[arg(long, default_value_t = 1.0)]
    pub threshold: f64,
    /// Shuffled bootstraps tried by random search.
    #[arg(long, default_value_t = 8)]
    pub candidates: usize,
    /// Start from a stored artifact (hash, prefix or promoted name) instead of the task
    /// file's program.
    #[arg(long)]
    pub program: Option<String>,
    /// The pinned model that proposes instructions (default: qwen2.5-coder-0.5b when it is
    /// pinned and present, else the task's model).
    #[arg(long)]
    pub proposer: Option<String>,
    /// The effort preset of instruction optimizers, with DSPy's numbers: 6, 12 or 18
    /// instruction candidates (MIPROv2: trials from that; GEPA: its metric-call budget).
    #[arg(long, value_enum, default_value = "light")]
    pub auto: AutoLevel,
    /// MIPROv2's search trials (overrides --auto).
    #[arg(long)]
    pub trials: Option<usize>,
    /// MIPROv2's validation examples per trial.
    #[arg(long, default_value_t = 35)]
    pub minibatch: usize,
    /// GEPA's budget in metric calls, examples scored (overrides --auto).
    #[arg(long)]
    pub metric_calls: Option<usize>,
    /// Training examples shown to each input, the most similar ones: knn's k, and MIPROv2's
    /// extra demonstration set (0: MIPROv2 without it).
    #[arg(long, default_value_t = tuningfork::optimize::mipro::DEFAULT_NEAREST)]
    pub nearest: usize,
    /// The longest instruction an instruction optimizer accepts, in characters.
    #[arg(long, default_value_t = tuningfork::optimize::instructions::DEFAULT_MAX_CHARS)]
    pub max_chars: usize,
}

#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// The run's id or uid (`tuningfork runs list`).
    pub run: String,
    /// Print the outcome as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub engine: EngineArgs,
}

#[derive(Debug, Subcommand)]
pub enum ArtifactsCommand {
    /// Store a task's program as it is written (the baseline) and print its hash.
    Create { task: PathBuf },
    /// Every stored artifact.
    List,
    /// One artifact as JSON.
    Show { id: String },
    /// What changed from A to B.
    Diff { a: String, b: String },
    /// Write an artifact's JSON to a file (or stdout).
    Export {
        id: String,
        #[arg(long)]
        out: Option<PathBuf>,
        /// `tuningfork` (everything, re-importable as is) or `dspy` (DSPy's saved-program
        /// JSON: instructions and demonstrations per predictor).
        #[arg(long, value_enum, default_value = "tuningfork")]
        format: ArtifactFormat,
    },
    /// Store an exported artifact, or a DSPy saved program (with --format dspy --task).
    Import {
        file: PathBuf,
        #[arg(long, value_enum, default_value = "tuningfork")]
        format: ArtifactFormat,
        /// The task the DSPy program belongs to (its fields, types and model).
        #[arg(long)]
        task: Option<PathBuf>,
    },
    /// Point a name at an artifact.
    Promote { name: String, id: String },
    /// Point a name back at the artifact it had before.
    Rollback { name: String },
}

/// An artifact file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ArtifactFormat {
    Tuningfork,
    Dspy,
}

/// A dataset split.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum SplitName {
    Train,
    Val,
    Test,
}

impl From<SplitName> for tuningfork::workspace::SplitName {
    fn from(split: SplitName) -> Self {
        match split {
            SplitName::Train => tuningfork::workspace::SplitName::Train,
            SplitName::Val => tuningfork::workspace::SplitName::Val,
            SplitName::Test => tuningfork::workspace::SplitName::Test,
        }
    }
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The task file (TOML).
    pub task: PathBuf,
    #[arg(long, value_enum, default_value = "val")]
    pub split: SplitName,
    /// Evaluate a stored artifact (hash, hash prefix or promoted name) instead of the task
    /// file's program.
    #[arg(long)]
    pub program: Option<String>,
    /// Always run inference, even when an identical call is stored.
    #[arg(long)]
    pub no_cache: bool,
    /// Print every example's result as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub engine: EngineArgs,
}

#[derive(Debug, Args)]
pub struct PredictArgs {
    /// The task file (TOML).
    pub task: PathBuf,
    /// The example's input fields as a JSON object.
    #[arg(long)]
    pub input: String,
    /// Run a stored artifact (hash, hash prefix or promoted name) instead of the task file's
    /// program.
    #[arg(long)]
    pub program: Option<String>,
    /// Print the whole trace as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub engine: EngineArgs,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// The pinned model to use (see `tuningfork models list`).
    #[arg(long, default_value = "smollm2-135m")]
    pub model: String,
    /// A system message (ignored with --raw).
    #[arg(long)]
    pub system: Option<String>,
    /// Pass the prompt to the tokenizer as is, without the chat format.
    #[arg(long)]
    pub raw: bool,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Keep only the K most likely tokens (0: all).
    #[arg(long, default_value_t = 0)]
    pub top_k: u32,
    /// Nucleus sampling mass (1: all).
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Minimum probability relative to the top token (0: off).
    #[arg(long, default_value_t = 0.0)]
    pub min_p: f32,
    /// Seed for sampling (used when temperature > 0).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Maximum number of generated tokens.
    #[arg(long, default_value_t = 256)]
    pub max_tokens: u32,
    /// Stop before this string (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
    /// A GBNF grammar file constraining the output (root rule `root`).
    #[arg(long)]
    pub grammar: Option<PathBuf>,
    /// Always run inference, even when an identical call is stored.
    #[arg(long)]
    pub no_cache: bool,
    /// Print the completion's details as JSON instead of the text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// The prompt (the user message, or the raw text with --raw).
    pub prompt: String,
}

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// List pinned models and whether their files are present.
    List,
    /// Show what a model's GGUF header says (without loading weights).
    Inspect {
        /// A pinned model name, or a path to a GGUF file.
        model: String,
        #[arg(long)]
        json: bool,
    },
    /// Check model files against their pins (all models when no name is given).
    Verify { name: Option<String> },
    /// Pin a GGUF file you already have: copy it into the models directory and record its hash.
    Add {
        path: PathBuf,
        #[arg(long)]
        name: String,
    },
    /// Download a file from a Hugging Face hub at a fixed revision and pin it.
    Pull {
        #[arg(long)]
        repo: String,
        /// A commit hash (or tag) to pin; a moving branch makes the pin meaningless.
        #[arg(long)]
        revision: String,
        #[arg(long)]
        file: String,
        /// Name for the pin (default: the file name without `.gguf`).
        #[arg(long)]
        name: Option<String>,
        /// Hub base URL (default: HF_ENDPOINT or the public hub).
        #[arg(long)]
        endpoint: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// The most recent runs.
    List {
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Write a run as a portable, hash-chained audit bundle (everything but the model weights).
    Export {
        /// Run id or uid.
        id: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Check a bundle and store its run here.
    Import { file: PathBuf },
    /// Check a bundle's hash chain; names the first altered record.
    Verify { file: PathBuf },
    /// The audit report of a run: inputs, environment, calls, outcome, replays.
    Audit {
        /// Run id or uid.
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Delete old runs with the calls and results only they use (--older-than, --run), old
    /// traces of served requests (--keep-days, --keep-max), and give the space back
    /// (--vacuum). Artifacts, promotions, running runs and the runs behind promoted artifacts
    /// are always kept. --dry-run shows what would go.
    Gc {
        /// Delete runs started before this: an age (30d, 12h) or a UTC timestamp.
        #[arg(long)]
        older_than: Option<String>,
        /// Delete this run, by id or uid (repeatable).
        #[arg(long = "run")]
        runs: Vec<String>,
        /// Keep traces younger than this many days.
        #[arg(long)]
        keep_days: Option<u32>,
        /// Keep at most this many traces, the newest.
        #[arg(long)]
        keep_max: Option<u64>,
        /// Then rewrite the store file without its free pages (SQLite VACUUM).
        #[arg(long)]
        vacuum: bool,
        /// Show what would be deleted and freed; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// One run with its calls.
    Show {
        /// Run id or uid.
        id: String,
        /// Print the full prompts and outputs.
        #[arg(long)]
        full: bool,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[arg(long, default_value = "smollm2-135m")]
    pub model: String,
    /// Approximate prompt length in tokens.
    #[arg(long, default_value_t = 256)]
    pub prompt_tokens: usize,
    /// Tokens generated per request (default: 64, or 24 with --scheduler).
    #[arg(long)]
    pub gen_tokens: Option<u32>,
    #[arg(long, default_value_t = 3)]
    pub repetitions: usize,
    /// Instead: the scheduler workload — N requests sharing a ~400-token prefix, run one at a
    /// time, batched, batched with prefix reuse, and again from the cache.
    #[arg(long)]
    pub scheduler: bool,
    /// Instead: llama-batched-bench's workload — --sequences sequences of --prompt-tokens
    /// tokens each, then --gen-tokens steps for all of them — as llama.cpp passes on the
    /// engine's context and as real requests through the engine.
    #[arg(long, conflicts_with = "scheduler")]
    pub batched: bool,
    /// Batch sizes of --batched.
    #[arg(long, value_delimiter = ',', default_value = "1,4,8")]
    pub sequences: Vec<u32>,
    /// Requests in the scheduler workload (and, with --serve, in each half of the comparison).
    #[arg(long, default_value_t = 64)]
    pub requests: usize,
    /// Instead: the HTTP server's overhead — the same concurrent chat workload straight
    /// through the engine and through a loopback `serve` — and a soak of --soak requests
    /// reading resident memory.
    #[arg(long, conflicts_with_all = ["scheduler", "batched"])]
    pub serve: bool,
    /// Instead: retrieval — indexing speed and query latency for BM25 on --passages synthetic
    /// passages, and with --embed N embedding speed (against a prefill of the same passages)
    /// and embedding and hybrid query latency over N of them. Runs on a scratch store.
    #[arg(long, conflicts_with_all = ["scheduler", "serve", "batched"])]
    pub retrieval: bool,
    /// Instead: evaluation throughput on this task file's --split (cache off), decoding
    /// grammar-forced text step by step and then with jump-forward spans, with where the
    /// worker's time and the tokens went.
    #[arg(long, value_name = "TASK", conflicts_with_all = ["scheduler", "serve", "retrieval", "batched"])]
    pub eval: Option<std::path::PathBuf>,
    /// With --eval: a stored artifact to evaluate instead of the task's program.
    #[arg(long, requires = "eval")]
    pub program: Option<String>,
    /// With --eval: the split.
    #[arg(long, value_enum, default_value = "val")]
    pub split: SplitName,
    /// Passages of the --retrieval corpus.
    #[arg(long, default_value_t = 10_000)]
    pub passages: usize,
    /// Queries of --retrieval, per method.
    #[arg(long, default_value_t = 500)]
    pub queries: usize,
    /// Passages embedded with --retrieval (0: BM25 only).
    #[arg(long, default_value_t = 0)]
    pub embed: usize,
    /// Concurrent clients with --serve.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Requests of the --serve memory soak.
    #[arg(long, default_value_t = 10_000)]
    pub soak: usize,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub engine: EngineArgs,
}
