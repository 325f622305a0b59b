//! Program artifacts: a program with everything needed to run it again, addressed by content.
//!
//! The exported JSON (`format = "tuningfork.program"`, `version = 1`) is the stable exchange
//! format: the task's name, the program (steps, instructions, fields, demonstrations), the
//! adapter version, the model it was made for (name and sha256), its parent artifact, the run
//! that made it and its scores. The content hash covers what decides the program's behaviour —
//! the program, the adapter version and the model sha256 — not its history or scores.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::program::{Program, ADAPTER_VERSION};

pub const ARTIFACT_FORMAT: &str = "tuningfork.program";
pub const ARTIFACT_VERSION: u32 = 1;

/// The model an artifact was made for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactModel {
    pub name: String,
    pub sha256: String,
}

/// A versioned program.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    pub format: String,
    pub version: u32,
    pub task: String,
    pub program: Program,
    pub adapter_version: u32,
    pub model: ArtifactModel,
    #[serde(default)]
    pub parent: Option<String>,
    /// The uid of the run that made it, if a run did.
    #[serde(default)]
    pub run: Option<String>,
    /// Scores by split name (`val`, `test`).
    #[serde(default)]
    pub scores: BTreeMap<String, f64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("{source_name} is not a tuningfork program artifact: {message}")]
    Format {
        source_name: String,
        message: String,
    },
    #[error("artifact {hash} was made for task `{made_for}`, not `{task}`")]
    OtherTask {
        hash: String,
        made_for: String,
        task: String,
    },
    #[error("artifact {hash} was made for model {made_for} ({made_for_sha}), but the task uses {model} ({model_sha}); results would not carry over")]
    OtherModel {
        hash: String,
        made_for: String,
        made_for_sha: String,
        model: String,
        model_sha: String,
    },
    #[error("artifact {hash} was made with adapter version {version}; this tuningfork renders prompts with version {ADAPTER_VERSION}")]
    OtherAdapter { hash: String, version: u32 },
    #[error("artifact {hash}: {message}")]
    Program { hash: String, message: String },
}

/// The first 12 characters of a hash, for messages (the whole text when it is shorter).
pub fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

impl Artifact {
    /// A new artifact for `program` with the current adapter.
    pub fn new(task: &str, program: Program, model: ArtifactModel) -> Self {
        Artifact {
            format: ARTIFACT_FORMAT.to_string(),
            version: ARTIFACT_VERSION,
            task: task.to_string(),
            program,
            adapter_version: ADAPTER_VERSION,
            model,
            parent: None,
            run: None,
            scores: BTreeMap::new(),
        }
    }

