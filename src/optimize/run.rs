//! One optimization loop, start to finish: the baseline on validation, the optimizer, the
//! held-out test split for the baseline and the result, and the artifacts.

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::budget::Tracker;
use super::session::{Budgeting, Evaluator, EvaluatorParts, Observer, Session};
use super::{Batch, Candidate, OptimizeError, OptimizerConfig};
use crate::artifact::{Artifact, ArtifactModel};
use crate::dataset::{DataCleaning, Example, Split, TestSet, TrainSet, ValSet};
use crate::eval::ExampleContext;
use crate::lm::Lm;
use crate::metrics::Judges;
use crate::program::Program;
use crate::store::{LoopStatus, Store};
use crate::task::Task;

/// Everything a loop needs, stored with it so that it resumes without the original files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoopSpec {
    /// The task file's path as given (for messages).
    pub task_file: String,
    /// The task file as written.
    pub task_source: String,
    /// The program the loop starts from: the task's, or a stored artifact's.
    pub program: Program,
    /// The artifact the starting program came from.
    pub parent: Option<String>,
    pub optimizer: OptimizerConfig,
    pub seed: u64,
    pub model: ArtifactModel,
    /// The proposer model of an optimizer that proposes instructions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proposer: Option<ArtifactModel>,
    pub train: Vec<Example>,
    pub val: Vec<Example>,
    pub test: Vec<Example>,
    pub train_hash: String,
    pub val_hash: String,
    pub test_hash: String,
    /// Lines skipped and rows dropped or accepted when the data was read.
    #[serde(default, skip_serializing_if = "DataCleaning::is_empty")]
    pub cleaning: DataCleaning,
}

impl LoopSpec {
    /// The task, parsed from the stored source, with the loop's starting program.
    pub fn task(&self) -> Result<Task, OptimizeError> {
        let mut task = Task::parse(
            &self.task_source,
            Path::new(&self.task_file),
            Path::new(".").to_path_buf(),
        )
        .map_err(|e| OptimizeError::Invalid(e.to_string()))?;
        task.program = self.program.clone();
        Ok(task)
    }

    /// The three splits, checked against the recorded hashes.
    pub fn splits(&self) -> Result<(TrainSet, ValSet, TestSet), OptimizeError> {
        let train = Split::new("train", self.train.clone());
        let val = Split::new("val", self.val.clone());
        let test = Split::new("test", self.test.clone());
        for (split, recorded) in [
            (&train, &self.train_hash),
            (&val, &self.val_hash),
            (&test, &self.test_hash),
        ] {
            if &split.hash != recorded {
                return Err(OptimizeError::Invalid(format!(
                    "the stored {} split hashes to {}, not the recorded {}; the store was altered",
                    split.name, split.hash, recorded
                )));
            }
        }
        Ok((TrainSet(train), ValSet(val), TestSet(test)))
    }
}

/// A program's scores: validation (when it was scored on all of it) and test.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SplitScores {
    pub val: Option<f64>,
    pub test: f64,
}

/// How a loop ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoopOutcome {
    pub task: String,
    pub optimizer: String,
    /// Completed, or stopped when a budget ran out first.
    pub status: LoopStatus,
    pub stop_reason: Option<String>,
    pub baseline: SplitScores,
    pub optimized: SplitScores,
    pub baseline_hash: String,
    pub artifact_hash: String,
    /// The chosen candidate's label.
    pub chosen: String,
    pub candidates: usize,
    pub demos: usize,
    /// Demonstrations chosen per input from the steps' pools, at most (the sum of their `k`;
    /// fewer when fewer pool entries share a word with the input).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retrieved: usize,
    /// What the optimizer decided that is not a candidate (rejected proposals, with why).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl LoopOutcome {
    /// The chosen program's demonstrations, in words: "8 demonstrations", or "0
    /// demonstrations, 3 retrieved per input".
    pub fn demonstrations(&self) -> String {
        match self.retrieved {
            0 => format!("{} demonstrations", self.demos),
            k => format!("{} demonstrations, {k} retrieved per input", self.demos),
        }
    }
}

/// The shared parts of a loop: where to record, what to run on, what to count against.
pub struct LoopContext {
    pub store: Arc<Store>,
    pub optimization_id: i64,
    pub run_uid: String,
    /// The task model's calls.
    pub lm: Arc<dyn Lm>,
    /// What the program's `retrieve` steps search.
    pub retriever: Arc<dyn crate::corpus::Retriever>,
    /// The judges' calls, each on its own model.
    pub judges: Judges,
    /// The proposer's calls, for an optimizer that proposes instructions.
    pub proposer: Option<Arc<dyn Lm>>,
    pub tracker: Arc<Tracker>,
    pub observer: Arc<dyn Observer>,
}

