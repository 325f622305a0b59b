//! Task files: one TOML file naming the model, the program, the dataset, the metric and the
//! generation settings of a workload. The README documents the format with a full example.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::corpus::Method;
use crate::dataset::DatasetSpec;
use crate::metrics::MetricSpec;
use crate::program::{
    adapter, CallSettings, InputField, OutputField, Predictor, PredictorKind, Program,
    RetrieveStep, Signature,
};

/// The `[task]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSection {
    pub name: String,
    /// A pinned model name (see `tuningfork models list`).
    #[serde(default = "default_model")]
    pub model: String,
    /// The run's seed; every random choice derives from it.
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub description: Option<String>,
}

/// The model a task runs on when it names none, and what `serve` serves by default.
pub fn default_model() -> String {
    "smollm2-135m".to_string()
}

/// What a step does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    #[default]
    Predict,
    ChainOfThought,
    /// Search a corpus (`query`, `corpus`, `k`, `method`, `output`, `model`).
    Retrieve,
}

/// One `[[steps]]` entry: a predictor (`instructions`, `inputs`, `outputs`, `optimize`) or a
/// search (`query`, `corpus`, `k`, `method`, `output`, `model`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    pub name: String,
    #[serde(default)]
    pub kind: StepKind,
    #[serde(default)]
    pub instructions: Option<String>,
    #[serde(default)]
    pub inputs: Option<Vec<InputField>>,
    #[serde(default)]
    pub outputs: Option<Vec<OutputField>>,
    /// `false`: optimizers leave the step as written.
    #[serde(default)]
    pub optimize: Option<bool>,
    #[serde(default)]
    pub query: Option<String>,
    #[serde(default)]
    pub corpus: Option<String>,
    #[serde(default)]
    pub k: Option<usize>,
    #[serde(default)]
    pub method: Option<Method>,
    #[serde(default)]
    pub output: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
}

/// Passages a `retrieve` step returns when it sets no `k`.
pub const DEFAULT_K: usize = 3;

