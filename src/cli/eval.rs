//! `tuningfork eval` and `tuningfork predict`.

use anyhow::{Context, Result};
use tuningfork::eval::ExampleResult;
use tuningfork::workspace::{self, EvalRequest, PredictRequest};

use super::args::{EvalArgs, GlobalArgs, PredictArgs};
use super::progress::CountBar;
use super::{workspace, Runner};

pub fn eval(global: &GlobalArgs, args: EvalArgs) -> Result<()> {
    let request = EvalRequest {
        task: args.task.clone(),
        program: args.program.clone(),
        split: args.split.into(),
        use_cache: !args.no_cache,
        check: None,
    };
    let ws = workspace(global, &args.engine)?;
    let bar = CountBar::evaluation(&args.task);
    let runner = Runner::new()?;
    let evaluated = runner.run(workspace::evaluate(&ws, &request, &bar, runner.token()));
    drop(bar);
    let evaluated = evaluated?;
    let report = &evaluated.report;
    if args.json {
        return super::print_json(report);
    }
    println!(
        "{} on {} ({} examples, split {}): mean score {:.3}",
        evaluated.task,
        report.split,
        report.results.len(),
        tuningfork::artifact::short(&report.split_hash),
        report.mean
    );
    println!(
        "run {}; {} examples could not be parsed",
        evaluated.run_id, report.failed
    );
    if report.cut > 0 {
        println!(
            "{} examples have values cut short to finish within max_tokens ({}); raise max_tokens in [generation] to give them room",
            report.cut,
            report
                .cut_counts()
                .iter()
                .map(|(field, n)| format!("{field} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let mut misses: Vec<&ExampleResult> = report.results.iter().filter(|r| r.score < 1.0).collect();
    misses.sort_by(|a, b| a.score.total_cmp(&b.score));
    if !misses.is_empty() {
        println!();
        println!(
            "lowest-scoring examples ({} of {}):",
            misses.len().min(10),
            misses.len()
        );
        for r in misses.iter().take(10) {
            let what = r.feedback.as_ref().or(r.error.as_ref());
            println!(
                "  {:.2}  {}  {}",
                r.score,
                r.source,
                what.map_or("", String::as_str)
            );
        }
    }
    Ok(())
}

pub fn predict(global: &GlobalArgs, args: PredictArgs) -> Result<()> {
    let input = serde_json::from_str(&args.input)
        .context("--input must be a JSON object, e.g. '{\"review\": \"Great kettle.\"}'")?;
    let request = PredictRequest {
        task: args.task.clone(),
        program: args.program.clone(),
        input,
    };
    let ws = workspace(global, &args.engine)?;
    let runner = Runner::new()?;
    let prediction = runner.run(workspace::predict(&ws, &request, runner.token()))?;
    if args.json {
        super::print_json(&prediction)?;
    } else {
        super::print_json(&prediction.outputs)?;
    }
    Ok(())
}
