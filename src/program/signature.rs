//! Signatures: what a predictor reads and what it must produce, with types.

use serde::{Deserialize, Serialize};

/// The type of an output field. Each type has a grammar (so decoding can only produce a valid
/// value) and a parser.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FieldType {
    /// One line of free text.
    Text,
    /// Exactly one of the listed strings.
    Choice { choices: Vec<String> },
    /// A whole number.
    Integer,
    /// A decimal number.
    Number,
    /// `true` or `false`.
    Boolean,
    /// A JSON array of strings.
    List,
    /// A JSON object.
    Json,
}

impl FieldType {
    /// How the type is described to the model.
    pub fn describe(&self) -> String {
        match self {
            FieldType::Text => "text".to_string(),
            FieldType::Choice { choices } => format!("one of: {}", choices.join(", ")),
            FieldType::Integer => "an integer".to_string(),
            FieldType::Number => "a number".to_string(),
            FieldType::Boolean => "true or false".to_string(),
            FieldType::List => "a JSON list of strings".to_string(),
            FieldType::Json => "a JSON object".to_string(),
        }
    }
}

/// A field the predictor reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputField {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A field the predictor must produce.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputField {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(flatten)]
    pub ty: FieldType,
    /// For text fields: the most characters a value may have (the grammar enforces it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_chars: Option<u32>,
}

impl OutputField {
    /// How the field's values are described to the model.
    pub fn describe(&self) -> String {
        match self.max_chars {
            Some(n) => format!("{}, at most {n} characters", self.ty.describe()),
            None => self.ty.describe(),
        }
    }
}

/// Instructions plus typed input and output fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    pub instructions: String,
    pub inputs: Vec<InputField>,
    pub outputs: Vec<OutputField>,
}

/// What is wrong with a signature, in words a task-file author can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SignatureError(pub String);

impl Signature {
    /// Checks names and types: fields must be named like identifiers, unique, and a choice
    /// needs at least one non-empty choice without line breaks.
    pub fn validate(&self) -> Result<(), SignatureError> {
        if self.outputs.is_empty() {
            return Err(SignatureError(
                "a signature needs at least one output field".into(),
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        let names = self
            .inputs
            .iter()
            .map(|f| &f.name)
            .chain(self.outputs.iter().map(|f| &f.name));
        for name in names {
            if !is_identifier(name) {
                return Err(SignatureError(format!(
                    "field name `{name}` must start with a letter and use only letters, digits and '_'"
                )));
            }
            if !seen.insert(name.clone()) {
                return Err(SignatureError(format!("field `{name}` is defined twice")));
            }
        }
        for field in &self.outputs {
            match (field.max_chars, &field.ty) {
                (Some(0), _) => {
                    return Err(SignatureError(format!(
                        "output field `{}` has max_chars = 0; a text value needs at least one character",
                        field.name
                    )))
                }
                (Some(_), ty) if *ty != FieldType::Text => {
                    return Err(SignatureError(format!(
                        "output field `{}` is {}; max_chars applies only to text fields",
                        field.name,
                        ty.describe()
                    )))
                }
                _ => {}
            }
            if let FieldType::Choice { choices } = &field.ty {
                if choices.is_empty() {
                    return Err(SignatureError(format!(
                        "output field `{}` is a choice with no choices",
                        field.name
                    )));
                }
                if let Some(bad) = choices
                    .iter()
                    .find(|c| c.trim().is_empty() || c.contains('\n') || c.trim() != c.as_str())
                {
                    return Err(SignatureError(format!(
                        "output field `{}` has the choice {bad:?}; choices must be non-empty, on one line, and without spaces around them",
                        field.name
                    )));
                }
            }
        }
        Ok(())
    }

    pub fn output(&self, name: &str) -> Option<&OutputField> {
        self.outputs.iter().find(|f| f.name == name)
    }
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signature(outputs: Vec<OutputField>) -> Signature {
        Signature {
            instructions: "Classify.".into(),
            inputs: vec![InputField {
                name: "text".into(),
                description: None,
            }],
            outputs,
        }
    }

    fn out(name: &str, ty: FieldType) -> OutputField {
        OutputField {
            name: name.into(),
            description: None,
            ty,
            max_chars: None,
        }
    }

    #[test]
    fn validation_names_the_problem() {
        assert!(signature(vec![out("label", FieldType::Text)])
            .validate()
            .is_ok());
        let err = signature(vec![]).validate().unwrap_err();
        assert!(err.0.contains("at least one output"));
        let err = signature(vec![out("text", FieldType::Text)])
            .validate()
            .unwrap_err();
        assert!(err.0.contains("defined twice"));
        let err = signature(vec![out("1abc", FieldType::Text)])
            .validate()
            .unwrap_err();
        assert!(err.0.contains("1abc"));
        let err = signature(vec![out("c", FieldType::Choice { choices: vec![] })])
            .validate()
            .unwrap_err();
        assert!(err.0.contains("no choices"));
        let capped = |ty, max_chars| OutputField {
            max_chars,
            ..out("c", ty)
        };
        assert!(signature(vec![capped(FieldType::Text, Some(40))])
            .validate()
            .is_ok());
        let err = signature(vec![capped(FieldType::Integer, Some(4))])
            .validate()
            .unwrap_err();
        assert!(err.0.contains("only to text fields"), "{err}");
        let err = signature(vec![capped(FieldType::Text, Some(0))])
            .validate()
            .unwrap_err();
        assert!(err.0.contains("max_chars = 0"), "{err}");
    }

    #[test]
    fn types_read_from_toml() {
        let field: OutputField =
            toml::from_str("name = \"label\"\ntype = \"choice\"\nchoices = [\"a\", \"b\"]\n")
                .unwrap();
        assert_eq!(
            field.ty,
            FieldType::Choice {
                choices: vec!["a".into(), "b".into()]
            }
        );
        let field: OutputField = toml::from_str("name = \"n\"\ntype = \"integer\"\n").unwrap();
        assert_eq!(field.ty, FieldType::Integer);
        let field: OutputField =
            toml::from_str("name = \"t\"\ntype = \"text\"\nmax_chars = 30\n").unwrap();
        assert_eq!((field.ty, field.max_chars), (FieldType::Text, Some(30)));
    }
}
