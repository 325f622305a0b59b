//! Few-shot optimizers: labeled demonstrations, bootstrapped demonstrations, a random search
//! over bootstrapped programs, and demonstrations retrieved per input (KNN).

use std::collections::BTreeSet;

use super::session::{program_hash, Batch, Candidate, Session};
use super::{BootstrapSettings, OptimizeError, OptimizeFuture, Optimizer};
use crate::dataset::Example;
use crate::engine::SamplingParams;
use crate::program::{CallSettings, Demo, NearestDemos, Predictor, Program, StepTrace, Values};
use crate::random::Rng;

/// Training examples run by the teacher at once while bootstrapping. The traces kept are the
/// first passing ones in the training order, whatever the chunk size.
const TEACHER_CHUNK: usize = 16;

/// The temperature of bootstrapping rounds after the first.
const ROUND_TEMPERATURE: f32 = 0.7;

/// `0..n` in a seeded random order.
fn shuffled(rng: &mut Rng, n: usize) -> Vec<usize> {
    rng.choose(n, n)
}

/// The demonstration a labeled example makes for `step`: the step's inputs and whichever of
/// its outputs the example has. `None` when the example lacks an input or every output
/// (an intermediate step of a multi-step program).
fn labeled_demo(step: &Predictor, example: &Example) -> Option<Demo> {
    if !step.labeled_by(|field| example.values.contains_key(field)) {
        return None;
    }
    let inputs: Values = step
        .signature
        .inputs
        .iter()
        .map(|f| (f.name.clone(), example.values[&f.name].clone()))
        .collect();
    let outputs: Values = step
        .signature
        .outputs
        .iter()
        .filter_map(|f| {
            example
                .values
                .get(&f.name)
                .map(|v| (f.name.clone(), v.clone()))
        })
        .collect();
    Some(Demo { inputs, outputs })
}

/// Proposes `program` as an optimizer's one candidate and scores it on validation.
async fn propose_and_score(
    session: &Session,
    label: impl Into<String>,
    program: Program,
) -> Result<Candidate, OptimizeError> {
    let candidate = session.propose(label, program, Some(0))?;
    session.score(&candidate, Batch::Val).await?;
    Ok(candidate)
}

/// `program` with every step's demonstrations replaced by `demos(step)` (and no pool to
/// choose more from), except fixed steps (`optimize = false`), which keep theirs.
fn with_demos(program: &Program, demos: impl Fn(&Predictor) -> Vec<Demo>) -> Program {
    Program {
        steps: program
            .steps
            .iter()
            .map(|step| {
                if step.optimize {
                    Predictor {
                        demos: demos(step),
                        nearest: None,
                        ..step.clone()
                    }
                } else {
                    step.clone()
                }
            })
            .collect(),
        retrievals: program.retrievals.clone(),
    }
}

/// `program` with every optimized step showing, per input, the `k` most similar training
/// examples as labeled demonstrations (and no fixed ones); `None` when no step can be given
/// labeled demonstrations (the training data lacks its fields).
pub(super) fn nearest_program(session: &Session, program: &Program, k: usize) -> Option<Program> {
    let train = &session.train().0.examples;
    let mut any = false;
    let mut result = program.clone();
    for step in result.steps.iter_mut().filter(|s| s.optimize) {
        let pool: Vec<Demo> = train.iter().filter_map(|e| labeled_demo(step, e)).collect();
        if pool.is_empty() {
            continue;
        }
        any = true;
        step.demos = Vec::new();
        step.nearest = Some(NearestDemos { k, pool });
    }
    any.then_some(result)
}

/// `program` with labeled demonstrations from `examples`, in order.
fn with_labeled(program: &Program, examples: &[&Example]) -> Program {
    with_demos(program, |step| {
        examples
            .iter()
            .filter_map(|e| labeled_demo(step, e))
            .collect()
    })
}

/// Labeled demonstrations from `k` training examples sampled with the rng of `purpose`.
fn labeled_program(session: &Session, program: &Program, k: usize, purpose: &str) -> Program {
    let train = &session.train().0.examples;
    let picked = session.rng(purpose).choose(train.len(), k);
    let examples: Vec<&Example> = picked.iter().map(|&i| &train[i]).collect();
    with_labeled(program, &examples)
}

/// **LabeledFewShot**: `k` demonstrations sampled from the training split.
pub struct LabeledFewShot {
    pub k: usize,
}

impl Optimizer for LabeledFewShot {
    fn name(&self) -> &'static str {
        "labeled_few_shot"
    }

    fn compile<'a>(&'a self, session: &'a Session) -> OptimizeFuture<'a> {
        Box::pin(async move {
            let program = labeled_program(session, session.student(), self.k, "labeled");
            propose_and_score(session, format!("labeled k={}", self.k), program).await
        })
    }
}

