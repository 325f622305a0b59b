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
    /// Train or validation rows that a test example repeats: refused (the default), dropped
    /// from train and val, or accepted. Dropped and accepted rows are recorded with the run.
    #[serde(default, skip_serializing_if = "is_default")]
    pub overlap: Overlap,
    /// Lines that cannot be read as an example (not JSON, not an object, a field missing, a
    /// key twice, not UTF-8): refused (the default) or skipped. Skipped lines are recorded with
    /// the run, with their numbers.
    #[serde(default, skip_serializing_if = "is_default")]
    pub broken_lines: BrokenLines,
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// What to do with train or validation rows whose values a test example has too.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Overlap {
    /// Refuse the dataset: held-out scores would be inflated.
    #[default]
    Refuse,
    /// Drop the repeated rows from train and val; the test split stays whole.
    Drop,
    /// Keep them, knowing the test score is partly on seen examples.
    Accept,
}

/// What to do with lines that cannot be read as an example.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BrokenLines {
    /// Refuse the file, naming the first broken line.
    #[default]
    Refuse,
    /// Leave the line out and go on.
    Skip,
}

/// What loading changed about the data as written, recorded with every run that uses it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DataCleaning {
    /// Lines left out (`broken_lines = "skip"`), as `file:line` with the reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<SkippedLine>,
    /// Train and val rows left out because a test example repeats them (`overlap = "drop"`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dropped: Vec<String>,
    /// Test examples kept although train or val repeats them (`overlap = "accept"`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accepted: Vec<String>,
}

impl DataCleaning {
    pub fn is_empty(&self) -> bool {
        self.skipped.is_empty() && self.dropped.is_empty() && self.accepted.is_empty()
    }
}

impl std::fmt::Display for DataCleaning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |items: Vec<&str>| {
            let shown: Vec<&str> = items.iter().take(5).copied().collect();
            let more = items.len().saturating_sub(shown.len());
            match more {
                0 => shown.join(", "),
                n => format!("{}, and {n} more", shown.join(", ")),
            }
        };
        let mut parts = Vec::new();
        if !self.skipped.is_empty() {
            parts.push(format!(
                "skipped {} ({})",
                count(self.skipped.len(), "broken line"),
                list(self.skipped.iter().map(|s| s.source.as_str()).collect())
            ));
        }
        if !self.dropped.is_empty() {
            parts.push(format!(
                "dropped {} that the test split repeats ({})",
                count(self.dropped.len(), "train/val row"),
                list(self.dropped.iter().map(String::as_str).collect())
            ));
        }
        if !self.accepted.is_empty() {
            parts.push(format!(
                "kept {} that train or val repeats ({})",
                count(self.accepted.len(), "test example"),
                list(self.accepted.iter().map(String::as_str).collect())
            ));
        }
        f.write_str(&parts.join("; "))
    }
}

/// `n thing`, with an `s` when `n` is not one.
fn count(n: usize, thing: &str) -> String {
    format!("{n} {thing}{}", if n == 1 { "" } else { "s" })
}

/// A line left out of a dataset, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkippedLine {
    /// `file:line`.
    pub source: String,
    pub reason: String,
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
    /// Lines skipped and rows dropped or accepted on the way.
    pub cleaning: DataCleaning,
}

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: not a JSON object ({message}); each line must be one JSON object{SKIP_HINT}")]
    Malformed {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}:{line}: the field `{field}` (key `{key}`) is missing; the line has keys {keys}. Map it with [dataset.fields] {field} = \"<key>\"{SKIP_HINT}")]
    MissingField {
        path: PathBuf,
        line: usize,
        field: String,
        key: String,
        keys: String,
    },
    #[error("the {split} split is empty{hint}")]
    EmptySplit { split: &'static str, hint: String },
    #[error("{count} test examples also appear in the training or validation data (first: {test_source} = {train_source}); held-out results would be inflated. Remove the duplicates, or set overlap = \"drop\" in [dataset] to leave them out of train and val (overlap = \"accept\" keeps them); either is recorded with the run")]
    Leak {
        count: usize,
        test_source: String,
        train_source: String,
    },
    #[error("{path}:{line}: the key `{key}` appears twice in one object; keep one{SKIP_HINT}")]
    DuplicateKey {
        path: PathBuf,
        line: usize,
        key: String,
    },
    #[error("{path}:{line}: not UTF-8 text (byte {column} of the line); convert the file to UTF-8, e.g. `iconv -f latin1 -t utf-8 FILE > NEW`{SKIP_HINT}")]
    NotUtf8 {
        path: PathBuf,
        line: usize,
        column: usize,
    },
    #[error("invalid [dataset] section: {0}")]
    Spec(String),
}

