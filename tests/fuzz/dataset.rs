//! Dataset files (JSON Lines): valid rows with at most one line broken, laid out as users have
//! them (a byte-order mark, Windows line endings, blank lines, no final newline), plus lines of
//! arbitrary JSON and arbitrary bytes.
//!
//! Properties: reading never panics; every error names the file; where the test broke one
//! line, the error names `file:LINE` with that line's number and says what is wrong, and
//! `broken_lines = "skip"` leaves out exactly that line; rows that are fine come back with
//! their values and their own line numbers.

use std::collections::BTreeMap;
use std::path::Path;

use proptest::prelude::{any, prop, prop_assert, prop_assert_eq, prop_oneof, Strategy};
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;
use serde_json::{json, Value};
use tuningfork::dataset::{
    load, read_examples, read_jsonl, BrokenLines, DatasetError, DatasetSpec, SplitSpec,
};

use crate::mutate::{bytes, json_value, text, tricky_string};
use crate::{fuzz, no_panic, write};

/// How the test breaks one line.
#[derive(Debug, Clone)]
enum Breakage {
    /// A needed key left out: 0 the input (`review`, mapped to the field `text`), 1 the label.
    Missing(usize),
    /// The line cut short, keeping at least its first character.
    Cut(Index),
    /// Another JSON value than an object.
    NotObject(Value),
    /// A key written twice.
    KeyTwice,
    /// A byte that is never UTF-8, somewhere in the line.
    NotUtf8(Index),
}

impl Breakage {
    /// Words the error must contain.
    fn expected(&self) -> &'static [&'static str] {
        match self {
            Breakage::Missing(_) => &["is missing"],
            // A cut can fall inside a multi-byte character.
            Breakage::Cut(_) => &["not a JSON object", "not UTF-8"],
            Breakage::NotObject(_) => &["not a JSON object"],
            Breakage::KeyTwice => &["appears twice"],
            Breakage::NotUtf8(_) => &["not UTF-8"],
        }
    }
}

#[derive(Debug, Clone)]
struct Row {
    review: String,
    label: Value,
}