/// **KNNFewShot**: each input is shown its `k` most similar training examples as labeled
/// demonstrations ([`NearestDemos`]: words ranked by BM25, where DSPy uses an embedding
/// model).
pub struct KnnFewShot {
    /// Training examples shown per input.
    pub k: usize,
}

impl Optimizer for KnnFewShot {
    fn name(&self) -> &'static str {
        "knn_few_shot"
    }

    fn compile<'a>(&'a self, session: &'a Session) -> OptimizeFuture<'a> {
        Box::pin(async move {
            let program = nearest_program(session, session.student(), self.k).ok_or_else(|| {
                OptimizeError::Invalid(
                    "KNN few-shot needs a step whose inputs and outputs are fields of the training data"
                        .into(),
                )
            })?;
            propose_and_score(session, format!("nearest k={}", self.k), program).await
        })
    }
}

/// **BootstrapFewShot**: a teacher (the program with labeled demonstrations) runs over the
/// training split; every trace that passes the metric becomes a demonstration of each
/// predictor it went through, reasoning included; labeled examples fill up the rest.
pub struct BootstrapFewShot {
    pub settings: BootstrapSettings,
}

impl Optimizer for BootstrapFewShot {
    fn name(&self) -> &'static str {
        "bootstrap_few_shot"
    }

    fn compile<'a>(&'a self, session: &'a Session) -> OptimizeFuture<'a> {
        Box::pin(async move {
            let order: Vec<usize> = (0..session.train().0.len()).collect();
            let program = bootstrap(
                session,
                &self.settings,
                &order,
                self.settings.max_bootstrapped,
                "bootstrap",
            )
            .await?;
            propose_and_score(session, "bootstrap", program).await
        })
    }
}

/// **BootstrapFewShot with random search**: zero-shot, labeled-only, the unshuffled bootstrap,
/// then `candidates` bootstraps over seeded shuffles of the training split with seeded random
/// demonstration counts, all scored on the validation split; the best wins (the earliest among
/// equals). Candidates are made and scored in rounds of [`SEARCH_ROUND`], in proposal order, so
/// that a large `candidates` under a budget holds only what it scores.
pub struct RandomSearch {
    pub settings: BootstrapSettings,
    pub candidates: usize,
}

/// Shuffled bootstraps random search makes before it scores them.
pub const SEARCH_ROUND: usize = 8;

impl Optimizer for RandomSearch {
    fn name(&self) -> &'static str {
        "random_search"
    }

    fn compile<'a>(&'a self, session: &'a Session) -> OptimizeFuture<'a> {
        Box::pin(async move {
            let mut round = Vec::new();
            for (label, program) in demo_sets(session, &self.settings, 0).await? {
                round.push(session.propose(label, program, Some(0))?);
            }
            // Identical programs are scored once.
            let mut seen = BTreeSet::new();
            let mut made = 0;
            loop {
                let distinct: Vec<Candidate> = round
                    .drain(..)
                    .filter(|c| seen.insert(c.hash.clone()))
                    .collect();
                session.score_all(&distinct).await?;
                if made == self.candidates {
                    break;
                }
                let next = (made + SEARCH_ROUND).min(self.candidates);
                for c in made..next {
                    let (label, program) = shuffled_set(session, &self.settings, c).await?;
                    round.push(session.propose(label, program, Some(0))?);
                }
                made = next;
            }
            session
                .best()
                .ok_or_else(|| OptimizeError::Invalid("no candidate was scored".into()))
        })
    }
}

/// The programs random search compares, each with its label: zero-shot, labeled-only, the
/// unshuffled bootstrap, then `shuffled` bootstraps over seeded shuffles of the training split
/// with seeded random demonstration counts. MIPROv2 takes its demonstration sets from here.
pub(super) async fn demo_sets(
    session: &Session,
    settings: &BootstrapSettings,
    shuffled_count: usize,
) -> Result<Vec<(String, Program)>, OptimizeError> {
    let student = session.student();
    let n = session.train().0.len();
    let mut sets = vec![("zero-shot".to_string(), student.clone())];
    if settings.max_labeled > 0 {
        let program = labeled_program(session, student, settings.max_labeled, "labeled");
        sets.push((format!("labeled k={}", settings.max_labeled), program));
    }
    let order: Vec<usize> = (0..n).collect();
    let program = bootstrap(
        session,
        settings,
        &order,
        settings.max_bootstrapped,
        "bootstrap",
    )
    .await?;
    sets.push(("bootstrap".to_string(), program));
    for c in 0..shuffled_count {
        sets.push(shuffled_set(session, settings, c).await?);
    }
    Ok(sets)
}

