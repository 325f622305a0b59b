//! Edits that turn a valid input into a nearly valid one — on bytes, on lines of text, on JSON
//! values — and generators of the values they put in. An edit holds positions as proptest
//! `Index`es, resolved against the input when applied, so one edit fits any input and a failing
//! case prints as a few words instead of a whole file.

use proptest::prelude::{any, prop, prop_oneof, BoxedStrategy, Just, Strategy};
use proptest::sample::Index;
use serde_json::Value;

/// A change to raw bytes.
#[derive(Debug, Clone)]
pub enum ByteEdit {
    /// Keeps only the bytes before a position.
    Truncate(Index),
    /// Flips one bit (0 to 7) of one byte.
    FlipBit(Index, u8),
    /// Inserts bytes at a position.
    Insert(Index, Vec<u8>),
    /// Overwrites the bytes from a position (not past the end).
    Overwrite(Index, Vec<u8>),
    /// Removes up to this many bytes from a position.
    Remove(Index, usize),
}

pub fn byte_edit() -> BoxedStrategy<ByteEdit> {
    prop_oneof![
        any::<Index>().prop_map(ByteEdit::Truncate),
        (any::<Index>(), 0u8..8).prop_map(|(at, bit)| ByteEdit::FlipBit(at, bit)),
        (any::<Index>(), bytes(16)).prop_map(|(at, b)| ByteEdit::Insert(at, b)),
        (any::<Index>(), bytes(16)).prop_map(|(at, b)| ByteEdit::Overwrite(at, b)),
        (any::<Index>(), 1usize..64).prop_map(|(at, n)| ByteEdit::Remove(at, n)),
    ]
    .boxed()
}

impl ByteEdit {
    pub fn apply(&self, input: &[u8]) -> Vec<u8> {
        let mut out = input.to_vec();
        // Positions range over 0..=len, so that an edit can reach the end.
        let at = |index: &Index| index.index(input.len() + 1);
        match self {
            ByteEdit::Truncate(i) => out.truncate(at(i)),
            ByteEdit::FlipBit(i, bit) => {
                if !out.is_empty() {
                    let p = i.index(out.len());
                    out[p] ^= 1u8 << (bit % 8);
                }
            }
            ByteEdit::Insert(i, bytes) => {
                let p = at(i);
                let tail = out.split_off(p);
                out.extend_from_slice(bytes);
                out.extend_from_slice(&tail);
            }
            ByteEdit::Overwrite(i, bytes) => {
                let p = at(i);
                for (slot, byte) in out.iter_mut().skip(p).zip(bytes) {
                    *slot = *byte;
                }
            }
            ByteEdit::Remove(i, n) => {
                let p = at(i);
                let end = p.saturating_add(*n).min(out.len());
                out.drain(p..end);
            }
        }
        out
    }
}

/// Up to `max` bytes, often ones that parsers of text treat specially (quotes, brackets, line
/// ends, a byte-order mark, bytes that are never UTF-8, the start of a two-byte character).
pub fn bytes(max: usize) -> BoxedStrategy<Vec<u8>> {
    let byte = prop_oneof![
        3 => any::<u8>(),
        2 => prop::sample::select(b"\0\n\r\t \"'\\{}[]=:,#.-0\xEF\xBB\xBF\xff\xc3\xa9\x80".to_vec()),
    ];
    prop::collection::vec(byte, 0..=max).boxed()
}

/// A change to a text file, line by line.
#[derive(Debug, Clone)]
pub enum LineEdit {
    /// Replaces what follows ` = ` on one of the `key = value` lines.
    ReplaceValue(Index, String),
    Delete(Index),
    Duplicate(Index),
    /// Inserts a line before a line (or at the end).
    Insert(Index, String),
    Swap(Index, Index),
}

/// Line edits for TOML files: values are TOML-ish (some valid, many not).
pub fn toml_line_edit() -> BoxedStrategy<LineEdit> {
    prop_oneof![
        4 => (any::<Index>(), toml_value()).prop_map(|(at, v)| LineEdit::ReplaceValue(at, v)),
        2 => any::<Index>().prop_map(LineEdit::Delete),
        1 => any::<Index>().prop_map(LineEdit::Duplicate),
        2 => (any::<Index>(), toml_line()).prop_map(|(at, l)| LineEdit::Insert(at, l)),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| LineEdit::Swap(a, b)),
    ]
    .boxed()
}

