//! `tuningfork bench`.

use std::sync::Arc;

use anyhow::Result;
use tuningfork::bench::{self, BenchOptions};
use tuningfork::generator::{load_engine, Generator};
use tuningfork::store::{NewRun, RunStatus};

use super::args::{BenchArgs, GlobalArgs};
use super::{engine_config, open_registry, open_store, runtime};

pub fn run(global: &GlobalArgs, args: BenchArgs) -> Result<()> {
    let store = open_store(global)?;
    let registry = open_registry(global)?;
    let config = engine_config(&args.engine);
    let engine = Arc::new(load_engine(
        &registry,
        &store,
        &args.model,
        args.engine.verify,
        config.clone(),
    )?);
    let options = BenchOptions {
        prompt_tokens: args.prompt_tokens,
        gen_tokens: args.gen_tokens,
        repetitions: args.repetitions,
    };
    let run_id = store.begin_run(&NewRun {
        kind: "bench",
        config: serde_json::json!({
            "model": args.model,
            "engine": config,
            "prompt_tokens": options.prompt_tokens,
            "gen_tokens": options.gen_tokens,
            "repetitions": options.repetitions,
        }),
        seed: None,
        model_sha256: Some(engine.model_sha256()),
        fingerprint: engine.fingerprint(),
    })?;
    let threads = config.resolved_threads();
    let features = engine.fingerprint().cpu_features().join(" ");
    let generator =
        Generator::new(Arc::clone(&engine), Arc::clone(&store), run_id).with_cache(false);
    let report = match runtime()?.block_on(bench::run(&generator, &options)) {
        Ok(report) => report,
        Err(e) => {
            store.finish_run(run_id, RunStatus::Failed, Some(&e.to_string()))?;
            return Err(e.into());
        }
    };
    store.finish_run(run_id, RunStatus::Completed, None)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "model      {} ({})",
        args.model,
        &engine.model_sha256()[..12]
    );
    println!("threads    {threads}");
    println!("ggml       {features}");
    println!("run        {run_id}");
    println!();
    println!(
        "{:>4} {:>14} {:>14} {:>12} {:>12}",
        "rep", "prompt tokens", "gen tokens", "prefill ms", "decode ms"
    );
    for (i, s) in report.samples.iter().enumerate() {
        println!(
            "{:>4} {:>14} {:>14} {:>12.1} {:>12.1}",
            i + 1,
            s.prompt_tokens,
            s.completion_tokens,
            s.prefill_ms,
            s.decode_ms
        );
    }
    println!();
    println!(
        "prefill    {:.1} tokens/s (median)",
        report.prefill_tokens_per_s
    );
    println!(
        "decode     {:.1} tokens/s (median)",
        report.decode_tokens_per_s
    );
    Ok(())
}
