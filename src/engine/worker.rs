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

/// The most tokens one jump-forward span appends.
const MAX_SPAN: usize = 32;

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
    /// Generating; `last` is the token to evaluate next, then `forced`: the tokens the
    /// grammar forces after it, evaluated in the same chunk and confirmed from its logits.
    Decode {
        last: LlamaToken,
        forced: Vec<LlamaToken>,
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
        jump_forward: config.jump_forward,
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
    jump_forward: bool,
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
            let generation = match Generation::new(model, &job.prepared) {
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
        // A jump-forward span (the last token and the tokens the grammar forces after it) is
        // a chunk of several tokens: it goes with the prompt chunks, if it fits this step's
        // batch; otherwise the slot decodes its last token alone and forgets the span.
        let decoding_slots = self
            .slots
            .iter()
            .filter(|s| matches!(s.phase, Phase::Decode { .. }))
            .count();
        let mut spare = self.n_batch.saturating_sub(decoding_slots);
        let mut decoding: Vec<(usize, Vec<LlamaToken>)> = Vec::new();
        let mut prefill: Vec<(usize, Vec<LlamaToken>)> = Vec::new();
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let Phase::Decode { last, forced } = &mut slot.phase else {
                continue;
            };
            if !forced.is_empty() && forced.len() <= spare {
                spare -= forced.len();
                let mut span = Vec::with_capacity(forced.len() + 1);
                span.push(*last);
                span.append(forced);
                prefill.push((i, span));
            } else {
                forced.clear();
                decoding.push((i, vec![*last]));
            }
        }
        let mut budget = spare;
        if !decoding.is_empty() {
            self.evaluate(ctx, model, decoding);
        }
        let n = self.slots.len();
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
    /// every slot whose logits came out: decoding slots (at every token of a jump-forward
    /// span), and prefilling slots whose prompt ends in this batch.
    fn evaluate(
        &mut self,
        ctx: &mut LlamaContext<'_>,
        model: &LlamaModel,
        work: Vec<(usize, Vec<LlamaToken>)>,
    ) {
        let total: usize = work.iter().map(|(_, tokens)| tokens.len()).sum();
        let mut batch = LlamaBatch::new(total.max(1), 1);
        // Per slot: the batch index of its first logits row, and how many rows it has.
        let mut outputs: Vec<(usize, i32, usize)> = Vec::new();
        for (i, tokens) in &work {
            let slot = &self.slots[*i];
            let start = slot.kv_tokens.len();
            let rows = match slot.phase {
                Phase::Decode { .. } => tokens.len(),
                Phase::Prefill { next } => usize::from(
                    slot.job
                        .as_ref()
                        .is_some_and(|job| next + tokens.len() == job.prepared.tokens.len()),
                ),
                Phase::Idle => 0,
            };
            let first_row = batch.n_tokens() + (tokens.len() - rows) as i32;
            for (offset, &token) in tokens.iter().enumerate() {
                let logits = offset + rows >= tokens.len();
                batch
                    .add(token, (start + offset) as i32, &[slot.seq], logits)
                    .expect("the batch is sized for its tokens");
            }
            if rows > 0 {
                outputs.push((*i, first_row, rows));
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
        let mut spans: Vec<Vec<LlamaToken>> = vec![Vec::new(); self.slots.len()];
        for (i, tokens) in work {
            let slot = &mut self.slots[i];
            slot.kv_tokens.extend_from_slice(&tokens);
            match slot.phase {
                Phase::Prefill { next } => {
                    slot.phase = Phase::Prefill {
                        next: next + tokens.len(),
                    }
                }
                Phase::Decode { .. } => spans[i] = tokens,
                Phase::Idle => {}
            }
        }
        for (i, first_row, rows) in outputs {
            self.sample(ctx, model, i, first_row, rows, &spans[i]);
        }
    }

    /// Samples slot `i` from its `rows` logits rows, which start at batch index `first_row`.
    ///
    /// A decoding slot's rows follow the tokens of `span`: its last token, then the tokens
    /// the grammar forced after it. The forced tokens were a guess: each row's sample is
    /// compared with the next forced token, and at the first difference the rest of the span
    /// is dropped from the KV cache and the sample is kept. Every sample is drawn exactly as
    /// if the tokens had been decoded one at a time, so the output is the same.
    fn sample(
        &mut self,
        ctx: &mut LlamaContext<'_>,
        model: &LlamaModel,
        i: usize,
        first_row: i32,
        rows: usize,
        span: &[LlamaToken],
    ) {
        let n_ctx = self.n_ctx;
        let jump_forward = self.jump_forward;
        let slot = &mut self.slots[i];
        let (Some(job), Some(generation)) = (slot.job.as_ref(), slot.generation.as_mut()) else {
            return;
        };
        let request = &job.prepared.request;
        // Position of the token the first row predicts.
        let base = slot.kv_tokens.len() + 1 - rows;
        for row in 0..rows {
            let logits = ctx.get_logits_ith(first_row + row as i32);
            let step = generation.next(model, request, logits, base + row, n_ctx);
            let token = match step {
                Ok(Step::Continue(token)) => token,
                Ok(Step::Finished(completion)) => {
                    // Whatever the span put in the cache past here stays, described by
                    // `kv_tokens`: it is a valid prefix for later requests.
                    finish(slot, Ok(completion));
                    return;
                }
                Err(e) => {
                    finish(slot, Err(e));
                    return;
                }
            };
            if let Some(deltas) = &job.deltas {
                if let Some(text) = generation.take_delta(&request.stop) {
                    // A caller that stopped listening is noticed as a closed reply.
                    let _ = deltas.send(text);
                }
            }
            let guessed = span.get(row + 1).copied();
            if guessed == Some(token) {
                generation.confirmed_forced();
                continue;
            }
            if guessed.is_some() {
                // The model goes another way: forget the rest of the span.
                let keep = base + row;
                truncate_sequence(ctx, slot.seq, keep);
                slot.kv_tokens.truncate(keep);
            }
            let forced = if jump_forward {
                let room = n_ctx.saturating_sub(slot.kv_tokens.len() + 2);
                generation.forced(model, request, room.min(MAX_SPAN))
            } else {
                Vec::new()
            };
            slot.phase = Phase::Decode {
                last: token,
                forced,
            };
            return;
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
