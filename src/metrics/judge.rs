//! The judge metric: a pinned local model grades a prediction against the example, as a
//! one-step program whose reply is a grammar-constrained score and a line of feedback.
//!
//! Each judge runs on its own model: [`Judges`] maps model names to the models that answer, so a
//! weighted metric with two judges on two models is graded by each in turn.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use super::{MetricError, Score};
use crate::lm::Lm;
use crate::program::adapter::format_value;
use crate::program::{
    CallSettings, FieldType, InputField, OutputField, Predictor, PredictorKind, Program,
    ProgramError, Signature, Values,
};

/// The models a metric's judges run on, by pinned model name. A judge that names no model runs
/// on the task's model.
#[derive(Clone, Default)]
pub struct Judges {
    task_model: String,
    by_model: BTreeMap<String, Arc<dyn Lm>>,
}

impl Judges {
    /// No judge model: a judge metric fails its examples with a clear error.
    pub fn none() -> Self {
        Judges::default()
    }

    /// Judges for a task whose own model is `task_model`; add each model with [`Judges::with`].
    pub fn new(task_model: impl Into<String>) -> Self {
        Judges {
            task_model: task_model.into(),
            by_model: BTreeMap::new(),
        }
    }

    /// Adds the model that answers a judge naming `model`.
    pub fn with(mut self, model: impl Into<String>, lm: Arc<dyn Lm>) -> Self {
        self.by_model.insert(model.into(), lm);
        self
    }

    /// The model of a judge that names `model` (`None`: the task's model).
    pub fn get(&self, model: Option<&str>) -> Result<&dyn Lm, MetricError> {
        let name = model.unwrap_or(&self.task_model);
        self.by_model.get(name).map(|lm| lm.as_ref()).ok_or_else(|| {
            MetricError::Judge(if name.is_empty() {
                "no judge model is loaded for this evaluation".to_string()
            } else {
                format!("no judge model is loaded for this evaluation (the metric asks for `{name}`)")
            })
        })
    }
}

/// The scores a judge may give: a grammar-constrained choice, read as a number.
const JUDGE_SCORES: [&str; 5] = ["0", "0.25", "0.5", "0.75", "1"];

/// The judge as a one-step program: it reads the example and the prediction as JSON and
/// writes a score, then feedback.
pub fn judge_program(instructions: &str) -> Program {
    Program {
        steps: vec![Predictor {
            nearest: None,
            name: "judge".into(),
            kind: PredictorKind::Predict,
            signature: Signature {
                instructions: format!(
                    "{}\n\nYou grade a prediction against the expected answer: a score from 0 \
                     (wrong) to 1 (fully right), then brief feedback.",
                    instructions.trim()
                ),
                inputs: vec![
                    InputField {
                        name: "expected".into(),
                        description: Some("the example, with its expected answer, as JSON".into()),
                    },
                    InputField {
                        name: "prediction".into(),
                        description: Some("the prediction to grade, as JSON".into()),
                    },
                ],
                // The score first: a small judge that rambles in its feedback still scores.
                outputs: vec![
                    OutputField {
                        name: "score".into(),
                        description: None,
                        ty: FieldType::Choice {
                            choices: JUDGE_SCORES.iter().map(|s| s.to_string()).collect(),
                        },
                        max_chars: None,
                    },
                    OutputField {
                        name: "feedback".into(),
                        description: Some("what is right or wrong, in one sentence".into()),
                        ty: FieldType::Text,
                        max_chars: None,
                    },
                ],
            },
            demos: Vec::new(),
            optimize: true,
        }],
        retrievals: Vec::new(),
    }
}

/// Reads a judge's parsed outputs as a [`Score`].
pub fn judge_score(outputs: &Values) -> Result<Score, MetricError> {
    let score = outputs
        .get("score")
        .and_then(|v| v.as_str())
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| (0.0..=1.0).contains(s))
        .ok_or_else(|| MetricError::Judge(format!("no score in {outputs:?}")))?;
    let feedback = outputs.get("feedback").map(format_value);
    Ok(Score { score, feedback })
}

pub(super) async fn run_judge(
    lm: &dyn Lm,
    instructions: &str,
    max_tokens: u32,
    gold: &Values,
    prediction: &Values,
) -> Result<Score, MetricError> {
    let program = judge_program(instructions);
    let inputs: Values = [
        (
            "expected".to_string(),
            Value::String(serde_json::to_string(gold).expect("values serialize")),
        ),
        (
            "prediction".to_string(),
            Value::String(serde_json::to_string(prediction).expect("values serialize")),
        ),
    ]
    .into_iter()
    .collect();
    let settings = CallSettings {
        max_tokens,
        ..CallSettings::default()
    };
    match program
        .forward(lm, &crate::corpus::NoRetriever, &inputs, &settings)
        .await
    {
        Ok(prediction) => judge_score(&prediction.outputs),
        Err(ProgramError::Unparsable { raw, error, .. }) => Err(MetricError::Judge(format!(
            "its reply {raw:?} could not be read: {error}"
        ))),
        Err(e) => Err(MetricError::Judge(e.to_string())),
    }
}