    /// sha256 over the canonical JSON of the program, the adapter version and the model sha256.
    pub fn content_hash(&self) -> String {
        #[derive(Serialize)]
        struct Content<'a> {
            format: &'a str,
            program: &'a Program,
            adapter_version: u32,
            model_sha256: &'a str,
        }
        let json = serde_json::to_vec(&Content {
            format: ARTIFACT_FORMAT,
            program: &self.program,
            adapter_version: self.adapter_version,
            model_sha256: &self.model.sha256,
        })
        .expect("artifacts serialize");
        hex::encode(Sha256::digest(&json))
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("artifacts serialize")
    }

    /// Reads an exported artifact; `source_name` names it in errors.
    pub fn from_json(text: &str, source_name: &str) -> Result<Artifact, ArtifactError> {
        let format_error = |message: String| ArtifactError::Format {
            source_name: source_name.to_string(),
            message,
        };
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format_error(e.to_string()))?;
        match value.get("format").and_then(|f| f.as_str()) {
            Some(ARTIFACT_FORMAT) => {}
            other => {
                return Err(format_error(format!(
                    "its format is {other:?}, expected \"{ARTIFACT_FORMAT}\""
                )))
            }
        }
        match value.get("version").and_then(|v| v.as_u64()) {
            Some(v) if v == u64::from(ARTIFACT_VERSION) => {}
            other => {
                return Err(format_error(format!(
                    "its version is {other:?}; this tuningfork reads version {ARTIFACT_VERSION}"
                )))
            }
        }
        let artifact: Artifact =
            serde_json::from_value(value).map_err(|e| format_error(e.to_string()))?;
        artifact.validate().map_err(format_error)?;
        Ok(artifact)
    }

    /// Checks what the types cannot: the model sha256 is 64 lowercase hex digits and the
    /// adapter version is one this tuningfork knows.
    pub fn validate(&self) -> Result<(), String> {
        let sha = &self.model.sha256;
        if sha.len() != 64 || !sha.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(format!(
                "its model sha256 {sha:?} is not 64 lowercase hex digits; export the artifact again from the store that made it"
            ));
        }
        if self.adapter_version == 0 || self.adapter_version > ADAPTER_VERSION {
            return Err(format!(
                "its adapter version {} is unknown; this tuningfork knows versions 1 to {ADAPTER_VERSION}",
                self.adapter_version
            ));
        }
        Ok(())
    }

    /// Checks that this artifact (stored as `hash`) may run `task` on the model pinned as
    /// `model` (name, sha256): the same task, the same model file, the current adapter, and a
    /// program whose steps read only `example_inputs` and earlier outputs.
    pub fn check_runs_on(
        &self,
        hash: &str,
        task: &str,
        model: (&str, &str),
        example_inputs: &[String],
    ) -> Result<(), ArtifactError> {
        let hash = short(hash).to_string();
        if self.task != task {
            return Err(ArtifactError::OtherTask {
                hash,
                made_for: self.task.clone(),
                task: task.to_string(),
            });
        }
        if self.model.sha256 != model.1 {
            return Err(ArtifactError::OtherModel {
                hash,
                made_for: self.model.name.clone(),
                made_for_sha: short(&self.model.sha256).to_string(),
                model: model.0.to_string(),
                model_sha: short(model.1).to_string(),
            });
        }
        if self.adapter_version != ADAPTER_VERSION {
            return Err(ArtifactError::OtherAdapter {
                hash,
                version: self.adapter_version,
            });
        }
        self.program
            .validate(example_inputs)
            .map_err(|e| ArtifactError::Program {
                hash,
                message: e.to_string(),
            })
    }

    /// What differs between two artifacts, one line each.
    pub fn diff(&self, other: &Artifact) -> Vec<String> {
        let mut lines = Vec::new();
        if self.task != other.task {
            lines.push(format!("task: {} → {}", self.task, other.task));
        }
        if self.model != other.model {
            lines.push(format!(
                "model: {} ({}) → {} ({})",
                self.model.name,
                short(&self.model.sha256),
                other.model.name,
                short(&other.model.sha256)
            ));
        }
        if self.adapter_version != other.adapter_version {
            lines.push(format!(
                "adapter version: {} → {}",
                self.adapter_version, other.adapter_version
            ));
        }
        let steps = self.program.steps.len().max(other.program.steps.len());
        for i in 0..steps {
            match (self.program.steps.get(i), other.program.steps.get(i)) {
                (Some(a), Some(b)) => {
                    if a.signature.instructions != b.signature.instructions {
                        lines.push(format!(
                            "step `{}` instructions:\n  - {}\n  + {}",
                            b.name, a.signature.instructions, b.signature.instructions
                        ));
                    }
                    if a.kind != b.kind {
                        lines.push(format!(
                            "step `{}` kind: {:?} → {:?}",
                            b.name, a.kind, b.kind
                        ));
                    }
                    if a.signature.inputs != b.signature.inputs
                        || a.signature.outputs != b.signature.outputs
                    {
                        lines.push(format!("step `{}` fields changed", b.name));
                    }
                    if a.nearest != b.nearest {
                        let (before, after) =
                            (per_input(a.nearest.as_ref()), per_input(b.nearest.as_ref()));
                        let changed = if before == after {
                            " (pool changed)"
                        } else {
                            ""
                        };
                        lines.push(format!(
                            "step `{}` demonstrations per input: {before} → {after}{changed}",
                            b.name
                        ));
                    }
                    for demo in &a.demos {
                        if !b.demos.contains(demo) {
                            lines.push(format!(
                                "step `{}` demo removed: {}",
                                b.name,
                                demo_line(demo)
                            ));
                        }
                    }
                    for demo in &b.demos {
                        if !a.demos.contains(demo) {
                            lines.push(format!(
                                "step `{}` demo added: {}",
                                b.name,
                                demo_line(demo)
                            ));
                        }
                    }
                }
                (Some(a), None) => lines.push(format!("step `{}` removed", a.name)),
                (None, Some(b)) => lines.push(format!("step `{}` added", b.name)),
                (None, None) => {}
            }
        }
        for (split, score) in &other.scores {
            match self.scores.get(split) {
                Some(before) if before == score => {}
                Some(before) => lines.push(format!("{split} score: {before:.3} → {score:.3}")),
                None => lines.push(format!("{split} score: - → {score:.3}")),
            }
        }
        lines
    }
}

