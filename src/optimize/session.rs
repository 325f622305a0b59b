//! What an optimizer works with: the training and validation splits, a way to propose
//! candidate programs, and a way to score programs on examples, all recorded as they happen.
//!
//! Architecture Invariant: a [`Session`] holds a [`TrainSet`] and a [`ValSet`] and nothing
//! else of the data; the test split is evaluated by the run driver through [`Evaluator`]
//! after the optimizer has returned.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::budget::{Stop, Tracker};
use super::OptimizeError;
use crate::dataset::{Split, TrainSet, ValSet};
use crate::eval::{mean_score, run_jobs, ExampleContext, ExampleResult, Job, RunStop};
pub use crate::observe::{Observer, Silent};
use crate::program::{CallSettings, Program};
use crate::random::Rng;
use crate::store::{CandidateRow, ResultRow, Store};

/// sha256 of a program's canonical JSON: the identity of a candidate.
pub fn program_hash(program: &Program) -> String {
    let json = serde_json::to_vec(program).expect("programs serialize");
    hex::encode(Sha256::digest(&json))
}

/// Runs programs on examples and stores every result, keyed by subject, split and example
/// index; a result already stored is read back instead of recomputed.
#[derive(Clone)]
pub struct Evaluator {
    inner: Arc<EvaluatorParts>,
}

/// What an [`Evaluator`] is made of.
pub struct EvaluatorParts {
    pub store: Arc<Store>,
    /// The loop whose results these are.
    pub optimization_id: i64,
    /// The model, the judges, the metric, the task's settings and the fields read.
    pub context: ExampleContext,
    /// The model that writes instructions, for the optimizers that propose them.
    pub proposer: Option<Arc<dyn crate::lm::Lm>>,
    /// Predictor calls per example (what one example costs against a calls budget).
    pub steps: usize,
    pub tracker: Arc<Tracker>,
    pub observer: Arc<dyn Observer>,
}

impl Evaluator {
    pub fn new(parts: EvaluatorParts) -> Self {
        Evaluator {
            inner: Arc::new(parts),
        }
    }

    pub fn settings(&self) -> &CallSettings {
        &self.inner.context.settings
    }

    pub fn tracker(&self) -> &Arc<Tracker> {
        &self.inner.tracker
    }

    pub fn observer(&self) -> &Arc<dyn Observer> {
        &self.inner.observer
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.inner.store
    }

    pub fn optimization_id(&self) -> i64 {
        self.inner.optimization_id
    }

    /// The calls `examples` examples cost against a budget (one per step each, whether
    /// computed, cached or stored, so the count is the same on a resumed run).
    pub fn cost(&self, examples: usize) -> u64 {
        (examples * self.inner.steps) as u64
    }

    /// Runs `jobs` under `subject` on `split`, concurrently, and returns their results in the
    /// order of `jobs`.
    pub(crate) async fn run(
        &self,
        subject: &str,
        split: &'static str,
        jobs: Vec<Job>,
        settings: &CallSettings,
        budgeting: Budgeting,
    ) -> Result<Vec<ResultRow>, OptimizeError> {
        let inner = &self.inner;
        let tracker = &inner.tracker;
        let budgeted = budgeting != Budgeting::Off;
        if budgeting == Budgeting::Admit {
            tracker.admit(self.cost(jobs.len()))?;
        }
        let stored: BTreeMap<i64, ResultRow> = inner
            .store
            .results(inner.optimization_id, subject, split)?
            .into_iter()
            .map(|r| (r.example_index, r))
            .collect();
        let mut results: BTreeMap<usize, ResultRow> = BTreeMap::new();
        let mut to_run = Vec::new();
        for job in jobs.iter() {
            if let Some(row) = stored.get(&(job.index as i64)) {
                tracker.spend_tokens(row.tokens as u64);
                inner.observer.advance();
                results.insert(job.index, row.clone());
            } else {
                to_run.push(job.clone());
            }
        }
        let deadline = if budgeted { tracker.deadline() } else { None };
        let finished = |result: &ExampleResult| {
            let row = result_row(subject, split, result);
            inner.store.record_result(inner.optimization_id, &row)?;
            tracker.spend_tokens(row.tokens as u64);
            inner.observer.advance();
            results.insert(result.index, row);
            if budgeted {
                tracker.check()?;
            }
            Ok::<_, OptimizeError>(())
        };
        run_jobs(&inner.context, settings, to_run, deadline, finished)
            .await
            .map_err(|stop| match stop {
                RunStop::Eval(e) => e.into(),
                RunStop::Refused(e) => e,
                RunStop::Deadline => tracker
                    .check()
                    .err()
                    .unwrap_or_else(|| Stop("the time budget is spent".into()))
                    .into(),
            })?;
        Ok(jobs
            .iter()
            .map(|j| results.remove(&j.index).expect("every job has a result"))
            .collect())
    }

