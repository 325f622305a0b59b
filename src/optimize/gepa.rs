//! **GEPA**: instructions evolved by reflecting on the metric's feedback, with a Pareto front of
//! candidates (arXiv 2507.19457).
//!
//! The pool starts with the baseline, scored on every validation example. Each iteration draws
//! a parent from the Pareto front ([`super::pareto`]), picks a step in turn, runs the parent on
//! a minibatch of training examples, and shows the proposer model what the step read, wrote
//! and what the metric said. The proposer's new instruction (one framed line, checked by
//! [`super::instructions::read_proposal`]) makes a child, kept only if it beats its parent on
//! that minibatch; a kept child is scored on the whole validation split and joins the pool.
//! After an accepted child, two front candidates that improved different steps are merged. The
//! search stops once its metric calls (examples scored) reach the budget; the result is the
//! candidate with the best validation mean.
//!
//! Every choice comes from the session's seeded generators and stored results, and every
//! proposer call goes through the store, so a resumed run makes the same choices and
//! recomputes nothing it has.

use serde::{Deserialize, Serialize};

use super::instructions::{self, ask_for_instruction, ProposalRules, Reflection};
use super::mipro::{auto_candidates, auto_trials};
use super::pareto;
use super::session::{Batch, Candidate, Session};
use super::{OptimizeError, OptimizeFuture, Optimizer};
use crate::program::Values;
use crate::store::ResultRow;

/// GEPA's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GepaSettings {
    /// The `n` of DSPy's budget rule (6, 12 or 18 for light, medium, heavy).
    pub candidates: usize,
    /// Metric calls (examples scored, stored ones included) before the search stops;
    /// `None`: DSPy's rule for `candidates`, the number of steps and the validation size.
    pub metric_calls: Option<usize>,
    /// Training examples shown to the proposer, and on which a child must beat its parent.
    pub minibatch: usize,
    /// The longest instruction accepted, in characters.
    pub max_chars: usize,
    /// Merge two front candidates that improved different steps.
    pub merge: bool,
}

impl GepaSettings {
    /// `light`, `medium` or `heavy`.
    pub fn preset(name: &str) -> Option<GepaSettings> {
        let candidates = auto_candidates(name)?;
        Some(GepaSettings {
            candidates,
            metric_calls: None,
            minibatch: 3,
            max_chars: instructions::DEFAULT_MAX_CHARS,
            merge: true,
        })
    }

    /// The metric calls of a search over `steps` steps with `val` validation examples: the
    /// budget DSPy gives GEPA, that of a MIPROv2 run with as many candidates
    /// (`V + 5n + 35·N + (⌊(N+1)/5⌋ + 1 + [N < 5])·V`, `N` its trials).
    pub fn metric_calls_for(&self, steps: usize, val: usize) -> usize {
        self.metric_calls.unwrap_or_else(|| {
            let n = self.candidates.max(2);
            let trials = auto_trials(n, steps);
            let full_evals = (trials + 1) / 5 + 1 + usize::from(trials < 5);
            val + 5 * n + 35 * trials + full_evals * val
        })
    }
}

impl Default for GepaSettings {
    fn default() -> Self {
        GepaSettings::preset("light").expect("light is a preset")
    }
}

/// The GEPA optimizer.
pub struct Gepa {
    pub settings: GepaSettings,
}

/// The pool: candidates with their validation scores by example.
struct Pool {
    members: Vec<Candidate>,
    scores: Vec<Vec<f64>>,
}

impl Pool {
    fn add(&mut self, candidate: Candidate, rows: &[ResultRow]) {
        self.scores.push(rows.iter().map(|r| r.score).collect());
        self.members.push(candidate);
    }
}