/// Shuffled bootstrap number `c`: over a seeded shuffle of the training split, with a seeded
/// random number of traced demonstrations.
async fn shuffled_set(
    session: &Session,
    settings: &BootstrapSettings,
    c: usize,
) -> Result<(String, Program), OptimizeError> {
    let n = session.train().0.len();
    let mut rng = session.rng(&format!("random-search:{c}"));
    let order = shuffled(&mut rng, n);
    let size = if settings.max_bootstrapped == 0 {
        0
    } else {
        1 + (rng.next_u64() % settings.max_bootstrapped as u64) as usize
    };
    let program = bootstrap(
        session,
        settings,
        &order,
        size,
        &format!("random-search:{c}"),
    )
    .await?;
    Ok((format!("bootstrap shuffle {c} ({size} traced)"), program))
}

/// Bootstraps demonstrations for every predictor of the student: the teacher runs over the
/// training examples in `order` until `max_bootstrapped` traces pass, then labeled examples
/// fill each predictor up to `max_labeled` demonstrations. `purpose` seeds the fill.
async fn bootstrap(
    session: &Session,
    settings: &BootstrapSettings,
    order: &[usize],
    max_bootstrapped: usize,
    purpose: &str,
) -> Result<Program, OptimizeError> {
    let student = session.student();
    let train = &session.train().0.examples;
    // The teacher: the student with labeled demonstrations (the same for every bootstrap of
    // a run, so its traces are computed once and shared).
    let teacher = if settings.max_labeled > 0 {
        labeled_program(session, student, settings.max_labeled, "teacher")
    } else {
        student.clone()
    };
    let teacher_hash = program_hash(&teacher);
    let mut traced: Vec<(usize, Vec<StepTrace>)> = Vec::new();
    for round in 0..settings.max_rounds {
        if traced.len() >= max_bootstrapped {
            break;
        }
        let call_settings = round_settings(session, round);
        let subject = format!("teacher:{teacher_hash}:round{round}");
        let done: BTreeSet<usize> = traced.iter().map(|(i, _)| *i).collect();
        let remaining: Vec<usize> = order
            .iter()
            .copied()
            .filter(|i| !done.contains(i))
            .collect();
        session.stage(
            &format!("{purpose}: teacher round {}", round + 1),
            remaining.len(),
        );
        for chunk in remaining.chunks(TEACHER_CHUNK) {
            if traced.len() >= max_bootstrapped {
                break;
            }
            let rows = session
                .run_teacher(
                    &subject,
                    chunk,
                    |i| without_example(&teacher, &train[i]),
                    &call_settings,
                )
                .await?;
            for (&index, row) in chunk.iter().zip(&rows) {
                if traced.len() >= max_bootstrapped {
                    break;
                }
                if row.error.is_some() || row.score < settings.threshold {
                    continue;
                }
                if row.trace.steps.iter().all(|s| s.outputs.is_some()) {
                    traced.push((index, row.trace.steps.clone()));
                }
            }
        }
    }
    let traced_indices: BTreeSet<usize> = traced.iter().map(|(i, _)| *i).collect();
    // Labeled fill: the examples not traced, sampled in a seeded order.
    let untraced: Vec<usize> = order
        .iter()
        .copied()
        .filter(|i| !traced_indices.contains(i))
        .collect();
    let mut rng = session.rng(&format!("{purpose}:fill"));
    let fill_order: Vec<&Example> = shuffled(&mut rng, untraced.len())
        .into_iter()
        .map(|k| &train[untraced[k]])
        .collect();
    Ok(with_demos(student, |step| {
        let mut demos: Vec<Demo> = traced
            .iter()
            .filter_map(|(_, trace)| {
                let s = trace.iter().find(|s| s.predictor == step.name)?;
                Some(Demo {
                    inputs: s.inputs.clone(),
                    outputs: s.outputs.clone()?,
                })
            })
            .take(max_bootstrapped)
            .collect();
        let room = settings.max_labeled.saturating_sub(demos.len());
        demos.extend(
            fill_order
                .iter()
                .filter_map(|e| labeled_demo(step, e))
                .take(room),
        );
        demos
    }))
}

/// The teacher's settings in a round: the task's in the first, sampled afterwards (with a
/// seed derived from the run's), so that later rounds can find traces the first missed.
fn round_settings(session: &Session, round: usize) -> CallSettings {
    let mut settings = session.settings().clone();
    if round > 0 {
        let seed = session.rng(&format!("teacher-round:{round}")).next_u64();
        settings.sampling = SamplingParams::seeded(ROUND_TEMPERATURE, seed);
    }
    settings
}

/// The teacher for one example: its demonstrations without that example's own.
fn without_example(teacher: &Program, example: &Example) -> Program {
    with_demos(teacher, |step| {
        let own = labeled_demo(step, example);
        step.demos
            .iter()
            .filter(|d| own.as_ref().is_none_or(|o| o.inputs != d.inputs))
            .cloned()
            .collect()
    })
}
