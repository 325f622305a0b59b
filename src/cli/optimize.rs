//! `tuningfork optimize`, `resume` and `rerun`.

use anyhow::{bail, Result};
use tuningfork::optimize::budget::parse_duration;
use tuningfork::optimize::{
    BootstrapSettings, Budget, GepaSettings, MiproSettings, OptimizerConfig,
};
use tuningfork::workspace::{self, OptimizeReport, OptimizeRequest};

use super::args::{
    AutoLevel, GlobalArgs, OptimizeArgs, OptimizerName, RerunArgs, ResumeArgs, SearchArgs,
};
use super::progress::LoopBars;
use super::{workspace, Runner};

fn optimizer_config(name: OptimizerName, args: &SearchArgs) -> OptimizerConfig {
    let settings = BootstrapSettings {
        max_bootstrapped: args.max_bootstrapped,
        max_labeled: args.max_labeled,
        max_rounds: args.max_rounds,
        threshold: args.threshold,
    };
    match name {
        OptimizerName::Labeled => OptimizerConfig::LabeledFewShot {
            k: args.max_labeled,
        },
        OptimizerName::Knn => OptimizerConfig::KnnFewShot { k: args.nearest },
        OptimizerName::Bootstrap => OptimizerConfig::BootstrapFewShot { settings },
        OptimizerName::RandomSearch => OptimizerConfig::RandomSearch {
            settings,
            candidates: args.candidates,
        },
        OptimizerName::Gepa => {
            let mut settings = GepaSettings::preset(preset(args.auto)).unwrap_or_default();
            settings.metric_calls = args.metric_calls;
            settings.max_chars = args.max_chars;
            OptimizerConfig::Gepa { settings }
        }
        OptimizerName::Mipro => {
            let mut mipro = MiproSettings::preset(preset(args.auto)).unwrap_or_default();
            mipro.trials = args.trials;
            mipro.minibatch = args.minibatch;
            mipro.max_chars = args.max_chars;
            mipro.demos = settings;
            mipro.nearest = args.nearest;
            OptimizerConfig::Mipro { settings: mipro }
        }
    }
}

fn preset(level: AutoLevel) -> &'static str {
    match level {
        AutoLevel::Light => "light",
        AutoLevel::Medium => "medium",
        AutoLevel::Heavy => "heavy",
    }
}

/// The optimizers the arguments name, with their settings.
pub fn optimizers(args: &SearchArgs) -> Vec<OptimizerConfig> {
    args.optimizers
        .iter()
        .map(|name| optimizer_config(*name, args))
        .collect()
}

/// The budget the arguments set.
pub fn budget(args: &SearchArgs) -> Result<Budget> {
    let time = args.budget_time.as_deref().map(parse_duration).transpose();
    Ok(Budget {
        time_secs: time.map_err(|e| anyhow::anyhow!("--budget-time: {e}"))?,
        calls: args.budget_calls,
        tokens: args.budget_tokens,
    })
}

pub fn optimize(global: &GlobalArgs, args: OptimizeArgs) -> Result<()> {
    let request = OptimizeRequest {
        tasks: args.tasks.clone(),
        optimizers: optimizers(&args.search),
        budget: budget(&args.search)?,
        seed: args.search.seed,
        program: args.search.program.clone(),
        promote: args.promote.clone(),
        proposer: args.search.proposer.clone(),
    };
    let ws = workspace(global, &args.engine)?;
    let bars = LoopBars::default();
    let runner = Runner::new()?;
    let report = runner.run(workspace::optimize(&ws, &request, &bars, runner.token()));
    bars.clear();
    print(&report?, args.json)
}

pub fn resume(global: &GlobalArgs, args: ResumeArgs) -> Result<()> {
    let ws = workspace(global, &args.engine)?;
    let bars = LoopBars::default();
    let runner = Runner::new()?;
    let report = runner.run(workspace::resume(&ws, &args.run, &bars, runner.token()));
    bars.clear();
    let report = report?;
    if report.loops_run == 0 {
        eprintln!("run {} has nothing left to do", report.run.uid);
    } else {
        eprintln!(
            "resumed run {}: {} of {} loops ran",
            report.run.uid,
            report.loops_run,
            report.outcomes.len()
        );
    }
    print(&report, args.json)
}

/// Starts a new run from the stored inputs of an optimization run and compares the two.
pub fn rerun(global: &GlobalArgs, args: RerunArgs) -> Result<()> {
    let ws = workspace(global, &args.engine)?;
    let bars = LoopBars::default();
    let runner = Runner::new()?;
    let rerun = runner.run(workspace::rerun(
        &ws,
        &args.run,
        args.use_cache,
        &bars,
        runner.token(),
    ));
    bars.clear();
    let rerun = rerun?;
    let (report, original) = (&rerun.report, &rerun.original);
    if !args.json {
        eprintln!("rerun of {original} as run {}", report.run.uid);
    }
    if args.json {
        let mut value = report.to_json();
        value["original"] = original.as_str().into();
        value["rerun"] = report.run.uid.as_str().into();
        value["departures"] = rerun.departures.clone().into();
        super::print_json(&value)?;
    } else {
        println!("{report}");
        println!();
        if rerun.departures.is_empty() {
            println!(
                "rerun {} matches run {original}: every candidate, every stored result, the same artifacts and scores",
                report.run.uid
            );
        } else {
            println!("rerun {} departs from run {original}:", report.run.uid);
            for d in &rerun.departures {
                println!("  {d}");
            }
        }
    }
    if !rerun.departures.is_empty() {
        bail!(
            "the rerun departs from run {original} at {} points",
            rerun.departures.len()
        );
    }
    Ok(())
}

/// Prints the report (a table, or JSON) and fails when a loop failed.
fn print(report: &OptimizeReport, json: bool) -> Result<()> {
    if json {
        super::print_json(&report.to_json())?;
    } else {
        println!("{report}");
    }
    if let Some(e) = report.first_error() {
        bail!(
            "{e}; fix the cause and continue with `tuningfork resume {}`",
            report.run.uid
        );
    }
    Ok(())
}
