//! Generation through the store: the exact cache first, then the engine, then a record of the
//! call.
//!
//! Architecture Invariant: every model call tuningfork makes goes through [`Generator`], so
//! every call — computed, served from the cache, or failed in the engine — is in the store.

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::engine::{
    Completion, Engine, EngineConfig, EngineError, GenerationRequest, Pooling, PreparedRequest,
    StopReason, TextDeltas, Timings,
};
pub use crate::lm::{Generated, Lm};
use crate::lm::{LmError, LmFuture};
use crate::models::{gguf_info, ModelError, Registry};
use crate::store::{NewCall, Store, StoreError};

/// Bumped when the hashed form of a request changes.
const REQUEST_HASH_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Model(#[from] ModelError),
}

impl From<GenerateError> for LmError {
    fn from(e: GenerateError) -> Self {
        match e {
            GenerateError::Engine(EngineError::Cancelled) => LmError::Cancelled,
            e => LmError::Failed(Box::new(e)),
        }
    }
}

/// The cache key of a prepared request: everything that determines its output.
pub fn request_hash(
    model_sha256: &str,
    fingerprint_id: &str,
    prepared: &PreparedRequest,
) -> String {
    #[derive(Serialize)]
    struct Key<'a> {
        version: u32,
        model_sha256: &'a str,
        engine_fingerprint: &'a str,
        prompt: &'a str,
        sampling: &'a crate::engine::SamplingParams,
        max_tokens: u32,
        stop: &'a [String],
        grammar: Option<&'a str>,
    }
    let request = &prepared.request;
    let key = Key {
        version: REQUEST_HASH_VERSION,
        model_sha256,
        engine_fingerprint: fingerprint_id,
        prompt: &prepared.rendered,
        sampling: &request.sampling,
        max_tokens: request.max_tokens,
        stop: &request.stop,
        grammar: request.grammar.as_deref(),
    };
    let json = serde_json::to_vec(&key).expect("request keys serialize");
    hex::encode(Sha256::digest(&json))
}

/// What an embedding call records as its request (`request_json`): replays recognise
/// embedding calls by the `embed` key.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct EmbeddingRequest {
    pub text: String,
    pub pooling: Pooling,
}

/// The stored form of an embedding call's request.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbedCall {
    pub embed: EmbeddingRequest,
}

/// The stop reason recorded for embedding calls.
pub const EMBEDDING_STOP: &str = "embedding";

/// The cache key of an embedding: the model, the engine build, the pooling and the text.
pub fn embedding_hash(
    model_sha256: &str,
    fingerprint_id: &str,
    request: &EmbeddingRequest,
) -> String {
    #[derive(Serialize)]
    struct Key<'a> {
        version: u32,
        kind: &'static str,
        model_sha256: &'a str,
        engine_fingerprint: &'a str,
        request: &'a EmbeddingRequest,
    }
    let key = Key {
        version: REQUEST_HASH_VERSION,
        kind: "embed",
        model_sha256,
        engine_fingerprint: fingerprint_id,
        request,
    };
    let json = serde_json::to_vec(&key).expect("embedding keys serialize");
    hex::encode(Sha256::digest(&json))
}

/// A vector as an embedding call's stored output: little-endian f32, in hex (exact).
pub fn encode_vector(vector: &[f32]) -> String {
    hex::encode(
        vector
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect::<Vec<u8>>(),
    )
}

/// The vector of an embedding call's stored output.
pub fn decode_vector(output: &str) -> Option<Vec<f32>> {
    let bytes = hex::decode(output).ok()?;
    (bytes.len() % 4 == 0).then(|| {
        bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    })
}

/// An embedding and how it was obtained.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedded {
    pub vector: Vec<f32>,
    pub cached: bool,
    pub call_id: i64,
    pub tokens: u32,
}

/// Verifies a pinned model, loads it, and records it in the store.
pub fn load_engine(
    registry: &Registry,
    store: &Store,
    name: &str,
    force_verify: bool,
    config: EngineConfig,
) -> Result<Engine, GenerateError> {
    let pinned = registry.verify(name, store, force_verify)?;
    let metadata = gguf_info::inspect(pinned.path())
        .ok()
        .and_then(|summary| serde_json::to_value(summary).ok());
    let engine = Engine::load(&pinned, config)?;
    store.record_model(pinned.pin(), metadata.as_ref())?;
    Ok(engine)
}

/// Runs requests for one run, with the exact cache in front of the engine.
#[derive(Clone)]
pub struct Generator {
    engine: Arc<Engine>,
    store: Arc<Store>,
    run_id: i64,
    /// The scheduler queue the calls join; queues take turns.
    group: u64,
    use_cache: bool,
}

impl Generator {
    pub fn new(engine: Arc<Engine>, store: Arc<Store>, run_id: i64) -> Self {
        Generator {
            engine,
            store,
            run_id,
            group: run_id as u64,
            use_cache: true,
        }
    }

    /// Puts this generator's calls in their own scheduler queue, so that several loops of one
    /// run take turns on the engine instead of queueing behind each other.
    pub fn in_group(mut self, group: u64) -> Self {
        self.group = group;
        self
    }

