//! `tuningfork bench`.

use anyhow::Result;
use tuningfork::bench::{BenchOptions, ModeReport};
use tuningfork::workspace;

use super::args::{BenchArgs, GlobalArgs};
use super::{workspace, Runner};

pub fn run(global: &GlobalArgs, args: BenchArgs) -> Result<()> {
    if args.scheduler {
        return scheduler(global, args);
    }
    if args.serve {
        return serve(global, args);
    }
    if args.batched {
        return batched(global, args);
    }
    if args.retrieval {
        return super::corpus::bench(global, args);
    }
    if let Some(task) = args.eval.clone() {
        return eval(global, args, task);
    }
    let ws = workspace(global, &args.engine)?;
    let options = BenchOptions {
        prompt_tokens: args.prompt_tokens,
        gen_tokens: args.gen_tokens.unwrap_or(64),
        repetitions: args.repetitions,
    };
    let runner = Runner::new()?;
    let (run_id, report) =
        runner.run(workspace::bench(&ws, &args.model, &options, runner.token()))?;
    if args.json {
        return super::print_json(&report);
    }
    let engine = ws.engine(&args.model)?;
    println!(
        "model      {} ({})",
        args.model,
        tuningfork::artifact::short(engine.model_sha256())
    );
    println!("threads    {}", ws.engine_config().resolved_threads());
    println!(
        "ggml       {}",
        engine.fingerprint().cpu_features().join(" ")
    );
    println!("run        {run_id}");
    println!();
    println!("{report}");
    Ok(())
}

/// llama-batched-bench's workload, as llama.cpp passes and through the engine.
fn batched(global: &GlobalArgs, args: BenchArgs) -> Result<()> {
    let ws = workspace(global, &args.engine)?;
    let options = tuningfork::bench::batched::BatchedOptions {
        prompt_tokens: u32::try_from(args.prompt_tokens).unwrap_or(u32::MAX),
        gen_tokens: args.gen_tokens.unwrap_or(64),
        sequences: args.sequences.clone(),
        repetitions: args.repetitions,
    };
    let runner = Runner::new()?;
    let (run_id, report) = runner.run(workspace::bench_batched(
        &ws,
        &args.model,
        &options,
        runner.token(),
    ))?;
    if args.json {
        return super::print_json(&report);
    }
    println!("model      {}", args.model);
    println!("threads    {}", ws.engine_config().resolved_threads());
    println!("run        {run_id}");
    println!();
    print!("{report}");
    Ok(())
}

/// Evaluation throughput on a task's split, stepwise and with jump-forward spans.
fn eval(global: &GlobalArgs, args: BenchArgs, task: std::path::PathBuf) -> Result<()> {
    let ws = workspace(global, &args.engine)?;
    let request = workspace::EvalBenchRequest {
        task,
        program: args.program.clone(),
        split: args.split.into(),
    };
    let json = args.json;
    let on_mode = |report: &tuningfork::bench::eval::EvalModeReport| {
        if !json {
            eprintln!("{}: {:.1} s", report.mode, report.wall_s);
        }
    };
    let runner = Runner::new()?;
    let report = runner.run(workspace::bench_eval(
        &ws,
        &request,
        &on_mode,
        runner.token(),
    ))?;
    if json {
        return super::print_json(&report);
    }
    let config = ws.engine_config();
    println!(
        "{} slots, {} threads, batch {}",
        config.slots,
        config.resolved_threads(),
        config.n_batch
    );
    print!("{report}");
    Ok(())
}

/// The four modes of the scheduler benchmark, each on a fresh engine (never two at once).
fn scheduler(global: &GlobalArgs, args: BenchArgs) -> Result<()> {
    let ws = workspace(global, &args.engine)?;
    let on_mode = |report: &ModeReport| {
        if !args.json {
            eprintln!("{}: {:.1} s", report.mode, report.wall_s);
        }
    };
    let runner = Runner::new()?;
    let reports = runner.run(workspace::bench_scheduler(
        &ws,
        &args.model,
        args.requests,
        args.gen_tokens.unwrap_or(24),
        &on_mode,
        runner.token(),
    ))?;
    if args.json {
        return super::print_json(&reports);
    }
    let config = ws.engine_config();
    println!(
        "model {}, {} requests, {} slots, {} threads",
        args.model,
        args.requests,
        config.slots,
        config.resolved_threads()
    );
    print!("{}", ModeReport::table(&reports));
    Ok(())
}

fn serve(global: &GlobalArgs, args: BenchArgs) -> Result<()> {
    let ws = workspace(global, &args.engine)?;
    let options = tuningfork::serve::bench::ServeBenchOptions {
        model: args.model.clone(),
        clients: args.clients,
        requests: args.requests,
        gen_tokens: args.gen_tokens.unwrap_or(24),
        soak: args.soak,
    };
    let runner = Runner::new()?;
    let report = runner.run(tuningfork::serve::bench::bench(
        &ws,
        &options,
        runner.token(),
    ))?;
    if args.json {
        return super::print_json(&report);
    }
    print!("{report}");
    Ok(())
}
