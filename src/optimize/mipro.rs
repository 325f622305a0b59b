//! **MIPROv2**: instructions proposed by a model and chosen together with demonstration sets
//! by a Bayesian search.
//!
//! 1. Demonstration sets: the programs random search makes (zero-shot, labeled-only, the
//!    unshuffled bootstrap, shuffled bootstraps), `candidates` of them; beyond DSPy, one
//!    more that shows each input its `nearest` most similar training examples
//!    ([`crate::program::NearestDemos`]), which small task models follow where they ignore
//!    an instruction.
//! 2. Instruction candidates per step: the step's own instruction, then one grounded proposal
//!    per non-empty demonstration set. The proposer sees a one-line summary of the training
//!    data (which it wrote first), a description of the program and the step, that set's
//!    demonstrations, and a tip drawn at random. Proposals are decoded under a grammar and
//!    degenerate ones are rejected and noted ([`super::instructions::read_proposal`]).
//! 3. The search: each trial picks, per step, an instruction and a demonstration set with a
//!    seeded TPE ([`super::tpe`]) and scores the combination on a minibatch of the validation
//!    split; every `full_eval_every` trials, and after the last, the combination with the best
//!    mean minibatch score that was not yet fully evaluated is scored on the whole split.
//!    The zero-shot demonstration set is one of the choices, so an instruction is also tried
//!    without demonstrations.
//!
//! The result is the best program scored on the whole validation split, the baseline included.
//! Every choice comes from the session's seeded generators and stored results.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::fewshot::{demo_sets, nearest_program};
use super::instructions::{self, ask_for_instruction, ProposalRules, Reflection};
use super::session::{Batch, Candidate, Session};
use super::tpe::{Observation, Tpe};
use super::{BootstrapSettings, OptimizeError, OptimizeFuture, Optimizer};
use crate::program::{Demo, Predictor, Program, Values};

/// Training examples the proposer summarises.
const SUMMARY_EXAMPLES: usize = 8;

/// Demonstrations shown to the proposer per grounded proposal.
const SHOWN_DEMOS: usize = 4;

/// Training examples the nearest-examples demonstration set shows each input.
pub const DEFAULT_NEAREST: usize = 3;

/// MIPROv2's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MiproSettings {
    /// Instruction candidates and demonstration sets per step.
    pub candidates: usize,
    /// Search trials; `None`: DSPy's rule, `max(2·v·log2(n), 1.5·n)` for `v` = twice the steps.
    pub trials: Option<usize>,
    /// Validation examples per trial (the whole split when it is smaller).
    pub minibatch: usize,
    /// A full evaluation after this many trials.
    pub full_eval_every: usize,
    /// The longest instruction accepted, in characters.
    pub max_chars: usize,
    /// How demonstration sets are made.
    pub demos: BootstrapSettings,
    /// The extra demonstration set showing each input this many of its most similar training
    /// examples (0: none; runs stored before it existed have none).
    #[serde(default)]
    pub nearest: usize,
    /// Whether the search's first trials try every instruction and demonstration set before
    /// the estimator takes over (runs stored before this existed drew them uniformly).
    #[serde(default)]
    pub cover: bool,
}

impl MiproSettings {
    /// `light`, `medium` or `heavy`, with DSPy's numbers: 6, 12 or 18 candidates, minibatches
    /// of 35, a full evaluation every 5 trials.
    pub fn preset(name: &str) -> Option<MiproSettings> {
        let candidates = auto_candidates(name)?;
        Some(MiproSettings {
            candidates,
            trials: None,
            minibatch: 35,
            full_eval_every: 5,
            max_chars: instructions::DEFAULT_MAX_CHARS,
            demos: BootstrapSettings::default(),
            nearest: DEFAULT_NEAREST,
            cover: true,
        })
    }

    /// The trials of a search over `steps` steps.
    pub fn trials_for(&self, steps: usize) -> usize {
        self.trials
            .unwrap_or_else(|| auto_trials(self.candidates, steps))
    }
}

