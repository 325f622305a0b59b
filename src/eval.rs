//! Evaluation: programs over examples, concurrently through the scheduler, every example scored
//! as soon as it finishes.
//!
//! [`run_jobs`] is the one runner: `eval` uses it through [`evaluate`] (a program on a split,
//! each result stored in `eval_results`), and the optimizers' `Evaluator` uses it for
//! candidates, teachers and the held-out split (each result stored in `candidate_results`).
//! Results are placed by job, never by completion order, so an evaluation run twice gives
//! identical per-example results and the same mean.

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::corpus::Retriever;
use crate::dataset::{Example, Split};
use crate::lm::{Lm, LmError};
use crate::metrics::{Judges, MetricSpec};
use crate::program::{CallSettings, Program, ProgramError, Trace, Values};
use crate::store::{EvalRecord, Store, StoreError};

/// One example's outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExampleResult {
    pub index: usize,
    pub source: String,
    pub inputs: Values,
    /// The program's outputs; `None` when a reply could not be used.
    pub outputs: Option<Values>,
    pub score: f64,
    pub feedback: Option<String>,
    /// Why the example failed (an unparsable reply, with its raw text).
    pub error: Option<String>,
    /// Output values the token budget cut short, as `step.field`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cut_short: Vec<String>,
    /// Every step that ran.
    #[serde(skip)]
    pub trace: Trace,
}

/// A split's evaluation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalReport {
    pub split: &'static str,
    pub split_hash: String,
    pub mean: f64,
    pub failed: usize,
    /// Examples with a value the token budget cut short.
    pub cut: usize,
    pub results: Vec<ExampleResult>,
}