impl Optimizer for Gepa {
    fn name(&self) -> &'static str {
        "gepa"
    }

    fn compile<'a>(&'a self, session: &'a Session) -> OptimizeFuture<'a> {
        Box::pin(async move {
            let settings = &self.settings;
            let history = session.history();
            let baseline = history.first().cloned().ok_or_else(|| {
                OptimizeError::Invalid("GEPA starts from a scored baseline".into())
            })?;
            let mut pool = Pool {
                members: Vec::new(),
                scores: Vec::new(),
            };
            let rows = session.score_rows(&baseline, Batch::Val).await?;
            pool.add(baseline.clone(), &rows);
            let mut rng = session.rng("gepa");
            let steps = session.student().steps.len().max(1);
            // Reflection rewrites the steps that may be optimized, in turn.
            let tunable: Vec<usize> = session
                .student()
                .steps
                .iter()
                .enumerate()
                .filter(|(_, s)| s.optimize)
                .map(|(i, _)| i)
                .collect();
            let train_len = session.train().0.len();
            let mut seen: Vec<String> = session
                .student()
                .steps
                .iter()
                .map(|s| s.signature.instructions.clone())
                .collect();
            let mut merged = std::collections::BTreeSet::new();
            let budget = settings.metric_calls_for(steps, session.val().0.len());
            let mut used = rows.len();
            let mut iteration = 0;
            while used < budget {
                session.stage(
                    &format!(
                        "reflection {} ({used} of {budget} metric calls)",
                        iteration + 1
                    ),
                    settings.minibatch * 2,
                );
                iteration += 1;
                let Some(parent_at) = pareto::sample_parent(&pool.scores, &mut rng) else {
                    break;
                };
                let parent = pool.members[parent_at].clone();
                let Some(&step) = tunable.get((iteration - 1) % tunable.len().max(1)) else {
                    break;
                };
                let minibatch = rng.choose(train_len, settings.minibatch);
                let seed = rng.next_u64();
                let parent_rows = session
                    .score_rows(&parent, Batch::TrainSubset(minibatch.clone()))
                    .await?;
                used += parent_rows.len();
                if parent_rows.iter().all(|r| r.score >= 1.0) {
                    continue;
                }
                let current = &parent.program.steps[step];
                let reflections = reflections(&current.name, &parent_rows);
                let rules = ProposalRules {
                    current: &current.signature.instructions,
                    seen: &seen,
                    examples: &reflections,
                    max_chars: settings.max_chars,
                };
                let request = |seed| {
                    instructions::reflection_request(
                        current,
                        &reflections,
                        settings.max_chars,
                        seed,
                    )
                };
                let context = format!("reflection {iteration}");
                let Some(instruction) =
                    ask_for_instruction(session, request, seed, &rules, &context).await?
                else {
                    continue;
                };
                seen.push(instruction.clone());
                let child = session.propose(
                    format!("gepa {iteration} · {}", current.name),
                    instructions::with_instruction(&parent.program, step, &instruction),
                    Some(parent.ordinal),
                )?;
                let child_rows = session
                    .score_rows(&child, Batch::TrainSubset(minibatch))
                    .await?;
                used += child_rows.len();
                let scores = |rows: &[ResultRow]| rows.iter().map(|r| r.score).collect::<Vec<_>>();
                if !pareto::accept(&scores(&parent_rows), &scores(&child_rows)) {
                    continue;
                }
                let rows = session.score_rows(&child, Batch::Val).await?;
                used += rows.len();
                pool.add(child, &rows);
                if settings.merge {
                    if let Some((a, b)) = merge_pair(&pool, &merged) {
                        merged.insert((a, b));
                        if let Some(program) = instructions::merge(
                            &baseline.program,
                            &pool.members[a].program,
                            &pool.members[b].program,
                        ) {
                            let child = session.propose(
                                format!(
                                    "merge of #{} and #{}",
                                    pool.members[a].ordinal, pool.members[b].ordinal
                                ),
                                program,
                                Some(pool.members[a].ordinal),
                            )?;
                            let rows = session.score_rows(&child, Batch::Val).await?;
                            used += rows.len();
                            pool.add(child, &rows);
                        }
                    }
                }
            }
            Ok(session.best().unwrap_or(baseline))
        })
    }
}

/// What the proposer is shown of each minibatch example: the step's inputs and outputs from
/// the trace, the score and the metric's feedback.
fn reflections(step: &str, rows: &[ResultRow]) -> Vec<Reflection> {
    rows.iter()
        .map(|row| {
            let traced = row.trace.steps.iter().find(|s| s.predictor == step);
            Reflection {
                inputs: traced.map_or_else(Values::new, |s| s.inputs.clone()),
                outputs: traced.and_then(|s| s.outputs.clone()),
                score: row.score,
                feedback: row.feedback.clone().or_else(|| row.error.clone()),
            }
        })
        .collect()
}

/// Two pool members, both on the Pareto front, not merged before, each different from the
/// baseline (pool index 0): the pair with the most fronts between them, lowest indices first.
fn merge_pair(
    pool: &Pool,
    merged: &std::collections::BTreeSet<(usize, usize)>,
) -> Option<(usize, usize)> {
    let leads = pareto::lead_counts(&pool.scores);
    let leaders: Vec<usize> = leads.keys().copied().filter(|&c| c != 0).collect();
    let mut best = None;
    for (i, &a) in leaders.iter().enumerate() {
        for &b in &leaders[i + 1..] {
            if merged.contains(&(a, b)) {
                continue;
            }
            let weight = leads[&a] + leads[&b];
            if best.is_none_or(|(_, _, w)| weight > w) {
                best = Some((a, b, weight));
            }
        }
    }
    best.map(|(a, b, _)| (a, b))
}
