//! The in-process inference engine over llama.cpp.
//!
//! Architecture Invariant: this is the only module that touches llama.cpp (`llama-cpp-2` and
//! `llama-cpp-sys-2`). Everything else speaks in [`GenerationRequest`] and [`Completion`].
//!
//! An [`Engine`] owns one loaded model. Rendering and tokenizing happen on the caller's side
//! ([`Engine::prepare`]), because the model is shareable across threads; the llama.cpp context
//! is not, so one worker thread owns it and serves requests sent over a channel, each with its
//! own reply channel. The worker batches sequences continuously and reuses shared prompt
//! prefixes ([`worker`]); a request's output never depends on what it was batched with.

mod budget;
pub mod chat;
mod error;
pub mod fingerprint;
mod queue;
pub mod request;
pub mod sampling;
mod slot;
mod stats;
mod worker;

pub use stats::EngineStats;

use std::num::NonZeroU32;
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::token::LlamaToken;
use tokio::sync::{mpsc, oneshot, Semaphore};

pub use error::EngineError;
pub use fingerprint::EngineFingerprint;
pub use request::{Completion, GenerationRequest, Message, Prompt, Role, StopReason, Timings};
pub use sampling::SamplingParams;

use crate::models::PinnedModel;

/// Requests an engine accepts before callers wait: enough to keep every slot busy and the
/// queue deep enough for fair turns, small enough to bound memory.
pub const MAX_IN_FLIGHT: usize = 1024;

/// How the engine is set up. Nothing here changes a model's output (see the fingerprint for
/// what does), only its speed and capacity.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EngineConfig {
    /// CPU threads; `None` means the number of physical cores.
    pub threads: Option<u32>,
    /// Context window of each sequence, in tokens.
    pub n_ctx: u32,
    /// Tokens evaluated per batch (decode tokens plus prompt chunks).
    pub n_batch: u32,
    /// Sequences decoded together.
    pub slots: u32,
    /// Reuse the KV cache of shared prompt prefixes.
    pub prefix_reuse: bool,
    /// Append the text a grammar forces (field names, separators, the rest of a choice) as
    /// one chunk, then confirm it token by token from the chunk's logits, instead of
    /// decoding it one step at a time. Outputs are the same either way.
    #[serde(default = "yes")]
    pub jump_forward: bool,
    /// Layers offloaded to a GPU backend (ignored by CPU builds).
    pub gpu_layers: u32,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            threads: None,
            n_ctx: 4096,
            n_batch: 512,
            slots: 4,
            prefix_reuse: true,
            jump_forward: true,
            gpu_layers: 0,
        }
    }
}

fn yes() -> bool {
    true
}

impl EngineConfig {
    /// The thread count actually used.
    pub fn resolved_threads(&self) -> u32 {
        self.threads.unwrap_or_else(physical_cores).max(1)
    }
}

/// The number of physical CPU cores this process may use.
///
/// llama.cpp's OpenMP threads thrash when they outnumber cores, and hyper-threads do not help
/// its matrix kernels, so physical cores are the right default.
pub fn physical_cores() -> u32 {
    let available = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1);
    let physical = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| count_physical_cores(&info));
    cores_to_use(available, physical)
}

/// Physical cores, but never more than the process may run on (a cpuset or a container limit
/// makes `available` the smaller), and never none.
fn cores_to_use(available: u32, physical: Option<u32>) -> u32 {
    physical.map_or(available, |p| p.min(available)).max(1)
}

fn count_physical_cores(cpuinfo: &str) -> Option<u32> {
    let mut cores = std::collections::BTreeSet::new();
    let mut physical_id = None;
    for line in cpuinfo.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        match key.trim() {
            "physical id" => physical_id = Some(value.trim().to_string()),
            "core id" => {
                cores.insert((physical_id.clone(), value.trim().to_string()));
            }
            _ => {}
        }
    }
    (!cores.is_empty()).then_some(cores.len() as u32)
}

/// llama.cpp's backend is process-wide and `llama-cpp-2` refuses a second initialization, so
/// the one handle lives for the whole process.
static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();

