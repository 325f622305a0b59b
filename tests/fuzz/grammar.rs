//! Grammars generated from definitions users write: output fields with any names, types and
//! choices (empty, quoted, with backslashes or line breaks, padded with blanks, twice the
//! same), JSON schemas as an OpenAI `response_format` carries them, and GBNF text itself.
//!
//! Properties: generating never panics and always gives a grammar our GBNF parser reads; a
//! signature with a name that is not an identifier, or a name twice, is refused naming it; for
//! a signature that is accepted, every reply sampled from its grammar matches the grammar and
//! parses into its fields; a schema is turned into a grammar or refused naming where (`$…`),
//! and a value sampled from its grammar is JSON; any GBNF text parses or is refused, and a
//! grammar that parses can be sampled and matched, without a panic.

use std::collections::BTreeSet;

use proptest::prelude::{any, prop, prop_assert, prop_oneof, BoxedStrategy, Just, Strategy};
use proptest::test_runner::TestCaseError;
use serde_json::{json, Map, Value};
use tuningfork::gbnf::Grammar;
use tuningfork::program::adapter;
use tuningfork::program::grammar::for_outputs;
use tuningfork::program::{FieldType, InputField, OutputField, Signature};
use tuningfork::random::Rng;
use tuningfork::serve::schema::{grammar_for_schema, json_object_grammar};

use crate::mutate::{byte_edit, json_value, key, text, ByteEdit};
use crate::reply::check_parsed;
use crate::{fuzz, no_panic};

#[derive(Debug, Clone)]
enum Case {
    /// Output fields, and the seed replies are sampled with.
    Fields(Vec<OutputField>, u64),
    /// A JSON schema, and the seed a value is sampled with.
    Schema(Value, u64),
    /// A generated grammar with bytes edited.
    EditedGrammar(Vec<OutputField>, ByteEdit),
    /// Any text in GBNF's alphabet.
    Text(String),
}

fn case() -> impl Strategy<Value = Case> {
    prop_oneof![
        4 => (prop::collection::vec(output_field(), 0..5), any::<u64>())
            .prop_map(|(fields, seed)| Case::Fields(fields, seed)),
        3 => (schema_document(), any::<u64>()).prop_map(|(schema, seed)| Case::Schema(schema, seed)),
        1 => (prop::collection::vec(output_field(), 1..4), byte_edit())
            .prop_map(|(fields, edit)| Case::EditedGrammar(fields, edit)),
        1 => "[a-z:=|()\\[\\]\"\\\\*+?{}0-9,. ^#\n-]{0,60}".prop_map(Case::Text),
    ]
}

/// A field name: usually an identifier (from a small pool, so names repeat), else anything.
fn name() -> BoxedStrategy<String> {
    prop_oneof![
        4 => prop::sample::select(vec!["label", "count", "answer", "reasoning", "text", "x1"])
            .prop_map(String::from),
        2 => "[a-z][a-z0-9_]{0,10}",
        2 => prop::sample::select(vec![
            "", "1abc", "_x", "a b", "a\"b", "a\\b", "a\nb", "a:b", "ünï", "root", "field0",
            "::=", "#", "a\u{0}b", "Label",
        ])
        .prop_map(String::from),
        1 => text(12),
    ]
    .boxed()
}

/// A choice: a plain word, one with characters GBNF escapes or treats specially, one padded
/// with blanks, or anything.
fn choice() -> BoxedStrategy<String> {
    prop_oneof![
        4 => "[a-z]{1,8}",
        3 => prop::sample::select(vec![
            "yes", "Yes", "say \"no\"", "back\\slash", "tab\there", "a|b", "(x)", "[x]",
            "#hash", "::=", "é", "x\ry", "", " ", "new\nline",
            " padded", "padded ", "\u{3000}wide", "\u{a0}nbsp",
        ])
        .prop_map(String::from),
        1 => text(10),
    ]
    .boxed()
}

fn output_field() -> impl Strategy<Value = OutputField> {
    let ty = prop_oneof![
        Just(FieldType::Text),
        prop::collection::vec(choice(), 0..5).prop_map(|choices| FieldType::Choice { choices }),
        Just(FieldType::Integer),
        Just(FieldType::Number),
        Just(FieldType::Boolean),
        Just(FieldType::List),
        Just(FieldType::Json),
    ];
    (name(), ty).prop_map(|(name, ty)| OutputField {
        name,
        description: None,
        ty,
        max_chars: None,
    })
}

