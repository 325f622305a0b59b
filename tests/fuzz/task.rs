//! Task files: a bundled example with one thing changed (a value, a line, some bytes, the
//! end cut off), saved as editors save files, then loaded as a user's task is.
//!
//! Properties: loading never panics; every error names the file it was given; a task that
//! loads can list its fields and build its grammars.

use std::path::{Path, PathBuf};

use proptest::prelude::{any, prop_assert, prop_oneof, Strategy};
use tuningfork::task::Task;

use crate::mutate::{byte_edit, toml_line_edit, ByteEdit, LineEdit};
use crate::{crlf, example, fuzz, no_panic, with_bom, write};

#[derive(Debug, Clone)]
enum Change {
    Line(LineEdit),
    Bytes(ByteEdit),
}

#[derive(Debug, Clone)]
struct Case {
    /// 0: the sentiment example, 1: the contacts example.
    example: usize,
    change: Change,
    /// Saved with Windows line endings.
    crlf: bool,
    /// Saved with a byte-order mark.
    bom: bool,
}

fn case() -> impl Strategy<Value = Case> {
    let change = prop_oneof![
        3 => toml_line_edit().prop_map(Change::Line),
        1 => byte_edit().prop_map(Change::Bytes),
    ];
    (0usize..2, change, any::<bool>(), any::<bool>()).prop_map(|(example, change, crlf, bom)| {
        Case {
            example,
            change,
            crlf,
            bom,
        }
    })
}

#[test]
fn task_files_never_panic_and_errors_name_the_file() {
    let examples = [
        example("sentiment/task.toml"),
        example("contacts/task.toml"),
    ];
    let dir = tempfile::tempdir().unwrap();
    // A space and a non-ASCII letter: the name must come through as written.
    let path = dir.path().join("fuzzed tâsk.toml");
    let shown = path.display().to_string();
    fuzz("task", case(), |case| {
        let base = &examples[case.example];
        let mut bytes = match &case.change {
            Change::Line(edit) => edit.apply(base).into_bytes(),
            Change::Bytes(edit) => edit.apply(base.as_bytes()),
        };
        if case.crlf {
            bytes = crlf(&bytes);
        }
        if case.bom {
            bytes = with_bom(&bytes);
        }
        write(&path, &bytes)?;
        let loaded = no_panic("Task::load", || Task::load(&path))?;
        match &loaded {
            Ok(task) => {
                no_panic("Task::example_fields", || task.example_fields())?;
                for step in &task.program.steps {
                    no_panic("Predictor::grammar", || step.grammar())?;
                }
            }
            Err(e) => {
                let message = e.to_string();
                prop_assert!(
                    message.contains(&shown),
                    "the error does not name {shown}: {message}"
                );
            }
        }
        // The same text through `Task::parse`, which callers use for text they already hold.
        if let Ok(text) = std::str::from_utf8(&bytes) {
            let named = Path::new("fuzz/task.toml");
            let parsed = no_panic("Task::parse", || {
                Task::parse(text, named, PathBuf::from("."))
            })?;
            if let Err(e) = parsed {
                let message = e.to_string();
                prop_assert!(
                    message.contains("fuzz/task.toml"),
                    "the error does not name fuzz/task.toml: {message}"
                );
            }
        }
        Ok(())
    });
}