/// ggml's tiled K-quant matrix product (Q4_K, Q6_K, … weights) takes over from its dot
/// products once a batch has enough rows, and rounds differently: a sequence's logits would
/// depend on how many rows share its batch. It reads this variable once, at its first use.
pub const TILED_MATMUL_ENV: &str = "GGML_CPU_TILED_MM";

/// Whether ggml's tiled K-quant matrix product is enabled in this process.
pub fn tiled_matmul_enabled() -> bool {
    std::env::var(TILED_MATMUL_ENV).is_ok_and(|v| v.trim().parse::<i64>().unwrap_or(1) != 0)
}

/// With the tiled product on, ggml takes it for every row count (not only from eight rows)
/// when this variable is `1`: slower to decode one sequence, but no longer dependent on how
/// many rows share a batch (see README, Benchmarks).
pub const TILED_MATMUL_FORCE_ENV: &str = "GGML_CPU_TILED_MM_FORCE";

/// Whether ggml's tiled product is on and forced onto every row count (ggml reads the
/// variable as an integer equal to 1).
pub fn tiled_matmul_forced() -> bool {
    tiled_matmul_enabled()
        && std::env::var(TILED_MATMUL_FORCE_ENV).is_ok_and(|v| v.trim().parse::<i64>() == Ok(1))
}

fn backend() -> Result<&'static LlamaBackend, EngineError> {
    BACKEND
        .get_or_init(|| {
            if std::env::var_os(TILED_MATMUL_ENV).is_none() {
                // Off unless the user asked for it (and accepts batch-dependent output); set
                // before llama.cpp runs anything, while no other thread reads the environment.
                std::env::set_var(TILED_MATMUL_ENV, "0");
            }
            llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
            LlamaBackend::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| EngineError::Backend(e.clone()))
}

/// How conversations are turned into text for this model.
enum ChatFormat {
    /// The model's own template, applied by llama.cpp.
    Template(LlamaChatTemplate),
    /// tuningfork's plain format ([`chat::render_plain`]), for models without a usable template.
    Plain,
}

/// The model and what the caller side needs to prepare requests for it.
struct LoadedModel {
    model: LlamaModel,
    format: ChatFormat,
    pooling: Pooling,
}

// SAFETY note, not an unsafe block: `LlamaModel` is `Send + Sync` (llama.cpp's model is
// read-only after loading), and `LlamaChatTemplate` is a plain `CString`.

/// A request rendered and tokenized, ready for the worker.
#[derive(Debug, Clone)]
pub struct PreparedRequest {
    pub request: GenerationRequest,
    /// The exact text given to the tokenizer.
    pub rendered: String,
    tokens: Vec<LlamaToken>,
    /// The grammar as our interpreter reads it (for budget-aware decoding and jump-forward
    /// spans); `None` without a grammar or for one beyond the interpreter.
    reply_grammar: Option<Arc<crate::gbnf::Grammar>>,
}

impl PreparedRequest {
    pub fn prompt_tokens(&self) -> usize {
        self.tokens.len()
    }
}

enum Command {
    Generate {
        /// Requests of one group (one run, one optimization loop) are served in order;
        /// groups take turns.
        group: u64,
        prepared: PreparedRequest,
        reply: oneshot::Sender<Result<Completion, EngineError>>,
        /// Where text goes as it is generated, for callers that stream it.
        deltas: Option<TextDeltas>,
    },
    /// One text's pooled embedding, computed alone in the embedding context.
    Embed {
        tokens: Vec<LlamaToken>,
        reply: oneshot::Sender<Result<Vec<f32>, EngineError>>,
    },
    /// llama-batched-bench's workload on this engine's context, once no request is running.
    Measure {
        workload: BatchedWorkload,
        reply: oneshot::Sender<Result<BatchedTimings, EngineError>>,
    },
}

/// The workload of llama.cpp's `llama-batched-bench` (prompt not shared): `sequences`
/// sequences of `prompt` tokens each evaluated from an empty cache in batches of the engine's
/// batch size, then `gen_tokens` steps that each append one token to every sequence (all
/// their logits computed). No sampling: this measures llama.cpp's passes under this engine's
/// build and context settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchedWorkload {
    pub sequences: u32,
    pub prompt: Vec<i32>,
    pub gen_tokens: u32,
}

/// Wall time of a [`BatchedWorkload`]'s two phases.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct BatchedTimings {
    pub prefill_s: f64,
    pub decode_s: f64,
}

