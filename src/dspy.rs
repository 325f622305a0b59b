//! DSPy's saved-program JSON (what `program.save("program.json")` writes), in both directions.
//!
//! DSPy saves one entry per predictor, keyed by its attribute path (`classify` for a
//! `dspy.Predict`, `classify.predict` for a `dspy.ChainOfThought`), each holding its
//! demonstrations as flat objects of field values and its signature's instructions and field
//! prefixes. What maps: instructions and demonstrations, per predictor. What does not: field
//! types (DSPy keeps them in Python code, tuningfork in the task file), so importing needs
//! the task whose program the file belongs to; and demonstrations chosen per input from a
//! pool, which the format cannot hold, so such a program is not exported.

use serde_json::{json, Map, Value};

use crate::program::adapter::{parse_value, reply_fields, REASONING_FIELD};
use crate::program::{Demo, FieldType, Predictor, PredictorKind, Program, Values};

/// The DSPy version whose layout this module writes (and whose `load` was checked to read it).
const DSPY_VERSION: &str = "3.4.1";

#[derive(Debug, thiserror::Error)]
pub enum DspyError {
    #[error("{source_name} is not a DSPy saved program: {message}")]
    Format {
        source_name: String,
        message: String,
    },
    #[error("{source_name} does not fit task `{task}`: {message}")]
    DoesNotFit {
        source_name: String,
        task: String,
        message: String,
    },
    #[error("step `{step}` shows each input the {k} most similar of {pool} training examples; DSPy's saved-program JSON holds only fixed demonstrations, so it cannot carry this program (export it with --format tuningfork)")]
    PerInputDemos { step: String, k: usize, pool: usize },
    #[error("{source_name} has no predictor for step `{step}` (looked for `{step}` and `{step}.predict`; the file has {found})")]
    MissingPredictor {
        source_name: String,
        step: String,
        found: String,
    },
}

/// The key DSPy saves a step's predictor under.
fn key(step: &Predictor) -> String {
    match step.kind {
        PredictorKind::Predict => step.name.clone(),
        PredictorKind::ChainOfThought => format!("{}.predict", step.name),
    }
}

/// DSPy's prefix for a field name: words capitalized, then a colon (`first_name` → `First Name:`).
fn prefix(name: &str) -> String {
    let words: Vec<String> = name
        .split('_')
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut chars = w.chars();
            chars.next().map_or(String::new(), |c| {
                c.to_uppercase().collect::<String>() + chars.as_str()
            })
        })
        .collect();
    format!("{}:", words.join(" "))
}

/// The program as DSPy's saved-program JSON; refused for a step that chooses demonstrations
/// per input, which that format cannot express.
pub fn export(program: &Program) -> Result<Value, DspyError> {
    let mut root = Map::new();
    for step in &program.steps {
        if let Some(nearest) = &step.nearest {
            return Err(DspyError::PerInputDemos {
                step: step.name.clone(),
                k: nearest.k,
                pool: nearest.pool.len(),
            });
        }
        let fields = reply_fields(&step.signature, step.reasoning());
        let mut signature_fields: Vec<Value> = step
            .signature
            .inputs
            .iter()
            .map(|f| {
                json!({
                    "prefix": prefix(&f.name),
                    "description": f.description.clone().unwrap_or_else(|| format!("${{{}}}", f.name)),
                })
            })
            .collect();
        for field in &fields {
            let (prefix, description) = if field.name == REASONING_FIELD {
                ("Reasoning:".to_string(), "${reasoning}".to_string())
            } else {
                (
                    prefix(&field.name),
                    field
                        .description
                        .clone()
                        .unwrap_or_else(|| format!("${{{}}}", field.name)),
                )
            };
            signature_fields.push(json!({ "prefix": prefix, "description": description }));
        }
        let demos: Vec<Value> = step
            .demos
            .iter()
            .map(|demo| {
                let mut object = Map::new();
                // A chain-of-thought demonstration with its reasoning came from a trace; a
                // labeled one has none. For `Predict` steps the two look alike, and DSPy's
                // adapter does not need the mark.
                let traced =
                    step.reasoning() && fields.iter().all(|f| demo.outputs.contains_key(&f.name));
                if traced {
                    object.insert("augmented".into(), Value::Bool(true));
                }
                for (name, value) in demo.inputs.iter().chain(demo.outputs.iter()) {
                    object.insert(name.clone(), value.clone());
                }
                Value::Object(object)
            })
            .collect();
        root.insert(
            key(step),
            json!({
                "traces": [],
                "train": [],
                "demos": demos,
                "signature": {
                    "instructions": step.signature.instructions,
                    "fields": signature_fields,
                },
                "lm": null,
            }),
        );
    }
    root.insert(
        "metadata".into(),
        json!({ "dependency_versions": { "python": "3.11", "dspy": DSPY_VERSION, "cloudpickle": "3.1" } }),
    );
    Ok(Value::Object(root))
}

