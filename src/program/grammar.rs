//! GBNF grammars generated from a signature's output fields, so that every reply parses.
//!
//! The reply format is one line per output field, in order: `name: value`. Each value's rule
//! follows its type; text is one line of at least one character. After the last field the
//! grammar is complete and only an end-of-text token remains possible.

use super::signature::{FieldType, OutputField};

/// Bumped whenever the grammar of some output field changes. The grammar is part of every
/// request (and so of its cache key); the version is recorded with every run, so a rerun that
/// departs from an older run can be traced to it. Version 2: JSON numbers without leading
/// zeros or three-digit exponents, JSON strings without raw control characters.
pub const GRAMMAR_VERSION: u32 = 2;

/// A grammar (root rule `root`) for replies that carry `fields` in order.
pub fn for_outputs(fields: &[OutputField]) -> String {
    let mut rules = Vec::new();
    let mut root = Vec::new();
    let mut needs_json = false;
    let mut needs_string = false;
    for (i, field) in fields.iter().enumerate() {
        let rule = format!("field{i}");
        let value = match &field.ty {
            FieldType::Text => match field.max_chars {
                Some(n) => format!("[^\\n]{{1,{n}}}"),
                None => "[^\\n]+".to_string(),
            },
            FieldType::Choice { choices } => {
                let alternatives: Vec<String> = choices.iter().map(|c| literal(c)).collect();
                format!("({})", alternatives.join(" | "))
            }
            FieldType::Integer => "\"-\"? [0-9]{1,18}".to_string(),
            FieldType::Number => "\"-\"? [0-9]{1,15} (\".\" [0-9]{1,10})?".to_string(),
            FieldType::Boolean => "(\"true\" | \"false\")".to_string(),
            FieldType::List => {
                needs_string = true;
                "\"[\" ws (string (\",\" ws string)*)? \"]\"".to_string()
            }
            FieldType::Json => {
                needs_json = true;
                "object".to_string()
            }
        };
        rules.push(format!("{rule} ::= {value}"));
        let separator = if i + 1 < fields.len() { " \"\\n\"" } else { "" };
        root.push(format!(
            "{} {rule}{separator}",
            literal(&format!("{}: ", field.name))
        ));
    }
    let mut grammar = format!("root ::= {}\n", root.join(" "));
    for rule in rules {
        grammar.push_str(&rule);
        grammar.push('\n');
    }
    if needs_json {
        grammar.push_str(JSON_RULES);
    } else if needs_string {
        grammar.push_str(STRING_RULES);
    }
    grammar
}

/// One-line JSON: objects, arrays, strings, numbers, literals — only what JSON parsers accept
/// (no leading zeros, exponents that fit a double, no raw control characters in strings).
const JSON_RULES: &str = r#"object ::= "{" ws (string ":" ws value ("," ws string ":" ws value)*)? "}"
array ::= "[" ws (value ("," ws value)*)? "]"
value ::= object | array | string | number | "true" | "false" | "null"
number ::= "-"? ("0" | [1-9] [0-9]{0,14}) ("." [0-9]{1,10})? ([eE] [-+]? [0-9]{1,2})?
string ::= "\"" ([^"\\\x00-\x1f] | "\\" ["\\/bfnrt])* "\"" ws
ws ::= [ \t]{0,4}
"#;

const STRING_RULES: &str = r#"string ::= "\"" ([^"\\\x00-\x1f] | "\\" ["\\/bfnrt])* "\"" ws
ws ::= [ \t]{0,4}
"#;

/// A GBNF string literal (the response-format grammars of `serve` use it too).
pub(crate) fn literal(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_rule_per_field_in_order() {
        let fields = vec![
            OutputField {
                name: "label".into(),
                description: None,
                ty: FieldType::Choice {
                    choices: vec!["yes".into(), "say \"no\"".into()],
                },
                max_chars: None,
            },
            OutputField {
                name: "count".into(),
                description: None,
                ty: FieldType::Integer,
                max_chars: None,
            },
        ];
        let grammar = for_outputs(&fields);
        assert!(grammar.starts_with("root ::= \"label: \" field0 \"\\n\" \"count: \" field1\n"));
        assert!(grammar.contains("field0 ::= (\"yes\" | \"say \\\"no\\\"\")"));
        assert!(!grammar.contains("object ::="));
    }

    #[test]
    fn json_and_lists_bring_their_rules() {
        let json = for_outputs(&[OutputField {
            name: "data".into(),
            description: None,
            ty: FieldType::Json,
            max_chars: None,
        }]);
        assert!(json.contains("object ::=") && json.contains("string ::="));
        let list = for_outputs(&[OutputField {
            name: "tags".into(),
            description: None,
            ty: FieldType::List,
            max_chars: None,
        }]);
        assert!(list.contains("string ::=") && !list.contains("object ::="));
    }
}
