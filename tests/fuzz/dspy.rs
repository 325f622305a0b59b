//! DSPy saved programs (`program.save("program.json")`): the bundled example file and programs
//! exported in the test (plain and chain of thought, with demonstrations), with one JSON node
//! replaced, removed or added, the text cut short or a bit flipped; and arbitrary JSON.
//!
//! Properties: importing never panics; every error names the source; an import keeps the
//! task's steps, kinds and fields (only instructions and demonstrations come from the file),
//! each demonstration has exactly the step's inputs and at least one of its outputs, notes name
//! the entry they are about, and the program runs on the task's fields.

use std::collections::BTreeSet;

use proptest::prelude::{prop_assert, prop_assert_eq, prop_oneof, Strategy};
use serde_json::{json, Value};
use tuningfork::dspy;
use tuningfork::program::adapter::reply_fields;
use tuningfork::program::{Demo, PredictorKind, Values};
use tuningfork::task::Task;

use crate::mutate::{byte_edit, json_edit, json_value, ByteEdit, JsonEdit};
use crate::{example, example_task, fuzz, no_panic};

const SOURCE: &str = "fuzzed dspy-program.json";

#[derive(Debug, Clone)]
enum Change {
    None,
    Json(JsonEdit),
    Bytes(ByteEdit),
    /// The whole file replaced by some JSON value.
    Replace(Value),
}

#[derive(Debug, Clone)]
struct Case {
    base: usize,
    change: Change,
}

fn case() -> impl Strategy<Value = Case> {
    let change = prop_oneof![
        1 => proptest::strategy::Just(Change::None),
        6 => json_edit().prop_map(Change::Json),
        2 => byte_edit().prop_map(Change::Bytes),
        1 => json_value(true).prop_map(Change::Replace),
    ];
    (0usize..4, change).prop_map(|(base, change)| Case { base, change })
}

/// `task` with every step of the given kind and one demonstration per step.
fn with_demos(mut task: Task, kind: PredictorKind) -> Task {
    for step in &mut task.program.steps {
        step.kind = kind;
        let inputs: Values = step
            .signature
            .inputs
            .iter()
            .map(|f| (f.name.clone(), json!("Two mugs for Anna in Lyon, please")))
            .collect();
        let outputs: Values = reply_fields(&step.signature, step.reasoning())
            .iter()
            .map(|f| (f.name.clone(), json!("2")))
            .collect();
        step.demos.push(Demo { inputs, outputs });
    }
    task
}

/// DSPy files and the tasks they belong to: the bundled file, and exports of the bundled
/// tasks' programs.
fn bases() -> Vec<(String, Task)> {
    let export = |task: &Task| dspy::export(&task.program).unwrap().to_string();
    let sentiment = example_task("sentiment");
    let mut bases = vec![(example("sentiment/dspy-program.json"), sentiment.clone())];
    for (name, kind) in [
        ("sentiment", PredictorKind::Predict),
        ("contacts", PredictorKind::ChainOfThought),
        ("sentiment", PredictorKind::ChainOfThought),
    ] {
        let task = with_demos(example_task(name), kind);
        bases.push((export(&task), task));
    }
    bases
}

#[test]
fn dspy_programs_never_panic_and_keep_the_task_shape() {
    let bases = bases();
    fuzz("dspy", case(), |case| {
        let (text, task) = &bases[case.base % bases.len()];
        let text = match &case.change {
            Change::None => text.clone(),
            Change::Json(edit) => {
                let value: Value = serde_json::from_str(text).unwrap_or_default();
                edit.apply(&value).0.to_string()
            }
            Change::Bytes(edit) => {
                String::from_utf8_lossy(&edit.apply(text.as_bytes())).into_owned()
            }
            Change::Replace(value) => value.to_string(),
        };
        let imported = no_panic("dspy::import_onto", || {
            dspy::import_onto(&text, SOURCE, task)
        })?;
        let (program, notes) = match imported {
            Ok(imported) => imported,
            Err(e) => {
                let message = e.to_string();
                prop_assert!(
                    message.contains(SOURCE),
                    "the error does not name {SOURCE}: {message}"
                );
                return Ok(());
            }
        };
        if matches!(case.change, Change::None) {
            prop_assert!(notes.is_empty(), "an unchanged file gives notes: {notes:?}");
        }
        prop_assert_eq!(program.steps.len(), task.program.steps.len());
        for (step, original) in program.steps.iter().zip(&task.program.steps) {
            prop_assert_eq!(&step.name, &original.name);
            prop_assert_eq!(step.kind, original.kind);
            prop_assert_eq!(&step.signature.inputs, &original.signature.inputs);
            prop_assert_eq!(&step.signature.outputs, &original.signature.outputs);
            let inputs: BTreeSet<&String> =
                original.signature.inputs.iter().map(|f| &f.name).collect();
            let outputs: BTreeSet<String> = reply_fields(&original.signature, original.reasoning())
                .into_iter()
                .map(|f| f.name)
                .collect();
            for demo in &step.demos {
                prop_assert_eq!(demo.inputs.keys().collect::<BTreeSet<_>>(), inputs.clone());
                prop_assert!(!demo.outputs.is_empty(), "a demonstration without outputs");
                prop_assert!(
                    demo.outputs.keys().all(|k| outputs.contains(k)),
                    "outputs {:?} are not all among {:?}",
                    demo.outputs.keys().collect::<Vec<_>>(),
                    outputs
                );
            }
            no_panic("Predictor::render", || step.render(&Values::new()))?;
        }
        for note in &notes {
            prop_assert!(note.starts_with('`'), "a note that names no entry: {note}");
        }
        prop_assert!(
            program.validate(&task.example_inputs()).is_ok(),
            "an imported program does not run on the task's fields"
        );
        Ok(())
    });
}