impl StepSpec {
    /// The step as program data, or what is wrong with it.
    fn build(self, after: usize, program: &mut Program) -> Result<(), String> {
        let name = self.name.clone();
        let kind = match self.kind {
            StepKind::Predict => PredictorKind::Predict,
            StepKind::ChainOfThought => PredictorKind::ChainOfThought,
            StepKind::Retrieve => {
                for (key, given) in [
                    ("instructions", self.instructions.is_some()),
                    ("inputs", self.inputs.is_some()),
                    ("outputs", self.outputs.is_some()),
                    ("optimize", self.optimize.is_some()),
                ] {
                    if given {
                        return Err(format!(
                            "step `{name}`: a retrieve step has no `{key}` (it has query, corpus, k, method, output and model)"
                        ));
                    }
                }
                let need = |value: Option<String>, key: &str| {
                    value.ok_or_else(|| format!("step `{name}`: a retrieve step needs `{key}`"))
                };
                program.retrievals.push(RetrieveStep {
                    name: self.name.clone(),
                    after,
                    query: need(self.query, "query")?,
                    corpus: need(self.corpus, "corpus")?,
                    k: self.k.unwrap_or(DEFAULT_K),
                    method: self.method.unwrap_or_default(),
                    output: self.output.unwrap_or_else(|| "passages".to_string()),
                    model: self.model,
                });
                return Ok(());
            }
        };
        for (key, given) in [
            ("query", self.query.is_some()),
            ("corpus", self.corpus.is_some()),
            ("k", self.k.is_some()),
            ("method", self.method.is_some()),
            ("output", self.output.is_some()),
            ("model", self.model.is_some()),
        ] {
            if given {
                return Err(format!(
                    "step `{name}`: `{key}` belongs to retrieve steps (kind = \"retrieve\")"
                ));
            }
        }
        let need =
            |key: &str| format!("step `{name}`: a {kind:?} step needs `{key}`").to_lowercase();
        program.steps.push(Predictor {
            nearest: None,
            name: self.name,
            kind,
            signature: Signature {
                instructions: self.instructions.ok_or_else(|| need("instructions"))?,
                inputs: self.inputs.ok_or_else(|| need("inputs"))?,
                outputs: self.outputs.ok_or_else(|| need("outputs"))?,
            },
            demos: Vec::new(),
            optimize: self.optimize.unwrap_or(true),
        });
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskFile {
    task: TaskSection,
    steps: Vec<StepSpec>,
    dataset: DatasetSpec,
    metric: MetricSpec,
    #[serde(default)]
    generation: CallSettings,
}

/// A parsed, checked task.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Task {
    pub task: TaskSection,
    pub program: Program,
    pub dataset: DatasetSpec,
    pub metric: MetricSpec,
    pub generation: CallSettings,
    /// The directory relative dataset paths are resolved from (the task file's).
    pub base_dir: PathBuf,
    /// The file as written, stored with runs.
    pub source: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("cannot read the task file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the task file {path} is malformed: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("the task file {path} is invalid: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl Task {
    /// Reads and checks a task file.
    pub fn load(path: &Path) -> Result<Task, TaskError> {
        let bytes = std::fs::read(path).map_err(|source| TaskError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        // A byte-order mark, as some editors write, is not part of the TOML.
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
        let source = std::str::from_utf8(bytes)
            .map_err(|e| TaskError::Parse {
                path: path.to_path_buf(),
                message: format!(
                    "line {}: not UTF-8 text; save the file as UTF-8",
                    bytes[..e.valid_up_to()]
                        .iter()
                        .filter(|b| **b == b'\n')
                        .count()
                        + 1
                ),
            })?
            .to_string();
        let base_dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Self::parse(&source, path, base_dir)
    }

    /// Parses task text; `path` names it in errors.
    pub fn parse(source: &str, path: &Path, base_dir: PathBuf) -> Result<Task, TaskError> {
        let file: TaskFile = toml::from_str(source).map_err(|e| TaskError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let invalid = |message: String| TaskError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let mut program = Program {
            steps: Vec::new(),
            retrievals: Vec::new(),
        };
        for step in file.steps {
            let after = program.steps.len();
            step.build(after, &mut program).map_err(&invalid)?;
        }
        let task = Task {
            task: file.task,
            program,
            dataset: file.dataset,
            metric: file.metric,
            generation: file.generation,
            base_dir,
            source: source.to_string(),
        };
        task.program
            .validate(&task.example_inputs())
            .map_err(|e| invalid(e.to_string()))?;
        task.metric.validate().map_err(|e| invalid(e.to_string()))?;
        let produced = task.program.output_names();
        for field in task.metric_prediction_fields() {
            if !produced.contains(&field) {
                return Err(invalid(format!(
                    "the metric scores `{field}`, which no step outputs (outputs: {})",
                    produced.join(", ")
                )));
            }
        }
        task.generation
            .sampling
            .validate()
            .map_err(|e| invalid(format!("[generation]: {e}")))?;
        Ok(task)
    }

    /// The fields every example must provide: step inputs that no earlier step produces.
    pub fn example_inputs(&self) -> Vec<String> {
        let mut produced = std::collections::BTreeSet::new();
        let mut needed = Vec::new();
        let program = &self.program;
        for index in 0..=program.steps.len() {
            for retrieval in program.retrievals.iter().filter(|r| r.after == index) {
                if !produced.contains(&retrieval.query) && !needed.contains(&retrieval.query) {
                    needed.push(retrieval.query.clone());
                }
                produced.insert(retrieval.output.clone());
            }
            let Some(step) = program.steps.get(index) else {
                break;
            };
            for input in &step.signature.inputs {
                if !produced.contains(&input.name) && !needed.contains(&input.name) {
                    needed.push(input.name.clone());
                }
            }
            for output in adapter::reply_fields(&step.signature, step.reasoning()) {
                produced.insert(output.name);
            }
        }
        needed
    }

    /// Every field an example must have: the program's inputs and the metric's gold fields.
    pub fn example_fields(&self) -> Vec<String> {
        let mut fields = self.example_inputs();
        for gold in self.metric.gold_fields() {
            if !fields.contains(&gold) {
                fields.push(gold);
            }
        }
        fields
    }

    fn metric_prediction_fields(&self) -> Vec<String> {
        fn walk(spec: &MetricSpec, out: &mut Vec<String>) {
            match spec {
                MetricSpec::ExactMatch { field, .. }
                | MetricSpec::OneOf { field, .. }
                | MetricSpec::TokenF1 { field, .. }
                | MetricSpec::Contains { field, .. }
                | MetricSpec::Regex { field, .. }
                | MetricSpec::Numeric { field, .. }
                | MetricSpec::RecallAtK { field, .. }
                | MetricSpec::Mrr { field, .. } => out.push(field.clone()),
                MetricSpec::PerField { fields, .. } => out.extend(fields.iter().cloned()),
                MetricSpec::Weighted { parts } => parts.iter().for_each(|p| walk(&p.metric, out)),
                MetricSpec::Command { .. } | MetricSpec::Judge { .. } => {}
            }
        }
        let mut out = Vec::new();
        walk(&self.metric, &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn examples_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/examples")
    }

    #[test]
    fn bundled_examples_load_with_their_data() {
        for name in ["sentiment", "contacts"] {
            let task = Task::load(&examples_dir().join(name).join("task.toml")).unwrap();
            let data = crate::dataset::load(&task.dataset, &task.base_dir, &task.example_fields())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(data.train.0.len() > 20, "{name}");
            assert!(!data.test.0.is_empty());
        }
    }

    #[test]
    fn errors_name_the_file_and_the_problem() {
        let path = Path::new("t.toml");
        let parse = |text: &str| {
            Task::parse(text, path, PathBuf::from("."))
                .unwrap_err()
                .to_string()
        };
        let base = std::fs::read_to_string(examples_dir().join("sentiment/task.toml")).unwrap();

        let err = parse("[task]\nname = 1\n");
        assert!(err.contains("t.toml") && err.contains("line 2"), "{err}");

        let err = parse(&base.replace("field = \"sentiment\"", "field = \"mood\""));
        assert!(err.contains("`mood`"), "{err}");

        let err = parse(&format!("{base}\n[extra]\nx = 1\n"));
        assert!(err.contains("extra"), "{err}");

        let err = parse(&base.replace("[task]\n", "[task]\nseed = 1\nseed = 2\n"));
        assert!(err.contains("duplicate key"), "{err}");
    }

    #[test]
    fn task_files_as_editors_save_them() {
        let dir = tempfile::tempdir().unwrap();
        let base = std::fs::read_to_string(examples_dir().join("sentiment/task.toml")).unwrap();
        let reference = Task::parse(&base, Path::new("t.toml"), PathBuf::from(".")).unwrap();
        for (name, bytes) in [
            (
                "bom.toml",
                [b"\xEF\xBB\xBF".as_slice(), base.as_bytes()].concat(),
            ),
            ("crlf.toml", base.replace('\n', "\r\n").into_bytes()),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            let task = Task::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(task.program, reference.program, "{name}");
        }
        let path = dir.path().join("latin1.toml");
        let bytes = base.replacen("sentiment", "sentim\u{e9}nt", 1);
        let bytes: Vec<u8> = bytes
            .chars()
            .map(|c| if c == '\u{e9}' { 0xe9 } else { c as u8 })
            .collect();
        std::fs::write(&path, bytes).unwrap();
        let err = Task::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("latin1.toml") && err.contains("not UTF-8") && err.contains("line "),
            "{err}"
        );
    }

    #[test]
    fn retrieve_steps_and_fixed_steps_in_task_files() {
        let base = std::fs::read_to_string(examples_dir().join("rag/task.toml")).unwrap();
        let task = Task::parse(&base, Path::new("rag.toml"), PathBuf::from(".")).unwrap();
        assert_eq!(task.program.retrievals[0].after, 0);
        assert_eq!(task.program.retrievals[0].corpus, "vellmark");
        assert_eq!(task.example_inputs(), ["question"]);
        let fixed = base.replace(
            "kind = \"predict\"\n",
            "kind = \"predict\"\noptimize = false\n",
        );
        let task = Task::parse(&fixed, Path::new("rag.toml"), PathBuf::from(".")).unwrap();
        assert!(task.program.optimized_steps().is_empty());

        let err = |text: String| {
            Task::parse(&text, Path::new("rag.toml"), PathBuf::from("."))
                .unwrap_err()
                .to_string()
        };
        let e = err(base.replace("corpus = \"vellmark\"\n", ""));
        assert!(e.contains("needs `corpus`"), "{e}");
        let e = err(base.replace("k = 3\n", "k = 3\ninstructions = \"x\"\n"));
        assert!(e.contains("no `instructions`"), "{e}");
        // A query from a field no step produces is read from the data.
        let topic = base.replace("query = \"question\"", "query = \"topic\"");
        let task = Task::parse(&topic, Path::new("rag.toml"), PathBuf::from(".")).unwrap();
        assert_eq!(task.example_inputs(), ["topic", "question"]);
        let e = err(base.replace("method = \"bm25\"", "method = \"dense\""));
        assert!(e.contains("dense"), "{e}");
    }
}
