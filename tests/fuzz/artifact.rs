//! Program artifacts (`tuningfork.program` JSON): artifacts made in the test from the bundled
//! tasks' programs, with demonstrations and scores, exported, then one JSON node replaced,
//! removed or added, or the text cut short or a bit flipped.
//!
//! Properties: reading never panics; every error names the source; an artifact that reads is
//! valid (`Artifact::validate`); its content hash equals the original's exactly when what the
//! hash covers (program, adapter version, model sha256) is unchanged, so an edited program
//! never passes for the original; an edit outside that content keeps the hash. What reads can
//! be compared, checked against the task, rendered and turned into grammars without a panic.

use proptest::prelude::{any, prop_assert, prop_assert_eq, prop_oneof, Strategy};
use serde_json::{json, Value};
use tuningfork::artifact::{Artifact, ArtifactModel};
use tuningfork::program::adapter::reply_fields;
use tuningfork::program::{Demo, FieldType, PredictorKind, Values};

use crate::mutate::{byte_edit, json_edit, ByteEdit, JsonEdit, Step};
use crate::{example_task, fuzz, no_panic};

/// The pinned sha256 of the default model, as real artifacts carry it.
const SMOLLM_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
const SOURCE: &str = "fuzzed artifact.json";

#[derive(Debug, Clone)]
enum Change {
    Json(JsonEdit),
    Bytes(ByteEdit),
}

#[derive(Debug, Clone)]
struct Case {
    /// 0: sentiment (predict), 1: contacts (chain of thought).
    base: usize,
    change: Change,
    /// Exported as `to_json` writes it (pretty) or on one line.
    pretty: bool,
}

fn case() -> impl Strategy<Value = Case> {
    let change = prop_oneof![
        3 => json_edit().prop_map(Change::Json),
        1 => byte_edit().prop_map(Change::Bytes),
    ];
    (0usize..2, change, any::<bool>()).prop_map(|(base, change, pretty)| Case {
        base,
        change,
        pretty,
    })
}

/// An artifact of a bundled task's program, with one demonstration per step, a parent, a run
/// and a score, so that every part of the format is present.
fn artifact(task_name: &str, kind: PredictorKind) -> (Artifact, Vec<String>) {
    let task = example_task(task_name);
    let mut program = task.program.clone();
    for step in &mut program.steps {
        step.kind = kind;
        let inputs: Values = step
            .signature
            .inputs
            .iter()
            .map(|f| (f.name.clone(), json!("an example input, é")))
            .collect();
        let outputs: Values = reply_fields(&step.signature, step.reasoning())
            .iter()
            .map(|f| {
                let value = match &f.ty {
                    FieldType::Choice { choices } => Value::String(choices[0].clone()),
                    FieldType::Integer => json!(3),
                    FieldType::Number => json!(2.5),
                    FieldType::Boolean => json!(true),
                    FieldType::List => json!(["a"]),
                    FieldType::Json => json!({ "k": 1 }),
                    FieldType::Text => json!("some text"),
                };
                (f.name.clone(), value)
            })
            .collect();
        step.demos.push(Demo { inputs, outputs });
    }
    let mut artifact = Artifact::new(
        &task.task.name,
        program,
        ArtifactModel {
            name: "smollm2-135m".to_string(),
            sha256: SMOLLM_SHA256.to_string(),
        },
    );
    artifact.parent = Some("0".repeat(64));
    artifact.run = Some("20250101-000000-abcd".to_string());
    artifact.scores.insert("val".to_string(), 0.75);
    (artifact, task.example_inputs())
}

/// What the content hash covers, as text: equal text, equal content.
fn content(artifact: &Artifact) -> String {
    serde_json::to_string(&(
        &artifact.program,
        artifact.adapter_version,
        &artifact.model.sha256,
    ))
    .unwrap_or_default()
}

/// Whether an edit at `path` can change what the hash covers.
fn touches_content(path: &[Step]) -> bool {
    let key = |i: usize| match path.get(i) {
        Some(Step::Key(k)) => Some(k.as_str()),
        _ => None,
    };
    match key(0) {
        None => true,
        Some("program" | "adapter_version") => true,
        Some("model") => path.len() == 1 || key(1) == Some("sha256"),
        Some(_) => false,
    }
}

#[test]
fn artifacts_never_panic_and_edits_never_keep_the_hash() {
    let bases = [
        artifact("sentiment", PredictorKind::Predict),
        artifact("contacts", PredictorKind::ChainOfThought),
    ];
    fuzz("artifact", case(), |case| {
        let (original, example_inputs) = &bases[case.base];
        let text = if case.pretty {
            original.to_json()
        } else {
            serde_json::to_string(original).unwrap_or_default()
        };
        let (edited, touched) = match &case.change {
            Change::Json(edit) => {
                let value: Value = serde_json::from_str(&text).unwrap_or_default();
                let (value, path) = edit.apply(&value);
                (value.to_string(), Some(path))
            }
            Change::Bytes(edit) => (
                String::from_utf8_lossy(&edit.apply(text.as_bytes())).into_owned(),
                None,
            ),
        };
        let read = no_panic("Artifact::from_json", || {
            Artifact::from_json(&edited, SOURCE)
        })?;
        let artifact = match read {
            Ok(artifact) => artifact,
            Err(e) => {
                let message = e.to_string();
                prop_assert!(
                    message.contains(SOURCE),
                    "the error does not name {SOURCE}: {message}"
                );
                return Ok(());
            }
        };
        prop_assert!(
            artifact.validate().is_ok(),
            "read, yet invalid: {:?}",
            artifact.validate()
        );
        let same_content = content(&artifact) == content(original);
        let same_hash = artifact.content_hash() == original.content_hash();
        prop_assert_eq!(
            same_hash,
            same_content,
            "content {} vs {}",
            content(&artifact),
            content(original)
        );
        if let Some(path) = &touched {
            if !touches_content(path) {
                prop_assert!(
                    same_hash,
                    "an edit at {path:?}, outside the content, changed the hash"
                );
            }
        }
        let hash = artifact.content_hash();
        no_panic("Artifact::diff", || original.diff(&artifact))?;
        // Whether it runs is the edit's business; it must answer, not panic.
        let _ = no_panic("Artifact::check_runs_on", || {
            artifact.check_runs_on(
                &hash,
                &original.task,
                (&original.model.name, &original.model.sha256),
                example_inputs,
            )
        })?;
        for step in &artifact.program.steps {
            no_panic("Predictor::grammar", || step.grammar())?;
            no_panic("Predictor::render", || step.render(&Values::new()))?;
        }
        Ok(())
    });
}
