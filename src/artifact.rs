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
        serde_json::from_value(value).map_err(|e| format_error(e.to_string()))
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

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
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
                        }],
                    },
                    demos: Vec::new(),
                }],
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
}
