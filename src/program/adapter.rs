//! The adapter: renders a predictor call as chat messages and parses the reply into typed
//! fields.
//!
//! Rendering: a system message with the instructions, the fields and the reply format; each
//! demonstration as a user turn (its inputs) and an assistant turn (its outputs); then the
//! input as the last user turn. Replies are one `name: value` line per output field, which the
//! grammar of [`super::grammar`] enforces during decoding.
//!
//! Changing anything here changes prompts, so [`ADAPTER_VERSION`] is stored with every program.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::signature::{FieldType, OutputField, Signature};
use crate::engine::Message;

/// Bumped whenever rendering or parsing changes.
pub const ADAPTER_VERSION: u32 = 1;

/// Named field values.
pub type Values = BTreeMap<String, Value>;

/// The field chain-of-thought predictors produce before their outputs.
pub const REASONING_FIELD: &str = "reasoning";

/// One demonstration: inputs and the outputs (reasoning included, for chain of thought).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Demo {
    pub inputs: Values,
    pub outputs: Values,
}

/// A reply that does not carry the expected fields.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot parse the reply: {0}")]
pub struct ParseError(pub String);

/// The output fields a predictor produces: the signature's, preceded by `reasoning` for chain
/// of thought.
pub fn reply_fields(signature: &Signature, reasoning: bool) -> Vec<OutputField> {
    let mut fields = Vec::with_capacity(signature.outputs.len() + 1);
    if reasoning {
        fields.push(OutputField {
            name: REASONING_FIELD.to_string(),
            description: Some("think step by step, in one line, before answering".to_string()),
            ty: FieldType::Text,
            max_chars: None,
        });
    }
    fields.extend(signature.outputs.iter().cloned());
    fields
}

/// The messages for one call.
pub fn render(
    signature: &Signature,
    reasoning: bool,
    demos: &[Demo],
    inputs: &Values,
) -> Vec<Message> {
    let fields = reply_fields(signature, reasoning);
    let mut messages = vec![Message::system(system_prompt(signature, &fields))];
    for demo in demos {
        messages.push(Message::user(render_inputs(signature, &demo.inputs)));
        messages.push(Message::assistant(render_outputs(&fields, &demo.outputs)));
    }
    messages.push(Message::user(render_inputs(signature, inputs)));
    messages
}

fn system_prompt(signature: &Signature, fields: &[OutputField]) -> String {
    let mut text = String::new();
    text.push_str(signature.instructions.trim());
    text.push_str("\n\nInput fields:\n");
    for field in &signature.inputs {
        match &field.description {
            Some(d) => text.push_str(&format!("- {}: {}\n", field.name, d.trim())),
            None => text.push_str(&format!("- {}\n", field.name)),
        }
    }
    text.push_str("\nOutput fields:\n");
    for field in fields {
        let kind = field.describe();
        match &field.description {
            Some(d) => text.push_str(&format!("- {} ({kind}): {}\n", field.name, d.trim())),
            None => text.push_str(&format!("- {} ({kind})\n", field.name)),
        }
    }
    text.push_str("\nReply with exactly these lines, in this order:\n");
    for field in fields {
        text.push_str(&format!("{}: <{}>\n", field.name, field.describe()));
    }
    text.trim_end().to_string()
}

