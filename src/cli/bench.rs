//! `tuningfork bench`.

use std::sync::Arc;

use anyhow::Result;
use tuningfork::bench::{self, BenchOptions};
use tuningfork::generator::{load_engine, Generator};
use tuningfork::store::NewRun;

use super::args::{BenchArgs, GlobalArgs};
use super::{engine_config, finish_run, open_engine, open_registry, open_store, runtime};

pub fn run(global: &GlobalArgs, args: BenchArgs) -> Result<()> {
    if args.scheduler {
        return scheduler(global, args);
    }
    let config = engine_config(&args.engine);
    let (store, _, engine) = open_engine(global, &args.model, &args.engine)?;
    let options = BenchOptions {
        prompt_tokens: args.prompt_tokens,
        gen_tokens: args.gen_tokens.unwrap_or(64),
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
    let result = runtime()?.block_on(bench::run(&generator, &options));
    let report = finish_run(&store, run_id, result)?;
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

/// The four modes of the scheduler benchmark, each on a fresh engine (never two at once).
fn scheduler(global: &GlobalArgs, args: BenchArgs) -> Result<()> {
    let store = open_store(global)?;
    let registry = open_registry(global)?;
    let base = engine_config(&args.engine);
    let gen_tokens = args.gen_tokens.unwrap_or(24);
    let workload = bench::shared_prefix_workload(args.requests, gen_tokens);
    let runtime = runtime()?;
    let modes = [
        ("a  one at a time, no reuse", 1, false, false, false),
        ("b  batched, no reuse", base.slots, false, true, false),
        ("c  batched, prefix reuse", base.slots, true, true, false),
        ("d  warm-cache rerun", base.slots, true, true, true),
    ];
    let mut reports = Vec::new();
    for (mode, slots, prefix_reuse, concurrent, cache) in modes {
        let config = tuningfork::engine::EngineConfig {
            slots,
            prefix_reuse,
            ..base.clone()
        };
        let engine = Arc::new(load_engine(
            &registry,
            &store,
            &args.model,
            args.engine.verify,
            config.clone(),
        )?);
        let run_id = store.begin_run(&NewRun {
            kind: "bench",
            config: serde_json::json!({
                "benchmark": "scheduler",
                "mode": mode,
                "model": args.model,
                "engine": config,
                "requests": args.requests,
                "gen_tokens": gen_tokens,
                "cache": cache,
            }),
            seed: None,
            model_sha256: Some(engine.model_sha256()),
            fingerprint: engine.fingerprint(),
        })?;
        let generator = Generator::new(engine, Arc::clone(&store), run_id).with_cache(cache);
        let result = runtime.block_on(bench::run_workload(&generator, &workload, concurrent, mode));
        let report = finish_run(&store, run_id, result)?;
        if !args.json {
            eprintln!("{mode}: {:.1} s", report.wall_s);
        }
        reports.push(report);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
        return Ok(());
    }
    let baseline = reports[0].wall_s;
    println!(
        "model {}, {} requests, {} slots, {} threads",
        args.model,
        args.requests,
        base.slots,
        base.resolved_threads()
    );
    println!(
        "{:<30} {:>9} {:>12} {:>12} {:>10} {:>8}",
        "mode", "wall s", "prompt tok", "gen tok", "tok/s", "speedup"
    );
    for r in &reports {
        println!(
            "{:<30} {:>9.2} {:>12} {:>12} {:>10.0} {:>7.1}x",
            r.mode,
            r.wall_s,
            r.prompt_tokens,
            r.completion_tokens,
            r.tokens_per_s(),
            baseline / r.wall_s.max(1e-9)
        );
    }
    Ok(())
}
