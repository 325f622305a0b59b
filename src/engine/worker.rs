//! The engine thread: owns the llama.cpp context and runs continuous batching over a fixed set
//! of sequence slots.
//!
//! Each loop iteration takes in new requests, admits waiting ones into free slots, evaluates
//! one token for every decoding slot, then prompt chunks of prefilling slots up to the batch
//! size, and samples for every slot whose logits came out. A finished slot is free at once.
//!
//! Shared-prefix reuse: a slot keeps its KV cache after its request ends, with the tokens it
//! holds. A new request goes to the free slot holding the longest common prefix and evaluates
//! only the rest; when another slot holds a longer one, its sequence state is copied over first.
//! A request whose prefix another slot is still computing waits for it rather than computing it
//! twice.

use llama_cpp_2::context::session::LlamaStateSeqFlags;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use tokio::sync::{mpsc, oneshot};

use super::queue::FairQueue;
use super::slot::{Generation, Step};
use super::{
    context_params, embedding_params, Command, Completion, EngineConfig, EngineError, Pooling,
    PreparedRequest, TextDeltas,
};

/// A text waiting for its embedding.
struct EmbedJob {
    tokens: Vec<LlamaToken>,
    reply: oneshot::Sender<Result<Vec<f32>, EngineError>>,
}

/// Copying another slot's state pays off only above this many shared tokens.
const MIN_COPY_TOKENS: usize = 32;

struct Job {
    prepared: PreparedRequest,
    reply: oneshot::Sender<Result<Completion, EngineError>>,
    deltas: Option<TextDeltas>,
}

/// What a slot is doing.
enum Phase {
    Idle,
    /// Evaluating prompt tokens from `next` on.
    Prefill {
        next: usize,
    },
    /// Generating; `last` is the token to evaluate next.
    Decode {
        last: LlamaToken,
    },
}

struct Slot {
    seq: i32,
    /// The tokens whose KV entries this slot's sequence holds, positions 0.. in order.
    kv_tokens: Vec<LlamaToken>,
    phase: Phase,
    job: Option<Job>,
    generation: Option<Generation>,
    /// When the slot was last given work (for least-recently-used eviction).
    last_used: u64,
}

impl Slot {
    fn is_free(&self) -> bool {
        self.job.is_none()
    }
}

