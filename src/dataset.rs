//! Datasets: JSONL files, field mapping, deterministic splits and content hashes.
//!
//! A task's data is either three files (train, val, test) or one file cut into the three by
//! fractions after a seeded shuffle. Every example's fields are renamed from the file's keys to
//! the program's field names. Each split's content hash is recorded with a run.
//!
//! Architecture Invariant: [`TrainSet`], [`ValSet`] and [`TestSet`] are distinct types, so
//! code that must never see test data (the optimizers) can say so in its signature.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::program::Values;
use crate::random::Rng;

/// Where the data comes from and how it maps onto the program's fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetSpec {
    /// One file to split by `split`.
    #[serde(default)]
    pub path: Option<PathBuf>,
    #[serde(default)]
    pub train: Option<PathBuf>,
    #[serde(default)]
    pub val: Option<PathBuf>,
    #[serde(default)]
    pub test: Option<PathBuf>,
    #[serde(default)]
    pub split: SplitSpec,
    /// Reviewed rows added later (`tuningfork dataset add`): they join the train split only,
    /// so the seeded split of `path` and the validation and test splits never change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub added: Option<PathBuf>,
    /// Program field name → key in the file, for fields whose names differ.
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
}

/// Fractions for splitting one file, and the seed of the shuffle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SplitSpec {
    pub train: f64,
    pub val: f64,
    pub test: f64,
    pub seed: u64,
}

impl Default for SplitSpec {
    fn default() -> Self {
        SplitSpec {
            train: 0.6,
            val: 0.2,
            test: 0.2,
            seed: 0,
        }
    }
}

/// One example: where it came from and its values under the program's field names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Example {
    /// `file:line`, for messages and stored results.
    pub source: String,
    pub values: Values,
}

/// A named, hashed list of examples.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Split {
    pub name: &'static str,
    pub examples: Vec<Example>,
    /// sha256 of the canonical JSON lines of the examples' values, in order.
    pub hash: String,
}

/// Examples an optimizer may learn from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrainSet(pub Split);
/// Examples an optimizer may score candidates on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ValSet(pub Split);
/// Held-out examples, evaluated once at the end; never given to an optimizer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TestSet(pub Split);

/// The three splits of a task.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Datasets {
    pub train: TrainSet,
    pub val: ValSet,
    pub test: TestSet,
}

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: not a JSON object ({message}); each line must be one JSON object")]
    Malformed {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}:{line}: the field `{field}` (key `{key}`) is missing; the line has keys {keys}. Map it with [dataset.fields] {field} = \"<key>\"")]
    MissingField {
        path: PathBuf,
        line: usize,
        field: String,
        key: String,
        keys: String,
    },
    #[error("the {split} split is empty{hint}")]
    EmptySplit { split: &'static str, hint: String },
    #[error("{count} test examples also appear in the training data (first: {test_source} = {train_source}); held-out results would be inflated. Remove the duplicates")]
    Leak {
        count: usize,
        test_source: String,
        train_source: String,
    },
    #[error("invalid [dataset] section: {0}")]
    Spec(String),
}

impl Split {
    pub fn new(name: &'static str, examples: Vec<Example>) -> Self {
        let mut hasher = Sha256::new();
        for example in &examples {
            hasher.update(canonical(&example.values).as_bytes());
            hasher.update(b"\n");
        }
        Split {
            name,
            examples,
            hash: hex::encode(hasher.finalize()),
        }
    }

    pub fn len(&self) -> usize {
        self.examples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.examples.is_empty()
    }
}

/// One line of canonical JSON (keys sorted by the map).
fn canonical(values: &Values) -> String {
    serde_json::to_string(values).expect("values serialize")
}

/// Reads a JSONL file, keeping the fields in `needed` (program field names), renamed through
/// `mapping`. Blank lines are skipped.
pub fn read_jsonl(
    path: &Path,
    needed: &[String],
    mapping: &BTreeMap<String, String>,
) -> Result<Vec<Example>, DatasetError> {
    objects(path)?
        .into_iter()
        .map(|(number, object)| {
            Ok(Example {
                source: format!("{}:{number}", path.display()),
                values: field_values(&object, needed, mapping, path, number)?,
            })
        })
        .collect()
}

/// A line of a JSONL file.
type JsonObject = serde_json::Map<String, Value>;