#[derive(Debug, Clone)]
struct Layout {
    bom: bool,
    crlf: bool,
    final_newline: bool,
    /// Blank lines and where they go among the rows.
    blanks: Vec<(Index, &'static str)>,
}

#[derive(Debug, Clone)]
enum Case {
    /// Valid rows, one of them broken when `broken` says so.
    Rows {
        rows: Vec<Row>,
        broken: Option<(Index, Breakage)>,
        layout: Layout,
    },
    /// One arbitrary JSON value per line.
    JsonLines(Vec<Value>),
    /// Arbitrary bytes.
    Bytes(Vec<u8>),
}

fn row() -> impl Strategy<Value = Row> {
    let review = prop_oneof![3 => text(30), 1 => tricky_string()];
    let label = prop_oneof![
        3 => prop::sample::select(vec!["pos", "neg", "neutral"]).prop_map(|l| json!(l)),
        1 => json_value(false),
    ];
    (review, label).prop_map(|(review, label)| Row { review, label })
}

fn breakage() -> impl Strategy<Value = Breakage> {
    prop_oneof![
        (0usize..2).prop_map(Breakage::Missing),
        any::<Index>().prop_map(Breakage::Cut),
        json_value(true)
            .prop_map(|v| if v.is_object() {
                Value::Array(vec![v])
            } else {
                v
            })
            .prop_map(Breakage::NotObject),
        proptest::strategy::Just(Breakage::KeyTwice),
        any::<Index>().prop_map(Breakage::NotUtf8),
    ]
}

fn layout() -> impl Strategy<Value = Layout> {
    let blank = prop::sample::select(vec!["", " ", "\t", "  \t "]);
    (
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        prop::collection::vec((any::<Index>(), blank), 0..4),
    )
        .prop_map(|(bom, crlf, final_newline, blanks)| Layout {
            bom,
            crlf,
            final_newline,
            blanks,
        })
}

fn case() -> impl Strategy<Value = Case> {
    prop_oneof![
        6 => (
            prop::collection::vec(row(), 1..25),
            proptest::option::of((any::<Index>(), breakage())),
            layout()
        )
            .prop_map(|(rows, broken, layout)| Case::Rows { rows, broken, layout }),
        1 => prop::collection::vec(json_value(true), 0..8).prop_map(Case::JsonLines),
        1 => bytes(400).prop_map(Case::Bytes),
    ]
}

/// The program's fields and where the file keeps them: `text` is written as `review`.
fn needed() -> (Vec<String>, BTreeMap<String, String>) {
    let needed = vec!["text".to_string(), "sentiment".to_string()];
    let mapping = [("text".to_string(), "review".to_string())]
        .into_iter()
        .collect();
    (needed, mapping)
}

fn row_object(row: &Row) -> Value {
    json!({ "review": row.review, "sentiment": row.label })
}

/// The line a breakage makes of a row's line.
fn broken_line(row: &Row, breakage: &Breakage) -> Vec<u8> {
    let whole = row_object(row).to_string().into_bytes();
    match breakage {
        Breakage::Missing(which) => {
            let mut object = row_object(row);
            if let Some(map) = object.as_object_mut() {
                map.remove(if *which == 0 { "review" } else { "sentiment" });
            }
            object.to_string().into_bytes()
        }
        // `whole` starts with `{` and ends with `}`: every shorter prefix is not JSON.
        Breakage::Cut(at) => whole[..1 + at.index(whole.len() - 1)].to_vec(),
        Breakage::NotObject(value) => value.to_string().into_bytes(),
        Breakage::KeyTwice => {
            let text = row_object(row).to_string();
            let open = text.strip_suffix('}').unwrap_or(&text);
            format!("{open},\"review\":\"again\"}}").into_bytes()
        }
        Breakage::NotUtf8(at) => {
            let mut line = whole.clone();
            line.insert(at.index(line.len() + 1), 0xff);
            line
        }
    }
}

/// The file's bytes and, for each row, the number of the line it is on.
fn layout_file(
    rows: &[Row],
    broken: Option<(usize, &Breakage)>,
    layout: &Layout,
) -> (Vec<u8>, Vec<usize>) {
    let mut lines: Vec<(Option<usize>, Vec<u8>)> = rows
        .iter()
        .enumerate()
        .map(|(i, row)| {
            let line = match broken {
                Some((k, breakage)) if k == i => broken_line(row, breakage),
                _ => row_object(row).to_string().into_bytes(),
            };
            (Some(i), line)
        })
        .collect();
    for (at, blank) in &layout.blanks {
        let p = at.index(lines.len() + 1);
        lines.insert(p, (None, blank.as_bytes().to_vec()));
    }
    let ending: &[u8] = if layout.crlf { b"\r\n" } else { b"\n" };
    let mut bytes = if layout.bom {
        b"\xEF\xBB\xBF".to_vec()
    } else {
        Vec::new()
    };
    let mut line_of_row = vec![0; rows.len()];
    let count = lines.len();
    for (n, (row, line)) in lines.into_iter().enumerate() {
        if let Some(r) = row {
            line_of_row[r] = n + 1;
        }
        bytes.extend_from_slice(&line);
        if n + 1 < count || layout.final_newline {
            bytes.extend_from_slice(ending);
        }
    }
    (bytes, line_of_row)
}

#[test]
fn dataset_lines_never_panic_and_errors_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fuzzed data.jsonl");
    let shown = path.display().to_string();
    let (needed, mapping) = needed();
    fuzz("dataset", case(), |case| {
        match &case {
            Case::Rows {
                rows,
                broken,
                layout,
            } => {
                let broken = broken
                    .as_ref()
                    .map(|(at, breakage)| (at.index(rows.len()), breakage));
                let (bytes, line_of_row) = layout_file(rows, broken, layout);
                write(&path, &bytes)?;
                check_rows(&path, &shown, rows, broken, &line_of_row, &needed, &mapping)?;
            }
            Case::JsonLines(values) => {
                let lines: Vec<String> = values.iter().map(Value::to_string).collect();
                write(&path, lines.join("\n").as_bytes())?;
                check_any(&path, &shown, &needed, &mapping)?;
            }
            Case::Bytes(bytes) => {
                write(&path, bytes)?;
                check_any(&path, &shown, &needed, &mapping)?;
            }
        }
        Ok(())
    });
}