/// The candidates of DSPy's `auto` presets: 6, 12 or 18 for light, medium or heavy.
pub(super) fn auto_candidates(preset: &str) -> Option<usize> {
    match preset {
        "light" => Some(6),
        "medium" => Some(12),
        "heavy" => Some(18),
        _ => None,
    }
}

/// DSPy's trials for `candidates` candidates over `steps` steps: `max(2·v·log2 n, 1.5·n)`,
/// `v` twice the steps (an instruction and a demonstration set each). GEPA's budget rule
/// counts the same trials.
pub(super) fn auto_trials(candidates: usize, steps: usize) -> usize {
    let n = candidates.max(2) as f64;
    let vars = (2 * steps.max(1)) as f64;
    (2.0 * vars * n.log2()).max(1.5 * n) as usize
}

impl Default for MiproSettings {
    fn default() -> Self {
        MiproSettings::preset("light").expect("light is a preset")
    }
}

/// The MIPROv2 optimizer.
pub struct Mipro {
    pub settings: MiproSettings,
}

/// A choice of the search: per step, an instruction index and a demonstration-set index.
type Choice = Vec<usize>;

impl Optimizer for Mipro {
    fn name(&self) -> &'static str {
        "mipro"
    }

    fn compile<'a>(&'a self, session: &'a Session) -> OptimizeFuture<'a> {
        Box::pin(async move {
            let settings = &self.settings;
            // The loop scored the baseline on validation before the optimizer began.
            let baseline = session.history().first().cloned().ok_or_else(|| {
                OptimizeError::Invalid("MIPROv2 starts from a scored baseline".into())
            })?;
            let student = session.student().clone();

            let shuffled = settings.candidates.saturating_sub(3);
            let mut sets = demo_sets(session, &settings.demos, shuffled).await?;
            sets.truncate(settings.candidates.max(1));
            if settings.nearest > 0 {
                if let Some(program) = nearest_program(session, &student, settings.nearest) {
                    sets.push((format!("nearest k={}", settings.nearest), program));
                }
            }

            let proposed = propose_instructions(session, settings, &student, &sets).await?;

            // The search.
            let steps = student.steps.len();
            let mut sizes = Vec::with_capacity(steps * 2);
            for (candidates, predictor) in proposed.iter().zip(&student.steps) {
                sizes.push(candidates.len());
                // A fixed step has one choice of demonstrations: its own.
                sizes.push(if predictor.optimize { sets.len() } else { 1 });
            }
            let trials = settings.trials_for(steps);
            let val_len = session.val().0.len();
            let minibatch = settings.minibatch.min(val_len);
            let tpe = Tpe {
                cover: settings.cover,
                ..Tpe::default()
            };
            let mut rng = session.rng("mipro:search");
            let mut observations: Vec<Observation> = Vec::new();
            let mut tried: BTreeMap<Choice, (Candidate, Vec<f64>)> = BTreeMap::new();
            let mut full: Vec<Choice> = Vec::new();
            for trial in 0..trials {
                session.stage(&format!("trial {} of {trials}", trial + 1), minibatch);
                let choice = tpe.suggest(&sizes, &observations, &mut rng);
                let candidate = match tried.get(&choice) {
                    Some((candidate, _)) => candidate.clone(),
                    None => {
                        let program = compose(&student, &choice, &proposed, &sets);
                        let candidate = session.propose(
                            label(&choice, &sets),
                            program,
                            Some(baseline.ordinal),
                        )?;
                        tried.insert(choice.clone(), (candidate.clone(), Vec::new()));
                        candidate
                    }
                };
                let batch = if minibatch < val_len {
                    Batch::ValSubset(rng.choose(val_len, minibatch))
                } else {
                    full.push(choice.clone());
                    Batch::Val
                };
                let score = session.score(&candidate, batch).await?;
                observations.push((choice.clone(), score));
                if let Some((_, scores)) = tried.get_mut(&choice) {
                    scores.push(score);
                }
                let due = (trial + 1) % settings.full_eval_every.max(1) == 0 || trial + 1 == trials;
                if due {
                    if let Some(choice) = best_unevaluated(&tried, &full) {
                        session.stage("full evaluation", val_len);
                        full.push(choice.clone());
                        session.score(&tried[&choice].0, Batch::Val).await?;
                    }
                }
            }
            Ok(session.best().unwrap_or(baseline))
        })
    }
}