    /// Scores `program` on every example of `split` (stored under the program's hash).
    pub async fn score_split(
        &self,
        program: &Program,
        split: &Split,
        budgeting: Budgeting,
    ) -> Result<f64, OptimizeError> {
        let jobs = Job::for_split(program, split);
        let settings = self.inner.context.settings.clone();
        let rows = self
            .run(
                &program_hash(program),
                split.name,
                jobs,
                &settings,
                budgeting,
            )
            .await?;
        Ok(mean(&rows))
    }
}

/// How a piece of work counts against the run's budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budgeting {
    /// Not at all (the final held-out evaluation).
    Off,
    /// Its calls are admitted first; it stops when time or tokens run out.
    Admit,
    /// Its calls were admitted by the caller; it stops when time or tokens run out.
    Admitted,
}

fn mean(rows: &[ResultRow]) -> f64 {
    mean_score(rows.iter().map(|r| r.score))
}

/// A result as the store keeps it under `subject`.
fn result_row(subject: &str, split: &str, result: &ExampleResult) -> ResultRow {
    ResultRow {
        subject: subject.to_string(),
        split: split.to_string(),
        example_index: result.index as i64,
        source: result.source.clone(),
        outputs: result
            .outputs
            .as_ref()
            .map(|o| serde_json::to_value(o).expect("values serialize")),
        trace: result.trace.clone(),
        score: result.score,
        feedback: result.feedback.clone(),
        error: result.error.clone(),
        tokens: result.trace.tokens() as i64,
    }
}

/// A program an optimizer proposed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Candidate {
    /// Its place in proposal order.
    pub ordinal: usize,
    pub label: String,
    pub parent: Option<usize>,
    pub program: Program,
    pub hash: String,
    /// Its score on the whole validation split, once scored.
    pub val_score: Option<f64>,
}

/// Which examples to score a candidate on.
#[derive(Debug, Clone)]
pub enum Batch {
    /// The whole validation split (the score recorded with the candidate).
    Val,
    /// Some validation examples, by index (a minibatch).
    ValSubset(Vec<usize>),
    /// Some training examples, by index.
    TrainSubset(Vec<usize>),
}

/// An optimizer's view of a run. Cheap to clone; clones share the history.
#[derive(Clone)]
pub struct Session {
    evaluator: Evaluator,
    train: Arc<TrainSet>,
    val: Arc<ValSet>,
    student: Arc<Program>,
    seed: u64,
    history: Arc<Mutex<Vec<Candidate>>>,
    notes: Arc<Mutex<Vec<String>>>,
}

impl Session {
    /// An optimizer session over `train` and `val`. There is no way to give it test data.
    pub fn new(
        evaluator: Evaluator,
        train: TrainSet,
        val: ValSet,
        student: Program,
        seed: u64,
    ) -> Self {
        Session {
            evaluator,
            train: Arc::new(train),
            val: Arc::new(val),
            student: Arc::new(student),
            seed,
            history: Arc::new(Mutex::new(Vec::new())),
            notes: Arc::new(Mutex::new(Vec::new())),
        }
    }

    pub fn train(&self) -> &TrainSet {
        &self.train
    }

    pub fn val(&self) -> &ValSet {
        &self.val
    }

    /// The program being optimized, as the run started.
    pub fn student(&self) -> &Program {
        &self.student
    }