/// A step's per-input demonstrations, for a diff line.
fn per_input(nearest: Option<&crate::program::NearestDemos>) -> String {
    match nearest {
        None => "none".to_string(),
        Some(n) => format!("the {} most similar of {} examples", n.k, n.pool.len()),
    }
}

fn demo_line(demo: &crate::program::Demo) -> String {
    let inputs = serde_json::to_string(&demo.inputs).expect("values serialize");
    let outputs = serde_json::to_string(&demo.outputs).expect("values serialize");
    format!("{inputs} → {outputs}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::program::{
        Demo, FieldType, InputField, OutputField, Predictor, PredictorKind, Signature,
    };
    use serde_json::json;

    fn artifact() -> Artifact {
        Artifact::new(
            "sentiment",
            Program {
                steps: vec![Predictor {
                    nearest: None,
                    name: "classify".into(),
                    kind: PredictorKind::Predict,
                    signature: Signature {
                        instructions: "Classify.".into(),
                        inputs: vec![InputField {
                            name: "review".into(),
                            description: None,
                        }],
                        outputs: vec![OutputField {
                            name: "label".into(),
                            description: None,
                            ty: FieldType::Choice {
                                choices: vec!["a".into(), "b".into()],
                            },
                            max_chars: None,
                        }],
                    },
                    demos: Vec::new(),
                    optimize: true,
                }],
                retrievals: Vec::new(),
            },
            ArtifactModel {
                name: "smollm2-135m".into(),
                sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53".into(),
            },
        )
    }

    #[test]
    fn export_import_round_trip_keeps_the_hash() {
        let mut a = artifact();
        a.scores.insert("val".into(), 0.5);
        let text = a.to_json();
        let b = Artifact::from_json(&text, "a.json").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.content_hash(), b.content_hash());
        // Scores and history are not content.
        let mut c = b.clone();
        c.scores.insert("test".into(), 0.9);
        c.parent = Some("x".into());
        assert_eq!(c.content_hash(), a.content_hash());
        // Demonstrations are.
        c.program.steps[0].demos.push(Demo {
            inputs: [("review".to_string(), json!("ok"))].into_iter().collect(),
            outputs: [("label".to_string(), json!("a"))].into_iter().collect(),
        });
        assert_ne!(c.content_hash(), a.content_hash());
        let diff = a.diff(&c);
        assert!(diff.iter().any(|l| l.contains("demo added")), "{diff:?}");
        assert!(diff.iter().any(|l| l.contains("test score")), "{diff:?}");
        // So is a pool of demonstrations chosen per input.
        let mut d = a.clone();
        d.program.steps[0].nearest = Some(crate::program::NearestDemos {
            k: 3,
            pool: c.program.steps[0].demos.clone(),
        });
        assert_ne!(d.content_hash(), a.content_hash());
        assert!(
            a.diff(&d)
                .iter()
                .any(|l| l
                    .contains("demonstrations per input: none → the 3 most similar of 1 examples")),
            "{:?}",
            a.diff(&d)
        );
    }

    #[test]
    fn the_hash_of_a_fixed_artifact_is_stable() {
        // Pinned: if this changes, stored artifact hashes no longer match their content.
        assert_eq!(
            artifact().content_hash(),
            hex::encode(Sha256::digest(
                br#"{"format":"tuningfork.program","program":{"steps":[{"name":"classify","kind":"predict","signature":{"instructions":"Classify.","inputs":[{"name":"review"}],"outputs":[{"name":"label","type":"choice","choices":["a","b"]}]},"demos":[]}]},"adapter_version":1,"model_sha256":"b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"}"#
            ))
        );
    }

    #[test]
    fn foreign_or_future_files_are_refused() {
        let err = Artifact::from_json("{\"format\": \"other\"}", "x.json").unwrap_err();
        assert!(err.to_string().contains("x.json") && err.to_string().contains("other"));
        let mut value: serde_json::Value = serde_json::from_str(&artifact().to_json()).unwrap();
        value["version"] = json!(99);
        let err = Artifact::from_json(&value.to_string(), "y.json").unwrap_err();
        assert!(err.to_string().contains("version"), "{err}");
        assert!(Artifact::from_json("not json", "z.json").is_err());
    }

    #[test]
    fn a_hand_edited_model_sha_or_adapter_is_refused_by_name() {
        let edit = |change: &dyn Fn(&mut serde_json::Value)| {
            let mut value: serde_json::Value = serde_json::from_str(&artifact().to_json()).unwrap();
            change(&mut value);
            Artifact::from_json(&value.to_string(), "edited.json")
                .unwrap_err()
                .to_string()
        };
        let short = edit(&|v| v["model"]["sha256"] = json!("b179c95"));
        assert!(
            short.contains("edited.json") && short.contains("64 lowercase hex"),
            "{short}"
        );
        let not_hex = edit(&|v| v["model"]["sha256"] = json!("é".repeat(32)));
        assert!(not_hex.contains("64 lowercase hex"), "{not_hex}");
        let adapter = edit(&|v| v["adapter_version"] = json!(ADAPTER_VERSION + 1));
        assert!(adapter.contains("adapter version"), "{adapter}");
    }

    #[test]
    fn an_artifact_runs_only_on_its_task_model_and_adapter() {
        let a = artifact();
        let sha = a.model.sha256.clone();
        let inputs = vec!["review".to_string()];
        assert!(a
            .check_runs_on(
                "0123456789abcdef",
                "sentiment",
                ("smollm2-135m", &sha),
                &inputs
            )
            .is_ok());
        let task = a
            .check_runs_on(
                "0123456789abcdef",
                "topics",
                ("smollm2-135m", &sha),
                &inputs,
            )
            .unwrap_err();
        assert!(matches!(task, ArtifactError::OtherTask { .. }), "{task}");
        assert!(task.to_string().contains("0123456789ab "), "{task}");
        let model = a
            .check_runs_on("abc", "sentiment", ("gemma", "short"), &inputs)
            .unwrap_err();
        assert!(model.to_string().contains("gemma (short)"), "{model}");
        let mut old = a.clone();
        old.adapter_version = 0;
        assert!(matches!(
            old.check_runs_on("abc", "sentiment", ("smollm2-135m", &sha), &inputs),
            Err(ArtifactError::OtherAdapter { .. })
        ));
        let fields = a
            .check_runs_on("abc", "sentiment", ("smollm2-135m", &sha), &["text".into()])
            .unwrap_err();
        assert!(fields.to_string().contains("reads `review`"), "{fields}");
    }
}