fn check_rows(
    path: &Path,
    shown: &str,
    rows: &[Row],
    broken: Option<(usize, &Breakage)>,
    line_of_row: &[usize],
    needed: &[String],
    mapping: &BTreeMap<String, String>,
) -> Result<(), TestCaseError> {
    let read = no_panic("read_jsonl", || read_jsonl(path, needed, mapping))?;
    let mut skipped = Vec::new();
    let kept = no_panic("read_examples (skip)", || {
        read_examples(path, needed, mapping, BrokenLines::Skip, &mut skipped)
    })?;
    let kept = kept.map_err(|e| TestCaseError::fail(format!("skip mode refused the file: {e}")))?;
    match broken {
        None => {
            let examples =
                read.map_err(|e| TestCaseError::fail(format!("valid rows refused: {e}")))?;
            prop_assert_eq!(examples.len(), rows.len());
            prop_assert!(skipped.is_empty(), "nothing to skip, yet {skipped:?}");
        }
        Some((k, breakage)) => {
            let location = format!("{shown}:{}: ", line_of_row[k]);
            let message = match read {
                Ok(_) => {
                    return Err(TestCaseError::fail(format!(
                        "line {} is broken, yet the file was read",
                        line_of_row[k]
                    )))
                }
                Err(e) => e.to_string(),
            };
            prop_assert!(
                message.contains(&location),
                "the error does not start at {location}: {message}"
            );
            prop_assert!(
                breakage
                    .expected()
                    .iter()
                    .any(|words| message.contains(words)),
                "the error does not say {:?}: {message}",
                breakage.expected()
            );
            if let Breakage::Missing(which) = breakage {
                let field = if *which == 0 { "`text`" } else { "`sentiment`" };
                prop_assert!(
                    message.contains(field),
                    "the error does not name {field}: {message}"
                );
            }
            prop_assert!(skipped.len() == 1, "skipped {skipped:?}");
            prop_assert_eq!(&skipped[0].source, &format!("{shown}:{}", line_of_row[k]));
            prop_assert_eq!(kept.len(), rows.len() - 1);
        }
    }
    // The rows that are fine, with their values and their own line numbers, in file order.
    let expected: Vec<(String, Value, Value)> = rows
        .iter()
        .enumerate()
        .filter(|(i, _)| broken.is_none_or(|(k, _)| k != *i))
        .map(|(i, row)| {
            (
                format!("{shown}:{}", line_of_row[i]),
                Value::String(row.review.clone()),
                row.label.clone(),
            )
        })
        .collect();
    let got: Vec<(String, Value, Value)> = kept
        .iter()
        .map(|e| {
            (
                e.source.clone(),
                e.values.get("text").cloned().unwrap_or(Value::Null),
                e.values.get("sentiment").cloned().unwrap_or(Value::Null),
            )
        })
        .collect();
    prop_assert_eq!(got, expected);
    Ok(())
}

/// Arbitrary content: no panic, and every error names the file, read alone or as a task's
/// dataset.
fn check_any(
    path: &Path,
    shown: &str,
    needed: &[String],
    mapping: &BTreeMap<String, String>,
) -> Result<(), TestCaseError> {
    if let Err(e) = no_panic("read_jsonl", || read_jsonl(path, needed, mapping))? {
        let message = e.to_string();
        prop_assert!(
            message.contains(shown),
            "the error does not name {shown}: {message}"
        );
    }
    let spec = DatasetSpec {
        path: Some(path.to_path_buf()),
        train: None,
        val: None,
        test: None,
        split: SplitSpec::default(),
        added: None,
        fields: mapping.clone(),
        overlap: Default::default(),
        broken_lines: BrokenLines::Refuse,
    };
    let base = path.parent().unwrap_or_else(|| Path::new("."));
    if let Err(e) = no_panic("dataset::load", || load(&spec, base, needed))? {
        let message = e.to_string();
        // Known gap (reported): an empty split names the split, not the file.
        let about_the_file = !matches!(e, DatasetError::EmptySplit { .. });
        prop_assert!(
            !about_the_file || message.contains(shown),
            "the error does not name {shown}: {message}"
        );
    }
    Ok(())
}
