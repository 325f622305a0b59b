//! Property-based fuzzing of every parser that reads user or foreign data: task files,
//! datasets, model replies, artifacts, DSPy programs, audit bundles, `models.toml`, GGUF
//! headers, and the grammars generated from field definitions and JSON schemas.
//!
//! Each target starts from a real, valid input (the bundled examples, a bundle exported in the
//! test, the shipped registry and models) and changes one thing, or feeds arbitrary data, and
//! checks that the parser never panics and that what it refuses is named the way a user needs
//! (the file, the line, the field, the record). Inputs are small descriptions of an edit, not
//! the edited bytes, so a failure prints short and shrinks well.
//!
//! Runs are deterministic: a fixed seed per target and no failure-persistence files, so a
//! failure in CI reproduces with the same `TUNINGFORK_FUZZ_CASES`. `cargo test` runs a few
//! cases per target (64 unless `TUNINGFORK_FUZZ_CASES` says otherwise); `scripts/fuzz.sh`
//! runs many more, and `TUNINGFORK_FUZZ_SEED=N` draws other cases.
//!
//! The targets live in `tests/fuzz/`, one file each, with the shared edits in `mutate.rs`.

#[path = "fuzz/artifact.rs"]
mod artifact;
#[path = "fuzz/bundle.rs"]
mod bundle;
#[path = "fuzz/dataset.rs"]
mod dataset;
#[path = "fuzz/dspy.rs"]
mod dspy;
#[path = "fuzz/gguf.rs"]
mod gguf;
#[path = "fuzz/grammar.rs"]
mod grammar;
#[path = "fuzz/mutate.rs"]
mod mutate;
#[path = "fuzz/registry.rs"]
mod registry;
#[path = "fuzz/reply.rs"]
mod reply;
#[path = "fuzz/task.rs"]
mod task;

use std::cell::Cell;
use std::path::{Path, PathBuf};

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};

/// Cases per target when `TUNINGFORK_FUZZ_CASES` is not set: enough to catch a regression,
/// few enough that `cargo test --release` stays quick.
const DEFAULT_CASES: u32 = 64;

/// Runs `property` on `TUNINGFORK_FUZZ_CASES` inputs drawn from `strategy`, the same inputs on
/// every run, and prints `fuzz <target>: <n> cases, 0 panics` when all of them pass. A panic in
/// the code under test, or a property that does not hold, fails the test with the smallest
/// input proptest could find.
pub fn fuzz<S: Strategy>(
    target: &str,
    strategy: S,
    property: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let (cases, seed) = (cases(), seed());
    let config = Config {
        cases,
        // No `proptest-regressions/` files in the source tree: the seed makes runs repeatable.
        failure_persistence: None,
        // A failing input is shrunk, but not for hours.
        max_shrink_iters: 1024,
        ..Config::default()
    };
    let mut runner = TestRunner::new_with_rng(config, rng(target, seed));
    let ran = Cell::new(0u64);
    let outcome = runner.run(&strategy, |case| {
        ran.set(ran.get() + 1);
        property(case)
    });
    if let Err(failure) = outcome {
        panic!(
            "fuzz {target} (TUNINGFORK_FUZZ_CASES={cases} TUNINGFORK_FUZZ_SEED={seed}): {failure}"
        );
    }
    println!("fuzz {target}: {} cases, 0 panics", ran.get());
}

fn cases() -> u32 {
    match std::env::var("TUNINGFORK_FUZZ_CASES") {
        Ok(text) => text.trim().parse().unwrap_or_else(|_| {
            panic!("TUNINGFORK_FUZZ_CASES={text:?} is not a number of cases per target")
        }),
        Err(_) => DEFAULT_CASES,
    }
}

fn seed() -> u64 {
    match std::env::var("TUNINGFORK_FUZZ_SEED") {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("TUNINGFORK_FUZZ_SEED={text:?} is not a whole number")),
        Err(_) => 0,
    }
}

/// A generator of its own per target, so that adding cases to one target does not change the
/// inputs of another.
fn rng(target: &str, seed: u64) -> TestRng {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    for (slot, byte) in bytes[8..].iter_mut().zip(target.bytes()) {
        *slot = byte;
    }
    TestRng::from_seed(RngAlgorithm::ChaCha, &bytes)
}

/// Calls `f`; a panic becomes a failed case that says which call panicked and with what.
pub fn no_panic<T>(what: &str, f: impl FnOnce() -> T) -> Result<T, TestCaseError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_string());
        TestCaseError::fail(format!("{what} panicked: {message}"))
    })
}

/// Writes a fuzzed file; failing to write is the test's problem, not the parser's.
pub fn write(path: &Path, bytes: &[u8]) -> Result<(), TestCaseError> {
    std::fs::write(path, bytes)
        .map_err(|e| TestCaseError::fail(format!("cannot write {}: {e}", path.display())))
}

/// The repository's root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A file under `tests/examples/`, as text.
pub fn example(relative: &str) -> String {
    let path = root().join("tests/examples").join(relative);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read the bundled example {}: {e}", path.display()))
}

/// A bundled example task (`sentiment` or `contacts`), loaded as a user's would be.
pub fn example_task(name: &str) -> tuningfork::task::Task {
    let path = root().join("tests/examples").join(name).join("task.toml");
    tuningfork::task::Task::load(&path)
        .unwrap_or_else(|e| panic!("the bundled example task does not load: {e}"))
}

/// `text` with every `\n` written as `\r\n`, as Windows editors save it.
pub fn crlf(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 16);
    for &byte in bytes {
        if byte == b'\n' {
            out.push(b'\r');
        }
        out.push(byte);
    }
    out
}

/// `bytes` after a UTF-8 byte-order mark, as some editors save text.
pub fn with_bom(bytes: &[u8]) -> Vec<u8> {
    let mut out = b"\xEF\xBB\xBF".to_vec();
    out.extend_from_slice(bytes);
    out
}
