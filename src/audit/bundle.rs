//! Audit bundles: one run's stored rows in one hash-chained JSON Lines file.
//!
//! Each line is `{"seq", "kind", "data", "prev", "hash"}`. `hash` is the sha256 of the
//! previous record's hash, the sequence number, the kind and the canonical JSON of `data`,
//! so that changing, removing or reordering any record breaks the chain at that record.
//! The first record (`header`) names the format and the run; the last (`end`) counts the
//! records. Nothing is signed: the chain shows where a bundle was altered, not who made it.

use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use std::path::Path;

use crate::store::{BundleRecord, Store, StoreError};

pub const BUNDLE_FORMAT: &str = "tuningfork.bundle";
pub const BUNDLE_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{source_name}: {message}")]
    Invalid {
        source_name: String,
        message: String,
    },
    /// The chain breaks at a record: it was edited, removed or moved after export.
    #[error("{source_name}: record {seq} ({what}) was altered after export: {message}")]
    Altered {
        source_name: String,
        seq: u64,
        what: String,
        message: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot write the bundle: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Debug, Serialize, Deserialize)]
struct Line {
    seq: u64,
    kind: String,
    data: Value,
    prev: String,
    hash: String,
}

fn link(prev: &str, seq: u64, kind: &str, data: &Value) -> String {
    let mut hasher = Sha256::new();
    hasher.update(prev.as_bytes());
    hasher.update(b"\n");
    hasher.update(seq.to_string().as_bytes());
    hasher.update(b"\n");
    hasher.update(kind.as_bytes());
    hasher.update(b"\n");
    hasher.update(
        serde_json::to_string(data)
            .expect("values serialize")
            .as_bytes(),
    );
    hex::encode(hasher.finalize())
}

/// How a record is named in messages: its kind and its id, hash or uid.
fn describe(kind: &str, data: &Value) -> String {
    for key in ["id", "uid", "sha256", "hash"] {
        if let Some(v) = data.get(key) {
            let v = v.as_str().map_or_else(|| v.to_string(), str::to_string);
            return format!("{kind} {key} {v}");
        }
    }
    kind.to_string()
}

/// What a bundle holds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BundleSummary {
    pub run_uid: String,
    pub records: u64,
    /// The hash of the last record: a digest of the whole bundle.
    pub head: String,
    /// Records by kind.
    pub counts: std::collections::BTreeMap<String, u64>,
}

impl BundleSummary {
    /// The records by kind, as `3 runs, 865 calls, …`.
    pub fn counts_text(&self) -> String {
        self.counts
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Writes run `run_id` as a bundle to the file `out`: written beside it and renamed, so a
/// failed export leaves no partial bundle under the name.
pub fn export_file(store: &Store, run_id: i64, out: &Path) -> Result<BundleSummary, BundleError> {
    let partial = out.with_extension("partial");
    let io = |path: &Path, e: std::io::Error| {
        BundleError::Io(std::io::Error::new(
            e.kind(),
            format!("{}: {e}", path.display()),
        ))
    };
    let file = std::fs::File::create(&partial).map_err(|e| io(&partial, e))?;
    let mut writer = std::io::BufWriter::new(file);
    let summary = export(store, run_id, &mut writer)?;
    writer.flush().map_err(|e| io(&partial, e))?;
    drop(writer);
    std::fs::rename(&partial, out).map_err(|e| io(out, e))?;
    Ok(summary)
}

/// Opens a bundle file for [`read`] or [`import`].
pub fn open_file(path: &Path) -> Result<std::io::BufReader<std::fs::File>, BundleError> {
    let file = std::fs::File::open(path).map_err(|e| BundleError::Invalid {
        source_name: path.display().to_string(),
        message: format!("cannot read it: {e}"),
    })?;
    Ok(std::io::BufReader::new(file))
}

/// Writes run `run_id` as a bundle; returns what it wrote.
pub fn export(
    store: &Store,
    run_id: i64,
    out: &mut dyn Write,
) -> Result<BundleSummary, BundleError> {
    let run = store.run(&run_id.to_string())?;
    write(&run.uid, store.run_records(run_id)?, out)
}

/// The digest (last hash) of the bundle `records` of run `run_uid` make, without writing it.
pub fn digest(run_uid: &str, records: Vec<BundleRecord>) -> Result<String, BundleError> {
    Ok(write(run_uid, records, &mut std::io::sink())?.head)
}

fn write(
    run_uid: &str,
    records: Vec<BundleRecord>,
    out: &mut dyn Write,
) -> Result<BundleSummary, BundleError> {
    let mut writer = ChainWriter::new(out);
    writer.write(
        "header",
        serde_json::json!({
            "format": BUNDLE_FORMAT,
            "version": BUNDLE_VERSION,
            "run": run_uid,
            "tuningfork": env!("CARGO_PKG_VERSION"),
        }),
    )?;
    let mut counts = std::collections::BTreeMap::new();
    for record in records {
        *counts.entry(record.kind.clone()).or_insert(0) += 1;
        writer.write(&record.kind, Value::Object(record.data))?;
    }
    let records = writer.seq;
    writer.write("end", serde_json::json!({ "records": records + 1 }))?;
    Ok(BundleSummary {
        run_uid: run_uid.to_string(),
        records: writer.seq,
        head: writer.prev,
        counts,
    })
}

struct ChainWriter<'a> {
    out: &'a mut dyn Write,
    seq: u64,
    prev: String,
}

impl<'a> ChainWriter<'a> {
    fn new(out: &'a mut dyn Write) -> Self {
        ChainWriter {
            out,
            seq: 0,
            prev: String::new(),
        }
    }

