//! Programs: one or more predictors, each with a typed signature, run through the generator.
//!
//! A [`Program`] is async-first: [`Program::forward`] awaits model calls made through an
//! [`Lm`] (the generator, or a fake model in tests), so evaluations and optimizers run many
//! examples concurrently on one engine.
//! Multi-step programs pass values by name: each step reads its inputs from the example's
//! inputs and the outputs of earlier steps.
//!
//! Architecture Invariant: every call is decoded under the grammar generated from the
//! predictor's output fields, so a reply that parses is the normal case; a reply that still
//! does not parse is an error value carrying the raw text, never a panic.

pub mod adapter;
pub mod grammar;
pub mod signature;

use serde::{Deserialize, Serialize};

use crate::engine::{GenerationRequest, Prompt, SamplingParams};
use crate::lm::{Lm, LmError};

pub use adapter::{Demo, ParseError, Values, ADAPTER_VERSION};
pub use signature::{FieldType, InputField, OutputField, Signature, SignatureError};

/// How a predictor answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PredictorKind {
    /// The outputs directly.
    Predict,
    /// A `reasoning` line first, then the outputs.
    ChainOfThought,
}

/// One step of a program.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Predictor {
    pub name: String,
    pub kind: PredictorKind,
    pub signature: Signature,
    /// Demonstrations shown before the input (what few-shot optimizers choose).
    #[serde(default)]
    pub demos: Vec<Demo>,
}

impl Predictor {
    pub fn reasoning(&self) -> bool {
        self.kind == PredictorKind::ChainOfThought
    }

    /// The messages this predictor sends for `inputs`.
    pub fn render(&self, inputs: &Values) -> Vec<crate::engine::Message> {
        adapter::render(&self.signature, self.reasoning(), &self.demos, inputs)
    }

    /// The grammar replies are decoded under.
    pub fn grammar(&self) -> String {
        grammar::for_outputs(&adapter::reply_fields(&self.signature, self.reasoning()))
    }

    /// Parses a reply of this predictor.
    pub fn parse(&self, reply: &str) -> Result<Values, ParseError> {
        adapter::parse(
            &adapter::reply_fields(&self.signature, self.reasoning()),
            reply,
        )
    }
}

/// Generation settings for every call of a program.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CallSettings {
    /// `temperature`, `top_k`, `top_p`, `min_p`, `seed`, written directly in `[generation]`.
    #[serde(flatten)]
    pub sampling: SamplingParams,
    /// Token limit of one predictor's reply.
    pub max_tokens: u32,
}

impl Default for CallSettings {
    fn default() -> Self {
        CallSettings {
            sampling: SamplingParams::greedy(),
            max_tokens: 256,
        }
    }
}

/// A sequence of predictors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Program {
    pub steps: Vec<Predictor>,
}

/// What one step did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepTrace {
    pub predictor: String,
    pub inputs: Values,
    /// The parsed outputs (reasoning included), when the reply parsed.
    pub outputs: Option<Values>,
    pub raw: String,
    pub call_id: i64,
    pub cached: bool,
    /// Prompt plus completion tokens of the call.
    #[serde(default)]
    pub tokens: u64,
}

impl StepTrace {
    /// The step's reasoning, when its predictor reasons first and the reply parsed.
    pub fn reasoning(&self) -> Option<&str> {
        self.outputs.as_ref()?.get("reasoning")?.as_str()
    }
}

/// What a program did on one example: every step that ran, in order (the failing one last
/// when a reply could not be used). Serialized as a JSON array of steps, only where it is
/// stored or exported.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Trace {
    pub steps: Vec<StepTrace>,
}

impl Trace {
    /// Prompt plus completion tokens of every call.
    pub fn tokens(&self) -> u64 {
        self.steps.iter().map(|s| s.tokens).sum()
    }
}

/// A program's run on one example: the final values and every step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prediction {
    /// Every output of every step, by name.
    pub outputs: Values,
    pub trace: Trace,
}