/// A schema with `$defs` beside it now and then, so that `$ref`s can point somewhere.
fn schema_document() -> impl Strategy<Value = Value> {
    (schema(), proptest::option::of((schema(), schema()))).prop_map(|(mut root, defs)| {
        if let (Value::Object(map), Some((a, b))) = (&mut root, defs) {
            map.insert("$defs".to_string(), json!({ "a": a, "b": b }));
        }
        root
    })
}

fn schema() -> BoxedStrategy<Value> {
    let count = || {
        prop_oneof![
            3 => Just(None::<Value>),
            3 => (0u64..5).prop_map(|n| Some(json!(n))),
            1 => prop::sample::select(vec![json!(1000), json!(1001), json!(-1), json!(2.5), json!("3")])
                .prop_map(Some),
        ]
    };
    let leaf = prop_oneof![
        prop::sample::select(vec![
            "string", "number", "integer", "boolean", "null", "object", "array", "float",
        ])
        .prop_map(|t| json!({ "type": t })),
        prop::sample::select(vec![
            json!(true),
            json!(false),
            json!({}),
            json!({ "type": [] })
        ]),
        prop::collection::vec(json_value(false), 0..4).prop_map(|values| json!({ "enum": values })),
        json_value(false).prop_map(|value| json!({ "const": value })),
        prop::sample::select(vec![
            "#/$defs/a",
            "#/$defs/b",
            "#/definitions/a",
            "#/$defs/",
            "#/x",
            "a"
        ])
        .prop_map(|target| json!({ "$ref": target })),
        (count(), count()).prop_map(|(min, max)| {
            let mut map = Map::new();
            map.insert("type".to_string(), json!("string"));
            put(&mut map, "minLength", min);
            put(&mut map, "maxLength", max);
            Value::Object(map)
        }),
        (
            prop::sample::select(vec!["integer", "number"]),
            prop::sample::select(vec![
                None,
                Some(json!(0)),
                Some(json!(1)),
                Some(json!(-3)),
                Some(json!(0.5))
            ]),
            any::<bool>(),
        )
            .prop_map(|(t, minimum, exclusive)| {
                let mut map = Map::new();
                map.insert("type".to_string(), json!(t));
                put(
                    &mut map,
                    if exclusive {
                        "exclusiveMinimum"
                    } else {
                        "minimum"
                    },
                    minimum,
                );
                Value::Object(map)
            }),
        json_value(false),
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            (
                prop::collection::vec((key(), inner.clone()), 0..4),
                prop::collection::vec(key(), 0..3),
                prop::option::of(any::<bool>()),
            )
                .prop_map(|(properties, required, additional)| {
                    let mut map = Map::new();
                    map.insert("type".to_string(), json!("object"));
                    let properties: Map<String, Value> = properties.into_iter().collect();
                    map.insert("properties".to_string(), Value::Object(properties));
                    map.insert("required".to_string(), json!(required));
                    put(
                        &mut map,
                        "additionalProperties",
                        additional.map(Value::Bool),
                    );
                    Value::Object(map)
                }),
            (
                inner.clone(),
                prop::option::of(0u64..4),
                prop::option::of(0u64..6)
            )
                .prop_map(|(items, min, max)| {
                    let mut map = Map::new();
                    map.insert("type".to_string(), json!("array"));
                    map.insert("items".to_string(), items);
                    put(&mut map, "minItems", min.map(Value::from));
                    put(&mut map, "maxItems", max.map(Value::from));
                    Value::Object(map)
                }),
            prop::collection::vec(inner.clone(), 0..4).prop_map(|list| json!({ "anyOf": list })),
            prop::collection::vec(inner.clone(), 0..3).prop_map(|list| json!({ "oneOf": list })),
            prop::collection::vec(inner, 0..3).prop_map(|list| json!({ "allOf": list })),
        ]
    })
    .boxed()
}

