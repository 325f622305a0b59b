//! Model replies: what the adapter parses into output fields. Replies are built from field
//! lines, lines that only look like field lines, arbitrary Unicode and very long text, for the
//! bundled tasks' predictors (plain and chain of thought) and for one with every field type.
//!
//! Properties: parsing never panics; a reply either parses into exactly the declared fields,
//! each a value of its type, or the error names a declared field; and a reply that the
//! predictor's own grammar accepts always parses (the grammar is what decoding enforces).

use proptest::prelude::{any, prop, prop_assert, prop_oneof, Strategy};
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;
use serde_json::Value;
use tuningfork::gbnf::Grammar;
use tuningfork::program::adapter::reply_fields;
use tuningfork::program::{
    FieldType, InputField, OutputField, Predictor, PredictorKind, Signature,
};

use crate::mutate::{text, tricky_string};
use crate::{example_task, fuzz, no_panic};

#[derive(Debug, Clone)]
enum Piece {
    /// `name: value` for one of the fields.
    Field(Index, String),
    /// A line that looks like one field's line but is not quite (see [`lookalike`]).
    Lookalike(Index, usize, String),
    /// Any text, line breaks included.
    Text(String),
}

#[derive(Debug, Clone)]
enum Case {
    /// Any lines, joined with `\n` or `\r\n`.
    Lines {
        predictor: Index,
        pieces: Vec<Piece>,
        crlf: bool,
    },
    /// One line per field, in order, each value usually one of the field's type (see
    /// [`typed_value`]), else anything: what the grammar accepts must parse.
    InOrder {
        predictor: Index,
        values: Vec<(bool, Index, String)>,
    },
}

/// Values a model might write for a field, right and wrong.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "positive", "negative", "neutral", "Positive", "NEUTRAL", "positive.", "Anna",
            "Lyon", "3", "-7", "0", "-0", "007", "3.5", "-0.0", "1e5", "NaN", "inf",
            "9223372036854775808", "true", "False", "yes", "[]", "[\"a\", \"b\"]", "[1]",
            "[\"a\",]", "{}", "{\"k\": 1}", "{\"k\": [\"v\", {\"n\": null}]}", "{\"k\": 1",
            "", " ", "\t", "\u{3000}", "  spaced  ", "label: positive",
        ])
        .prop_map(String::from),
        2 => text(30),
        1 => tricky_string(),
    ]
}

