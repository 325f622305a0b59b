//! The regression gate: evaluate a program and fail when it scores below a bar or below the
//! last check of the same program by more than a tolerance, naming the examples that got
//! worse — so an optimized prompt is tested like code.

use std::collections::BTreeMap;

use serde::Serialize;

use super::evaluate::{evaluate, EvalRequest, SplitName};
use super::{Workspace, WorkspaceError};
use crate::observe::Observer;
use crate::store::EvalRecord;
use crate::task::Task;
use tokio_util::sync::CancellationToken;

/// What to check.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckRequest {
    pub task: std::path::PathBuf,
    /// A promoted name, hash or prefix; `None` checks the task's program as written.
    pub program: Option<String>,
    pub split: SplitName,
    /// The bar: a lower mean score fails.
    pub min_score: f64,
    /// How far below the last passed check of the same program, task and split the score
    /// may fall before the check fails.
    pub tolerance: f64,
    pub use_cache: bool,
}

/// One example that scored lower than at the last check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Regression {
    pub source: String,
    pub before: f64,
    pub now: f64,
    pub outputs: Option<serde_json::Value>,
    pub feedback: Option<String>,
}

/// The passed check this one was compared with.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PreviousCheck {
    pub run: String,
    pub score: f64,
    pub at: String,
}

/// How a check went.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckReport {
    pub task: String,
    pub program: String,
    pub split: &'static str,
    pub run_id: i64,
    pub score: f64,
    pub min_score: f64,
    pub tolerance: f64,
    pub previous: Option<PreviousCheck>,
    /// Why the check failed; empty when it passed.
    pub failures: Vec<String>,
    /// Examples that scored lower than at the previous check, worst drop first.
    pub regressions: Vec<Regression>,
}

impl CheckReport {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Evaluates the program and compares it with the bar and the previous check.
pub async fn check(
    ws: &Workspace,
    request: &CheckRequest,
    observer: &dyn Observer,
    cancel: CancellationToken,
) -> Result<CheckReport, WorkspaceError> {
    if !(0.0..=1.0).contains(&request.min_score) || !(0.0..=1.0).contains(&request.tolerance) {
        return Err(WorkspaceError::Invalid(format!(
            "--min-score ({}) and --tolerance ({}) are scores between 0 and 1",
            request.min_score, request.tolerance
        )));
    }
    let task = Task::load(&request.task)?;
    let program = request.program.clone().unwrap_or_else(|| "task".into());
    let split = split_name(request.split);
    let key = serde_json::json!({ "task": task.task.name, "program": program, "split": split });
    let previous = ws.store().last_check(&key)?;
    let evaluated = evaluate(
        ws,
        &EvalRequest {
            task: request.task.clone(),
            program: request.program.clone(),
            split: request.split,
            use_cache: request.use_cache,
            check: Some(key),
        },
        observer,
        cancel,
    )
    .await?;
    let score = evaluated.report.mean;
    let mut failures = Vec::new();
    if score < request.min_score {
        failures.push(format!(
            "the score {score:.3} is below the bar {:.3}",
            request.min_score
        ));
    }
    let mut regressions = Vec::new();
    let previous = match previous {
        Some((run, records)) => {
            let before = mean(&records);
            if score < before - request.tolerance {
                failures.push(format!(
                    "the score {score:.3} is {:.3} below the last passed check's {before:.3} (run {}), more than the tolerance {:.3}",
                    before - score,
                    run.uid,
                    request.tolerance
                ));
            }
            let by_inputs: BTreeMap<String, &EvalRecord> =
                records.iter().map(|r| (r.inputs.to_string(), r)).collect();
            for now in &evaluated.report.results {
                let inputs = serde_json::to_value(&now.inputs)
                    .expect("values serialize")
                    .to_string();
                if let Some(before) = by_inputs.get(&inputs).filter(|b| b.score > now.score) {
                    regressions.push(Regression {
                        source: now.source.clone(),
                        before: before.score,
                        now: now.score,
                        outputs: now
                            .outputs
                            .as_ref()
                            .map(|o| serde_json::to_value(o).expect("values serialize")),
                        feedback: now.feedback.clone().or_else(|| now.error.clone()),
                    });
                }
            }
            regressions.sort_by(|a, b| (b.before - b.now).total_cmp(&(a.before - a.now)));
            Some(PreviousCheck {
                run: run.uid,
                score: before,
                at: run.started_at,
            })
        }
        None => None,
    };
    if failures.is_empty() {
        ws.store().mark_check_passed(evaluated.run_id)?;
    }
    Ok(CheckReport {
        task: evaluated.task,
        program,
        split,
        run_id: evaluated.run_id,
        score,
        min_score: request.min_score,
        tolerance: request.tolerance,
        previous,
        failures,
        regressions,
    })
}

fn split_name(split: SplitName) -> &'static str {
    match split {
        SplitName::Train => "train",
        SplitName::Val => "val",
        SplitName::Test => "test",
    }
}

fn mean(records: &[EvalRecord]) -> f64 {
    if records.is_empty() {
        return 0.0;
    }
    records.iter().map(|r| r.score).sum::<f64>() / records.len() as f64
}

impl std::fmt::Display for CheckReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} · {} on {}: {:.3} (bar {:.3}; run {})",
            self.task, self.program, self.split, self.score, self.min_score, self.run_id
        )?;
        match &self.previous {
            Some(p) => writeln!(
                f,
                "last passed check {:.3} at {} (run {}); tolerance {:.3}",
                p.score, p.at, p.run, self.tolerance
            )?,
            None => writeln!(f, "no earlier passed check of this program on this split")?,
        }
        if !self.regressions.is_empty() {
            writeln!(
                f,
                "{} examples scored lower than at the last passed check:",
                self.regressions.len()
            )?;
            for r in self.regressions.iter().take(20) {
                let outputs = r
                    .outputs
                    .as_ref()
                    .map_or("(no usable reply)".to_string(), |o| o.to_string());
                write!(
                    f,
                    "  {}  {:.2} → {:.2}  {outputs}",
                    r.source, r.before, r.now
                )?;
                match &r.feedback {
                    Some(feedback) => writeln!(f, "  ({feedback})")?,
                    None => writeln!(f)?,
                }
            }
        }
        if self.passed() {
            write!(f, "check passed")
        } else {
            write!(f, "check FAILED: {}", self.failures.join("; "))
        }
    }
}