/// Reads a DSPy saved program onto `program` (the task's): each step takes the instructions
/// and demonstrations of its predictor. Returns the program and notes on what was skipped.
/// Reads a DSPy saved program onto `task`'s program and checks that the result runs on the
/// task's fields; returns it with notes on what was skipped.
pub fn import_onto(
    text: &str,
    source_name: &str,
    task: &crate::task::Task,
) -> Result<(Program, Vec<String>), DspyError> {
    let (program, notes) = import(text, source_name, &task.program)?;
    program
        .validate(&task.example_inputs())
        .map_err(|e| DspyError::DoesNotFit {
            source_name: source_name.to_string(),
            task: task.task.name.clone(),
            message: e.to_string(),
        })?;
    Ok((program, notes))
}

pub fn import(
    text: &str,
    source_name: &str,
    program: &Program,
) -> Result<(Program, Vec<String>), DspyError> {
    let format_error = |message: String| DspyError::Format {
        source_name: source_name.to_string(),
        message,
    };
    let root: Value = serde_json::from_str(text).map_err(|e| format_error(e.to_string()))?;
    let Value::Object(root) = root else {
        return Err(format_error("the top level is not a JSON object".into()));
    };
    let predictors: Vec<(&String, &Map<String, Value>)> = root
        .iter()
        .filter(|(k, _)| k.as_str() != "metadata")
        .filter_map(|(k, v)| v.as_object().map(|o| (k, o)))
        .filter(|(_, o)| o.contains_key("demos") || o.contains_key("signature"))
        .collect();
    if predictors.is_empty() {
        return Err(format_error(
            "it has no predictor entries (objects with `demos` and `signature`)".into(),
        ));
    }
    let mut notes = Vec::new();
    let mut steps = Vec::with_capacity(program.steps.len());
    for step in &program.steps {
        let wanted = [step.name.clone(), format!("{}.predict", step.name)];
        let entry = predictors
            .iter()
            .find(|(k, _)| wanted.contains(k))
            .or_else(|| (predictors.len() == 1 && program.steps.len() == 1).then(|| &predictors[0]))
            .ok_or_else(|| DspyError::MissingPredictor {
                source_name: source_name.to_string(),
                step: step.name.clone(),
                found: predictors
                    .iter()
                    .map(|(k, _)| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        let (name, entry) = entry;
        let mut imported = step.clone();
        if let Some(instructions) = entry
            .get("signature")
            .and_then(|s| s.get("instructions"))
            .and_then(Value::as_str)
        {
            imported.signature.instructions = instructions.to_string();
        }
        let fields = reply_fields(&step.signature, step.reasoning());
        imported.demos = Vec::new();
        let demos = entry.get("demos").and_then(Value::as_array);
        for (i, demo) in demos.into_iter().flatten().enumerate() {
            let Some(demo) = demo.as_object() else {
                notes.push(format!("`{name}` demo {i}: not an object, skipped"));
                continue;
            };
            let mut inputs = Values::new();
            let mut missing = Vec::new();
            for field in &step.signature.inputs {
                match demo.get(&field.name) {
                    Some(v) => {
                        inputs.insert(field.name.clone(), v.clone());
                    }
                    None => missing.push(field.name.clone()),
                }
            }
            if !missing.is_empty() {
                notes.push(format!(
                    "`{name}` demo {i}: lacks the input {}, skipped",
                    missing.join(", ")
                ));
                continue;
            }
            let mut outputs = Values::new();
            for field in &fields {
                // Older DSPy versions call the reasoning field `rationale`.
                let value = demo.get(&field.name).or_else(|| {
                    (field.name == REASONING_FIELD)
                        .then(|| demo.get("rationale"))
                        .flatten()
                });
                let Some(value) = value else {
                    continue;
                };
                let typed = matches!(
                    field.ty,
                    FieldType::Integer
                        | FieldType::Number
                        | FieldType::Boolean
                        | FieldType::List
                        | FieldType::Json
                );
                let value = match value {
                    Value::String(s) if typed => match parse_value(field, s.trim()) {
                        Ok(v) => v,
                        Err(e) => {
                            notes.push(format!("`{name}` demo {i}: {e}; kept as text"));
                            value.clone()
                        }
                    },
                    other => other.clone(),
                };
                outputs.insert(field.name.clone(), value);
            }
            if outputs.is_empty() {
                notes.push(format!("`{name}` demo {i}: has no output field, skipped"));
                continue;
            }
            imported.demos.push(Demo { inputs, outputs });
        }
        steps.push(imported);
    }
    Ok((
        Program {
            steps,
            retrievals: program.retrievals.clone(),
        },
        notes,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::program::{InputField, OutputField, Signature};

    fn program(kind: PredictorKind) -> Program {
        let values = |pairs: &[(&str, Value)]| -> Values {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect()
        };
        let mut outputs = values(&[("quantity", json!(3))]);
        if kind == PredictorKind::ChainOfThought {
            outputs.insert("reasoning".into(), json!("three are ordered"));
        }
        Program {
            steps: vec![Predictor {
                nearest: None,
                name: "extract".into(),
                kind,
                signature: Signature {
                    instructions: "Count the items.".into(),
                    inputs: vec![InputField {
                        name: "order_message".into(),
                        description: None,
                    }],
                    outputs: vec![OutputField {
                        name: "quantity".into(),
                        description: Some("how many".into()),
                        ty: FieldType::Integer,
                        max_chars: None,
                    }],
                },
                demos: vec![
                    Demo {
                        inputs: values(&[("order_message", json!("Three mugs please"))]),
                        outputs,
                    },
                    Demo {
                        inputs: values(&[("order_message", json!("One lamp"))]),
                        outputs: values(&[("quantity", json!(1))]),
                    },
                ],
                optimize: true,
            }],
            retrievals: Vec::new(),
        }
    }

    #[test]
    fn a_program_with_per_input_demonstrations_is_not_exported() {
        let mut program = program(PredictorKind::Predict);
        let pool = program.steps[0].demos.clone();
        program.steps[0].nearest = Some(crate::program::NearestDemos { k: 2, pool });
        let message = export(&program).unwrap_err().to_string();
        assert!(message.contains("step `extract`"), "{message}");
        assert!(message.contains("--format tuningfork"), "{message}");
    }

    #[test]
    fn export_then_import_gives_the_same_program() {
        for kind in [PredictorKind::Predict, PredictorKind::ChainOfThought] {
            let original = program(kind);
            let saved = export(&original).unwrap();
            let key = if kind == PredictorKind::Predict {
                "extract"
            } else {
                "extract.predict"
            };
            let entry = &saved[key];
            assert_eq!(entry["signature"]["instructions"], "Count the items.");
            assert_eq!(entry["signature"]["fields"][0]["prefix"], "Order Message:");
            assert_eq!(
                entry["demos"][0]["augmented"].as_bool(),
                (kind == PredictorKind::ChainOfThought).then_some(true)
            );
            assert!(saved["metadata"]["dependency_versions"]["dspy"].is_string());
            let mut blank = original.clone();
            blank.steps[0].demos.clear();
            blank.steps[0].signature.instructions = "Old.".into();
            let (back, notes) = import(&saved.to_string(), "p.json", &blank).unwrap();
            assert_eq!(back, original, "{kind:?}");
            assert!(notes.is_empty(), "{notes:?}");
        }
    }

    #[test]
    fn dspy_strings_become_typed_values_and_problems_are_named() {
        let saved = json!({
            "prog": {
                "demos": [
                    {"order_message": "Two cups", "quantity": "2"},
                    {"quantity": "5"},
                    {"order_message": "A few", "quantity": "several"}
                ],
                "signature": {"instructions": "New instructions.", "fields": []}
            },
            "metadata": {}
        });
        let (imported, notes) = import(
            &saved.to_string(),
            "p.json",
            &program(PredictorKind::Predict),
        )
        .unwrap();
        let step = &imported.steps[0];
        assert_eq!(step.signature.instructions, "New instructions.");
        assert_eq!(step.demos[0].outputs["quantity"], json!(2));
        assert_eq!(step.demos.len(), 2);
        assert!(notes
            .iter()
            .any(|n| n.contains("demo 1") && n.contains("order_message")));
        assert!(notes
            .iter()
            .any(|n| n.contains("demo 2") && n.contains("kept as text")));

        let two_steps = Program {
            steps: vec![
                program(PredictorKind::Predict).steps[0].clone(),
                Predictor {
                    name: "other".into(),
                    ..program(PredictorKind::Predict).steps[0].clone()
                },
            ],
            retrievals: Vec::new(),
        };
        let err = import(&saved.to_string(), "p.json", &two_steps)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("p.json") && err.contains("`extract`") && err.contains("`prog`"),
            "{err}"
        );
        assert!(import("[1]", "q.json", &two_steps)
            .unwrap_err()
            .to_string()
            .contains("q.json"));
    }
}