fn put(map: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    if let Some(value) = value {
        map.insert(key.to_string(), value);
    }
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[test]
fn generated_grammars_never_panic_and_their_replies_parse() {
    // The fixed grammar for `json_object`, once: it parses, and its samples are JSON objects.
    let object = Grammar::parse(&json_object_grammar()).expect("the json_object grammar parses");
    for seed in 0..8 {
        let sample = object.sample(&mut Rng::new(seed));
        let value: Value = serde_json::from_str(&sample)
            .unwrap_or_else(|e| panic!("sample {sample:?} is not JSON: {e}"));
        assert!(value.is_object(), "{sample}");
    }
    fuzz("grammar", case(), |case| match &case {
        Case::Fields(fields, seed) => check_fields(fields, *seed),
        Case::Schema(schema, seed) => check_schema(schema, *seed),
        Case::EditedGrammar(fields, edit) => {
            let grammar = edit.apply(for_outputs(fields).as_bytes());
            check_text(&String::from_utf8_lossy(&grammar))
        }
        Case::Text(text) => check_text(text),
    });
}

fn check_fields(fields: &[OutputField], seed: u64) -> Result<(), TestCaseError> {
    let text = no_panic("grammar::for_outputs", || for_outputs(fields))?;
    let grammar = match no_panic("Grammar::parse", || Grammar::parse(&text))? {
        Ok(grammar) => grammar,
        Err(e) => {
            return Err(TestCaseError::fail(format!(
                "a generated grammar does not parse: {e}\n{text}"
            )))
        }
    };
    let signature = Signature {
        instructions: "Fuzz.".to_string(),
        inputs: vec![InputField {
            name: "input".to_string(),
            description: None,
        }],
        outputs: fields.to_vec(),
    };
    let names: Vec<&str> = std::iter::once("input")
        .chain(fields.iter().map(|f| f.name.as_str()))
        .collect();
    let unique: BTreeSet<&str> = names.iter().copied().collect();
    let bad_names = names.iter().any(|n| !is_identifier(n)) || unique.len() < names.len();
    match no_panic("Signature::validate", || signature.validate())? {
        Err(e) => {
            prop_assert!(
                e.0.contains("at least one output")
                    || names.iter().any(|n| e.0.contains(&format!("`{n}`"))),
                "the error names no field: {e}"
            );
            Ok(())
        }
        Ok(()) => {
            prop_assert!(!bad_names, "accepted the names {names:?}");
            // What decoding can produce under this grammar must parse.
            for seed in seed..seed.saturating_add(4) {
                let reply = no_panic("Grammar::sample", || grammar.sample(&mut Rng::new(seed)))?;
                prop_assert!(
                    grammar.matches(&reply),
                    "a sample does not match its grammar: {reply:?}"
                );
                let parsed = no_panic("adapter::parse", || adapter::parse(fields, &reply))?;
                prop_assert!(
                    parsed.is_ok(),
                    "the grammar produced {reply:?}, which the adapter refuses: {parsed:?}\n{text}"
                );
                check_parsed(fields, &reply, &parsed)?;
            }
            Ok(())
        }
    }
}

fn check_schema(schema: &Value, seed: u64) -> Result<(), TestCaseError> {
    let text = match no_panic("schema::grammar_for_schema", || grammar_for_schema(schema))? {
        Ok(text) => text,
        Err(e) => {
            prop_assert!(e.0.starts_with("`$"), "the error does not say where: {e}");
            return Ok(());
        }
    };
    let grammar = match no_panic("Grammar::parse", || Grammar::parse(&text))? {
        Ok(grammar) => grammar,
        Err(e) => {
            return Err(TestCaseError::fail(format!(
                "a schema's grammar does not parse: {e}\n{text}"
            )))
        }
    };
    let sample = no_panic("Grammar::sample", || grammar.sample(&mut Rng::new(seed)))?;
    // A grammar whose shortest value is enormous gets a sample cut short; only whole ones count.
    if no_panic("Grammar::matches", || grammar.matches(&sample))? {
        prop_assert!(
            serde_json::from_str::<Value>(&sample).is_ok(),
            "the grammar of {schema} produced {sample:?}, which is not JSON"
        );
    }
    Ok(())
}

fn check_text(text: &str) -> Result<(), TestCaseError> {
    if let Ok(grammar) = no_panic("Grammar::parse", || Grammar::parse(text))? {
        let sample = no_panic("Grammar::sample", || grammar.sample(&mut Rng::new(1)))?;
        no_panic("Grammar::matches", || grammar.matches(&sample))?;
        no_panic("Grammar::matches", || grammar.matches(text))?;
    }
    Ok(())
}