    /// `false` forces inference even when an identical call is stored (`--no-cache`).
    pub fn with_cache(mut self, use_cache: bool) -> Self {
        self.use_cache = use_cache;
        self
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn run_id(&self) -> i64 {
        self.run_id
    }

    /// The store every call is recorded in.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Generates (or recalls) one completion and records the call.
    pub async fn generate(&self, request: GenerationRequest) -> Result<Generated, GenerateError> {
        self.generate_streaming(request, None).await
    }

    /// [`Generator::generate`], sending the text to `deltas` as the engine produces it (a
    /// cache hit sends nothing: its whole text is in the returned completion). The deltas are
    /// always a prefix of the completion's text.
    pub async fn generate_streaming(
        &self,
        request: GenerationRequest,
        deltas: Option<TextDeltas>,
    ) -> Result<Generated, GenerateError> {
        let started = Instant::now();
        let prepared = self.engine.prepare(request)?;
        let fingerprint_id = self.engine.fingerprint().id();
        let model_sha256 = self.engine.model_sha256();
        let hash = request_hash(model_sha256, &fingerprint_id, &prepared);
        let request_json = serde_json::to_string(&prepared.request).expect("requests serialize");
        let record = |completion: Result<&Completion, &EngineError>, cached: bool| {
            let (output, prompt_tokens, completion_tokens, stop_reason, cut_at, error) =
                match completion {
                    Ok(c) => (
                        c.text.as_str(),
                        c.prompt_tokens,
                        c.completion_tokens,
                        Some(c.stop_reason.as_str()),
                        c.cut_at,
                        None,
                    ),
                    Err(e) => (
                        "",
                        prepared.prompt_tokens() as u32,
                        0,
                        None,
                        None,
                        Some(e.to_string()),
                    ),
                };
            self.store.record_call(&NewCall {
                run_id: self.run_id,
                request_hash: &hash,
                model_sha256,
                engine_fingerprint_id: &fingerprint_id,
                request_json: &request_json,
                prompt: &prepared.rendered,
                output,
                prompt_tokens,
                completion_tokens,
                stop_reason,
                cut_at,
                latency_ms: started.elapsed().as_secs_f64() * 1e3,
                cached,
                error: error.as_deref(),
            })
        };

        if self.use_cache {
            if let Some(hit) = self.store.cached_call(&hash)? {
                let completion = Completion {
                    text: hit.output,
                    prompt_tokens: hit.prompt_tokens,
                    completion_tokens: hit.completion_tokens,
                    stop_reason: hit
                        .stop_reason
                        .as_deref()
                        .and_then(StopReason::parse)
                        .unwrap_or(StopReason::EndOfText),
                    cut_at: hit.cut_at,
                    forced_tokens: 0,
                    timings: Timings::default(),
                };
                let call_id = record(Ok(&completion), true)?;
                return Ok(Generated {
                    completion,
                    cached: true,
                    call_id,
                    request_hash: hash,
                });
            }
        }

        // One line when a computation starts and one when its result is stored: how much
        // work a killed process lost is the difference (`TUNINGFORK_LOG=calls=debug`).
        tracing::debug!(target: "calls", "computing {hash}");
        match self
            .engine
            .submit_streaming(self.group, prepared.clone(), deltas)
            .await
        {
            Ok(completion) => {
                let call_id = record(Ok(&completion), false)?;
                tracing::debug!(target: "calls", "stored {hash}");
                Ok(Generated {
                    completion,
                    cached: false,
                    call_id,
                    request_hash: hash,
                })
            }
            Err(EngineError::Cancelled) => Err(EngineError::Cancelled.into()),
            Err(e) => {
                record(Err(&e), false)?;
                Err(e.into())
            }
        }
    }
}

impl Generator {
    /// Computes (or recalls) one text's embedding and records the call, like a generation:
    /// the exact cache first, then the engine's embedding context.
    pub async fn embed(&self, text: &str) -> Result<Embedded, GenerateError> {
        let started = Instant::now();
        let prepared = self.engine.prepare_embedding(text)?;
        let fingerprint_id = self.engine.fingerprint().id();
        let model_sha256 = self.engine.model_sha256();
        let request = EmbeddingRequest {
            text: text.to_string(),
            pooling: self.engine.pooling(),
        };
        let hash = embedding_hash(model_sha256, &fingerprint_id, &request);
        let request_json = serde_json::to_string(&EmbedCall {
            embed: request.clone(),
        })
        .expect("requests serialize");
        let tokens = prepared.tokens() as u32;
        let record = |output: Result<&str, &EngineError>, cached: bool| {
            let (output, stop_reason, error) = match output {
                Ok(o) => (o, Some(EMBEDDING_STOP), None),
                Err(e) => ("", None, Some(e.to_string())),
            };
            self.store.record_call(&NewCall {
                run_id: self.run_id,
                request_hash: &hash,
                model_sha256,
                engine_fingerprint_id: &fingerprint_id,
                request_json: &request_json,
                prompt: text,
                output,
                prompt_tokens: tokens,
                completion_tokens: 0,
                stop_reason,
                cut_at: None,
                latency_ms: started.elapsed().as_secs_f64() * 1e3,
                cached,
                error: error.as_deref(),
            })
        };
        if self.use_cache {
            if let Some(hit) = self.store.cached_call(&hash)? {
                if let Some(vector) = decode_vector(&hit.output) {
                    let call_id = record(Ok(&hit.output), true)?;
                    return Ok(Embedded {
                        vector,
                        cached: true,
                        call_id,
                        tokens,
                    });
                }
            }
        }
        tracing::debug!(target: "calls", "computing {hash}");
        match self.engine.submit_embedding(prepared).await {
            Ok(vector) => {
                let call_id = record(Ok(&encode_vector(&vector)), false)?;
                tracing::debug!(target: "calls", "stored {hash}");
                Ok(Embedded {
                    vector,
                    cached: false,
                    call_id,
                    tokens,
                })
            }
            Err(EngineError::Cancelled) => Err(EngineError::Cancelled.into()),
            Err(e) => {
                record(Err(&e), false)?;
                Err(e.into())
            }
        }
    }
}

impl Lm for Generator {
    fn generate(&self, request: GenerationRequest) -> LmFuture<'_> {
        Box::pin(async move {
            Generator::generate(self, request)
                .await
                .map_err(LmError::from)
        })
    }
}