/// Why a program run did not produce a prediction.
#[derive(Debug, thiserror::Error)]
pub enum ProgramError {
    #[error("step `{step}` needs the input `{field}`, which neither the example nor an earlier step provides")]
    MissingInput { step: String, field: String },
    #[error("step `{step}`: {error} (reply: {raw:?})")]
    Unparsable {
        step: String,
        raw: String,
        error: ParseError,
        /// The steps that ran, the failing one last.
        trace: Trace,
    },
    #[error(transparent)]
    Lm(#[from] LmError),
}

/// Why a program definition is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ProgramDefinitionError(pub String);

impl Program {
    /// Checks every signature, unique step names, and that every step's inputs come from the
    /// example (`example_fields`) or an earlier step.
    pub fn validate(&self, example_fields: &[String]) -> Result<(), ProgramDefinitionError> {
        if self.steps.is_empty() {
            return Err(ProgramDefinitionError(
                "a program needs at least one step".into(),
            ));
        }
        let mut available: std::collections::BTreeSet<String> =
            example_fields.iter().cloned().collect();
        let mut names = std::collections::BTreeSet::new();
        for step in &self.steps {
            if !names.insert(step.name.clone()) {
                return Err(ProgramDefinitionError(format!(
                    "two steps are named `{}`",
                    step.name
                )));
            }
            step.signature
                .validate()
                .map_err(|e| ProgramDefinitionError(format!("step `{}`: {e}", step.name)))?;
            for input in &step.signature.inputs {
                if !available.contains(&input.name) {
                    return Err(ProgramDefinitionError(format!(
                        "step `{}` reads `{}`, which is neither an input field of the dataset nor an output of an earlier step",
                        step.name, input.name
                    )));
                }
            }
            for output in adapter::reply_fields(&step.signature, step.reasoning()) {
                available.insert(output.name);
            }
        }
        Ok(())
    }

    /// The names of the fields the program produces, in step order (reasoning excluded).
    pub fn output_names(&self) -> Vec<String> {
        self.steps
            .iter()
            .flat_map(|s| s.signature.outputs.iter().map(|f| f.name.clone()))
            .collect()
    }

    /// Runs every step on `inputs`.
    pub async fn forward(
        &self,
        lm: &dyn Lm,
        inputs: &Values,
        settings: &CallSettings,
    ) -> Result<Prediction, ProgramError> {
        let mut values = inputs.clone();
        let mut outputs = Values::new();
        let mut trace = Vec::with_capacity(self.steps.len());
        for step in &self.steps {
            let mut step_inputs = Values::new();
            for field in &step.signature.inputs {
                let value = values
                    .get(&field.name)
                    .ok_or_else(|| ProgramError::MissingInput {
                        step: step.name.clone(),
                        field: field.name.clone(),
                    })?;
                step_inputs.insert(field.name.clone(), value.clone());
            }
            let request = GenerationRequest::new(
                Prompt::Chat(step.render(&step_inputs)),
                settings.max_tokens,
            )
            .with_sampling(settings.sampling.clone())
            .with_grammar(step.grammar());
            let generated = lm.generate(request).await?;
            let raw = generated.completion.text;
            let parsed = step.parse(&raw);
            trace.push(StepTrace {
                predictor: step.name.clone(),
                inputs: step_inputs,
                outputs: parsed.as_ref().ok().cloned(),
                raw: raw.clone(),
                call_id: generated.call_id,
                cached: generated.cached,
                tokens: u64::from(generated.completion.prompt_tokens)
                    + u64::from(generated.completion.completion_tokens),
            });
            match parsed {
                Ok(parsed) => {
                    for (name, value) in parsed {
                        values.insert(name.clone(), value.clone());
                        outputs.insert(name, value);
                    }
                }
                Err(error) => {
                    return Err(ProgramError::Unparsable {
                        step: step.name.clone(),
                        raw,
                        error,
                        trace: Trace { steps: trace },
                    })
                }
            }
        }
        Ok(Prediction {
            outputs,
            trace: Trace { steps: trace },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(name: &str, inputs: &[&str], outputs: &[&str]) -> Predictor {
        Predictor {
            name: name.into(),
            kind: PredictorKind::Predict,
            signature: Signature {
                instructions: "Do it.".into(),
                inputs: inputs
                    .iter()
                    .map(|n| InputField {
                        name: n.to_string(),
                        description: None,
                    })
                    .collect(),
                outputs: outputs
                    .iter()
                    .map(|n| OutputField {
                        name: n.to_string(),
                        description: None,
                        ty: FieldType::Text,
                    })
                    .collect(),
            },
            demos: Vec::new(),
        }
    }

    #[test]
    fn steps_read_example_fields_and_earlier_outputs() {
        let program = Program {
            steps: vec![
                step("a", &["text"], &["summary"]),
                step("b", &["summary"], &["label"]),
            ],
        };
        assert!(program.validate(&["text".into()]).is_ok());
        assert_eq!(program.output_names(), ["summary", "label"]);
        let err = program.validate(&["other".into()]).unwrap_err();
        assert!(err.0.contains("step `a` reads `text`"), "{err}");
        let backwards = Program {
            steps: vec![
                step("b", &["summary"], &["label"]),
                step("a", &["text"], &["summary"]),
            ],
        };
        assert!(backwards.validate(&["text".into()]).is_err());
    }
}
