//! Pins, the run store and the exact cache, on the real model and a real SQLite file.

mod common;

use std::sync::Arc;

use common::*;
use tuningfork::engine::{
    Engine, EngineConfig, EngineError, GenerationRequest, Message, SamplingParams,
};
use tuningfork::generator::{load_engine, GenerateError};
use tuningfork::models::{ModelError, ModelPin, NoMemo, Registry, Source};
use tuningfork::store::{RunStatus, Store};

/// A registry in a temp dir pinning `content` as model `name`.
fn registry_with(dir: &std::path::Path, name: &str, content: &[u8]) -> Registry {
    std::fs::write(dir.join(format!("{name}.gguf")), content).unwrap();
    let mut registry = Registry::open(dir).unwrap();
    registry
        .add(ModelPin {
            name: name.to_string(),
            file: format!("{name}.gguf"),
            sha256: tuningfork::models::hashing::sha256_file(&dir.join(format!("{name}.gguf")))
                .unwrap(),
            size: content.len() as u64,
            description: None,
            source: Source::Local {
                path: "/elsewhere".into(),
            },
        })
        .unwrap();
    registry
}

#[test]
fn a_file_that_does_not_match_its_pin_is_refused_and_nothing_is_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let real = std::fs::read(registry().file_path(registry().get(SMOLLM).unwrap())).unwrap();
    let registry = registry_with(dir.path(), "smol", &real);
    // Same size, one byte changed in the middle of the weights.
    let mut tampered = real.clone();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 0xff;
    std::fs::write(dir.path().join("smol.gguf"), &tampered).unwrap();

    let store = Store::open_in_memory().unwrap();
    let err = load_engine(&registry, &store, "smol", false, EngineConfig::default())
        .err()
        .expect("a tampered file must be refused");
    let message = err.to_string();
    assert!(
        matches!(err, GenerateError::Model(ModelError::HashMismatch { .. })),
        "{message}"
    );
    assert!(message.contains("smol.gguf"), "{message}");
    assert!(
        message.contains(&registry.get("smol").unwrap().sha256),
        "{message}"
    );
    assert_eq!(
        store.model_count().unwrap(),
        0,
        "nothing may be recorded as loaded"
    );
}

#[test]
fn a_truncated_or_corrupt_gguf_is_an_error_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let real = std::fs::read(registry().file_path(registry().get(SMOLLM).unwrap())).unwrap();
    // Pinned as they are, so the hash check passes and llama.cpp itself must refuse them.
    for (name, content) in [
        ("truncated", real[..real.len() / 3].to_vec()),
        (
            "garbage",
            b"GGUF\x03\x00\x00\x00 not really a model".to_vec(),
        ),
        ("empty", Vec::new()),
    ] {
        let registry = registry_with(dir.path(), name, &content);
        let pinned = registry.verify(name, &NoMemo, true).unwrap();
        let err = Engine::load(&pinned, EngineConfig::default())
            .err()
            .unwrap_or_else(|| panic!("{name} loaded"));
        assert!(
            matches!(err, EngineError::ModelLoad { .. }),
            "{name}: {err}"
        );
        assert!(err.to_string().contains(&format!("{name}.gguf")), "{err}");
    }
}

#[test]
fn cache_hit_returns_identical_output_and_is_recorded_as_a_hit() {
    let store = memory_store();
    let generator = generator(shared(SMOLLM), Arc::clone(&store));
    let request = GenerationRequest::chat(vec![Message::user("Say hello.")], 16)
        .with_sampling(SamplingParams::seeded(0.8, 5));
    let first = block_on(generator.generate(request.clone())).unwrap();
    let second = block_on(generator.generate(request.clone())).unwrap();
    assert!(!first.cached);
    assert!(second.cached);
    assert_eq!(first.completion.text, second.completion.text);
    assert_eq!(first.request_hash, second.request_hash);

    // Any sampling parameter is part of the key.
    let other_seed = request
        .clone()
        .with_sampling(SamplingParams::seeded(0.8, 6));
    let third = block_on(generator.generate(other_seed)).unwrap();
    assert!(!third.cached);
    assert_ne!(third.request_hash, first.request_hash);

    // --no-cache forces inference and still records the call.
    let forced = generator.clone().with_cache(false);
    let fourth = block_on(forced.generate(request)).unwrap();
    assert!(!fourth.cached);
    assert_eq!(fourth.completion.text, first.completion.text);

    let calls = store.run_calls(generator.run_id()).unwrap();
    let cached: Vec<bool> = calls.iter().map(|c| c.cached).collect();
    assert_eq!(cached, [false, true, false, false]);
    assert_eq!(calls[1].output, calls[0].output);
    assert!(calls[0].prompt.contains("Say hello."));
    assert_eq!(calls[0].request["sampling"]["seed"], 5);
}

#[test]
fn the_store_reopens_with_everything_in_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runs/tuningfork.sqlite");
    let (run_id, text) = {
        let store = Arc::new(Store::open(&path).unwrap());
        let engine = Arc::new(
            load_engine(&registry(), &store, SMOLLM, false, EngineConfig::default()).unwrap(),
        );
        let generator = generator(engine, Arc::clone(&store));
        let done =
            block_on(generator.generate(GenerationRequest::raw("Once upon a time", 8))).unwrap();
        store
            .finish_run(generator.run_id(), RunStatus::Completed, None)
            .unwrap();
        (generator.run_id(), done.completion.text)
    };
    let store = Store::open(&path).unwrap();
    let run = store.run(&run_id.to_string()).unwrap();
    assert_eq!(run.status, tuningfork::store::RunStatus::Completed);
    assert!(run.ended_at.is_some());
    assert_eq!(run.engine_fingerprint["backend"], "cpu");
    assert_eq!(store.run(&run.uid).unwrap().id, run_id);
    let calls = store.run_calls(run_id).unwrap();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].output, text);
    assert_eq!(calls[0].prompt, "Once upon a time");
    assert_eq!(store.model_count().unwrap(), 1);
    // The verified hash was remembered by path, size and mtime.
    let pin = registry();
    let pin = pin.get(SMOLLM).unwrap();
    let file = registry().file_path(pin);
    let (size, mtime) = tuningfork::models::hashing::size_and_mtime(&file).unwrap();
    use tuningfork::models::HashMemo;
    assert_eq!(
        store.recall(&file, size, mtime).as_deref(),
        Some(pin.sha256.as_str())
    );
}

#[test]
fn running_migrations_again_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sqlite");
    let schema = |store: &Store| -> i64 { store.schema_version().unwrap() };
    let store = Store::open(&path).unwrap();
    let before = schema(&store);
    store.migrate().unwrap();
    store.migrate().unwrap();
    assert_eq!(schema(&store), before);
    drop(store);
    let dump = |p: &std::path::Path| {
        let conn = rusqlite::Connection::open(p).unwrap();
        let mut stmt = conn
            .prepare("SELECT type, name, sql FROM sqlite_master ORDER BY name")
            .unwrap();
        let rows: Vec<(String, String, Option<String>)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        rows
    };
    let first = dump(&path);
    drop(Store::open(&path).unwrap());
    assert_eq!(dump(&path), first);
    assert!(first.iter().any(|(_, name, _)| name == "calls"));
}