impl EvalReport {
    /// How many examples had each `step.field` cut short, most often first.
    pub fn cut_counts(&self) -> Vec<(&str, usize)> {
        let mut counts = std::collections::BTreeMap::<&str, usize>::new();
        for field in self.results.iter().flat_map(|r| &r.cut_short) {
            *counts.entry(field).or_default() += 1;
        }
        let mut counts: Vec<_> = counts.into_iter().collect();
        counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        counts
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Lm(#[from] LmError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("step `{step}` needs `{field}`: {message}")]
    Program {
        step: String,
        field: String,
        message: String,
    },
}

/// What every example of an evaluation shares: the model, the judges, the metric, the
/// settings, and which example fields the program reads.
#[derive(Clone)]
pub struct ExampleContext {
    pub lm: Arc<dyn Lm>,
    /// What `retrieve` steps search ([`crate::corpus::NoRetriever`] when there are none).
    pub retriever: Arc<dyn Retriever>,
    pub judges: Judges,
    pub metric: MetricSpec,
    pub settings: CallSettings,
    /// The example fields the program reads.
    pub inputs: Vec<String>,
}

/// One example to run: its index in its split, the example, and the program to run on it.
#[derive(Debug, Clone)]
pub struct Job {
    pub index: usize,
    pub example: Example,
    pub program: Program,
}

impl Job {
    /// One job per example of `split`, all running `program`.
    pub fn for_split(program: &Program, split: &Split) -> Vec<Job> {
        split
            .examples
            .iter()
            .enumerate()
            .map(|(index, example)| Job {
                index,
                example: example.clone(),
                program: program.clone(),
            })
            .collect()
    }
}

/// Why [`run_jobs`] stopped early.
#[derive(Debug)]
pub enum RunStop<E> {
    /// An example could not be run (the model or the store failed).
    Eval(EvalError),
    /// `finished` refused to go on (a budget ran out).
    Refused(E),
    /// The deadline passed; the work in flight was cancelled.
    Deadline,
}

/// Runs `jobs` concurrently with `settings` and returns their results in the order of `jobs`.
/// `finished` sees each result as it ends (in completion order: it stores and counts it) and
/// may stop the rest by returning an error; so does reaching `deadline`. Work still in flight
/// when the run stops is cancelled.
pub async fn run_jobs<E>(
    context: &ExampleContext,
    settings: &CallSettings,
    jobs: Vec<Job>,
    deadline: Option<Instant>,
    mut finished: impl FnMut(&ExampleResult) -> Result<(), E>,
) -> Result<Vec<ExampleResult>, RunStop<E>> {
    let mut set = tokio::task::JoinSet::new();
    let count = jobs.len();
    for (position, job) in jobs.into_iter().enumerate() {
        let context = context.clone();
        let settings = settings.clone();
        set.spawn(async move {
            let result = run_example(&context, &settings, &job).await;
            (position, result)
        });
    }
    let mut results: Vec<Option<ExampleResult>> = vec![None; count];
    while !set.is_empty() {
        let joined = match deadline {
            Some(deadline) => tokio::select! {
                joined = set.join_next() => joined,
                _ = tokio::time::sleep_until(deadline.into()) => {
                    set.abort_all();
                    return Err(RunStop::Deadline);
                }
            },
            None => set.join_next().await,
        };
        let Some(joined) = joined else { break };
        let (position, result) = joined.expect("example tasks do not panic");
        let result = result.map_err(RunStop::Eval)?;
        if let Err(e) = finished(&result) {
            set.abort_all();
            return Err(RunStop::Refused(e));
        }
        results[position] = Some(result);
    }
    Ok(results
        .into_iter()
        .map(|r| r.expect("every job has a result"))
        .collect())
}

/// Runs a job's program on its example and scores it.
pub async fn run_example(
    context: &ExampleContext,
    settings: &CallSettings,
    job: &Job,
) -> Result<ExampleResult, EvalError> {
    let example = &job.example;
    let example_inputs: Values = example
        .values
        .iter()
        .filter(|(k, _)| context.inputs.contains(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let base = ExampleResult {
        index: job.index,
        source: example.source.clone(),
        inputs: example_inputs.clone(),
        outputs: None,
        score: 0.0,
        feedback: None,
        error: None,
        cut_short: Vec::new(),
        trace: Trace::default(),
    };
    match job
        .program
        .forward(
            context.lm.as_ref(),
            context.retriever.as_ref(),
            &example_inputs,
            settings,
        )
        .await
    {
        Ok(prediction) => {
            // A metric that fails on one example (a command that times out, a judge reply
            // that cannot be read) fails that example, not the evaluation.
            let scored = context
                .metric
                .score(&example.values, &prediction.outputs, &context.judges)
                .await;
            Ok(match scored {
                Ok(score) => ExampleResult {
                    outputs: Some(prediction.outputs),
                    score: score.score,
                    feedback: score.feedback,
                    cut_short: cut_short(&prediction.trace),
                    trace: prediction.trace,
                    ..base
                },
                Err(e) => ExampleResult {
                    outputs: Some(prediction.outputs),
                    error: Some(e.to_string()),
                    cut_short: cut_short(&prediction.trace),
                    trace: prediction.trace,
                    ..base
                },
            })
        }
        Err(ProgramError::Unparsable {
            step,
            raw,
            error,
            trace,
        }) => Ok(ExampleResult {
            error: Some(format!("step `{step}`: {error}; reply {raw:?}")),
            feedback: Some(format!(
                "the reply of step `{step}` could not be used: {error}"
            )),
            cut_short: cut_short(&trace),
            trace,
            ..base
        }),
        Err(ProgramError::MissingInput { step, field }) => Err(EvalError::Program {
            step,
            field,
            message: "the example does not provide it".into(),
        }),
        Err(ProgramError::Lm(e)) => Err(e.into()),
        Err(ProgramError::Retrieve { step, error }) => Err(EvalError::Program {
            step,
            field: "its corpus".into(),
            message: error.to_string(),
        }),
    }
}

/// The values of `trace` that the token budget cut short, as `step.field`.
fn cut_short(trace: &Trace) -> Vec<String> {
    trace
        .steps
        .iter()
        .flat_map(|step| {
            step.cut_short
                .iter()
                .map(move |field| format!("{}.{field}", step.predictor))
        })
        .collect()
}

/// The mean score of `results` (0 when there are none).
pub fn mean_score(scores: impl IntoIterator<Item = f64>) -> f64 {
    let (sum, n) = scores
        .into_iter()
        .fold((0.0, 0usize), |(sum, n), s| (sum + s, n + 1));
    if n == 0 {
        0.0
    } else {
        sum / n as f64
    }
}

/// Evaluates `program` on every example of `split`, storing each result under `run_id` in
/// `store` as soon as it is scored. `on_done` is called after each example (a progress bar).
pub async fn evaluate(
    context: &ExampleContext,
    program: &Program,
    split: &Split,
    store: &Store,
    run_id: i64,
    on_done: &(dyn Fn(&ExampleResult) + Sync),
) -> Result<EvalReport, EvalError> {
    let results = run_jobs(
        context,
        &context.settings,
        Job::for_split(program, split),
        None,
        |result| {
            let example = &split.examples[result.index];
            store.record_eval(
                run_id,
                &EvalRecord {
                    split: split.name.to_string(),
                    example_index: result.index as i64,
                    source: result.source.clone(),
                    inputs: serde_json::to_value(&result.inputs).expect("values serialize"),
                    gold: serde_json::to_value(&example.values).expect("values serialize"),
                    outputs: result
                        .outputs
                        .as_ref()
                        .map(|o| serde_json::to_value(o).expect("values serialize")),
                    trace: result.trace.clone(),
                    score: result.score,
                    feedback: result.feedback.clone(),
                    error: result.error.clone(),
                },
            )?;
            on_done(result);
            Ok::<_, StoreError>(())
        },
    )
    .await
    .map_err(|stop| match stop {
        RunStop::Eval(e) => e,
        RunStop::Refused(e) => e.into(),
        RunStop::Deadline => unreachable!("an evaluation has no deadline"),
    })?;
    Ok(EvalReport {
        split: split.name,
        split_hash: split.hash.clone(),
        mean: mean_score(results.iter().map(|r| r.score)),
        failed: results.iter().filter(|r| r.error.is_some()).count(),
        cut: results.iter().filter(|r| !r.cut_short.is_empty()).count(),
        results,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_counts_are_per_field_most_often_first() {
        let result = |cut: &[&str]| ExampleResult {
            index: 0,
            source: String::new(),
            inputs: Values::new(),
            outputs: None,
            score: 0.0,
            feedback: None,
            error: None,
            cut_short: cut.iter().map(|s| s.to_string()).collect(),
            trace: Trace::default(),
        };
        let report = EvalReport {
            split: "val",
            split_hash: String::new(),
            mean: 0.0,
            failed: 0,
            cut: 2,
            results: vec![result(&["x.b", "x.a"]), result(&["x.b"]), result(&[])],
        };
        assert_eq!(report.cut_counts(), vec![("x.b", 2), ("x.a", 1)]);
    }
}