/// Longest text, in tokens, an engine embeds (its embedding context's window).
pub const EMBED_WINDOW: u32 = 2048;

/// How an embedding pools the token states of a text: the model's declared pooling when it
/// declares one (embedding models do), else the mean over every token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    Mean,
    Cls,
    Last,
}

impl Pooling {
    pub fn as_str(self) -> &'static str {
        match self {
            Pooling::Mean => "mean",
            Pooling::Cls => "cls",
            Pooling::Last => "last",
        }
    }

    fn of(model: &LlamaModel) -> Pooling {
        let declared = model
            .meta_val_str("general.architecture")
            .ok()
            .and_then(|arch| model.meta_val_str(&format!("{arch}.pooling_type")).ok())
            .and_then(|value| value.trim().parse::<i32>().ok());
        match declared {
            Some(2) => Pooling::Cls,
            Some(3) => Pooling::Last,
            _ => Pooling::Mean,
        }
    }

    fn llama(self) -> llama_cpp_2::context::params::LlamaPoolingType {
        use llama_cpp_2::context::params::LlamaPoolingType;
        match self {
            Pooling::Mean => LlamaPoolingType::Mean,
            Pooling::Cls => LlamaPoolingType::Cls,
            Pooling::Last => LlamaPoolingType::Last,
        }
    }
}

/// A text tokenized for embedding.
#[derive(Debug, Clone)]
pub struct PreparedEmbedding {
    pub text: String,
    tokens: Vec<LlamaToken>,
}

impl PreparedEmbedding {
    pub fn tokens(&self) -> usize {
        self.tokens.len()
    }
}

/// The sending end of a streamed generation: pieces of text in order, each safe to show (no
/// partial UTF-8 character, nothing a stop string could still cut). Their concatenation is
/// always a prefix of the completion's text; the rest arrives with the completion.
pub type TextDeltas = mpsc::UnboundedSender<String>;

/// A loaded, pinned model served by one worker thread.
pub struct Engine {
    loaded: Arc<LoadedModel>,
    commands: Option<mpsc::Sender<Command>>,
    /// Requests accepted and not yet answered, bounded: a caller beyond the bound waits.
    in_flight: Arc<Semaphore>,
    worker: Option<JoinHandle<()>>,
    config: EngineConfig,
    fingerprint: EngineFingerprint,
    model_sha256: String,
    model_name: String,
    stats: stats::Shared,
}

