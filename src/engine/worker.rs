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
use super::stats::Shared;
use super::{
    context_params, embedding_params, BatchedTimings, BatchedWorkload, Command, Completion,
    EngineConfig, EngineError, Pooling, PreparedRequest, TextDeltas,
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
    stats: Shared,
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
        measures: std::collections::VecDeque::new(),
        stats,
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
        let busy = std::time::Instant::now();
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
        // A measurement runs alone: after the requests accepted before it are answered.
        if worker.slots.iter().all(Slot::is_free) && worker.queue.is_empty() {
            if let Some((workload, reply)) = worker.measures.pop_front() {
                if !reply.is_closed() {
                    let _ = reply.send(worker.measure(&mut ctx, &workload));
                }
            }
        }
        let busy = busy.elapsed().as_secs_f64();
        worker.stats.update(|s| s.busy_s += busy);
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
    measures: std::collections::VecDeque<(BatchedWorkload, MeasureReply)>,
    stats: Shared,
}

type MeasureReply = oneshot::Sender<Result<BatchedTimings, EngineError>>;

impl Worker {
    fn is_idle(&self) -> bool {
        self.queue.is_empty()
            && self.slots.iter().all(Slot::is_free)
            && self.embeds.is_empty()
            && self.measures.is_empty()
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
            Command::Measure { workload, reply } => self.measures.push_back((workload, reply)),
        }
    }

    /// llama-batched-bench's workload (see [`BatchedWorkload`]) on sequences 0.., from an empty
    /// cache; the cache is empty again afterwards and no slot holds a prefix.
    fn measure(
        &mut self,
        ctx: &mut LlamaContext<'_>,
        workload: &BatchedWorkload,
    ) -> Result<BatchedTimings, EngineError> {
        let decode_error = |e: llama_cpp_2::DecodeError| EngineError::Decode(e.to_string());
        let sequences = workload.sequences as i32;
        let prompt: Vec<LlamaToken> = workload.prompt.iter().map(|&t| LlamaToken(t)).collect();
        ctx.clear_kv_cache();
        for slot in &mut self.slots {
            slot.kv_tokens.clear();
        }
        // Every (sequence, position, token) of the prompts, then decoded in n_batch chunks.
        let rows: Vec<(i32, usize, LlamaToken)> = (0..sequences)
            .flat_map(|seq| {
                prompt
                    .iter()
                    .enumerate()
                    .map(move |(pos, &t)| (seq, pos, t))
            })
            .collect();
        let mut batch = LlamaBatch::new(self.n_batch.max(sequences as usize), 1);
        let started = std::time::Instant::now();
        let last = rows.len() - 1;
        let mut result = Ok(());
        for (c, chunk) in rows.chunks(self.n_batch).enumerate() {
            batch.clear();
            for (k, &(seq, pos, token)) in chunk.iter().enumerate() {
                let logits = c * self.n_batch + k == last;
                batch
                    .add(token, pos as i32, &[seq], logits)
                    .expect("the batch is sized for its tokens");
            }
            result = ctx.decode(&mut batch).map_err(decode_error);
            if result.is_err() {
                break;
            }
        }
        let prefill_s = started.elapsed().as_secs_f64();
        let started = std::time::Instant::now();
        for step in 0..workload.gen_tokens as usize {
            if result.is_err() {
                break;
            }
            batch.clear();
            let token = prompt[step % prompt.len()];
            for seq in 0..sequences {
                batch
                    .add(token, (prompt.len() + step) as i32, &[seq], true)
                    .expect("the batch is sized for its tokens");
            }
            result = ctx.decode(&mut batch).map_err(decode_error);
        }
        let decode_s = started.elapsed().as_secs_f64();
        ctx.clear_kv_cache();
        result.map(|()| BatchedTimings {
            prefill_s,
            decode_s,
        })
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
            self.stats.update(|s| {
                s.requests += 1;
                s.prompt_tokens += tokens.len() as u64;
                s.prompt_reused += start as u64;
            });
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
                let started = std::time::Instant::now();
                let copied = copy_sequence(ctx, self.slots[source].seq, seq);
                let took = started.elapsed().as_secs_f64();
                self.stats.update(|s| {
                    s.prefix_copies += 1;
                    s.copy_s += took;
                });
                match copied {
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

    /// One scheduling step: one batch with the next token of every decoding slot and prompt
    /// chunks of prefilling slots, up to the batch size, in slot order.
    ///
    /// llama.cpp evaluates such a batch in passes (see [`super::stats::passes`]): each gives
    /// every sequence of a run of consecutive ids the same number of tokens. A jump-forward
    /// span (a decoding slot's last token and the tokens the grammar forces after it) is
    /// therefore taken only where it adds no pass: all spans, else all spans cut to the same
    /// length, else none (their slots decode one token, and the rest of each span is found
    /// again after it).
    fn step(&mut self, ctx: &mut LlamaContext<'_>, model: &LlamaModel) {
        let mut decoding: Vec<(usize, usize)> = Vec::new();
        for (i, slot) in self.slots.iter().enumerate() {
            if let Phase::Decode { forced, .. } = &slot.phase {
                decoding.push((i, forced.len()));
            }
        }
        let mut budget = self.n_batch.saturating_sub(decoding.len());
        let n = self.slots.len();
        let mut chunks: Vec<(usize, std::ops::Range<usize>)> = Vec::new();
        for k in 0..n {
            if budget == 0 {
                break;
            }
            let i = (self.prefill_cursor + k) % n;
            let slot = &self.slots[i];
            let (Phase::Prefill { next }, Some(job)) = (&slot.phase, &slot.job) else {
                continue;
            };
            let end = (next + budget).min(job.prepared.tokens.len());
            budget -= end - next;
            chunks.push((i, *next..end));
        }
        self.prefill_cursor = (self.prefill_cursor + 1) % n;
        // Spans to take, as extra tokens per decoding slot (in `decoding`'s order).
        let counts = |extra: &[usize]| -> Vec<(i32, usize)> {
            let mut counts: Vec<(i32, usize)> = decoding
                .iter()
                .zip(extra)
                .map(|(&(i, _), &extra)| (self.slots[i].seq, 1 + extra))
                .chain(chunks.iter().map(|(i, r)| (self.slots[*i].seq, r.len())))
                .collect();
            counts.sort_unstable();
            counts
        };
        let none = vec![0; decoding.len()];
        let plain = super::stats::passes(&counts(&none), self.n_batch);
        let fits = |extra: &[usize]| {
            let total: usize = extra.iter().sum();
            total > 0
                && total <= budget
                && super::stats::passes(&counts(extra), self.n_batch) <= plain
        };
        let whole: Vec<usize> = decoding.iter().map(|d| d.1).collect();
        let shortest = whole.iter().copied().min().unwrap_or(0);
        let equal = vec![shortest; decoding.len()];
        let take = if !self.jump_forward {
            none
        } else if fits(&whole) {
            whole
        } else if fits(&equal) {
            equal
        } else {
            none
        };
        let mut work: Vec<(usize, Vec<LlamaToken>)> = Vec::new();
        for (&(i, _), &extra) in decoding.iter().zip(&take) {
            let Phase::Decode { last, forced } = &mut self.slots[i].phase else {
                continue;
            };
            let mut tokens = Vec::with_capacity(extra + 1);
            tokens.push(*last);
            tokens.extend_from_slice(&forced[..extra.min(forced.len())]);
            forced.clear();
            work.push((i, tokens));
        }
        for (i, range) in chunks {
            if let Some(job) = &self.slots[i].job {
                work.push((i, job.prepared.tokens[range].to_vec()));
            }
        }
        work.sort_by_key(|(i, _)| self.slots[*i].seq);
        if !work.is_empty() {
            self.evaluate(ctx, model, work);
        }
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
        let counts: Vec<(i32, usize)> = work
            .iter()
            .map(|(i, tokens)| (self.slots[*i].seq, tokens.len()))
            .collect();
        let passes = super::stats::passes(&counts, self.n_batch);
        let started = std::time::Instant::now();
        let decoded = ctx.decode(&mut batch);
        let took = started.elapsed().as_secs_f64();
        let tokens = total as u64;
        self.stats.update(|s| {
            s.passes += passes;
            s.batches += 1;
            s.batch_tokens += tokens;
            s.llama_s += took;
        });
        if let Err(e) = decoded {
            // The batch's sequences are in an unknown state: fail their requests, forget their
            // KV, and carry on with the rest.
            let error = EngineError::Decode(e.to_string());
            for (i, _) in &work {
                let slot = &mut self.slots[*i];
                clear_sequence(ctx, slot.seq);
                slot.kv_tokens.clear();
                finish(slot, Err(error.clone()), &self.stats);
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
        let stats = &self.stats;
        // The span's guesses that were not confirmed were evaluated for nothing.
        let guesses = span.len().saturating_sub(1) as u64;
        let mut confirmed = 0u64;
        let dropped = |confirmed: u64| {
            if guesses > confirmed {
                stats.update(|s| s.dropped_span_tokens += guesses - confirmed);
            }
        };
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
                    dropped(confirmed);
                    finish(slot, Ok(completion), stats);
                    return;
                }
                Err(e) => {
                    dropped(confirmed);
                    finish(slot, Err(e), stats);
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
                confirmed += 1;
                continue;
            }
            dropped(confirmed);
            if guessed.is_some() {
                // The model goes another way: forget the rest of the span.
                let keep = base + row;
                truncate_sequence(ctx, slot.seq, keep);
                slot.kv_tokens.truncate(keep);
            }
            let forced = if jump_forward {
                let room = n_ctx.saturating_sub(slot.kv_tokens.len() + 2);
                let started = std::time::Instant::now();
                let forced = generation.forced(model, request, room.min(MAX_SPAN));
                let took = started.elapsed().as_secs_f64();
                stats.update(|s| s.budget_s += took);
                forced
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

/// Ends a slot's request with `result`, adding what it did to `stats`.
fn finish(slot: &mut Slot, result: Result<Completion, EngineError>, stats: &Shared) {
    slot.phase = Phase::Idle;
    if let Some(generation) = slot.generation.take() {
        let costs = generation.costs();
        stats.update(|s| {
            if let Ok(completion) = &result {
                s.generated_tokens += u64::from(completion.completion_tokens);
                s.forced_tokens += u64::from(completion.forced_tokens);
            }
            s.grammar_s += costs.grammar.as_secs_f64();
            s.budget_s += costs.budget.as_secs_f64();
            s.sample_s += costs.sample.as_secs_f64();
        });
    }
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