/// How a broken line's error ends: the way to go on without it.
const SKIP_HINT: &str = " (or set broken_lines = \"skip\" in [dataset] to leave such lines out)";

impl DatasetError {
    /// The line a broken-line error is about, if it is one.
    fn broken_line(&self) -> Option<usize> {
        match self {
            DatasetError::Malformed { line, .. }
            | DatasetError::MissingField { line, .. }
            | DatasetError::DuplicateKey { line, .. }
            | DatasetError::NotUtf8 { line, .. } => Some(*line),
            _ => None,
        }
    }
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
/// `mapping`. The first broken line is an error naming it.
pub fn read_jsonl(
    path: &Path,
    needed: &[String],
    mapping: &BTreeMap<String, String>,
) -> Result<Vec<Example>, DatasetError> {
    read_examples(path, needed, mapping, BrokenLines::Refuse, &mut Vec::new())
}

/// Reads a JSONL file as [`read_jsonl`] does; with [`BrokenLines::Skip`], a broken line is
/// left out and added to `skipped` instead.
///
/// What a file may hold: UTF-8 text (a leading byte-order mark is ignored), lines ending in
/// `\n` or `\r\n`, blank lines (ignored), lines of any length, one JSON object per line with
/// each key once (a key twice is a broken line: which value was meant is unknown).
pub fn read_examples(
    path: &Path,
    needed: &[String],
    mapping: &BTreeMap<String, String>,
    broken: BrokenLines,
    skipped: &mut Vec<SkippedLine>,
) -> Result<Vec<Example>, DatasetError> {
    let first = skipped.len();
    let mut examples = Vec::new();
    for (number, object) in objects(path, broken, skipped)? {
        match field_values(&object, needed, mapping, path, number) {
            Ok(values) => examples.push(Example {
                source: format!("{}:{number}", path.display()),
                values,
            }),
            Err(e) => skip_or_fail(e, broken, path, skipped)?,
        }
    }
    // Lines that are not objects were found on the first pass: list the file's in order.
    skipped[first..].sort_by_key(|s| {
        s.source
            .rsplit(':')
            .next()
            .and_then(|n| n.parse::<usize>().ok())
    });
    Ok(examples)
}

/// Records a broken line as skipped, or returns its error.
fn skip_or_fail(
    e: DatasetError,
    broken: BrokenLines,
    path: &Path,
    skipped: &mut Vec<SkippedLine>,
) -> Result<(), DatasetError> {
    match (broken, e.broken_line()) {
        (BrokenLines::Skip, Some(line)) => {
            let reason = e.to_string();
            // The reason without the location (the source says it) and the hint.
            let prefix = format!("{}:{line}: ", path.display());
            let reason = reason.strip_prefix(&prefix).unwrap_or(&reason);
            let reason = reason.strip_suffix(SKIP_HINT).unwrap_or(reason);
            skipped.push(SkippedLine {
                source: format!("{}:{line}", path.display()),
                reason: reason.to_string(),
            });
            Ok(())
        }
        _ => Err(e),
    }
}

/// A line of a JSONL file.
type JsonObject = serde_json::Map<String, Value>;

/// The JSON object on each non-blank line of `path`, with its line number; a line that is not
/// one is an error naming the line (or, with [`BrokenLines::Skip`], recorded in `skipped`).
fn objects(
    path: &Path,
    broken: BrokenLines,
    skipped: &mut Vec<SkippedLine>,
) -> Result<Vec<(usize, JsonObject)>, DatasetError> {
    let bytes = std::fs::read(path).map_err(|source| DatasetError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
    let mut objects = Vec::new();
    for (index, line) in bytes.split(|b| *b == b'\n').enumerate() {
        let number = index + 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        match object(line, path, number) {
            Ok(Some(object)) => objects.push((number, object)),
            Ok(None) => {}
            Err(e) => skip_or_fail(e, broken, path, skipped)?,
        }
    }
    Ok(objects)
}

/// The JSON object on one line, `None` for a blank line.
fn object(line: &[u8], path: &Path, number: usize) -> Result<Option<JsonObject>, DatasetError> {
    let line = std::str::from_utf8(line).map_err(|e| DatasetError::NotUtf8 {
        path: path.to_path_buf(),
        line: number,
        column: e.valid_up_to() + 1,
    })?;
    if line.trim().is_empty() {
        return Ok(None);
    }
    let malformed = |message: String| DatasetError::Malformed {
        path: path.to_path_buf(),
        line: number,
        message,
    };
    let object = match serde_json::from_str::<Value>(line) {
        Ok(Value::Object(object)) => object,
        Ok(other) => return Err(malformed(format!("found {}", kind(&other)))),
        Err(e) => return Err(malformed(e.to_string())),
    };
    // A JSON map keeps the last of two equal keys; look again for one that came twice.
    if let Some(key) = duplicate_key(line) {
        return Err(DatasetError::DuplicateKey {
            path: path.to_path_buf(),
            line: number,
            key,
        });
    }
    Ok(Some(object))
}

/// The first top-level key that the JSON object `text` has twice (a JSON map keeps only the
/// last of two equal keys, so the parsed value cannot tell).
pub(crate) fn duplicate_key(text: &str) -> Option<String> {
    serde_json::from_str::<KeyCheck>(text).ok()?.0
}

/// The first top-level key that a JSON object has twice.
struct KeyCheck(Option<String>);

impl<'de> Deserialize<'de> for KeyCheck {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Keys;
        impl<'de> serde::de::Visitor<'de> for Keys {
            type Value = KeyCheck;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<KeyCheck, A::Error> {
                let mut seen = std::collections::BTreeSet::new();
                let mut twice = None;
                while let Some(key) = map.next_key::<String>()? {
                    map.next_value::<serde::de::IgnoredAny>()?;
                    if twice.is_none() && !seen.insert(key.clone()) {
                        twice = Some(key);
                    }
                }
                Ok(KeyCheck(twice))
            }
        }
        deserializer.deserialize_map(Keys)
    }
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

/// What a JSON value is, for messages ("a string", "an array", …).
pub(crate) fn kind(value: &Value) -> &'static str {
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
    let mut cleaning = DataCleaning::default();
    let mut read = |path: &PathBuf| {
        read_examples(
            &resolve(path),
            needed,
            &spec.fields,
            spec.broken_lines,
            &mut cleaning.skipped,
        )
    };
    let (train, val, test) = match (&spec.path, &spec.train, &spec.val, &spec.test) {
        (Some(path), None, None, None) => {
            let all = read(path)?;
            split_one(all, &spec.split)?
        }
        (None, Some(train), Some(val), Some(test)) => (read(train)?, read(val)?, read(test)?),
        _ => {
            return Err(DatasetError::Spec(
                "give either `path` (one file, split by [dataset.split]) or all of `train`, `val` and `test`".into(),
            ))
        }
    };
    let mut train = train;
    if let Some(added) = spec.added.as_ref().filter(|p| resolve(p).exists()) {
        train.extend(read(added)?);
    }
    let (mut train, mut val) = (train, val);
    match spec.overlap {
        Overlap::Refuse => check_leaks(&train, &val, &test)?,
        Overlap::Drop => {
            let held_out: std::collections::BTreeSet<String> =
                test.iter().map(|e| canonical(&e.values)).collect();
            for examples in [&mut train, &mut val] {
                examples.retain(|e| {
                    let keep = !held_out.contains(&canonical(&e.values));
                    if !keep {
                        cleaning.dropped.push(e.source.clone());
                    }
                    keep
                });
            }
        }
        Overlap::Accept => {
            let seen: std::collections::BTreeSet<String> = train
                .iter()
                .chain(&val)
                .map(|e| canonical(&e.values))
                .collect();
            cleaning.accepted = test
                .iter()
                .filter(|e| seen.contains(&canonical(&e.values)))
                .map(|e| e.source.clone())
                .collect();
        }
    }
    if !cleaning.is_empty() {
        tracing::warn!("data of this task: {cleaning}");
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
    Ok(Datasets {
        train: TrainSet(Split::new("train", train)),
        val: ValSet(Split::new("val", val)),
        test: TestSet(Split::new("test", test)),
        cleaning,
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
    for (number, object) in objects(file, BrokenLines::Refuse, &mut Vec::new())? {
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
            overlap: Overlap::Refuse,
            broken_lines: BrokenLines::Refuse,
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
            ..spec(PathBuf::new())
        };
        let err = load(&files, dir.path(), &needed()).unwrap_err().to_string();
        assert!(err.contains("2 test examples also appear"), "{err}");
        assert!(err.contains("test.jsonl:1"), "{err}");
    }

    fn write_bytes(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn text_as_users_have_it_reads_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let plain = rows(20).join("\n") + "\n";
        let reference = load(
            &spec(write(dir.path(), "plain.jsonl", &rows(20))),
            dir.path(),
            &needed(),
        )
        .unwrap();
        let values = |d: &Datasets| {
            [&d.train.0, &d.val.0, &d.test.0].map(|s| {
                s.examples
                    .iter()
                    .map(|e| e.values.clone())
                    .collect::<Vec<_>>()
            })
        };
        // A byte-order mark, Windows line endings, blank lines (also with spaces and a
        // lone \r), and no newline at the end: the same examples.
        let variants: Vec<(&str, Vec<u8>)> = vec![
            (
                "bom.jsonl",
                [b"\xEF\xBB\xBF".as_slice(), plain.as_bytes()].concat(),
            ),
            ("crlf.jsonl", plain.replace('\n', "\r\n").into_bytes()),
            (
                "blank.jsonl",
                format!("\n  \n\r\n{}\n\n", plain.replace('\n', "\n\n")).into_bytes(),
            ),
            (
                "no-final-newline.jsonl",
                plain.trim_end().as_bytes().to_vec(),
            ),
        ];
        for (name, bytes) in variants {
            let path = write_bytes(dir.path(), name, &bytes);
            let data =
                load(&spec(path), dir.path(), &needed()).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(values(&data), values(&reference), "{name}");
        }
        // A very long line (4 MiB of text) is an example like any other.
        let mut lines = rows(20);
        let long = "word ".repeat(800_000);
        lines[5] = format!(r#"{{"review": "{long}", "sentiment": "pos"}}"#);
        let data = load(
            &spec(write(dir.path(), "long.jsonl", &lines)),
            dir.path(),
            &needed(),
        )
        .unwrap();
        let all = [&data.train.0, &data.val.0, &data.test.0];
        assert!(all
            .iter()
            .flat_map(|s| &s.examples)
            .any(|e| e.values["text"].as_str().map(str::len) == Some(long.len())));
    }

    #[test]
    fn a_key_twice_and_text_that_is_not_utf8_name_their_line() {
        let dir = tempfile::tempdir().unwrap();
        let mut lines = rows(10);
        lines[2] = r#"{"review": "a", "sentiment": "pos", "review": "b"}"#.into();
        let path = write(dir.path(), "twice.jsonl", &lines);
        let err = load(&spec(path), dir.path(), &needed())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("twice.jsonl:3") && err.contains("`review` appears twice"),
            "{err}"
        );
        // Latin-1 text on line 4.
        let mut bytes = rows(10)[..3].join("\n").into_bytes();
        bytes.extend(b"\n{\"review\": \"caf\xe9\", \"sentiment\": \"pos\"}\n");
        bytes.extend(rows(10)[3..].join("\n").into_bytes());
        let path = write_bytes(dir.path(), "latin1.jsonl", &bytes);
        let err = load(&spec(path.clone()), dir.path(), &needed())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("latin1.jsonl:4") && err.contains("not UTF-8") && err.contains("iconv"),
            "{err}"
        );
        assert!(err.contains("broken_lines = \"skip\""), "{err}");
    }

    #[test]
    fn broken_lines_can_be_skipped_and_are_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let mut lines = rows(20);
        lines[3] = "{not json".into();
        lines[8] = r#"{"review": "x"}"#.into();
        lines[11] = "[1, 2]".into();
        let path = write(dir.path(), "some-bad.jsonl", &lines);
        let mut s = spec(path);
        assert!(load(&s, dir.path(), &needed()).is_err());
        s.broken_lines = BrokenLines::Skip;
        let data = load(&s, dir.path(), &needed()).unwrap();
        let total = data.train.0.len() + data.val.0.len() + data.test.0.len();
        assert_eq!(total, 17);
        let skipped: Vec<&str> = data
            .cleaning
            .skipped
            .iter()
            .map(|l| l.source.as_str())
            .collect();
        assert!(skipped[0].ends_with("some-bad.jsonl:4"), "{skipped:?}");
        assert!(skipped[1].ends_with("some-bad.jsonl:9"), "{skipped:?}");
        assert!(skipped[2].ends_with("some-bad.jsonl:12"), "{skipped:?}");
        assert!(data.cleaning.skipped[1].reason.contains("`sentiment`"));
        assert!(data.cleaning.to_string().contains("skipped 3 broken lines"));
        let one = DataCleaning {
            dropped: vec!["d.jsonl:2".into()],
            ..DataCleaning::default()
        };
        assert!(
            one.to_string().contains("dropped 1 train/val row that"),
            "{one}"
        );
        // The choice is part of the task as written, so it is in the spec a run records.
        let toml = toml::to_string(&s).unwrap();
        assert!(toml.contains("broken_lines = \"skip\""), "{toml}");
    }

    #[test]
    fn test_rows_repeated_in_train_can_be_dropped_or_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let all = rows(12);
        let files = |overlap: Overlap| DatasetSpec {
            path: None,
            train: Some(write(dir.path(), "train.jsonl", &all[..6])),
            val: Some(write(dir.path(), "val.jsonl", &all[6..9])),
            // Test repeats one train row and one val row.
            test: Some(write(
                dir.path(),
                "test.jsonl",
                &[all[9].clone(), all[1].clone(), all[7].clone()],
            )),
            overlap,
            ..spec(PathBuf::new())
        };
        assert!(load(&files(Overlap::Refuse), dir.path(), &needed())
            .unwrap_err()
            .to_string()
            .contains("overlap = \"drop\""));
        let dropped = load(&files(Overlap::Drop), dir.path(), &needed()).unwrap();
        assert_eq!(dropped.train.0.len(), 5);
        assert_eq!(dropped.val.0.len(), 2);
        assert_eq!(dropped.test.0.len(), 3);
        assert_eq!(dropped.cleaning.dropped.len(), 2);
        assert!(dropped.cleaning.dropped[0].ends_with("train.jsonl:2"));
        assert!(dropped.cleaning.dropped[1].ends_with("val.jsonl:2"));
        let accepted = load(&files(Overlap::Accept), dir.path(), &needed()).unwrap();
        assert_eq!(accepted.train.0.len(), 6);
        assert_eq!(accepted.cleaning.accepted.len(), 2);
        assert!(accepted.cleaning.dropped.is_empty());
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