/// The JSON object on each non-blank line of `path`, with its line number; a line that is not
/// one is an error naming the line.
fn objects(path: &Path) -> Result<Vec<(usize, JsonObject)>, DatasetError> {
    let text = std::fs::read_to_string(path).map_err(|source| DatasetError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut objects = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        let malformed = |message: String| DatasetError::Malformed {
            path: path.to_path_buf(),
            line: number,
            message,
        };
        match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(object)) => objects.push((number, object)),
            Ok(other) => return Err(malformed(format!("found {}", kind(&other)))),
            Err(e) => return Err(malformed(e.to_string())),
        }
    }
    Ok(objects)
}

/// The values of `needed` (program field names) in `object`, whose keys are renamed through
/// `mapping`; a missing one is an error naming the line and the keys it has.
fn field_values(
    object: &JsonObject,
    needed: &[String],
    mapping: &BTreeMap<String, String>,
    path: &Path,
    line: usize,
) -> Result<Values, DatasetError> {
    needed
        .iter()
        .map(|field| {
            let key = mapping.get(field).unwrap_or(field);
            let value = object.get(key).ok_or_else(|| DatasetError::MissingField {
                path: path.to_path_buf(),
                line,
                field: field.clone(),
                key: key.clone(),
                keys: object
                    .keys()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
            Ok((field.clone(), value.clone()))
        })
        .collect()
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Loads the three splits. Relative paths are taken from `base`. `needed` lists every field
/// an example must have (the program's inputs and the metric's gold fields).
pub fn load(spec: &DatasetSpec, base: &Path, needed: &[String]) -> Result<Datasets, DatasetError> {
    let resolve = |p: &PathBuf| {
        if p.is_absolute() {
            p.clone()
        } else {
            base.join(p)
        }
    };
    let (train, val, test) = match (&spec.path, &spec.train, &spec.val, &spec.test) {
        (Some(path), None, None, None) => {
            let all = read_jsonl(&resolve(path), needed, &spec.fields)?;
            split_one(all, &spec.split)?
        }
        (None, Some(train), Some(val), Some(test)) => (
            read_jsonl(&resolve(train), needed, &spec.fields)?,
            read_jsonl(&resolve(val), needed, &spec.fields)?,
            read_jsonl(&resolve(test), needed, &spec.fields)?,
        ),
        _ => {
            return Err(DatasetError::Spec(
                "give either `path` (one file, split by [dataset.split]) or all of `train`, `val` and `test`".into(),
            ))
        }
    };
    let mut train = train;
    if let Some(added) = spec.added.as_ref().map(resolve).filter(|p| p.exists()) {
        train.extend(read_jsonl(&added, needed, &spec.fields)?);
    }
    for (name, examples) in [("train", &train), ("val", &val), ("test", &test)] {
        if examples.is_empty() {
            return Err(DatasetError::EmptySplit {
                split: name,
                hint: if spec.path.is_some() {
                    "; the file has too few lines for the split fractions".to_string()
                } else {
                    String::new()
                },
            });
        }
    }
    check_leaks(&train, &val, &test)?;
    Ok(Datasets {
        train: TrainSet(Split::new("train", train)),
        val: ValSet(Split::new("val", val)),
        test: TestSet(Split::new("test", test)),
    })
}

/// Train, val and test examples, before hashing.
type ThreeParts = (Vec<Example>, Vec<Example>, Vec<Example>);

/// Shuffles with the split seed, then cuts by the fractions (test gets the remainder).
fn split_one(mut all: Vec<Example>, spec: &SplitSpec) -> Result<ThreeParts, DatasetError> {
    let total = spec.train + spec.val + spec.test;
    if [spec.train, spec.val, spec.test]
        .iter()
        .any(|f| !f.is_finite() || *f <= 0.0)
        || (total - 1.0).abs() > 1e-6
    {
        return Err(DatasetError::Spec(format!(
            "split fractions must be positive and add up to 1 (train {} + val {} + test {} = {total})",
            spec.train, spec.val, spec.test
        )));
    }
    let mut rng = Rng::new(spec.seed);
    // Fisher-Yates with our own generator, so a seed splits the same way everywhere.
    for i in (1..all.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        all.swap(i, j);
    }
    let n = all.len();
    let n_train = (n as f64 * spec.train).round() as usize;
    let n_val = ((n as f64 * spec.val).round() as usize).min(n - n_train.min(n));
    let test = all.split_off((n_train + n_val).min(n));
    let val = all.split_off(n_train.min(all.len()));
    Ok((all, val, test))
}

/// Refuses test examples whose values equal a training or validation example's.
/// What `dataset add` did with a file of rows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Added {
    /// The file the rows were appended to.
    pub file: PathBuf,
    pub added: usize,
    /// Rows still marked `"_review": "unreviewed"`, left out.
    pub unreviewed: usize,
    /// Rows whose inputs the dataset (or the file) already has, left out.
    pub duplicates: usize,
    /// Rows whose inputs are a validation or test example's, left out.
    pub leaks: usize,
    /// The train split's hash before and after.
    pub train_hash: (String, String),
    /// The hash of all three splits after.
    pub dataset_hash: String,
}

/// The marker `dataset from-traces` puts on proposed rows; a reviewer removes it or sets it to
/// `reviewed`.
pub const REVIEW_KEY: &str = "_review";

/// Appends the reviewed rows of `file` to the dataset's `added` file. `inputs` are the fields
/// that identify an example: a row whose inputs a validation or test example has is a leak, one
/// the train split (or an earlier row) has is a duplicate; both are left out, as are rows still
/// marked unreviewed.
pub fn add_reviewed(
    spec: &DatasetSpec,
    base: &Path,
    needed: &[String],
    inputs: &[String],
    file: &Path,
) -> Result<Added, DatasetError> {
    let Some(added_path) = spec.added.as_ref() else {
        return Err(DatasetError::Spec(
            "the task's [dataset] names no `added` file: add `added = \"added.jsonl\"` to it \
             (rows added there join the train split only, so validation and test never change)"
                .into(),
        ));
    };
    let target = if added_path.is_absolute() {
        added_path.clone()
    } else {
        base.join(added_path)
    };
    let before = load(spec, base, needed)?;
    let key = |values: &Values| {
        let only: Values = inputs
            .iter()
            .filter_map(|f| values.get(f).map(|v| (f.clone(), v.clone())))
            .collect();
        canonical(&only)
    };
    let held_out: std::collections::BTreeSet<String> = before
        .val
        .0
        .examples
        .iter()
        .chain(&before.test.0.examples)
        .map(|e| key(&e.values))
        .collect();
    let mut seen: std::collections::BTreeSet<String> = before
        .train
        .0
        .examples
        .iter()
        .map(|e| key(&e.values))
        .collect();
    let (mut unreviewed, mut duplicates, mut leaks) = (0, 0, 0);
    let mut lines = Vec::new();
    for (number, object) in objects(file)? {
        if object.get(REVIEW_KEY).and_then(Value::as_str) == Some("unreviewed") {
            unreviewed += 1;
            continue;
        }
        let values = field_values(&object, needed, &spec.fields, file, number)?;
        // Written under the file's keys, so the dataset's field mapping reads it back.
        let row: JsonObject = values
            .iter()
            .map(|(field, value)| {
                let key = spec.fields.get(field).unwrap_or(field);
                (key.clone(), value.clone())
            })
            .collect();
        let identity = key(&values);
        if held_out.contains(&identity) {
            leaks += 1;
        } else if !seen.insert(identity) {
            duplicates += 1;
        } else {
            lines.push(Value::Object(row).to_string());
        }
    }
    if !lines.is_empty() {
        use std::io::Write;
        let io = |source| DatasetError::Read {
            path: target.clone(),
            source,
        };
        let mut out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&target)
            .map_err(io)?;
        // A file that does not end in a newline gets one, so rows never run together.
        let ends_clean = std::fs::read(&target)
            .map(|b| b.is_empty() || b.ends_with(b"\n"))
            .unwrap_or(true);
        let mut text = if ends_clean {
            String::new()
        } else {
            "\n".to_string()
        };
        for line in &lines {
            text.push_str(line);
            text.push('\n');
        }
        out.write_all(text.as_bytes())
            .and_then(|_| out.sync_all())
            .map_err(io)?;
    }
    let after = load(spec, base, needed)?;
    Ok(Added {
        file: target,
        added: lines.len(),
        unreviewed,
        duplicates,
        leaks,
        train_hash: (before.train.0.hash, after.train.0.hash.clone()),
        dataset_hash: after.hash(),
    })
}

impl Datasets {
    /// One hash over the three splits' hashes.
    pub fn hash(&self) -> String {
        let mut hasher = Sha256::new();
        for split in [&self.train.0, &self.val.0, &self.test.0] {
            hasher.update(split.hash.as_bytes());
            hasher.update(b"\n");
        }
        hex::encode(hasher.finalize())
    }
}

fn check_leaks(train: &[Example], val: &[Example], test: &[Example]) -> Result<(), DatasetError> {
    let seen: BTreeMap<String, &Example> = train
        .iter()
        .chain(val)
        .map(|e| (canonical(&e.values), e))
        .collect();
    let leaks: Vec<(&Example, &Example)> = test
        .iter()
        .filter_map(|e| seen.get(&canonical(&e.values)).map(|t| (e, *t)))
        .collect();
    match leaks.first() {
        None => Ok(()),
        Some((test_example, train_example)) => Err(DatasetError::Leak {
            count: leaks.len(),
            test_source: test_example.source.clone(),
            train_source: train_example.source.clone(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, lines: &[String]) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, lines.join("\n")).unwrap();
        path
    }

    fn rows(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| {
                format!(
                    r#"{{"review": "text {i}", "sentiment": "{}"}}"#,
                    if i % 2 == 0 { "pos" } else { "neg" }
                )
            })
            .collect()
    }

    fn spec(path: PathBuf) -> DatasetSpec {
        DatasetSpec {
            path: Some(path),
            train: None,
            val: None,
            test: None,
            split: SplitSpec::default(),
            added: None,
            fields: [("text".to_string(), "review".to_string())]
                .into_iter()
                .collect(),
        }
    }

    fn needed() -> Vec<String> {
        vec!["text".into(), "sentiment".into()]
    }

    #[test]
    fn splits_deterministically_with_mapped_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "d.jsonl", &rows(50));
        let a = load(&spec(path.clone()), dir.path(), &needed()).unwrap();
        let b = load(&spec(path.clone()), dir.path(), &needed()).unwrap();
        assert_eq!(a, b);
        assert_eq!(
            (a.train.0.len(), a.val.0.len(), a.test.0.len()),
            (30, 10, 10)
        );
        assert!(a.train.0.examples[0].values.contains_key("text"));
        let mut other = spec(path);
        other.split.seed = 1;
        let c = load(&other, dir.path(), &needed()).unwrap();
        assert_ne!(a.train.0.hash, c.train.0.hash);
    }

    #[test]
    fn malformed_lines_and_missing_fields_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let mut lines = rows(10);
        lines[3] = "{not json".into();
        let path = write(dir.path(), "bad.jsonl", &lines);
        let err = load(&spec(path), dir.path(), &needed())
            .unwrap_err()
            .to_string();
        assert!(err.contains("bad.jsonl:4"), "{err}");

        let mut lines = rows(10);
        lines[6] = r#"{"review": "x"}"#.into();
        let path = write(dir.path(), "missing.jsonl", &lines);
        let err = load(&spec(path), dir.path(), &needed())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("missing.jsonl:7") && err.contains("`sentiment`"),
            "{err}"
        );

        let path = write(dir.path(), "array.jsonl", &["[1, 2]".to_string()]);
        let err = load(&spec(path), dir.path(), &needed())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("array.jsonl:1") && err.contains("an array"),
            "{err}"
        );
    }

    #[test]
    fn empty_splits_and_leaks_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "tiny.jsonl", &rows(2));
        let err = load(&spec(path), dir.path(), &needed()).unwrap_err();
        assert!(matches!(err, DatasetError::EmptySplit { .. }), "{err}");

        let train = write(dir.path(), "train.jsonl", &rows(6));
        let val = write(dir.path(), "val.jsonl", &rows(6)[..2]);
        let test = write(dir.path(), "test.jsonl", &rows(6)[4..]);
        let files = DatasetSpec {
            path: None,
            train: Some(train),
            val: Some(val),
            test: Some(test),
            split: SplitSpec::default(),
            added: None,
            fields: spec(PathBuf::new()).fields,
        };
        let err = load(&files, dir.path(), &needed()).unwrap_err().to_string();
        assert!(err.contains("2 test examples also appear"), "{err}");
        assert!(err.contains("test.jsonl:1"), "{err}");
    }

    #[test]
    fn bad_fractions_are_explained() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "d.jsonl", &rows(10));
        let mut s = spec(path);
        s.split.test = 0.5;
        let err = load(&s, dir.path(), &needed()).unwrap_err().to_string();
        assert!(err.contains("add up to 1"), "{err}");
    }
}