/// Instruction candidates per step: the step's own first, then one grounded proposal per
/// non-empty demonstration set, made from a one-line summary of the training data.
async fn propose_instructions(
    session: &Session,
    settings: &MiproSettings,
    student: &Program,
    sets: &[(String, Program)],
) -> Result<Vec<Vec<String>>, OptimizeError> {
    let mut rng = session.rng("mipro:propose");
    let train = &session.train().0.examples;
    session.stage("summarising the data", 1);
    let sample: Vec<Values> = rng
        .choose(train.len(), SUMMARY_EXAMPLES)
        .into_iter()
        .map(|i| train[i].values.clone())
        .collect();
    let reply = session
        .ask_proposer(instructions::summary_request(
            student,
            &sample,
            rng.next_u64(),
        ))
        .await?;
    let summary = instructions::read_summary(&reply);
    match &summary {
        Some(summary) => session.note(&format!("data summary: {summary}")),
        None => session.note(&format!("data summary not usable: {reply:?}")),
    }
    let mut proposed = Vec::with_capacity(student.steps.len());
    for (step, predictor) in student.steps.iter().enumerate() {
        let current = predictor.signature.instructions.clone();
        let mut candidates = vec![current.clone()];
        if !predictor.optimize {
            proposed.push(candidates);
            continue;
        }
        let grounded: Vec<Vec<Demo>> = sets
            .iter()
            .map(|(_, p)| grounding(session, &p.steps[step]))
            .filter(|demos| !demos.is_empty())
            .collect();
        session.stage(
            &format!("proposing instructions for {}", predictor.name),
            grounded.len(),
        );
        for (k, demos) in grounded.iter().enumerate() {
            let examples: Vec<Values> = demos
                .iter()
                .take(SHOWN_DEMOS)
                .map(|d| {
                    d.inputs
                        .iter()
                        .chain(&d.outputs)
                        .map(|(n, v)| (n.clone(), v.clone()))
                        .collect()
                })
                .collect();
            let shown: Vec<Reflection> = demos
                .iter()
                .map(|d| Reflection {
                    inputs: d.inputs.clone(),
                    outputs: Some(d.outputs.clone()),
                    score: 1.0,
                    feedback: None,
                })
                .collect();
            let tip =
                instructions::TIPS[(rng.next_u64() % instructions::TIPS.len() as u64) as usize];
            let seed = rng.next_u64();
            let request = |seed| {
                instructions::grounded_request(
                    student,
                    step,
                    summary.as_deref(),
                    &examples,
                    tip,
                    settings.max_chars,
                    seed,
                )
            };
            let rules = ProposalRules {
                current: &current,
                seen: &candidates,
                examples: &shown,
                max_chars: settings.max_chars,
            };
            let context = format!("{} set {}", predictor.name, k + 1);
            if let Some(instruction) =
                ask_for_instruction(session, request, seed, &rules, &context).await?
            {
                session.note(&format!(
                    "{} instruction {}: {instruction}",
                    predictor.name,
                    candidates.len()
                ));
                candidates.push(instruction);
            }
        }
        proposed.push(candidates);
    }
    Ok(proposed)
}

