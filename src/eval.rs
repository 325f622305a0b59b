//! Evaluation: a program over a split, concurrently through the scheduler, every example
//! scored and stored as soon as it finishes.
//!
//! Results are placed by example index, never by completion order, so an evaluation run twice
//! gives identical per-example results and the same mean.

use serde::Serialize;

use crate::dataset::{Example, Split};
use crate::generator::{GenerateError, Generator};
use crate::metrics::MetricSpec;
use crate::program::{CallSettings, Program, ProgramError, Values};
use crate::store::{EvalRecord, StoreError};

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
}

/// A split's evaluation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalReport {
    pub split: &'static str,
    pub split_hash: String,
    pub mean: f64,
    pub failed: usize,
    pub results: Vec<ExampleResult>,
}

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Generate(#[from] GenerateError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("step `{step}` needs `{field}`: {message}")]
    Program {
        step: String,
        field: String,
        message: String,
    },
}

/// What to evaluate.
#[derive(Debug, Clone, Copy)]
pub struct Evaluation<'a> {
    pub program: &'a Program,
    pub split: &'a Split,
    /// The example fields the program reads.
    pub inputs: &'a [String],
    pub metric: &'a MetricSpec,
    pub settings: &'a CallSettings,
}

/// Evaluates the program on every example of the split, storing each result under the
/// generator's run, in the generator's store. `judge` runs a judge metric's calls (it may be
/// the same generator). `on_done` is called after each example (a progress bar).
pub async fn evaluate(
    evaluation: &Evaluation<'_>,
    generator: &Generator,
    judge: Option<&Generator>,
    on_done: &(dyn Fn(&ExampleResult) + Sync),
) -> Result<EvalReport, EvalError> {
    let split = evaluation.split;
    let mut set = tokio::task::JoinSet::new();
    for (index, example) in split.examples.iter().enumerate() {
        let program = evaluation.program.clone();
        let generator = generator.clone();
        let judge = judge.cloned();
        let example = example.clone();
        let inputs = evaluation.inputs.to_vec();
        let settings = evaluation.settings.clone();
        let metric = evaluation.metric.clone();
        set.spawn(async move {
            let task = ExampleTask {
                program: &program,
                generator: &generator,
                judge: judge.as_ref(),
                inputs: &inputs,
                metric: &metric,
                settings: &settings,
            };
            let result = task.run(index, &example).await;
            (index, example, result)
        });
    }
    let mut results: Vec<Option<ExampleResult>> = vec![None; split.examples.len()];
    while let Some(joined) = set.join_next().await {
        let (index, example, result) = joined.expect("evaluation tasks do not panic");
        let (result, trace) = result?;
        generator.store().record_eval(
            generator.run_id(),
            &EvalRecord {
                split: split.name.to_string(),
                example_index: index as i64,
                source: result.source.clone(),
                inputs: serde_json::to_value(&result.inputs).expect("values serialize"),
                gold: serde_json::to_value(&example.values).expect("values serialize"),
                outputs: result
                    .outputs
                    .as_ref()
                    .map(|o| serde_json::to_value(o).expect("values serialize")),
                trace,
                score: result.score,
                feedback: result.feedback.clone(),
                error: result.error.clone(),
            },
        )?;
        on_done(&result);
        results[index] = Some(result);
    }
    let results: Vec<ExampleResult> = results
        .into_iter()
        .map(|r| r.expect("every example ran"))
        .collect();
    let mean = if results.is_empty() {
        0.0
    } else {
        results.iter().map(|r| r.score).sum::<f64>() / results.len() as f64
    };
    Ok(EvalReport {
        split: split.name,
        split_hash: split.hash.clone(),
        mean,
        failed: results.iter().filter(|r| r.error.is_some()).count(),
        results,
    })
}

/// Everything one example's run needs.
pub struct ExampleTask<'a> {
    pub program: &'a Program,
    pub generator: &'a Generator,
    pub judge: Option<&'a Generator>,
    /// The example fields the program reads.
    pub inputs: &'a [String],
    pub metric: &'a MetricSpec,
    pub settings: &'a CallSettings,
}

impl ExampleTask<'_> {
    /// Runs the program on one example and scores it; also returns the trace as JSON (every
    /// step, the failing one last when a reply could not be used).
    pub async fn run(
        &self,
        index: usize,
        example: &Example,
    ) -> Result<(ExampleResult, serde_json::Value), EvalError> {
        let (program, generator, inputs, metric, settings) = (
            self.program,
            self.generator,
            self.inputs,
            self.metric,
            self.settings,
        );
        let example_inputs: Values = example
            .values
            .iter()
            .filter(|(k, _)| inputs.contains(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let base = ExampleResult {
            index,
            source: example.source.clone(),
            inputs: example_inputs.clone(),
            outputs: None,
            score: 0.0,
            feedback: None,
            error: None,
        };
        match program.forward(generator, &example_inputs, settings).await {
            Ok(prediction) => {
                let trace = serde_json::to_value(&prediction.trace).expect("traces serialize");
                // A metric that fails on one example (a command that times out, a judge reply
                // that cannot be read) fails that example, not the evaluation.
                let result = match metric
                    .score(&example.values, &prediction.outputs, self.judge)
                    .await
                {
                    Ok(score) => ExampleResult {
                        outputs: Some(prediction.outputs),
                        score: score.score,
                        feedback: score.feedback,
                        ..base
                    },
                    Err(e) => ExampleResult {
                        outputs: Some(prediction.outputs),
                        error: Some(e.to_string()),
                        ..base
                    },
                };
                Ok((result, trace))
            }
            Err(ProgramError::Unparsable {
                step,
                raw,
                error,
                trace,
            }) => Ok((
                ExampleResult {
                    error: Some(format!("step `{step}`: {error}; reply {raw:?}")),
                    feedback: Some(format!(
                        "the reply of step `{step}` could not be used: {error}"
                    )),
                    ..base
                },
                serde_json::to_value(&trace).expect("traces serialize"),
            )),
            Err(ProgramError::MissingInput { step, field }) => Err(EvalError::Program {
                step,
                field,
                message: "the example does not provide it".into(),
            }),
            Err(ProgramError::Generate(e)) => Err(e.into()),
        }
    }
}
