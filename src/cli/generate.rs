//! `tuningfork generate`.

use std::io::Write;

use anyhow::{Context, Result};
use tuningfork::engine::{GenerationRequest, Message, Prompt, SamplingParams};
use tuningfork::workspace;

use super::args::{GenerateArgs, GlobalArgs};
use super::{workspace, Runner};

pub fn run(global: &GlobalArgs, args: GenerateArgs) -> Result<()> {
    let grammar = match &args.grammar {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the grammar file {}", path.display()))?,
        ),
        None => None,
    };
    let prompt = if args.raw {
        Prompt::Raw(args.prompt.clone())
    } else {
        let mut messages = Vec::new();
        if let Some(system) = &args.system {
            messages.push(Message::system(system.clone()));
        }
        messages.push(Message::user(args.prompt.clone()));
        Prompt::Chat(messages)
    };
    let mut request = GenerationRequest::new(prompt, args.max_tokens)
        .with_sampling(SamplingParams {
            temperature: args.temperature,
            top_k: args.top_k,
            top_p: args.top_p,
            min_p: args.min_p,
            seed: args.seed,
        })
        .with_stop(args.stop.clone());
    request.grammar = grammar;

    let ws = workspace(global, &args.engine)?;
    let runner = Runner::new()?;
    let (run_id, generated) = runner.run(workspace::generate(
        &ws,
        &args.model,
        request,
        !args.no_cache,
        runner.token(),
    ))?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let value = serde_json::json!({
            "run_id": run_id,
            "call_id": generated.call_id,
            "cached": generated.cached,
            "request_hash": generated.request_hash,
            "completion": generated.completion,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
    } else {
        writeln!(out, "{}", generated.completion.text)?;
    }
    let c = &generated.completion;
    eprintln!(
        "[run {run_id}, call {}{}: {} prompt + {} generated tokens, stop: {}]",
        generated.call_id,
        if generated.cached { ", from cache" } else { "" },
        c.prompt_tokens,
        c.completion_tokens,
        c.stop_reason.as_str()
    );
    Ok(())
}