    /// The generation settings of the task.
    pub fn settings(&self) -> &CallSettings {
        self.evaluator.settings()
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// A random generator for one purpose, derived from the run's seed and the purpose's name,
    /// so that each random choice is reproducible on its own.
    pub fn rng(&self, purpose: &str) -> Rng {
        let digest = Sha256::digest(format!("{}:{purpose}", self.seed).as_bytes());
        Rng::new(u64::from_le_bytes(digest[..8].try_into().expect("8 bytes")))
    }

    /// Records something the optimizer decided that is not a candidate (a proposal it
    /// rejected, and why); the notes are stored with the loop's outcome.
    pub fn note(&self, note: &str) {
        self.notes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(note.to_string());
    }

    /// Everything noted so far, in order.
    pub fn notes(&self) -> Vec<String> {
        self.notes.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Tells the observer a new stage began.
    pub fn stage(&self, name: &str, total: usize) {
        self.evaluator.observer().stage(name, total as u64);
    }

    /// Records a new candidate and returns it. Proposals are numbered in order; a resumed run
    /// proposes the same candidates in the same order, which is checked against the store.
    pub fn propose(
        &self,
        label: impl Into<String>,
        program: Program,
        parent: Option<usize>,
    ) -> Result<Candidate, OptimizeError> {
        let mut history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        let candidate = Candidate {
            ordinal: history.len(),
            label: label.into(),
            parent,
            hash: program_hash(&program),
            program,
            val_score: None,
        };
        let row = CandidateRow {
            ordinal: candidate.ordinal as i64,
            label: candidate.label.clone(),
            parent_ordinal: parent.map(|p| p as i64),
            program_hash: candidate.hash.clone(),
            program: serde_json::to_value(&candidate.program).expect("programs serialize"),
            val_score: None,
        };
        let store = self.evaluator.store();
        if let Some(stored) = store.propose_candidate(self.evaluator.optimization_id(), &row)? {
            if stored != candidate.hash {
                return Err(OptimizeError::Diverged(format!(
                    "candidate #{} ({}) has program {}, but the stored run has {}",
                    candidate.ordinal,
                    candidate.label,
                    crate::artifact::short(&candidate.hash),
                    crate::artifact::short(&stored)
                )));
            }
        }
        history.push(candidate.clone());
        Ok(candidate)
    }

    /// Scores a candidate. On [`Batch::Val`], the score is recorded with the candidate.
    pub async fn score(&self, candidate: &Candidate, batch: Batch) -> Result<f64, OptimizeError> {
        Ok(mean(&self.score_rows(candidate, batch).await?))
    }

    /// Scores a candidate and returns each example's result (score, feedback, trace), in the
    /// order of the batch. On [`Batch::Val`], the mean is recorded with the candidate.
    pub async fn score_rows(
        &self,
        candidate: &Candidate,
        batch: Batch,
    ) -> Result<Vec<ResultRow>, OptimizeError> {
        let whole_val = matches!(batch, Batch::Val);
        let (split, indices): (&Split, Vec<usize>) = match batch {
            Batch::Val => {
                self.stage(&format!("scoring {}", candidate.label), self.val.0.len());
                (&self.val.0, (0..self.val.0.len()).collect())
            }
            Batch::ValSubset(indices) => (&self.val.0, indices),
            Batch::TrainSubset(indices) => (&self.train.0, indices),
        };
        let jobs = indices
            .iter()
            .filter_map(|&index| {
                split.examples.get(index).map(|example| Job {
                    index,
                    example: example.clone(),
                    program: candidate.program.clone(),
                })
            })
            .collect();
        let rows = self
            .evaluator
            .run(
                &candidate.hash,
                split.name,
                jobs,
                self.settings(),
                Budgeting::Admit,
            )
            .await?;
        if whole_val {
            self.record_val_score(candidate.ordinal, mean(&rows))?;
        }
        Ok(rows)
    }

    /// Asks the proposer model (the model that writes instructions) to answer `request`. The
    /// call is admitted against the calls budget first and its tokens are counted, like the
    /// task model's calls. Fails when the run has no proposer.
    pub async fn ask_proposer(
        &self,
        request: crate::engine::GenerationRequest,
    ) -> Result<String, OptimizeError> {
        let inner = &self.evaluator.inner;
        let proposer = inner.proposer.as_ref().ok_or_else(|| {
            OptimizeError::Invalid("this optimizer needs a proposer model, and none is set".into())
        })?;
        inner.tracker.admit(1)?;
        let generated = proposer
            .generate(request)
            .await
            .map_err(|e| OptimizeError::Eval(e.into()))?;
        let completion = generated.completion;
        inner.tracker.spend_tokens(u64::from(
            completion.prompt_tokens + completion.completion_tokens,
        ));
        inner.tracker.check()?;
        Ok(completion.text)
    }

    /// Scores several candidates on the validation split concurrently; the scheduler shares
    /// each candidate's prompt prefix across its examples. Returns the scores in order.
    pub async fn score_all(&self, candidates: &[Candidate]) -> Result<Vec<f64>, OptimizeError> {
        self.stage(
            &format!("scoring {} candidates", candidates.len()),
            candidates.len() * self.val.0.len(),
        );
        let mut set = tokio::task::JoinSet::new();
        let mut refused = None;
        // Admission in proposal order, before anything is spawned, so that a calls budget
        // always admits the same candidates.
        for (position, candidate) in candidates.iter().enumerate() {
            let cost = self.evaluator.cost(self.val.0.len());
            if let Err(stop) = self.evaluator.tracker().admit(cost) {
                refused = Some(stop);
                break;
            }
            let session = self.clone();
            let candidate = candidate.clone();
            set.spawn(async move {
                let score = session
                    .evaluator
                    .score_split(&candidate.program, &session.val.0, Budgeting::Admitted)
                    .await;
                (position, score)
            });
        }
        let mut scores: Vec<Option<Result<f64, OptimizeError>>> =
            (0..candidates.len()).map(|_| None).collect();
        while let Some(joined) = set.join_next().await {
            let (position, score) = joined.expect("scoring tasks do not panic");
            scores[position] = Some(score);
        }
        let mut out = Vec::with_capacity(candidates.len());
        let mut first_error = None;
        for (candidate, score) in candidates.iter().zip(scores) {
            let Some(score) = score else {
                // Not admitted: the budget refused it (reported below).
                continue;
            };
            match score {
                Ok(score) => {
                    self.record_val_score(candidate.ordinal, score)?;
                    out.push(score);
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match (first_error, refused) {
            (Some(e), _) => Err(e),
            (None, Some(stop)) => Err(stop.into()),
            (None, None) => Ok(out),
        }
    }

    fn record_val_score(&self, ordinal: usize, score: f64) -> Result<(), OptimizeError> {
        self.evaluator.store().set_candidate_score(
            self.evaluator.optimization_id(),
            ordinal as i64,
            score,
        )?;
        let mut history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(candidate) = history.get_mut(ordinal) {
            candidate.val_score = Some(score);
        }
        let label = history
            .get(ordinal)
            .map_or(String::new(), |c| c.label.clone());
        let best = best_of(&history).and_then(|c| c.val_score).unwrap_or(score);
        drop(history);
        self.evaluator.observer().scored(&label, score, best);
        Ok(())
    }

    /// Runs a teacher over training examples: `program_for(index)` gives the program for each
    /// example (a teacher leaves the example itself out of its demonstrations). `subject`
    /// names the teacher setup in the store. Returns the results in the order of `indices`,
    /// each with its trace.
    pub async fn run_teacher(
        &self,
        subject: &str,
        indices: &[usize],
        program_for: impl Fn(usize) -> Program,
        settings: &CallSettings,
    ) -> Result<Vec<ResultRow>, OptimizeError> {
        let jobs = indices
            .iter()
            .map(|&index| Job {
                index,
                example: self.train.0.examples[index].clone(),
                program: program_for(index),
            })
            .collect();
        self.evaluator
            .run(subject, "train", jobs, settings, Budgeting::Admit)
            .await
    }

    /// Every candidate so far, in proposal order.
    pub fn history(&self) -> Vec<Candidate> {
        self.history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The best candidate scored on the whole validation split: the highest score, the
    /// earliest proposal among equals.
    pub fn best(&self) -> Option<Candidate> {
        best_of(&self.history.lock().unwrap_or_else(|p| p.into_inner())).cloned()
    }
}

fn best_of(history: &[Candidate]) -> Option<&Candidate> {
    history
        .iter()
        .filter(|c| c.val_score.is_some())
        .fold(None, |best: Option<&Candidate>, c| match best {
            Some(b) if b.val_score >= c.val_score => Some(b),
            _ => Some(c),
        })
}