impl Engine {
    /// Loads a verified model and starts its worker. Blocks while the weights are read.
    pub fn load(pinned: &PinnedModel, config: EngineConfig) -> Result<Engine, EngineError> {
        let backend = backend()?;
        let params = LlamaModelParams::default().with_n_gpu_layers(config.gpu_layers);
        let path = pinned.path();
        let model = LlamaModel::load_from_file(backend, path, &params).map_err(|e| {
            EngineError::ModelLoad {
                path: path.to_path_buf(),
                reason: format!(
                    "{e}; llama.cpp could not read it as a GGUF model (the file may be truncated \
                     or not a GGUF file)"
                ),
            }
        })?;
        let format = detect_chat_format(&model);
        let pooling = Pooling::of(&model);
        let loaded = Arc::new(LoadedModel {
            model,
            format,
            pooling,
        });
        let (commands, receiver) = mpsc::channel(MAX_IN_FLIGHT);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let worker_loaded = Arc::clone(&loaded);
        let worker_config = config.clone();
        let stats = stats::Shared::default();
        let worker_stats = stats.clone();
        let worker = std::thread::Builder::new()
            .name("tuningfork-engine".to_string())
            .spawn(move || {
                worker::run(
                    backend,
                    &worker_loaded.model,
                    worker_loaded.pooling,
                    &worker_config,
                    worker_stats,
                    receiver,
                    ready_tx,
                )
            })
            .map_err(|e| EngineError::Backend(format!("cannot start the engine thread: {e}")))?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = worker.join();
                return Err(e);
            }
            Err(_) => {
                let _ = worker.join();
                return Err(EngineError::Stopped);
            }
        }
        Ok(Engine {
            loaded,
            commands: Some(commands),
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            worker: Some(worker),
            config,
            fingerprint: EngineFingerprint::current(),
            model_sha256: pinned.sha256().to_string(),
            model_name: pinned.name().to_string(),
            stats,
        })
    }

    /// Where this engine's time and tokens went since it was loaded.
    pub fn stats(&self) -> EngineStats {
        self.stats.snapshot()
    }

    pub fn fingerprint(&self) -> &EngineFingerprint {
        &self.fingerprint
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    pub fn model_sha256(&self) -> &str {
        &self.model_sha256
    }

    pub fn model_name(&self) -> &str {
        &self.model_name
    }

    /// Whether conversations are rendered with the model's own chat template (`false`: the
    /// plain conversation format of [`chat`]).
    pub fn has_chat_template(&self) -> bool {
        matches!(self.loaded.format, ChatFormat::Template(_))
    }

    /// Renders and tokenizes a request, checking everything that can be checked before any
    /// inference: sampling ranges, the grammar's syntax, and that the prompt fits the context.
    pub fn prepare(&self, mut request: GenerationRequest) -> Result<PreparedRequest, EngineError> {
        request
            .sampling
            .validate()
            .map_err(EngineError::InvalidRequest)?;
        if request.max_tokens == 0 {
            return Err(EngineError::InvalidRequest(
                "max_tokens must be at least 1".to_string(),
            ));
        }
        let rendered = match &request.prompt {
            Prompt::Raw(text) => text.clone(),
            Prompt::Chat(messages) => match &self.loaded.format {
                ChatFormat::Template(template) => {
                    apply_template(&self.loaded.model, template, messages)?
                }
                ChatFormat::Plain => {
                    if !request.stop.iter().any(|s| s == chat::PLAIN_STOP) {
                        request.stop.push(chat::PLAIN_STOP.to_string());
                    }
                    chat::render_plain(messages)
                }
            },
        };
        let mut reply_grammar = None;
        if let Some(grammar) = &request.grammar {
            // Parse once here so a bad grammar fails before it is queued.
            llama_cpp_2::sampling::LlamaSampler::grammar(&self.loaded.model, grammar, "root")
                .map_err(|e| EngineError::Grammar(e.to_string()))?;
            if let Ok(parsed) = crate::gbnf::Grammar::parse(grammar) {
                if let Some(needed) = budget::min_reply_tokens(&self.loaded.model, &parsed) {
                    if (request.max_tokens as usize) < needed {
                        return Err(EngineError::BudgetTooSmall {
                            max_tokens: request.max_tokens,
                            needed,
                        });
                    }
                }
                reply_grammar = Some(Arc::new(parsed));
            }
        }
        let tokens = tokenize(&self.loaded.model, &rendered);
        if tokens.is_empty() {
            return Err(EngineError::InvalidRequest(
                "the prompt is empty".to_string(),
            ));
        }
        if tokens.len() >= self.config.n_ctx as usize {
            return Err(EngineError::PromptTooLong {
                tokens: tokens.len(),
                n_ctx: self.config.n_ctx,
            });
        }
        Ok(PreparedRequest {
            request,
            rendered,
            tokens,
            reply_grammar,
        })
    }

    /// Queues a prepared request as part of `group` and waits for its completion. Groups (one
    /// per run) take turns when requests wait, so one busy loop cannot starve another. At most
    /// [`MAX_IN_FLIGHT`] requests are accepted at once; beyond that this waits. Dropping the
    /// future cancels the request and frees its slot. With `deltas`, the text is also sent
    /// there as it is generated.
    ///
    /// Crate-private: outside callers go through [`crate::generator::Generator`], which
    /// records every call.
    pub(crate) async fn submit_streaming(
        &self,
        group: u64,
        prepared: PreparedRequest,
        deltas: Option<TextDeltas>,
    ) -> Result<Completion, EngineError> {
        self.send(|reply| Command::Generate {
            group,
            prepared,
            reply,
            deltas,
        })
        .await
    }

    /// Sends the command `make` builds around a reply channel and waits for the answer,
    /// holding an in-flight permit until it arrives (or this future is dropped): backpressure.
    async fn send<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, EngineError>>) -> Command,
    ) -> Result<T, EngineError> {
        let _permit = self
            .in_flight
            .acquire()
            .await
            .map_err(|_| EngineError::Stopped)?;
        let (reply, receiver) = oneshot::channel();
        let commands = self.commands.as_ref().ok_or(EngineError::Stopped)?;
        commands
            .send(make(reply))
            .await
            .map_err(|_| EngineError::Stopped)?;
        receiver.await.map_err(|_| EngineError::Stopped)?
    }

    /// The fewest tokens any reply under the GBNF `grammar` takes with this model's
    /// tokenizer (`None` when the grammar is beyond our interpreter): a `max_tokens` below it
    /// is refused.
    pub fn min_reply_tokens(&self, grammar: &str) -> Option<usize> {
        let parsed = crate::gbnf::Grammar::parse(grammar).ok()?;
        budget::min_reply_tokens(&self.loaded.model, &parsed)
    }

    /// How this engine pools embeddings.
    pub fn pooling(&self) -> Pooling {
        self.loaded.pooling
    }

    /// Tokenizes a text for [`Engine::submit_embedding`]: not empty, at most
    /// [`EMBED_WINDOW`] tokens (and the context size).
    pub fn prepare_embedding(&self, text: &str) -> Result<PreparedEmbedding, EngineError> {
        let tokens = tokenize(&self.loaded.model, text);
        if text.trim().is_empty() || tokens.is_empty() {
            return Err(EngineError::InvalidRequest(
                "the text to embed is empty".to_string(),
            ));
        }
        let window = EMBED_WINDOW.min(self.config.n_ctx);
        if tokens.len() > window as usize {
            return Err(EngineError::InvalidRequest(format!(
                "the text to embed is {} tokens, more than the embedding window of {window}; \
                 split it into shorter passages (a smaller max_chars for the chunker)",
                tokens.len()
            )));
        }
        Ok(PreparedEmbedding {
            text: text.to_string(),
            tokens,
        })
    }

    /// Computes one text's embedding. Each text is evaluated alone in the worker's embedding
    /// context, between generation steps, so a vector never depends on other work. One
    /// embedding is one evaluation of its tokens; llama.cpp's embedding mode also runs a
    /// generative model's output layer on every token, which a prefill runs on the last only.
    ///
    /// Crate-private like [`Engine::submit_streaming`]: callers go through the generator.
    pub(crate) async fn submit_embedding(
        &self,
        prepared: PreparedEmbedding,
    ) -> Result<Vec<f32>, EngineError> {
        self.send(|reply| Command::Embed {
            tokens: prepared.tokens,
            reply,
        })
        .await
    }

    /// Runs `workload` on the worker's context once every accepted request is answered (new
    /// requests wait meanwhile). It starts from an empty cache, so slots lose the prefixes
    /// they held for reuse.
    pub async fn measure_batched(
        &self,
        workload: BatchedWorkload,
    ) -> Result<BatchedTimings, EngineError> {
        let slots = self.config.slots.max(1);
        if workload.sequences == 0 || workload.sequences > slots {
            return Err(EngineError::InvalidRequest(format!(
                "{} sequences asked for, the engine has {slots} slots (set --slots to at least {})",
                workload.sequences,
                workload.sequences.max(1)
            )));
        }
        let needed = workload.prompt.len() + workload.gen_tokens as usize;
        if workload.prompt.is_empty() || needed > self.config.n_ctx as usize {
            return Err(EngineError::InvalidRequest(format!(
                "a sequence of {needed} tokens does not fit a slot's context of {} tokens (set --ctx-size to at least {needed})",
                self.config.n_ctx
            )));
        }
        self.send(|reply| Command::Measure { workload, reply })
            .await
    }

    /// The token ids `text` becomes (no special tokens added).
    pub fn tokenize(&self, text: &str) -> Vec<i32> {
        self.loaded
            .model
            .vocab()
            .tokenize(text.as_bytes(), false, true)
            .into_iter()
            .map(|t| t.0)
            .collect()
    }

    /// Number of tokens `text` becomes (no special tokens added).
    pub fn count_tokens(&self, text: &str) -> usize {
        self.loaded
            .model
            .vocab()
            .tokenize(text.as_bytes(), false, true)
            .len()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // Closing the channel ends the worker loop once queued work is answered.
        self.commands.take();
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

fn detect_chat_format(model: &LlamaModel) -> ChatFormat {
    let Ok(template) = model.chat_template(None) else {
        return ChatFormat::Plain;
    };
    // llama.cpp recognises templates by pattern; a template it does not know fails to apply.
    // Probe once so that every later render takes the same path.
    let probe = [Message::system("s"), Message::user("u")];
    match apply_template(model, &template, &probe) {
        Ok(_) => ChatFormat::Template(template),
        Err(e) => {
            tracing::warn!("the model's chat template is not supported ({e}); using the plain conversation format");
            ChatFormat::Plain
        }
    }
}

fn apply_template(
    model: &LlamaModel,
    template: &LlamaChatTemplate,
    messages: &[Message],
) -> Result<String, EngineError> {
    let chat = messages
        .iter()
        .map(|m| LlamaChatMessage::new(m.role.as_str().to_string(), m.content.clone()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            EngineError::InvalidRequest(format!("a message cannot be passed to llama.cpp: {e}"))
        })?;
    model
        .apply_chat_template(template, &chat, true)
        .map_err(|e| EngineError::Template(e.to_string()))
}

fn tokenize(model: &LlamaModel, text: &str) -> Vec<LlamaToken> {
    let vocab = model.vocab();
    let add_bos = vocab.should_add_bos();
    let mut tokens = vocab.tokenize(text.as_bytes(), add_bos, true);
    // Templates that write the BOS token themselves would otherwise get it twice.
    if add_bos && tokens.len() >= 2 && tokens[0] == vocab.bos() && tokens[1] == vocab.bos() {
        tokens.remove(0);
    }
    tokens
}

fn context_params(config: &EngineConfig) -> llama_cpp_2::context::params::LlamaContextParams {
    let threads = config.resolved_threads() as i32;
    let slots = config.slots.max(1);
    let n_batch = config.n_batch.max(slots).max(1);
    // With a non-unified KV cache every sequence gets its own n_ctx / n_seq_max cells.
    llama_cpp_2::context::params::LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(config.n_ctx.max(16) * slots))
        .with_n_batch(n_batch)
        .with_n_ubatch(n_batch)
        .with_n_seq_max(slots)
        // Sliding-window layers keep every position, so a sequence can be cut back to any
        // shared prefix and reused.
        .with_swa_full(true)
        .with_n_threads(threads)
        .with_n_threads_batch(threads)
        // Both are off for reproducibility: flash attention over many query rows and a unified
        // KV cache change logits with batch composition (see ARCHITECTURE.md).
        .with_flash_attention_policy(llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_DISABLED)
        .with_kv_unified(false)
}