    fn write(&mut self, kind: &str, data: Value) -> Result<(), BundleError> {
        let hash = link(&self.prev, self.seq, kind, &data);
        let line = Line {
            seq: self.seq,
            kind: kind.to_string(),
            data,
            prev: std::mem::take(&mut self.prev),
            hash: hash.clone(),
        };
        serde_json::to_writer(&mut *self.out, &line).map_err(std::io::Error::from)?;
        self.out.write_all(b"\n")?;
        self.seq += 1;
        self.prev = hash;
        Ok(())
    }
}

/// Reads a bundle and checks its chain; returns its records (header and end excluded) and
/// summary, or names the first record that does not belong.
pub fn read(
    input: &mut dyn BufRead,
    source_name: &str,
) -> Result<(Vec<BundleRecord>, BundleSummary), BundleError> {
    let invalid = |message: String| BundleError::Invalid {
        source_name: source_name.to_string(),
        message,
    };
    let mut records = Vec::new();
    let mut prev = String::new();
    let mut expected_seq = 0u64;
    let mut run_uid = None;
    let mut ended = false;
    let mut counts = std::collections::BTreeMap::new();
    for (index, line) in input.lines().enumerate() {
        let line =
            line.map_err(|e| invalid(format!("line {}: not UTF-8 text ({e})", index + 1)))?;
        if line.trim().is_empty() {
            continue;
        }
        if ended {
            return Err(invalid(format!(
                "line {}: records follow the end record",
                index + 1
            )));
        }
        let line: Line = serde_json::from_str(&line)
            .map_err(|e| invalid(format!("line {}: not a bundle record ({e})", index + 1)))?;
        let what = describe(&line.kind, &line.data);
        let altered = |message: &str| BundleError::Altered {
            source_name: source_name.to_string(),
            seq: line.seq,
            what: what.clone(),
            message: message.to_string(),
        };
        if line.seq != expected_seq {
            return Err(altered(&format!(
                "expected record {expected_seq} here; a record was removed, added or moved"
            )));
        }
        if line.prev != prev {
            return Err(altered("it does not follow the record before it"));
        }
        if link(&prev, line.seq, &line.kind, &line.data) != line.hash {
            return Err(altered("its content does not match its hash"));
        }
        prev = line.hash.clone();
        expected_seq += 1;
        match line.kind.as_str() {
            "header" => {
                if line.seq != 0 {
                    return Err(altered("a header inside the bundle"));
                }
                if line.data["format"] != BUNDLE_FORMAT {
                    return Err(invalid(format!(
                        "the format is {}, not {BUNDLE_FORMAT}",
                        line.data["format"]
                    )));
                }
                if line.data["version"].as_u64() != Some(u64::from(BUNDLE_VERSION)) {
                    return Err(invalid(format!(
                        "bundle version {}; this tuningfork reads version {BUNDLE_VERSION}",
                        line.data["version"]
                    )));
                }
                run_uid = line.data["run"].as_str().map(str::to_string);
            }
            "end" => {
                // The count includes the end record itself.
                if line.data["records"].as_u64() != Some(line.seq + 1) {
                    return Err(altered("the record count does not match"));
                }
                ended = true;
            }
            kind => {
                if line.seq == 0 {
                    return Err(invalid("the first record is not a header".into()));
                }
                let Value::Object(data) = line.data else {
                    return Err(altered("its data is not an object"));
                };
                *counts.entry(kind.to_string()).or_insert(0) += 1;
                records.push(BundleRecord {
                    kind: kind.to_string(),
                    data,
                });
            }
        }
    }
    if !ended {
        return Err(invalid(
            "the bundle ends without its end record: it was cut short".into(),
        ));
    }
    let run_uid = run_uid.ok_or_else(|| invalid("the header names no run".into()))?;
    Ok((
        records,
        BundleSummary {
            run_uid,
            records: expected_seq,
            head: prev,
            counts,
        },
    ))
}

/// Checks a bundle and stores its run; returns the new local run id and the summary.
pub fn import(
    store: &Store,
    input: &mut dyn BufRead,
    source_name: &str,
) -> Result<(i64, BundleSummary), BundleError> {
    let (records, summary) = read(input, source_name)?;
    let run_id = store.import_run_records(&records, &summary.head, source_name)?;
    Ok((run_id, summary))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineFingerprint;
    use crate::store::{NewCall, NewRun};

    fn store_with_a_run() -> (Store, i64) {
        let store = Store::open_in_memory().unwrap();
        let run = store
            .begin_run(&NewRun {
                kind: "generate",
                config: serde_json::json!({ "prompt": "hi" }),
                seed: Some(1),
                model_sha256: Some("abc"),
                fingerprint: &EngineFingerprint::current(),
            })
            .unwrap();
        for (i, output) in ["one", "two ½", "three"].iter().enumerate() {
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
                    latency_ms: 977.421_312_000_000_1,
                    cached: false,
                    error: None,
                })
                .unwrap();
        }
        (store, run)
    }

    fn exported(store: &Store, run: i64) -> String {
        let mut out = Vec::new();
        export(store, run, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_bundle_reads_back_and_imports_once() {
        let (store, run) = store_with_a_run();
        let text = exported(&store, run);
        let (records, summary) = read(&mut text.as_bytes(), "b").unwrap();
        assert_eq!(summary.counts["call"], 3);
        assert_eq!(summary.records, 6);
        assert_eq!(records[0].kind, "run");
        assert_eq!(
            summary.head,
            digest(
                &store.run(&run.to_string()).unwrap().uid,
                store.run_records(run).unwrap()
            )
            .unwrap()
        );

        let other = Store::open_in_memory().unwrap();
        let (imported, _) = import(&other, &mut text.as_bytes(), "b").unwrap();
        assert_eq!(other.run_calls(imported).unwrap().len(), 3);
        assert_eq!(other.run_import(imported).unwrap().unwrap().0, summary.head);
        // Floats and text survive exactly.
        assert_eq!(
            other.run_calls(imported).unwrap()[1].output,
            store.run_calls(run).unwrap()[1].output
        );
        assert_eq!(
            other.run_calls(imported).unwrap()[0].latency_ms,
            977.421_312_000_000_1
        );
        let err = import(&other, &mut text.as_bytes(), "b").unwrap_err();
        assert!(err.to_string().contains("already"), "{err}");
    }

    #[test]
    fn damaged_bundles_are_named() {
        let (store, run) = store_with_a_run();
        let text = exported(&store, run);
        let lines: Vec<&str> = text.lines().collect();
        let cut = lines[..lines.len() - 1].join("\n");
        let err = read(&mut cut.as_bytes(), "b.bundle")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("b.bundle") && err.contains("cut short"),
            "{err}"
        );

        let swapped = [lines[0], lines[2], lines[1]].join("\n");
        let err = read(&mut swapped.as_bytes(), "b").unwrap_err().to_string();
        assert!(err.contains("record 2 (call id 1)"), "{err}");

        let err = read(&mut "not json\n".as_bytes(), "b")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 1"), "{err}");

        let foreign = text.replacen(BUNDLE_FORMAT, "other.format", 1);
        let err = read(&mut foreign.as_bytes(), "b").unwrap_err().to_string();
        assert!(err.contains("record 0"), "{err}");
    }
}