fn render_inputs(signature: &Signature, inputs: &Values) -> String {
    signature
        .inputs
        .iter()
        .map(|f| {
            format!(
                "{}: {}",
                f.name,
                inputs
                    .get(&f.name)
                    .map_or(String::new(), super::render_value)
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn render_outputs(fields: &[OutputField], outputs: &Values) -> String {
    fields
        .iter()
        .map(|f| {
            let value = outputs.get(&f.name).map_or(String::new(), format_value);
            // Replies are one line per field.
            format!("{}: {}", f.name, value.replace('\n', " "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// How a value appears in a prompt: strings as they are, everything else as JSON.
pub fn format_value(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Parses a reply into the values of `fields`.
pub fn parse(fields: &[OutputField], reply: &str) -> Result<Values, ParseError> {
    let lines: Vec<&str> = reply.lines().collect();
    let mut cursor = 0;
    let mut values = Values::new();
    for field in fields {
        let prefix = format!("{}:", field.name);
        let found = lines[cursor..]
            .iter()
            .position(|line| line.trim_start().starts_with(&prefix))
            .ok_or_else(|| ParseError(format!("the field `{}` is missing", field.name)))?;
        let line = lines[cursor + found].trim_start();
        cursor += found + 1;
        let raw = line[prefix.len()..].trim();
        values.insert(field.name.clone(), parse_value(field, raw)?);
    }
    Ok(values)
}

/// The fields whose values the token budget cut short: those whose line ends at or after byte
/// `cut_at` of the reply (where the budget first decided instead of the model). Fields are
/// found as [`parse`] finds them.
pub fn cut_fields(fields: &[OutputField], reply: &str, cut_at: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut offset = 0;
    for line in reply.split('\n') {
        lines.push((line, offset + line.len()));
        offset += line.len() + 1;
    }
    let mut cursor = 0;
    let mut cut = Vec::new();
    for field in fields {
        let prefix = format!("{}:", field.name);
        let Some(found) = lines[cursor..]
            .iter()
            .position(|(line, _)| line.trim_start().starts_with(&prefix))
        else {
            break;
        };
        let end = lines[cursor + found].1;
        cursor += found + 1;
        if end >= cut_at {
            cut.push(field.name.clone());
        }
    }
    cut
}

/// Parses one field's text by its type.
pub fn parse_value(field: &OutputField, raw: &str) -> Result<Value, ParseError> {
    let bad = |what: &str| ParseError(format!("`{}` must be {what}, got {raw:?}", field.name));
    match &field.ty {
        // The grammar lets a text value be spaces only; that is an empty answer (which a
        // metric scores as such), not a reply that fails to parse.
        FieldType::Text => Ok(Value::String(raw.to_string())),
        FieldType::Choice { choices } => choices
            .iter()
            .find(|c| c.as_str() == raw)
            .or_else(|| choices.iter().find(|c| c.eq_ignore_ascii_case(raw)))
            .map(|c| Value::String(c.clone()))
            .ok_or_else(|| bad(&field.ty.describe())),
        FieldType::Integer => raw
            .parse::<i64>()
            .map(Value::from)
            .map_err(|_| bad("an integer")),
        FieldType::Number => raw
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| bad("a number")),
        FieldType::Boolean => match raw.to_ascii_lowercase().as_str() {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err(bad("true or false")),
        },
        FieldType::List => match serde_json::from_str::<Value>(raw) {
            Ok(Value::Array(items)) if items.iter().all(Value::is_string) => {
                Ok(Value::Array(items))
            }
            _ => Err(bad("a JSON list of strings")),
        },
        FieldType::Json => match serde_json::from_str::<Value>(raw) {
            Ok(object @ Value::Object(_)) => Ok(object),
            _ => Err(bad("a JSON object")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::program::signature::InputField;
    use serde_json::json;

    fn signature() -> Signature {
        Signature {
            instructions: "Classify the review.".into(),
            inputs: vec![InputField {
                name: "review".into(),
                description: Some("a product review".into()),
            }],
            outputs: vec![
                OutputField {
                    name: "label".into(),
                    description: None,
                    ty: FieldType::Choice {
                        choices: vec!["positive".into(), "negative".into()],
                    },
                    max_chars: None,
                },
                OutputField {
                    name: "stars".into(),
                    description: Some("1 to 5".into()),
                    ty: FieldType::Integer,
                    max_chars: None,
                },
            ],
        }
    }

    fn values(pairs: &[(&str, Value)]) -> Values {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn renders_instructions_demos_and_input() {
        let demo = Demo {
            inputs: values(&[("review", json!("Great!"))]),
            outputs: values(&[("label", json!("positive")), ("stars", json!(5))]),
        };
        let messages = render(
            &signature(),
            false,
            &[demo],
            &values(&[("review", json!("Awful."))]),
        );
        assert_eq!(messages.len(), 4);
        let system = &messages[0].content;
        assert!(system.starts_with("Classify the review."));
        assert!(system.contains("- review: a product review"));
        assert!(system.contains("- stars (an integer): 1 to 5"));
        assert!(system.ends_with("label: <one of: positive, negative>\nstars: <an integer>"));
        assert_eq!(messages[1].content, "review: Great!");
        assert_eq!(messages[2].content, "label: positive\nstars: 5");
        assert_eq!(messages[3].content, "review: Awful.");
    }

    #[test]
    fn chain_of_thought_adds_reasoning_first() {
        let fields = reply_fields(&signature(), true);
        assert_eq!(fields[0].name, REASONING_FIELD);
        let parsed = parse(&fields, "reasoning: it is bad\nlabel: negative\nstars: 1").unwrap();
        assert_eq!(parsed["reasoning"], json!("it is bad"));
        assert_eq!(parsed["stars"], json!(1));
    }

    #[test]
    fn cut_fields_are_those_ending_after_the_cut() {
        let fields = reply_fields(&signature(), false);
        let names: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
        let reply = names
            .iter()
            .map(|n| format!("{n}: v"))
            .collect::<Vec<_>>()
            .join("\n");
        let first_end = names[0].len() + 3;
        assert_eq!(
            cut_fields(&fields, &reply, reply.len() + 1),
            Vec::<String>::new()
        );
        assert_eq!(
            cut_fields(&fields, &reply, reply.len()),
            vec![names[names.len() - 1]]
        );
        assert_eq!(cut_fields(&fields, &reply, first_end).len(), names.len());
        assert_eq!(
            cut_fields(&fields, &reply, first_end + 1).len(),
            names.len() - 1
        );
    }

    #[test]
    fn parses_every_type_and_names_failures() {
        let field = |ty| OutputField {
            name: "f".into(),
            description: None,
            ty,
            max_chars: None,
        };
        assert_eq!(
            parse_value(&field(FieldType::Number), "2.5").unwrap(),
            json!(2.5)
        );
        assert_eq!(
            parse_value(&field(FieldType::Boolean), "True").unwrap(),
            json!(true)
        );
        assert_eq!(
            parse_value(&field(FieldType::List), r#"["a", "b"]"#).unwrap(),
            json!(["a", "b"])
        );
        assert_eq!(
            parse_value(&field(FieldType::Json), r#"{"k": 1}"#).unwrap(),
            json!({"k": 1})
        );
        let choice = field(FieldType::Choice {
            choices: vec!["Yes".into()],
        });
        assert_eq!(parse_value(&choice, "yes").unwrap(), json!("Yes"));
        assert!(parse_value(&choice, "maybe")
            .unwrap_err()
            .0
            .contains("one of: Yes"));
        assert!(parse_value(&field(FieldType::Integer), "3.5").is_err());
        assert!(parse_value(&field(FieldType::List), "[1, 2]").is_err());
        // Spaces only, as the grammar allows: an empty answer, not a failure.
        assert_eq!(parse_value(&field(FieldType::Text), "").unwrap(), json!(""));
        let err = parse(&reply_fields(&signature(), false), "label: positive").unwrap_err();
        assert!(err.0.contains("`stars` is missing"));
    }
}