impl LineEdit {
    /// The edited text; lines end in `\n`.
    pub fn apply(&self, text: &str) -> String {
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        let n = lines.len();
        match self {
            LineEdit::ReplaceValue(i, value) => {
                let keyed: Vec<usize> = (0..n).filter(|&l| lines[l].contains(" = ")).collect();
                if !keyed.is_empty() {
                    let line = &mut lines[keyed[i.index(keyed.len())]];
                    if let Some(at) = line.find(" = ") {
                        line.truncate(at + " = ".len());
                        line.push_str(value);
                    }
                }
            }
            LineEdit::Delete(i) if n > 0 => {
                lines.remove(i.index(n));
            }
            LineEdit::Duplicate(i) if n > 0 => {
                let at = i.index(n);
                let copy = lines[at].clone();
                lines.insert(at + 1, copy);
            }
            LineEdit::Insert(i, line) => lines.insert(i.index(n + 1), line.clone()),
            LineEdit::Swap(a, b) if n > 0 => lines.swap(a.index(n), b.index(n)),
            LineEdit::Delete(_) | LineEdit::Duplicate(_) | LineEdit::Swap(..) => {}
        }
        let mut out = lines.join("\n");
        out.push('\n');
        out
    }
}

/// A TOML value as it could be written after `key = `: numbers, strings, booleans, dates,
/// arrays and inline tables, some of them malformed, and runaway nesting.
pub fn toml_value() -> BoxedStrategy<String> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        any::<bool>().prop_map(|b| b.to_string()),
        text(24).prop_map(|s| toml_string(&s)),
        prop::sample::select(vec![
            "nan",
            "-inf",
            "+inf",
            "0x7f",
            "1_000",
            "-0",
            "1e400",
            "99999999999999999999",
            "18446744073709551615",
            "1979-05-27T07:32:00Z",
            "\"\"",
            "''",
            "\"\"\"multi\"\"\"",
            "\"unterminated",
            "{}",
            "[]",
            "[,]",
            "{ = }",
            "\"predict\"",
            "\"chain_of_thought\"",
            "\"choice\"",
            "\"integer\"",
            "\"regex\"",
            "\"weighted\"",
            "\"pypi\"",
            "\"local\"",
            "\"../escape.gguf\"",
            "\"data.jsonl\"",
            "\"\\u00e9\"",
            "\"\\uD800\"",
        ])
        .prop_map(String::from),
        text(24),
        (1usize..200).prop_map(|n| format!("{}{}", "[".repeat(n), "]".repeat(n))),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5)
                .prop_map(|items| format!("[{}]", items.join(", "))),
            prop::collection::vec((key(), inner), 0..4).prop_map(|pairs| {
                let pairs: Vec<String> = pairs.iter().map(|(k, v)| format!("{k} = {v}")).collect();
                format!("{{ {} }}", pairs.join(", "))
            }),
        ]
    })
    .boxed()
}

/// A line to insert into a TOML file: a table header, a `key = value` line, or anything.
fn toml_line() -> BoxedStrategy<String> {
    prop_oneof![
        (key(), toml_value()).prop_map(|(k, v)| format!("{k} = {v}")),
        prop::sample::select(vec![
            "[task]",
            "[[steps]]",
            "[dataset]",
            "[metric]",
            "[generation]",
            "[[model]]",
            "[model.source]",
            "[[model.source.parts]]",
            "[dataset.fields]",
            "[[metric.parts]]",
            "[",
            "]]",
            "# comment",
        ])
        .prop_map(String::from),
        text(40),
    ]
    .boxed()
}

/// A TOML basic string holding `text`.
pub fn toml_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A key: a plausible one of ours, a plain identifier, or any text.
pub fn key() -> BoxedStrategy<String> {
    prop_oneof![
        prop::sample::select(vec![
            "name",
            "model",
            "seed",
            "kind",
            "instructions",
            "inputs",
            "outputs",
            "type",
            "choices",
            "description",
            "path",
            "split",
            "field",
            "fields",
            "format",
            "version",
            "program",
            "steps",
            "signature",
            "demos",
            "sha256",
            "size",
            "file",
            "source",
            "seq",
            "data",
            "prev",
            "hash",
            "id",
            "uid",
            "run_id",
            "reasoning",
            "rationale",
            "augmented",
        ])
        .prop_map(String::from),
        "[a-z_]{1,8}",
        text(8),
    ]
    .boxed()
}

/// Any text up to `max` characters: any Unicode scalar value, control characters included.
pub fn text(max: usize) -> BoxedStrategy<String> {
    prop::collection::vec(any::<char>(), 0..=max)
        .prop_map(|chars| chars.into_iter().collect::<String>())
        .boxed()
}

