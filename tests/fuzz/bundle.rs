//! Audit bundles: a run with calls (non-ASCII output, floats) recorded in an in-memory store
//! and exported, then one record's data or field changed, a record removed, moved or doubled,
//! a line replaced, bytes edited; and bundles forged by re-computing the hash chain after a
//! change, as anyone who read the format could, which must still import without a panic.
//!
//! Properties: reading never panics; every error names the source; an edit that changes what a
//! record says is refused naming that record (`record N`) or its line (`line N+1`); a bundle
//! that reads back holds exactly the exported records; following the documented chain on the
//! same records gives a bundle that verifies; a forged bundle that verifies imports into a
//! fresh store or is refused, and the imported run exports again, all without a panic.

use proptest::prelude::{any, prop, prop_assert, prop_oneof, Strategy};
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tuningfork::audit::bundle;
use tuningfork::engine::EngineFingerprint;
use tuningfork::store::{BundleRecord, NewCall, NewRun, Store};

use crate::mutate::{byte_edit, bytes, json_edit, json_value, ByteEdit, JsonEdit};
use crate::{fuzz, no_panic};

const SOURCE: &str = "fuzzed run.bundle";
/// The fields of a bundle line other than `data`.
const FIELDS: [&str; 4] = ["seq", "kind", "prev", "hash"];

#[derive(Debug, Clone)]
enum Case {
    /// A JSON edit inside one record's `data`, the chain left as it was.
    Data(Index, JsonEdit),
    /// One of `seq`, `kind`, `prev`, `hash` of a record set to another value.
    Field(Index, usize, Value),
    Remove(Index),
    Swap(Index, Index),
    Duplicate(Index),
    /// One line replaced by some bytes.
    Line(Index, Vec<u8>),
    /// The bundle's bytes edited.
    Bytes(ByteEdit),
    /// A record's data edited (and maybe its kind), then every hash from there re-computed.
    Forged(Index, JsonEdit, Option<String>),
}

fn case() -> impl Strategy<Value = Case> {
    let field_value = prop_oneof![
        2 => json_value(false),
        1 => (0u64..12).prop_map(Value::from),
        1 => "[0-9a-f]{64}".prop_map(Value::String),
    ];
    let kind = prop::sample::select(vec![
        "run",
        "model",
        "optimization",
        "candidate",
        "result",
        "eval_result",
        "call",
        "artifact",
        "header",
        "end",
        "",
        "runs; DROP TABLE runs",
    ])
    .prop_map(String::from);
    prop_oneof![
        3 => (any::<Index>(), json_edit()).prop_map(|(r, e)| Case::Data(r, e)),
        2 => (any::<Index>(), 0usize..FIELDS.len(), field_value)
            .prop_map(|(r, f, v)| Case::Field(r, f, v)),
        1 => any::<Index>().prop_map(Case::Remove),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Case::Swap(a, b)),
        1 => any::<Index>().prop_map(Case::Duplicate),
        1 => (any::<Index>(), bytes(64)).prop_map(|(r, b)| Case::Line(r, b)),
        2 => byte_edit().prop_map(Case::Bytes),
        2 => (any::<Index>(), json_edit(), proptest::option::of(kind))
            .prop_map(|(r, e, k)| Case::Forged(r, e, k)),
    ]
}

/// A store with one run and a few calls, exported: the bundle's text and its records.
fn exported() -> (String, Vec<BundleRecord>) {
    let store = Store::open_in_memory().unwrap();
    let run = store
        .begin_run(&NewRun {
            kind: "generate",
            config: json!({ "prompt": "hi ½" }),
            seed: Some(7),
            model_sha256: Some("abc"),
            fingerprint: &EngineFingerprint::current(),
        })
        .unwrap();
    for (i, output) in ["one", "two ½", "three 💥", "four\nlines \"quoted\""]
        .iter()
        .enumerate()
    {
        store
            .record_call(&NewCall {
                run_id: run,
                request_hash: &format!("h{i}"),
                model_sha256: "abc",
                engine_fingerprint_id: "f",
                request_json: "{}",
                prompt: "p",
                output,
                prompt_tokens: 3,
                completion_tokens: 1,
                stop_reason: Some("end_of_text"),
                cut_at: None,
                latency_ms: 977.421_312_000_000_1 + i as f64,
                cached: false,
                error: None,
            })
            .unwrap();
    }
    let mut out = Vec::new();
    bundle::export(&store, run, &mut out).unwrap();
    let text = String::from_utf8(out).expect("bundles are UTF-8");
    let (records, _) = bundle::read(&mut text.as_bytes(), "exported").unwrap();
    (text, records)
}