fn piece() -> impl Strategy<Value = Piece> {
    prop_oneof![
        4 => (any::<Index>(), value()).prop_map(|(f, v)| Piece::Field(f, v)),
        2 => (any::<Index>(), 0usize..9, value()).prop_map(|(f, style, v)| Piece::Lookalike(f, style, v)),
        1 => text(40).prop_map(Piece::Text),
        1 => (1usize..10_000).prop_map(|n| Piece::Text("reasoning ".repeat(n))),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    let typed = (prop::bool::weighted(0.8), any::<Index>(), value());
    prop_oneof![
        (
            any::<Index>(),
            prop::collection::vec(piece(), 0..10),
            any::<bool>()
        )
            .prop_map(|(predictor, pieces, crlf)| Case::Lines {
                predictor,
                pieces,
                crlf
            }),
        (any::<Index>(), prop::collection::vec(typed, 0..9))
            .prop_map(|(predictor, values)| Case::InOrder { predictor, values }),
    ]
}

/// A value of the field's type as a model writes it, sometimes with blanks around it, or
/// blank where text is expected.
fn typed_value(field: &OutputField, pick: &Index) -> String {
    let strings = |items: &[&str]| -> Vec<String> { items.iter().map(|s| s.to_string()).collect() };
    let pool = match &field.ty {
        FieldType::Text => strings(&["Anna", "it is fine", " ", "\t", "  padded  ", "\u{3000}"]),
        FieldType::Choice { choices } => choices
            .iter()
            .flat_map(|c| [c.clone(), c.to_uppercase(), format!("{c} ")])
            .collect(),
        FieldType::Integer => strings(&["3", "-7", "0", "007", "-0", "999999999999999999"]),
        FieldType::Number => strings(&["3.5", "-0.0", "10", "0.25", "-12.0625"]),
        FieldType::Boolean => strings(&["true", "false"]),
        FieldType::List => strings(&["[]", "[\"a\", \"b\"]", "[ \"x\"]"]),
        FieldType::Json => strings(&["{}", "{\"k\": 1}", "{\"a\": [1, \"x\"], \"b\": null}"]),
    };
    if pool.is_empty() {
        return String::new();
    }
    pool[pick.index(pool.len())].clone()
}

/// A line that resembles the field line of `name`.
fn lookalike(name: &str, style: usize, value: &str) -> String {
    let mut capital = name.to_string();
    if let Some(first) = capital.get_mut(..1) {
        first.make_ascii_uppercase();
    }
    match style {
        0 => format!("{capital}: {value}"),
        1 => format!("{name} : {value}"),
        2 => format!("{name}_extra: {value}"),
        3 => format!("{name}\u{ff1a} {value}"),
        4 => format!("   {name}:{value}"),
        5 => format!("{name} {value}"),
        6 => format!("so {name}: {value}"),
        7 => format!("{name}:"),
        _ => format!("{name}::{value}"),
    }
}

/// The predictors replies are parsed for: each bundled task's step and a signature with every
/// field type, each as `predict` and as chain of thought.
fn predictors() -> Vec<Predictor> {
    let mut steps: Vec<Predictor> = ["sentiment", "contacts"]
        .iter()
        .map(|name| example_task(name).program.steps[0].clone())
        .collect();
    steps.push(every_type());
    let mut all = Vec::new();
    for step in steps {
        for kind in [PredictorKind::Predict, PredictorKind::ChainOfThought] {
            all.push(Predictor {
                nearest: None,
                kind,
                ..step.clone()
            });
        }
    }
    all
}

fn every_type() -> Predictor {
    let field = |name: &str, ty: FieldType| OutputField {
        name: name.to_string(),
        description: None,
        ty,
        max_chars: None,
    };
    Predictor {
        nearest: None,
        name: "every_type".to_string(),
        kind: PredictorKind::Predict,
        signature: Signature {
            instructions: "Answer every field.".to_string(),
            inputs: vec![InputField {
                name: "question".to_string(),
                description: None,
            }],
            outputs: vec![
                field("answer", FieldType::Text),
                field(
                    "label",
                    FieldType::Choice {
                        choices: vec!["yes".into(), "No".into(), "say \"maybe\"".into()],
                    },
                ),
                field("count", FieldType::Integer),
                field("score", FieldType::Number),
                field("ok", FieldType::Boolean),
                field("tags", FieldType::List),
                field("data", FieldType::Json),
            ],
        },
        demos: Vec::new(),
        optimize: true,
    }
}

/// Whether `value` is what a field of this type parses to.
pub fn well_typed(field: &OutputField, value: &Value) -> bool {
    match &field.ty {
        // Text may be empty (a reply of spaces only is an empty answer), never padded.
        FieldType::Text => value
            .as_str()
            .is_some_and(|s| s.trim() == s && !s.contains('\n')),
        FieldType::Choice { choices } => value
            .as_str()
            .is_some_and(|s| choices.iter().any(|c| c == s)),
        FieldType::Integer => value.is_i64(),
        FieldType::Number => value.is_number(),
        FieldType::Boolean => value.is_boolean(),
        FieldType::List => value
            .as_array()
            .is_some_and(|items| items.iter().all(Value::is_string)),
        FieldType::Json => value.is_object(),
    }
}

/// A parse result is either every field, well typed, or an error that names a field.
pub fn check_parsed(
    fields: &[OutputField],
    reply: &str,
    parsed: &Result<tuningfork::program::Values, tuningfork::program::ParseError>,
) -> Result<(), TestCaseError> {
    match parsed {
        Ok(values) => {
            let names: Vec<&String> = values.keys().collect();
            let mut declared: Vec<&String> = fields.iter().map(|f| &f.name).collect();
            declared.sort();
            declared.dedup();
            prop_assert!(
                names == declared,
                "fields {names:?}, declared {declared:?}, reply {reply:?}"
            );
            for field in fields {
                let value = &values[&field.name];
                prop_assert!(
                    well_typed(field, value),
                    "`{}` ({:?}) parsed to {value} from {reply:?}",
                    field.name,
                    field.ty
                );
            }
        }
        Err(e) => {
            prop_assert!(
                fields
                    .iter()
                    .any(|f| e.0.contains(&format!("`{}`", f.name))),
                "the error names no field: {e}"
            );
        }
    }
    Ok(())
}

#[test]
fn replies_never_panic_and_parse_into_the_declared_fields() {
    let predictors = predictors();
    let grammars: Vec<Grammar> = predictors
        .iter()
        .map(|p| {
            Grammar::parse(&p.grammar())
                .unwrap_or_else(|e| panic!("the grammar of `{}` does not parse: {e}", p.name))
        })
        .collect();
    fuzz("reply", case(), |case| {
        let (index, reply) = match &case {
            Case::Lines {
                predictor,
                pieces,
                crlf,
            } => {
                let index = predictor.index(predictors.len());
                let step = &predictors[index];
                let names: Vec<String> = reply_fields(&step.signature, step.reasoning())
                    .into_iter()
                    .map(|f| f.name)
                    .collect();
                let name = |i: &Index| names[i.index(names.len())].clone();
                let lines: Vec<String> = pieces
                    .iter()
                    .map(|piece| match piece {
                        Piece::Field(i, v) => format!("{}: {v}", name(i)),
                        Piece::Lookalike(i, style, v) => lookalike(&name(i), *style, v),
                        Piece::Text(t) => t.clone(),
                    })
                    .collect();
                (index, lines.join(if *crlf { "\r\n" } else { "\n" }))
            }
            Case::InOrder { predictor, values } => {
                let index = predictor.index(predictors.len());
                let step = &predictors[index];
                let fields = reply_fields(&step.signature, step.reasoning());
                let lines: Vec<String> = fields
                    .iter()
                    .enumerate()
                    .map(|(i, f)| {
                        let v = match values.get(i) {
                            Some((false, _, anything)) => anything.clone(),
                            Some((true, pick, _)) => typed_value(f, pick),
                            None => String::new(),
                        };
                        format!("{}: {v}", f.name)
                    })
                    .collect();
                (index, lines.join("\n"))
            }
        };
        let step = &predictors[index];
        let fields = reply_fields(&step.signature, step.reasoning());
        let parsed = no_panic("Predictor::parse", || step.parse(&reply))?;
        check_parsed(&fields, &reply, &parsed)?;
        if no_panic("Grammar::matches", || grammars[index].matches(&reply))? {
            prop_assert!(
                parsed.is_ok(),
                "the grammar of `{}` accepts {reply:?}, but the adapter refuses it: {parsed:?}",
                step.name
            );
        }
        Ok(())
    });
}
