//! The model registry (`models/models.toml`): the shipped file with one thing changed (a value,
//! a line, some bytes, the end cut off), opened as tuningfork opens a models directory.
//!
//! Properties: opening never panics; every error names the registry file; a registry that
//! opens keeps the rules a pin must follow (a unique plain name, a 64-hex-digit sha256, a file
//! name without a directory) and can be listed and looked up.

use std::collections::BTreeSet;

use proptest::prelude::{any, prop_assert, prop_oneof, Strategy};
use tuningfork::models::Registry;

use crate::mutate::{byte_edit, toml_line_edit, ByteEdit, LineEdit};
use crate::{crlf, fuzz, no_panic, root, with_bom, write};

#[derive(Debug, Clone)]
enum Change {
    Line(LineEdit),
    Bytes(ByteEdit),
}

#[derive(Debug, Clone)]
struct Case {
    change: Change,
    crlf: bool,
    bom: bool,
}

fn case() -> impl Strategy<Value = Case> {
    let change = prop_oneof![
        3 => toml_line_edit().prop_map(Change::Line),
        1 => byte_edit().prop_map(Change::Bytes),
    ];
    (change, any::<bool>(), any::<bool>()).prop_map(|(change, crlf, bom)| Case {
        change,
        crlf,
        bom,
    })
}

#[test]
fn registries_never_panic_and_errors_name_the_file() {
    let shipped = root().join("models/models.toml");
    let base = std::fs::read_to_string(&shipped)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", shipped.display()));
    // A space in the directory: the path must come through as written.
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("fuzzed models");
    std::fs::create_dir_all(&models).unwrap();
    let file = Registry::file_in(&models);
    let shown = file.display().to_string();
    fuzz("registry", case(), |case| {
        let mut bytes = match &case.change {
            Change::Line(edit) => edit.apply(&base).into_bytes(),
            Change::Bytes(edit) => edit.apply(base.as_bytes()),
        };
        if case.crlf {
            bytes = crlf(&bytes);
        }
        if case.bom {
            bytes = with_bom(&bytes);
        }
        write(&file, &bytes)?;
        let registry = match no_panic("Registry::open", || Registry::open(&models))? {
            Ok(registry) => registry,
            Err(e) => {
                let message = e.to_string();
                prop_assert!(
                    message.contains(&shown),
                    "the error does not name {shown}: {message}"
                );
                return Ok(());
            }
        };
        let mut names = BTreeSet::new();
        for pin in registry.models() {
            prop_assert!(
                names.insert(pin.name.clone()),
                "`{}` is pinned twice",
                pin.name
            );
            prop_assert!(
                !pin.name.is_empty()
                    && !pin.name.starts_with('.')
                    && pin
                        .name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b".-_".contains(&b)),
                "the name {:?} is not plain",
                pin.name
            );
            prop_assert!(
                pin.sha256.len() == 64 && pin.sha256.bytes().all(|b| b.is_ascii_hexdigit()),
                "the sha256 {:?} is not 64 hex digits",
                pin.sha256
            );
            prop_assert!(
                !pin.file.contains('/') && !pin.file.contains('\\') && !pin.file.starts_with('.'),
                "the file {:?} is not a plain name",
                pin.file
            );
            prop_assert!(
                registry.get(&pin.name).is_ok(),
                "`{}` cannot be looked up",
                pin.name
            );
            no_panic("ModelPin::fetch_hint", || pin.fetch_hint())?;
        }
        no_panic("Registry::table", || registry.table())?;
        Ok(())
    });
}