/// The documented chain link: sha256 of the previous hash, the sequence number, the kind and
/// the canonical JSON of the data, separated by line breaks.
fn link(prev: &str, seq: u64, kind: &str, data: &Value) -> String {
    let mut hasher = Sha256::new();
    hasher.update(prev.as_bytes());
    hasher.update(b"\n");
    hasher.update(seq.to_string().as_bytes());
    hasher.update(b"\n");
    hasher.update(kind.as_bytes());
    hasher.update(b"\n");
    hasher.update(serde_json::to_string(data).unwrap_or_default().as_bytes());
    hex::encode(hasher.finalize())
}

/// Re-computes `prev` and `hash` of every record, as a forger would.
fn rechain(lines: &mut [Value]) {
    let mut prev = String::new();
    for line in lines.iter_mut() {
        let seq = line["seq"].as_u64().unwrap_or_default();
        let kind = line["kind"].as_str().unwrap_or_default().to_string();
        let hash = link(&prev, seq, &kind, &line["data"]);
        line["prev"] = Value::String(prev);
        line["hash"] = Value::String(hash.clone());
        prev = hash;
    }
}

fn join(lines: &[String]) -> String {
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

/// Reads `text` and checks the outcome against `expect`; every error must name the source.
fn check(text: &[u8], original: &[BundleRecord], outcome: Expect) -> Result<(), TestCaseError> {
    let read = no_panic("bundle::read", || bundle::read(&mut &text[..], SOURCE))?;
    match (read, outcome) {
        (Ok((records, _)), Expect::Same | Expect::SameOrError) => {
            prop_assert!(
                records.as_slice() == original,
                "the bundle read back different records"
            );
        }
        (Ok(_), Expect::Error(expected)) => {
            return Err(TestCaseError::fail(format!(
                "an altered bundle verified (expected an error with one of {expected:?})"
            )));
        }
        (Err(e), outcome) => {
            let message = e.to_string();
            prop_assert!(
                message.contains(SOURCE),
                "the error does not name {SOURCE}: {message}"
            );
            match outcome {
                Expect::Same => {
                    return Err(TestCaseError::fail(format!(
                        "an unchanged bundle was refused: {message}"
                    )));
                }
                Expect::Error(expected) => prop_assert!(
                    expected
                        .iter()
                        .any(|words| message.contains(words.as_str())),
                    "the error does not say any of {expected:?}: {message}"
                ),
                Expect::SameOrError => {}
            }
        }
    }
    Ok(())
}

#[derive(Debug)]
enum Expect {
    /// The edit changed nothing that counts.
    Same,
    /// Refused, with one of these in the message.
    Error(Vec<String>),
    /// Either the same records or an error naming the source.
    SameOrError,
}

/// Words that name record `seq`, or the line it was on.
fn names_record(seq: usize) -> Vec<String> {
    vec![
        format!("record {seq} ("),
        format!("record {seq} here"),
        format!("line {}: ", seq + 1),
    ]
}

#[test]
fn bundles_never_panic_and_altered_records_are_named() {
    let (text, original) = exported();
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    let n = lines.len();
    let parsed: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).expect("exported lines are JSON"))
        .collect();
    fuzz("bundle", case(), |case| {
        let mut edited = lines.clone();
        let expect = match &case {
            Case::Data(r, edit) => {
                let k = r.index(n);
                let mut line = parsed[k].clone();
                let (data, _) = edit.apply(&line["data"]);
                let changed = data != line["data"];
                line["data"] = data;
                edited[k] = line.to_string();
                if changed {
                    Expect::Error(names_record(k))
                } else {
                    Expect::Same
                }
            }
            Case::Field(r, f, value) => {
                let k = r.index(n);
                let mut line = parsed[k].clone();
                let changed = line[FIELDS[*f]] != *value;
                line[FIELDS[*f]] = value.clone();
                edited[k] = line.to_string();
                if changed {
                    Expect::Error(names_record(k))
                } else {
                    Expect::Same
                }
            }
            Case::Remove(r) => {
                let k = r.index(n);
                edited.remove(k);
                if k + 1 == n {
                    Expect::Error(vec!["cut short".to_string()])
                } else {
                    // The next record stands where record k should.
                    Expect::Error(vec![format!("record {k} here")])
                }
            }
            Case::Swap(a, b) => {
                let (a, b) = (a.index(n), b.index(n));
                edited.swap(a, b);
                if a == b {
                    Expect::Same
                } else {
                    Expect::Error(vec![format!("record {} here", a.min(b))])
                }
            }
            Case::Duplicate(r) => {
                let k = r.index(n);
                edited.insert(k + 1, lines[k].clone());
                if k + 1 == n {
                    Expect::Error(vec![format!(
                        "line {}: records follow the end record",
                        n + 1
                    )])
                } else {
                    Expect::Error(vec![format!("record {} here", k + 1)])
                }
            }
            Case::Line(r, bytes) => {
                let k = r.index(n);
                let mut all: Vec<u8> = Vec::new();
                for (i, line) in lines.iter().enumerate() {
                    all.extend_from_slice(if i == k {
                        bytes.as_slice()
                    } else {
                        line.as_bytes()
                    });
                    all.push(b'\n');
                }
                return check(&all, &original, Expect::SameOrError);
            }
            Case::Bytes(edit) => {
                return check(&edit.apply(text.as_bytes()), &original, Expect::SameOrError);
            }
            Case::Forged(r, edit, kind) => {
                return forged(&parsed, r.index(n), edit, kind.as_deref(), &original)
            }
        };
        check(join(&edited).as_bytes(), &original, expect)
    });
}

