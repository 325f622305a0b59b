//! The engine thread: owns the llama.cpp context and answers one request at a time.
//!
//! Each request starts from an empty KV cache, so its output depends only on its own tokens and
//! parameters, never on what ran before it.

use std::time::Instant;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::data::LlamaTokenData;
use llama_cpp_2::token::data_array::LlamaTokenDataArray;
use llama_cpp_2::token::LlamaToken;
use tokio::sync::{mpsc, oneshot};

use super::sampling::{self, Rng};
use super::{
    context_params, Command, Completion, EngineConfig, EngineError, PreparedRequest, StopReason,
    Timings,
};

/// The worker loop. Reports context creation through `ready`, then serves until every sender
/// of `commands` is dropped.
pub(super) fn run(
    backend: &LlamaBackend,
    model: &LlamaModel,
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
    let n_batch = config.n_batch.max(1) as usize;
    while let Some(command) = commands.blocking_recv() {
        match command {
            Command::Generate { prepared, reply } => {
                if reply.is_closed() {
                    continue;
                }
                let result = generate(&mut ctx, model, n_batch, &prepared, &reply);
                let _ = reply.send(result);
            }
        }
    }
}

fn generate(
    ctx: &mut LlamaContext<'_>,
    model: &LlamaModel,
    n_batch: usize,
    prepared: &PreparedRequest,
    reply: &oneshot::Sender<Result<Completion, EngineError>>,
) -> Result<Completion, EngineError> {
    let request = &prepared.request;
    let tokens = &prepared.tokens;
    let n_ctx = ctx.n_ctx() as usize;
    if tokens.len() >= n_ctx {
        return Err(EngineError::PromptTooLong {
            tokens: tokens.len(),
            n_ctx: n_ctx as u32,
        });
    }
    ctx.clear_kv_cache();

    let started = Instant::now();
    let mut batch = LlamaBatch::new(n_batch.max(1), 1);
    for (chunk_index, chunk) in tokens.chunks(n_batch).enumerate() {
        batch.clear();
        for (offset, &token) in chunk.iter().enumerate() {
            let pos = chunk_index * n_batch + offset;
            batch
                .add(token, pos as i32, &[0], pos + 1 == tokens.len())
                .map_err(|e| EngineError::Decode(e.to_string()))?;
        }
        ctx.decode(&mut batch)
            .map_err(|e| EngineError::Decode(e.to_string()))?;
        if reply.is_closed() {
            return Err(EngineError::Cancelled);
        }
    }
    let prefill_done = Instant::now();

    let mut grammar = match &request.grammar {
        Some(text) => Some(
            LlamaSampler::grammar(model, text, "root")
                .map_err(|e| EngineError::Grammar(e.to_string()))?,
        ),
        None => None,
    };
    let vocab = model.vocab();
    let mut rng = Rng::new(request.sampling.seed);
    let mut bytes: Vec<u8> = Vec::new();
    let mut generated = 0u32;
    let mut pos = tokens.len();
    let mut logits_index = batch.n_tokens() - 1;
    let mut masked: Vec<f32> = Vec::new();
    let (text, stop_reason) = loop {
        if generated >= request.max_tokens {
            break (
                String::from_utf8_lossy(&bytes).into_owned(),
                StopReason::MaxTokens,
            );
        }
        if pos >= n_ctx {
            break (
                String::from_utf8_lossy(&bytes).into_owned(),
                StopReason::ContextFull,
            );
        }
        if reply.is_closed() {
            return Err(EngineError::Cancelled);
        }
        let logits = ctx.get_logits_ith(logits_index);
        let choice = match grammar.as_mut() {
            None => sampling::sample(logits, &request.sampling, &mut rng),
            Some(grammar) => {
                apply_grammar(grammar, logits, &mut masked);
                sampling::sample(&masked, &request.sampling, &mut rng)
            }
        };
        let Some(token) = choice else {
            break (
                String::from_utf8_lossy(&bytes).into_owned(),
                StopReason::GrammarComplete,
            );
        };
        let token = LlamaToken(token as i32);
        if vocab.is_eog(token) {
            break (
                String::from_utf8_lossy(&bytes).into_owned(),
                StopReason::EndOfText,
            );
        }
        if let Some(grammar) = grammar.as_mut() {
            grammar
                .try_accept(token)
                .map_err(|e| EngineError::Grammar(e.to_string()))?;
        }
        generated += 1;
        vocab.token_to_piece_into(token, &mut bytes, false, None);
        if !request.stop.is_empty() {
            let text = String::from_utf8_lossy(&bytes);
            if let Some(cut) = earliest_stop(&text, &request.stop) {
                break (text[..cut].to_string(), StopReason::StopString);
            }
        }
        if generated >= request.max_tokens {
            continue;
        }
        batch.clear();
        batch
            .add(token, pos as i32, &[0], true)
            .map_err(|e| EngineError::Decode(e.to_string()))?;
        ctx.decode(&mut batch)
            .map_err(|e| EngineError::Decode(e.to_string()))?;
        logits_index = 0;
        pos += 1;
    };
    let finished = Instant::now();
    Ok(Completion {
        text,
        prompt_tokens: tokens.len() as u32,
        completion_tokens: generated,
        stop_reason,
        timings: Timings {
            prefill_ms: (prefill_done - started).as_secs_f64() * 1e3,
            decode_ms: (finished - prefill_done).as_secs_f64() * 1e3,
        },
    })
}

/// Writes `logits` into `out` with every token the grammar rejects set to `-inf`.
fn apply_grammar(grammar: &mut LlamaSampler, logits: &[f32], out: &mut Vec<f32>) {
    let mut array = LlamaTokenDataArray::from_iter(
        logits
            .iter()
            .enumerate()
            .map(|(i, &l)| LlamaTokenData::new(LlamaToken(i as i32), l, 0.0)),
        false,
    );
    array.apply_sampler(grammar);
    out.clear();
    out.resize(logits.len(), f32::NEG_INFINITY);
    for data in &array.data {
        let id = data.id().0 as usize;
        if id < out.len() {
            out[id] = data.logit();
        }
    }
}

/// The byte offset of the earliest stop string in `text`, if any.
fn earliest_stop(text: &str, stops: &[String]) -> Option<usize> {
    stops
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(s.as_str()))
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earliest_stop_wins() {
        let stops = vec!["\n\n".to_string(), "END".to_string(), String::new()];
        assert_eq!(earliest_stop("abc END\n\n", &stops), Some(4));
        assert_eq!(earliest_stop("a\n\nEND", &stops), Some(1));
        assert_eq!(earliest_stop("nothing", &stops), None);
    }
}