/// The worker loop. Reports context creation through `ready`, then serves until every sender
/// of `commands` is dropped and all accepted work is answered.
pub(super) fn run(
    backend: &LlamaBackend,
    model: &LlamaModel,
    pooling: Pooling,
    config: &EngineConfig,
    mut commands: mpsc::Receiver<Command>,
    ready: std::sync::mpsc::Sender<Result<(), EngineError>>,
) {
    let mut ctx = match model.new_context(backend, context_params(config)) {
        Ok(ctx) => ctx,
        Err(e) => {
            let _ = ready.send(Err(EngineError::Context(e.to_string())));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    let mut worker = Worker {
        slots: (0..config.slots.max(1) as i32)
            .map(|seq| Slot {
                seq,
                kv_tokens: Vec::new(),
                phase: Phase::Idle,
                job: None,
                generation: None,
                last_used: 0,
            })
            .collect(),
        queue: FairQueue::new(),
        n_batch: config.n_batch.max(config.slots).max(1) as usize,
        n_ctx: config.n_ctx as usize,
        prefix_reuse: config.prefix_reuse,
        clock: 0,
        prefill_cursor: 0,
        embeds: std::collections::VecDeque::new(),
    };
    // Made at the first embedding request: engines that only generate never pay for it.
    let mut embed_ctx: Option<LlamaContext<'_>> = None;
    let mut open = true;
    loop {
        if open && worker.is_idle() {
            match commands.blocking_recv() {
                Some(command) => worker.accept(command),
                None => open = false,
            }
        }
        while open {
            match commands.try_recv() {
                Ok(command) => worker.accept(command),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => open = false,
            }
        }
        if !open && worker.is_idle() {
            break;
        }
        worker.drop_cancelled();
        worker.admit(&mut ctx, model);
        worker.step(&mut ctx, model);
        // One embedding per turn, so generation and embedding take turns on the cores.
        if let Some(job) = worker.embeds.pop_front() {
            if job.reply.is_closed() {
                continue;
            }
            if embed_ctx.is_none() {
                match model.new_context(backend, embedding_params(config, pooling)) {
                    Ok(made) => embed_ctx = Some(made),
                    Err(e) => {
                        let _ = job.reply.send(Err(EngineError::Context(e.to_string())));
                        continue;
                    }
                }
            }
            if let Some(embed_ctx) = embed_ctx.as_mut() {
                let _ = job.reply.send(embed(embed_ctx, &job.tokens));
            }
        }
    }
}

/// One text's pooled embedding, evaluated alone from an empty cache.
fn embed(ctx: &mut LlamaContext<'_>, tokens: &[LlamaToken]) -> Result<Vec<f32>, EngineError> {
    ctx.clear_kv_cache();
    let mut batch = LlamaBatch::new(tokens.len(), 1);
    batch
        .add_sequence(tokens, 0, true)
        .map_err(|e| EngineError::Decode(e.to_string()))?;
    ctx.decode(&mut batch)
        .map_err(|e| EngineError::Decode(e.to_string()))?;
    let vector = ctx
        .embeddings_seq_ith(0)
        .map_err(|e| EngineError::Decode(format!("no pooled embedding: {e}")))?
        .to_vec();
    ctx.clear_kv_cache();
    Ok(vector)
}

struct Worker {
    slots: Vec<Slot>,
    queue: FairQueue<Job>,
    n_batch: usize,
    n_ctx: usize,
    prefix_reuse: bool,
    clock: u64,
    prefill_cursor: usize,
    embeds: std::collections::VecDeque<EmbedJob>,
}

impl Worker {
    fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.slots.iter().all(Slot::is_free) && self.embeds.is_empty()
    }

    fn accept(&mut self, command: Command) {
        match command {
            Command::Generate {
                group,
                prepared,
                reply,
                deltas,
            } => self.queue.push(
                group,
                Job {
                    prepared,
                    reply,
                    deltas,
                },
            ),
            Command::Embed { tokens, reply } => self.embeds.push_back(EmbedJob { tokens, reply }),
        }
    }

    /// Requests whose caller went away are dropped; their slots are freed (the KV they computed
    /// stays, for reuse).
    fn drop_cancelled(&mut self) {
        self.queue.retain(|job| !job.reply.is_closed());
        for slot in &mut self.slots {
            if slot.job.as_ref().is_some_and(|job| job.reply.is_closed()) {
                slot.job = None;
                slot.generation = None;
                slot.phase = Phase::Idle;
            }
        }
    }

    /// Moves waiting requests into free slots.
    fn admit(&mut self, ctx: &mut LlamaContext<'_>, model: &LlamaModel) {
        while let Some(job) = self.queue.peek() {
            let Some(target) = self.choose_slot(&job.prepared.tokens) else {
                return;
            };
            let tokens = job.prepared.tokens.clone();
            if self.prefix_reuse && self.prefix_being_computed(&tokens) {
                // Another slot is computing this prefix right now: wait, then copy it.
                return;
            }
            let job = self.queue.pop().expect("peeked");
            let generation =
                match Generation::new(model, &job.prepared.request, job.prepared.tokens.len()) {
                    Ok(g) => g,
                    Err(e) => {
                        let _ = job.reply.send(Err(e));
                        continue;
                    }
                };
            let start = self.prepare_kv(ctx, target, &tokens);
            self.clock += 1;
            let slot = &mut self.slots[target];
            slot.phase = Phase::Prefill { next: start };
            slot.job = Some(job);
            slot.generation = Some(generation);
            slot.last_used = self.clock;
        }
    }

    /// The free slot for `tokens`: the one holding the longest common prefix, else the least
    /// recently used.
    fn choose_slot(&self, tokens: &[LlamaToken]) -> Option<usize> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.is_free())
            .max_by_key(|(_, s)| {
                let shared = if self.prefix_reuse {
                    common_prefix(&s.kv_tokens, tokens)
                } else {
                    0
                };
                (shared, std::cmp::Reverse(s.last_used))
            })
            .map(|(i, _)| i)
    }

    /// Whether a busy slot is still evaluating a prompt that shares more with `tokens` than
    /// any slot already holds.
    fn prefix_being_computed(&self, tokens: &[LlamaToken]) -> bool {
        let held = self
            .slots
            .iter()
            .map(|s| common_prefix(&s.kv_tokens, tokens))
            .max()
            .unwrap_or(0);
        self.slots.iter().any(|s| {
            matches!(s.phase, Phase::Prefill { .. })
                && s.job.as_ref().is_some_and(|job| {
                    let pending = common_prefix(&job.prepared.tokens, tokens).min(tokens.len() - 1);
                    pending >= held + MIN_COPY_TOKENS
                })
        })
    }

    /// Readies slot `target`'s KV cache for `tokens` and returns the first position still to
    /// evaluate.
    fn prepare_kv(
        &mut self,
        ctx: &mut LlamaContext<'_>,
        target: usize,
        tokens: &[LlamaToken],
    ) -> usize {
        let seq = self.slots[target].seq;
        // At least the last prompt token is evaluated, for its logits.
        let limit = tokens.len() - 1;
        if !self.prefix_reuse {
            clear_sequence(ctx, seq);
            self.slots[target].kv_tokens.clear();
            return 0;
        }
        let own = common_prefix(&self.slots[target].kv_tokens, tokens).min(limit);
        let best_other = self
            .slots
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != target)
            .map(|(i, s)| (i, common_prefix(&s.kv_tokens, tokens).min(limit)))
            .max_by_key(|&(i, n)| (n, std::cmp::Reverse(i)));
        if let Some((source, shared)) = best_other {
            if shared >= own + MIN_COPY_TOKENS {
                match copy_sequence(ctx, self.slots[source].seq, seq) {
                    Ok(()) => {
                        truncate_sequence(ctx, seq, shared);
                        let kept = self.slots[source].kv_tokens[..shared].to_vec();
                        self.slots[target].kv_tokens = kept;
                        return shared;
                    }
                    Err(e) => {
                        tracing::warn!("prefix copy failed ({e}); evaluating the prompt in full");
                        clear_sequence(ctx, seq);
                        self.slots[target].kv_tokens.clear();
                        return 0;
                    }
                }
            }
        }
        truncate_sequence(ctx, seq, own);
        self.slots[target].kv_tokens.truncate(own);
        own
    }

    /// One scheduling step: a batch with the next token of every decoding slot, then a batch of
    /// prompt chunks of prefilling slots (up to the batch size in all). The two are kept apart
    /// because llama.cpp splits a multi-sequence batch into equal shares per sequence, which
    /// would cut prompt chunks next to single decode tokens into single-token pieces.
    fn step(&mut self, ctx: &mut LlamaContext<'_>, model: &LlamaModel) {
        let decoding: Vec<(usize, Vec<LlamaToken>)> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, slot)| match slot.phase {
                Phase::Decode { last } => Some((i, vec![last])),
                _ => None,
            })
            .collect();
        let mut budget = self.n_batch.saturating_sub(decoding.len());
        if !decoding.is_empty() {
            self.evaluate(ctx, model, decoding);
        }
        let n = self.slots.len();
        let mut prefill = Vec::new();
        for k in 0..n {
            if budget == 0 {
                break;
            }
            let i = (self.prefill_cursor + k) % n;
            let slot = &self.slots[i];
            let (Phase::Prefill { next }, Some(job)) = (&slot.phase, &slot.job) else {
                continue;
            };
            let tokens = &job.prepared.tokens;
            let end = (next + budget).min(tokens.len());
            let chunk = tokens[*next..end].to_vec();
            budget -= chunk.len();
            prefill.push((i, chunk));
        }
        if !prefill.is_empty() {
            self.evaluate(ctx, model, prefill);
        }
        self.prefill_cursor = (self.prefill_cursor + 1) % n;
    }

    /// Evaluates `work` (slot, tokens to append to its sequence) in one batch and samples for
    /// every slot whose logits came out: decoding slots, and prefilling slots whose prompt ends
    /// in this batch.
    fn evaluate(
        &mut self,
        ctx: &mut LlamaContext<'_>,
        model: &LlamaModel,
        work: Vec<(usize, Vec<LlamaToken>)>,
    ) {
        let total: usize = work.iter().map(|(_, tokens)| tokens.len()).sum();
        let mut batch = LlamaBatch::new(total.max(1), 1);
        let mut outputs: Vec<(usize, i32)> = Vec::new();
        for (i, tokens) in &work {
            let slot = &self.slots[*i];
            let start = slot.kv_tokens.len();
            let wants_logits = match slot.phase {
                Phase::Decode { .. } => true,
                Phase::Prefill { next } => slot
                    .job
                    .as_ref()
                    .is_some_and(|job| next + tokens.len() == job.prepared.tokens.len()),
                Phase::Idle => false,
            };
            for (offset, &token) in tokens.iter().enumerate() {
                let last = offset + 1 == tokens.len();
                batch
                    .add(
                        token,
                        (start + offset) as i32,
                        &[slot.seq],
                        last && wants_logits,
                    )
                    .expect("the batch is sized for its tokens");
            }
            if wants_logits {
                outputs.push((*i, batch.n_tokens() - 1));
            }
        }
        if batch.n_tokens() == 0 {
            return;
        }
        if let Err(e) = ctx.decode(&mut batch) {
            // The batch's sequences are in an unknown state: fail their requests, forget their
            // KV, and carry on with the rest.
            let error = EngineError::Decode(e.to_string());
            for (i, _) in &work {
                let slot = &mut self.slots[*i];
                clear_sequence(ctx, slot.seq);
                slot.kv_tokens.clear();
                finish(slot, Err(error.clone()));
            }
            return;
        }
        for (i, tokens) in work {
            let slot = &mut self.slots[i];
            slot.kv_tokens.extend_from_slice(&tokens);
            if let Phase::Prefill { next } = slot.phase {
                slot.phase = Phase::Prefill {
                    next: next + tokens.len(),
                };
            }
        }
        for (i, index) in outputs {
            let logits = ctx.get_logits_ith(index);
            let n_ctx = self.n_ctx;
            let slot = &mut self.slots[i];
            let (Some(job), Some(generation)) = (slot.job.as_ref(), slot.generation.as_mut())
            else {
                continue;
            };
            let position = slot.kv_tokens.len();
            match generation.next(model, &job.prepared.request, logits, position, n_ctx) {
                Ok(Step::Continue(token)) => {
                    if let Some(deltas) = &job.deltas {
                        if let Some(text) = generation.take_delta(&job.prepared.request.stop) {
                            // A caller that stopped listening is noticed as a closed reply.
                            let _ = deltas.send(text);
                        }
                    }
                    slot.phase = Phase::Decode { last: token };
                }
                Ok(Step::Finished(completion)) => finish(slot, Ok(completion)),
                Err(e) => finish(slot, Err(e)),
            }
        }
    }
}