/// A forged bundle: verifies when the documented chain is followed, and never panics on import.
fn forged(
    parsed: &[Value],
    k: usize,
    edit: &JsonEdit,
    kind: Option<&str>,
    original: &[BundleRecord],
) -> Result<(), TestCaseError> {
    let mut lines = parsed.to_vec();
    let (data, _) = edit.apply(&lines[k]["data"]);
    let unchanged = data == lines[k]["data"] && kind.is_none_or(|kind| lines[k]["kind"] == kind);
    lines[k]["data"] = data;
    if let Some(kind) = kind {
        lines[k]["kind"] = Value::String(kind.to_string());
    }
    rechain(&mut lines);
    let text = join(&lines.iter().map(Value::to_string).collect::<Vec<_>>());
    if unchanged {
        // Following the documented chain on the same records gives the same bundle.
        return check(text.as_bytes(), original, Expect::Same);
    }
    let read = no_panic("bundle::read", || {
        bundle::read(&mut text.as_bytes(), SOURCE)
    })?;
    if let Err(e) = &read {
        let message = e.to_string();
        prop_assert!(
            message.contains(SOURCE),
            "the error does not name {SOURCE}: {message}"
        );
        return Ok(());
    }
    let store = Store::open_in_memory()
        .map_err(|e| TestCaseError::fail(format!("cannot open a store: {e}")))?;
    let imported = no_panic("bundle::import", || {
        bundle::import(&store, &mut text.as_bytes(), SOURCE)
    })?;
    if let Ok((run, _)) = imported {
        // Whether every forged row can be read back is not checked here (see the report on
        // `import_run_records`); exporting it must not panic.
        let mut out = Vec::new();
        let _ = no_panic("bundle::export", || bundle::export(&store, run, &mut out))?;
    }
    Ok(())
}