/// The embedding context: one sequence at a time, the whole text in one batch, every token's
/// state pooled.
fn embedding_params(
    config: &EngineConfig,
    pooling: Pooling,
) -> llama_cpp_2::context::params::LlamaContextParams {
    let threads = config.resolved_threads() as i32;
    let window = EMBED_WINDOW.min(config.n_ctx).max(16);
    llama_cpp_2::context::params::LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(window))
        .with_n_batch(window)
        .with_n_ubatch(window)
        .with_n_seq_max(1)
        .with_n_threads(threads)
        .with_n_threads_batch(threads)
        .with_embeddings(true)
        .with_pooling_type(pooling.llama())
        .with_flash_attention_policy(llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_DISABLED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_physical_cores_not_threads() {
        let info = "processor\t: 0\nphysical id\t: 0\ncore id\t: 0\n\n\
                    processor\t: 1\nphysical id\t: 0\ncore id\t: 0\n\n\
                    processor\t: 2\nphysical id\t: 0\ncore id\t: 1\n\n\
                    processor\t: 3\nphysical id\t: 0\ncore id\t: 1\n";
        assert_eq!(count_physical_cores(info), Some(2));
        assert_eq!(count_physical_cores("processor : 0\n"), None);
        // Hyper-threads are not counted; a cpuset smaller than the machine wins; an unreadable
        // cpuinfo falls back to what the process may use.
        assert_eq!(cores_to_use(8, Some(4)), 4);
        assert_eq!(cores_to_use(2, Some(16)), 2);
        assert_eq!(cores_to_use(6, None), 6);
        assert_eq!(cores_to_use(0, None), 1);
    }
}