fn finish(slot: &mut Slot, result: Result<Completion, EngineError>) {
    slot.phase = Phase::Idle;
    slot.generation = None;
    if let Some(job) = slot.job.take() {
        let _ = job.reply.send(result);
    }
}

fn common_prefix(a: &[LlamaToken], b: &[LlamaToken]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

fn clear_sequence(ctx: &mut LlamaContext<'_>, seq: i32) {
    let _ = ctx.clear_kv_cache_seq(Some(seq as u32), None, None);
}

fn truncate_sequence(ctx: &mut LlamaContext<'_>, seq: i32, keep: usize) {
    let _ = ctx.clear_kv_cache_seq(Some(seq as u32), Some(keep as u32), None);
}

/// Replaces `dst`'s KV entries with a copy of `src`'s.
fn copy_sequence(ctx: &mut LlamaContext<'_>, src: i32, dst: i32) -> Result<(), EngineError> {
    let state = ctx
        .state_seq_get(src, LlamaStateSeqFlags::empty())
        .map_err(|e| EngineError::Decode(format!("cannot read sequence {src}: {e}")))?;
    clear_sequence(ctx, dst);
    ctx.state_seq_set(&state, dst)
        .map_err(|e| EngineError::Decode(format!("cannot restore into sequence {dst}: {e}")))
}
