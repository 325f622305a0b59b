//! Optimizers and optimization runs.
//!
//! An optimizer works through a [`Session`]: it proposes candidate programs, scores them on
//! the validation split or on minibatches, runs teachers over training examples, and reads
//! the history of what it tried. Every proposal and every per-example result is stored as it
//! happens, so a killed run resumes by running the optimizer again: stored results are read
//! back instead of recomputed, and the same seed makes the same choices.
//!
//! Architecture Invariant: optimizers never see the test split. A [`Session`] is built from a
//! `TrainSet` and a `ValSet` only; [`run::run_loop`] evaluates the test split after the
//! optimizer has returned.
//!
//! Architecture Invariant: an optimizer's result depends only on the seed and on per-example
//! results placed by example index, never on the order in which concurrent work finishes.

pub mod budget;
mod fewshot;
pub mod gepa;
pub mod instructions;
pub mod mipro;
pub mod pareto;
pub mod run;
mod session;
#[cfg(test)]
mod tests;
pub mod tpe;

use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};

pub use budget::{Budget, Stop, Tracker};
pub use fewshot::{BootstrapFewShot, KnnFewShot, LabeledFewShot, RandomSearch};
pub use gepa::{Gepa, GepaSettings};
pub use mipro::{Mipro, MiproSettings};
pub use run::{run_loop, LoopOutcome, LoopSpec, SplitScores};
pub use session::{
    program_hash, Batch, Candidate, Evaluator, EvaluatorParts, Observer, Session, Silent,
};

use crate::eval::EvalError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum OptimizeError {
    /// A budget ran out; the run ends with the best program scored so far.
    #[error("stopped: {}", .0 .0)]
    Stopped(Stop),
    #[error(transparent)]
    Eval(#[from] EvalError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A resumed run made a different choice from the stored one.
    #[error("the resumed run departs from the stored one: {0}")]
    Diverged(String),
    #[error("{0}")]
    Invalid(String),
}

impl From<Stop> for OptimizeError {
    fn from(stop: Stop) -> Self {
        OptimizeError::Stopped(stop)
    }
}

/// What optimizers return: a boxed future, so that optimizers are objects.
pub type OptimizeFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Candidate, OptimizeError>> + Send + 'a>>;

/// An optimizer: given a session, it proposes and scores candidates and returns its choice.
///
/// Few-shot optimizers choose demonstrations; instruction optimizers propose new instructions
/// the same way, through [`Session::propose`], [`Session::score`] on minibatches and
/// [`Session::history`].
pub trait Optimizer: Send + Sync {
    /// The name stored with the run.
    fn name(&self) -> &'static str;
    /// Runs the optimizer and returns the candidate it chose.
    fn compile<'a>(&'a self, session: &'a Session) -> OptimizeFuture<'a>;
}

/// The settings of a bootstrapping optimizer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapSettings {
    /// Demonstrations taken from passing teacher traces, per predictor.
    pub max_bootstrapped: usize,
    /// Demonstrations in total per predictor, filled up with labeled examples; also the
    /// labeled demonstrations the teacher gets.
    pub max_labeled: usize,
    /// Passes over the training set; passes after the first sample at temperature 0.7.
    pub max_rounds: usize,
    /// A trace passes when its metric score is at least this.
    pub threshold: f64,
}

impl Default for BootstrapSettings {
    fn default() -> Self {
        BootstrapSettings {
            max_bootstrapped: 4,
            max_labeled: 8,
            max_rounds: 1,
            threshold: 1.0,
        }
    }
}

/// An optimizer and its settings, as stored with a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum OptimizerConfig {
    LabeledFewShot {
        k: usize,
    },
    KnnFewShot {
        k: usize,
    },
    BootstrapFewShot {
        #[serde(flatten)]
        settings: BootstrapSettings,
    },
    RandomSearch {
        #[serde(flatten)]
        settings: BootstrapSettings,
        /// Shuffled bootstraps, after zero-shot, labeled-only and the unshuffled bootstrap.
        candidates: usize,
    },
    Gepa {
        #[serde(flatten)]
        settings: GepaSettings,
    },
    Mipro {
        #[serde(flatten)]
        settings: MiproSettings,
    },
}

impl OptimizerConfig {
    pub fn name(&self) -> &'static str {
        self.build().name()
    }

    /// The optimizer these settings describe.
    pub fn build(&self) -> Box<dyn Optimizer> {
        match self {
            OptimizerConfig::LabeledFewShot { k } => Box::new(LabeledFewShot { k: *k }),
            OptimizerConfig::KnnFewShot { k } => Box::new(KnnFewShot { k: *k }),
            OptimizerConfig::BootstrapFewShot { settings } => Box::new(BootstrapFewShot {
                settings: settings.clone(),
            }),
            OptimizerConfig::RandomSearch {
                settings,
                candidates,
            } => Box::new(RandomSearch {
                settings: settings.clone(),
                candidates: *candidates,
            }),
            OptimizerConfig::Gepa { settings } => Box::new(Gepa {
                settings: settings.clone(),
            }),
            OptimizerConfig::Mipro { settings } => Box::new(Mipro {
                settings: settings.clone(),
            }),
        }
    }

    /// Whether the optimizer calls a proposer model.
    pub fn needs_proposer(&self) -> bool {
        matches!(
            self,
            OptimizerConfig::Gepa { .. } | OptimizerConfig::Mipro { .. }
        )
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<(), String> {
        let settings = match self {
            OptimizerConfig::LabeledFewShot { k } => {
                return if *k == 0 {
                    Err("labeled few-shot needs k of at least 1".into())
                } else {
                    Ok(())
                }
            }
            OptimizerConfig::KnnFewShot { k } => {
                return if *k == 0 {
                    Err("KNN few-shot needs k of at least 1 (--nearest)".into())
                } else {
                    Ok(())
                }
            }
            OptimizerConfig::BootstrapFewShot { settings } => settings,
            OptimizerConfig::RandomSearch { settings, .. } => settings,
            OptimizerConfig::Gepa { settings } => {
                if settings.metric_calls == Some(0) || settings.minibatch == 0 {
                    return Err(
                        "GEPA needs a metric-call budget and a minibatch of at least 1".into(),
                    );
                }
                if settings.candidates == 0 {
                    return Err("GEPA's budget rule needs at least 1 candidate".into());
                }
                return check_cap(settings.max_chars, "GEPA");
            }
            OptimizerConfig::Mipro { settings } => {
                if settings.candidates == 0 || settings.trials == Some(0) {
                    return Err("MIPROv2 needs at least 1 candidate and 1 trial".into());
                }
                if settings.minibatch == 0 || settings.full_eval_every == 0 {
                    return Err("MIPROv2 needs a minibatch of at least 1 and a full evaluation every 1 trial or more".into());
                }
                check_cap(settings.max_chars, "MIPROv2")?;
                &settings.demos
            }
        };
        if settings.max_bootstrapped == 0 && settings.max_labeled == 0 {
            return Err("max bootstrapped and max labeled demonstrations are both 0".into());
        }
        if settings.max_rounds == 0 {
            return Err("max rounds must be at least 1".into());
        }
        if !settings.threshold.is_finite() {
            return Err("the threshold must be a number".into());
        }
        Ok(())
    }
}

/// The instruction cap of an instruction optimizer leaves room for a sentence.
fn check_cap(max_chars: usize, optimizer: &str) -> Result<(), String> {
    if max_chars < 40 {
        return Err(format!(
            "{optimizer}'s instruction cap must be at least 40 characters"
        ));
    }
    Ok(())
}