/// Runs (or resumes) one loop and records its outcome.
pub async fn run_loop(spec: &LoopSpec, context: LoopContext) -> Result<LoopOutcome, OptimizeError> {
    let store = Arc::clone(&context.store);
    let optimization_id = context.optimization_id;
    let result = run_inner(spec, context).await;
    let summary = match &result {
        Ok(outcome) => serde_json::to_value(outcome).expect("outcomes serialize"),
        Err(e) => serde_json::json!({ "error": e.to_string() }),
    };
    match &result {
        Ok(outcome) => store.finish_optimization(
            optimization_id,
            outcome.status,
            outcome.stop_reason.as_deref(),
            Some(&outcome.artifact_hash),
            Some(&outcome.baseline_hash),
            &summary,
        )?,
        Err(e) => store.finish_optimization(
            optimization_id,
            LoopStatus::Failed,
            Some(&e.to_string()),
            None,
            None,
            &summary,
        )?,
    }
    result
}

async fn run_inner(spec: &LoopSpec, context: LoopContext) -> Result<LoopOutcome, OptimizeError> {
    spec.optimizer.validate().map_err(OptimizeError::Invalid)?;
    let task = spec.task()?;
    let (train, val, test) = spec.splits()?;
    let evaluator = Evaluator::new(EvaluatorParts {
        store: Arc::clone(&context.store),
        optimization_id: context.optimization_id,
        context: ExampleContext {
            lm: Arc::clone(&context.lm),
            retriever: Arc::clone(&context.retriever),
            judges: context.judges.clone(),
            metric: task.metric.clone(),
            settings: task.generation.clone(),
            inputs: task.example_inputs(),
        },
        proposer: context.proposer.clone(),
        steps: spec.program.steps.len(),
        tracker: Arc::clone(&context.tracker),
        observer: Arc::clone(&context.observer),
    });
    let optimizer = spec.optimizer.build();
    let session = Session::new(
        evaluator.clone(),
        train,
        val,
        spec.program.clone(),
        spec.seed,
    );

    // The baseline is candidate 0.
    let baseline = session.propose("baseline", spec.program.clone(), None)?;
    let mut stop_reason = None;
    let chosen = match session.score(&baseline, Batch::Val).await {
        Ok(_) => match optimizer.compile(&session).await {
            Ok(candidate) => Some(candidate),
            Err(OptimizeError::Stopped(stop)) => {
                stop_reason = Some(stop.0);
                None
            }
            Err(e) => return Err(e),
        },
        Err(OptimizeError::Stopped(stop)) => {
            stop_reason = Some(stop.0);
            None
        }
        Err(e) => return Err(e),
    };
    let chosen: Candidate = match chosen {
        // An optimizer's choice is scored on validation like every other candidate.
        Some(candidate) => session
            .history()
            .into_iter()
            .find(|c| c.ordinal == candidate.ordinal && c.val_score.is_some())
            .unwrap_or(candidate),
        None => session.best().unwrap_or_else(|| baseline.clone()),
    };
    let history = session.history();
    let baseline_val = history[0].val_score;

    // The held-out split, once, for the baseline and the result; outside the budget.
    let programs = if chosen.hash == baseline.hash { 1 } else { 2 };
    context
        .observer
        .stage("test split", (programs * test.0.len()) as u64);
    let baseline_test = evaluator
        .score_split(&baseline.program, &test.0, Budgeting::Off)
        .await?;
    let chosen_test = if chosen.hash == baseline.hash {
        baseline_test
    } else {
        evaluator
            .score_split(&chosen.program, &test.0, Budgeting::Off)
            .await?
    };

    let scores = |val: Option<f64>, test: f64| {
        let mut map = std::collections::BTreeMap::new();
        if let Some(val) = val {
            map.insert("val".to_string(), val);
        }
        map.insert("test".to_string(), test);
        map
    };
    let mut baseline_artifact = Artifact::new(
        &task.task.name,
        baseline.program.clone(),
        spec.model.clone(),
    );
    baseline_artifact.parent = spec.parent.clone();
    baseline_artifact.scores = scores(baseline_val, baseline_test);
    let baseline_hash = context.store.save_artifact(&baseline_artifact)?;
    let artifact_hash = if chosen.hash == baseline.hash {
        baseline_hash.clone()
    } else {
        let mut artifact =
            Artifact::new(&task.task.name, chosen.program.clone(), spec.model.clone());
        artifact.parent = Some(baseline_hash.clone());
        artifact.run = Some(context.run_uid.clone());
        artifact.scores = scores(chosen.val_score, chosen_test);
        context.store.save_artifact(&artifact)?
    };
    Ok(LoopOutcome {
        task: task.task.name.clone(),
        optimizer: optimizer.name().to_string(),
        status: if stop_reason.is_some() {
            LoopStatus::Stopped
        } else {
            LoopStatus::Completed
        },
        stop_reason,
        baseline: SplitScores {
            val: baseline_val,
            test: baseline_test,
        },
        optimized: SplitScores {
            val: chosen.val_score,
            test: chosen_test,
        },
        baseline_hash,
        artifact_hash,
        chosen: chosen.label.clone(),
        candidates: history.len(),
        demos: chosen.program.steps.iter().map(|s| s.demos.len()).sum(),
        retrieved: chosen
            .program
            .steps
            .iter()
            .filter_map(|s| s.nearest.as_ref())
            .map(|n| n.k)
            .sum(),
        notes: session.notes(),
    })
}