/// The demonstrations that ground a proposal for a step: its fixed ones, or else a seeded
/// sample of its pool.
fn grounding(session: &Session, predictor: &Predictor) -> Vec<Demo> {
    if !predictor.demos.is_empty() {
        return predictor.demos.clone();
    }
    let Some(nearest) = &predictor.nearest else {
        return Vec::new();
    };
    let mut rng = session.rng(&format!("mipro:pool:{}", predictor.name));
    rng.choose(nearest.pool.len(), SHOWN_DEMOS)
        .into_iter()
        .map(|i| nearest.pool[i].clone())
        .collect()
}

/// The student with each step's chosen instruction and demonstrations.
fn compose(
    student: &Program,
    choice: &[usize],
    proposed: &[Vec<String>],
    sets: &[(String, Program)],
) -> Program {
    let mut program = student.clone();
    for (step, predictor) in program.steps.iter_mut().enumerate() {
        if !predictor.optimize {
            continue;
        }
        let (instruction, set) = (choice[2 * step], choice[2 * step + 1]);
        if let Some(text) = proposed.get(step).and_then(|c| c.get(instruction)) {
            predictor.signature.instructions = text.clone();
        }
        if let Some((_, demos)) = sets.get(set) {
            predictor.demos = demos.steps[step].demos.clone();
            predictor.nearest = demos.steps[step].nearest.clone();
        }
    }
    program
}

fn label(choice: &[usize], sets: &[(String, Program)]) -> String {
    let parts: Vec<String> = choice
        .chunks(2)
        .map(|pair| {
            let set = sets.get(pair[1]).map_or("?", |(label, _)| label.as_str());
            format!("instruction {} · {set}", pair[0])
        })
        .collect();
    format!("mipro {}", parts.join(" / "))
}

/// The tried combination with the best mean minibatch score not yet fully evaluated (the
/// earliest tried among equals).
fn best_unevaluated(
    tried: &BTreeMap<Choice, (Candidate, Vec<f64>)>,
    full: &[Choice],
) -> Option<Choice> {
    let mut best: Option<(&Choice, usize, f64)> = None;
    for (choice, (candidate, scores)) in tried {
        if full.contains(choice) || scores.is_empty() {
            continue;
        }
        let mean = scores.iter().sum::<f64>() / scores.len() as f64;
        let better = match best {
            None => true,
            Some((_, ordinal, m)) => mean > m || (mean == m && candidate.ordinal < ordinal),
        };
        if better {
            best = Some((choice, candidate.ordinal, mean));
        }
    }
    best.map(|(choice, _, _)| choice.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_follow_dspy() {
        let light = MiproSettings::preset("light").unwrap();
        assert_eq!(
            (light.candidates, light.minibatch, light.full_eval_every),
            (6, 35, 5)
        );
        // One step: two variables, max(2·2·log2 6, 9) = 10 trials.
        assert_eq!(light.trials_for(1), 10);
        let medium = MiproSettings::preset("medium").unwrap();
        assert_eq!(medium.trials_for(1), 18, "1.5·12 is larger");
        assert_eq!(MiproSettings::preset("heavy").unwrap().trials_for(2), 33);
        let fixed = MiproSettings {
            trials: Some(3),
            ..light
        };
        assert_eq!(fixed.trials_for(4), 3);
        assert!(MiproSettings::preset("huge").is_none());
    }

    #[test]
    fn settings_stored_before_the_nearest_set_and_the_covering_startup_keep_their_rules() {
        // Pinned: a MIPROv2 loop as runs stored it before either existed.
        let stored = r#"{"candidates":6,"trials":null,"minibatch":35,"full_eval_every":5,"max_chars":400,"demos":{"max_bootstrapped":4,"max_labeled":8,"max_rounds":1,"threshold":1.0}}"#;
        let settings: MiproSettings = serde_json::from_str(stored).unwrap();
        assert_eq!((settings.nearest, settings.cover), (0, false));
        let new = MiproSettings::preset("light").unwrap();
        assert_eq!((new.nearest, new.cover), (DEFAULT_NEAREST, true));
    }
}