/// Strings that have broken parsers before: empty, blank, quotes, escapes, line and paragraph
/// separators, a byte-order mark, combining marks, astral characters, a long run.
pub fn tricky_string() -> BoxedStrategy<String> {
    prop_oneof![
        prop::sample::select(vec![
            "", " ", "\t", "\0", "\"", "\\", "\n", "\r\n", "\r", "\u{feff}", "\u{2028}", "\u{85}",
            "\u{3000}", "é", "e\u{301}", "½", "💥", "a:b", "::=", "${x}", "null",
        ])
        .prop_map(String::from),
        (1usize..20_000).prop_map(|n| "ab\u{e9}".repeat(n)),
    ]
    .boxed()
}

/// A JSON value; with `bombs`, some are arrays nested deeper than any JSON reader goes.
pub fn json_value(bombs: bool) -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(finite_number),
        text(16).prop_map(Value::String),
        tricky_string().prop_map(Value::String),
    ];
    let leaf = if bombs {
        prop_oneof![9 => leaf, 1 => (100usize..300).prop_map(nested_arrays)].boxed()
    } else {
        leaf.boxed()
    };
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..4)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
        ]
    })
    .boxed()
}

/// A JSON number, or null for what JSON cannot hold (NaN, infinities). Negative zero becomes
/// zero: the two compare equal but print differently, which would blur "changed or not".
fn finite_number(f: f64) -> Value {
    let f = if f == 0.0 { 0.0 } else { f };
    serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
}

fn nested_arrays(depth: usize) -> Value {
    (0..depth).fold(Value::Null, |inner, _| Value::Array(vec![inner]))
}

/// One step of a path into a JSON value.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Key(String),
    Item(usize),
}

/// A change to one node of a JSON value.
#[derive(Debug, Clone)]
pub enum JsonEdit {
    /// Replaces a node (the whole value included).
    Replace(Index, Value),
    /// Removes a member or an item (removing the whole value does nothing).
    Remove(Index),
    /// Adds a member to an object, an item to an array, or replaces a scalar.
    Add(Index, String, Value),
}

pub fn json_edit() -> BoxedStrategy<JsonEdit> {
    prop_oneof![
        3 => (any::<Index>(), json_value(true)).prop_map(|(at, v)| JsonEdit::Replace(at, v)),
        2 => any::<Index>().prop_map(JsonEdit::Remove),
        1 => (any::<Index>(), key(), json_value(false)).prop_map(|(at, k, v)| JsonEdit::Add(at, k, v)),
    ]
    .boxed()
}

impl JsonEdit {
    /// The edited value and the path of the node the edit chose.
    pub fn apply(&self, value: &Value) -> (Value, Vec<Step>) {
        let paths = nodes(value);
        // `nodes` always lists the root, so there is at least one path.
        let pick = |index: &Index| paths[index.index(paths.len())].clone();
        let mut edited = value.clone();
        let path = match self {
            JsonEdit::Replace(at, with) => {
                let path = pick(at);
                if let Some(node) = node_mut(&mut edited, &path) {
                    *node = with.clone();
                }
                path
            }
            JsonEdit::Remove(at) => {
                let path = pick(at);
                if let Some((last, parent)) = path.split_last() {
                    match (node_mut(&mut edited, parent), last) {
                        (Some(Value::Object(map)), Step::Key(k)) => {
                            map.remove(k);
                        }
                        (Some(Value::Array(items)), Step::Item(n)) if *n < items.len() => {
                            items.remove(*n);
                        }
                        _ => {}
                    }
                }
                path
            }
            JsonEdit::Add(at, key, with) => {
                let path = pick(at);
                match node_mut(&mut edited, &path) {
                    Some(Value::Object(map)) => {
                        map.insert(key.clone(), with.clone());
                    }
                    Some(Value::Array(items)) => items.push(with.clone()),
                    Some(other) => *other = with.clone(),
                    None => {}
                }
                path
            }
        };
        (edited, path)
    }
}

/// The path of every node of `value`, the root (an empty path) first.
pub fn nodes(value: &Value) -> Vec<Vec<Step>> {
    fn walk(value: &Value, path: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
        out.push(path.clone());
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    path.push(Step::Key(k.clone()));
                    walk(v, path, out);
                    path.pop();
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    path.push(Step::Item(i));
                    walk(v, path, out);
                    path.pop();
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(value, &mut Vec::new(), &mut out);
    out
}

fn node_mut<'a>(value: &'a mut Value, path: &[Step]) -> Option<&'a mut Value> {
    let mut node = value;
    for step in path {
        node = match step {
            Step::Key(k) => node.get_mut(k.as_str())?,
            Step::Item(i) => node.get_mut(*i)?,
        };
    }
    Some(node)
}
