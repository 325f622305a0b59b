//! The `tuningfork` binary as a user runs it: real model, real store file, real HTTP.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::Command;

use common::*;

#[test]
fn generate_records_the_call_and_the_second_time_hits_the_cache() {
    let sandbox = Sandbox::new();
    let first = sandbox.run(&["generate", "--max-tokens", "12", "What is 2 plus 2?"]);
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(!stdout(&first).trim().is_empty());
    assert!(!stderr(&first).contains("from cache"));
    let second = sandbox.run(&["generate", "--max-tokens", "12", "What is 2 plus 2?"]);
    assert!(second.status.success());
    assert_eq!(stdout(&first), stdout(&second));
    assert!(
        stderr(&second).contains("from cache"),
        "{}",
        stderr(&second)
    );

    let list = sandbox.run(&["runs", "list"]);
    assert!(list.status.success());
    assert_eq!(
        stdout(&list)
            .lines()
            .filter(|l| l.contains("generate"))
            .count(),
        2
    );
    let show = sandbox.run(&["runs", "show", "2", "--json"]);
    let value: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(value["calls"][0]["cached"], true);
    assert_eq!(value["run"]["run"]["status"], "completed");
    assert_eq!(
        value["calls"][0]["output"].as_str().unwrap().trim(),
        stdout(&first).trim()
    );

    let missing = sandbox.run(&["runs", "show", "99"]);
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("no run 99"),
        "{}",
        stderr(&missing)
    );
}

#[test]
fn a_missing_model_file_names_the_fetch_command() {
    let sandbox = Sandbox::new();
    let models = sandbox.dir.path().join("models");
    std::fs::create_dir_all(&models).unwrap();
    std::fs::copy(models_dir().join("models.toml"), models.join("models.toml")).unwrap();
    let out = sandbox.run_in(&models, &["generate", "hi"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("scripts/fetch-models.sh smollm2-135m"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn a_wrong_hash_is_refused_with_both_hashes() {
    let sandbox = Sandbox::new();
    let models = sandbox.dir.path().join("models");
    std::fs::create_dir_all(&models).unwrap();
    let toml = std::fs::read_to_string(models_dir().join("models.toml")).unwrap();
    std::fs::write(models.join("models.toml"), &toml).unwrap();
    let mut bytes = std::fs::read(models_dir().join("SmolLM2-135M-Instruct.Q4_1.gguf")).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(models.join("SmolLM2-135M-Instruct.Q4_1.gguf"), &bytes).unwrap();
    let out = sandbox.run_in(&models, &["generate", "hi"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"),
        "{err}"
    );
    assert!(err.contains("refusing to load"), "{err}");
    let verify = sandbox.run_in(&models, &["models", "verify", "smollm2-135m"]);
    assert!(!verify.status.success());
}

#[test]
fn a_malformed_registry_names_file_and_line() {
    let sandbox = Sandbox::new();
    let models = sandbox.dir.path().join("models");
    std::fs::create_dir_all(&models).unwrap();
    std::fs::write(
        models.join("models.toml"),
        "[[model]]\nname = \"x\"\nsha256 = 12\n",
    )
    .unwrap();
    let out = sandbox.run_in(&models, &["models", "list"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("models.toml") && err.contains("line 3"),
        "{err}"
    );
}

#[test]
fn inspect_reads_the_header_without_loading() {
    let sandbox = Sandbox::new();
    let out = sandbox.run(&["models", "inspect", "smollm2-135m", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(value["architecture"], "llama");
    assert_eq!(value["file_type"], "Q4_1");
    assert_eq!(value["context_length"], 8192);
    assert!(value["parameters"].as_u64().unwrap() > 100_000_000);
    let gemma = sandbox.run(&["models", "inspect", "gemma3-270m", "--json"]);
    let value: serde_json::Value = serde_json::from_slice(&gemma.stdout).unwrap();
    assert_eq!(value["architecture"], "gemma3");
    assert!(value["chat_template"].is_null());
}

#[test]
fn add_pins_a_local_file_and_verify_checks_it() {
    let sandbox = Sandbox::new();
    let models = sandbox.dir.path().join("models");
    let source = models_dir().join("SmolLM2-135M-Instruct.Q4_1.gguf");
    let out = sandbox.run_in(
        &models,
        &["models", "add", source.to_str().unwrap(), "--name", "mine"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let registry = tuningfork::models::Registry::open(&models).unwrap();
    assert_eq!(
        registry.get("mine").unwrap().sha256,
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    );
    let verify = sandbox.run_in(&models, &["models", "verify"]);
    assert!(verify.status.success(), "{}", stdout(&verify));
    let again = sandbox.run_in(
        &models,
        &["models", "add", source.to_str().unwrap(), "--name", "mine"],
    );
    assert!(!again.status.success());
    let not_gguf = sandbox.dir.path().join("notes.txt");
    std::fs::write(&not_gguf, "hello").unwrap();
    let bad = sandbox.run_in(
        &models,
        &[
            "models",
            "add",
            not_gguf.to_str().unwrap(),
            "--name",
            "notes",
        ],
    );
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("GGUF"), "{}", stderr(&bad));
}

/// A hub on 127.0.0.1 that answers file requests the way the Hugging Face hub does: a
/// `Range: bytes=0-0` probe with etag, commit and content-range headers, then ranged GETs.
fn fake_hub(
    repo: &'static str,
    revision: &'static str,
    file: &'static str,
    content: Vec<u8>,
) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let content = std::sync::Arc::new(content);
    std::thread::spawn(move || {
        for stream in listener.incoming().take(16) {
            let Ok(mut stream) = stream else { continue };
            let content = std::sync::Arc::clone(&content);
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                reader.read_line(&mut request_line).unwrap();
                let mut range_start = 0usize;
                let mut range_end = None;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(value) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
                        let (a, b) = value.trim().split_once('-').unwrap();
                        range_start = a.parse().unwrap();
                        range_end = b.parse::<usize>().ok();
                    }
                }
                let path = request_line.split_whitespace().nth(1).unwrap_or("");
                let expected = format!("/{repo}/resolve/{revision}/{file}");
                if path != expected {
                    let _ = stream.write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                    return;
                }
                let end = range_end
                    .unwrap_or(content.len() - 1)
                    .min(content.len() - 1);
                let body = &content[range_start..=end];
                let head = format!(
                    "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {}-{}/{}\r\n\
                     ETag: \"fake-etag-1\"\r\nX-Repo-Commit: {revision}\r\nConnection: close\r\n\r\n",
                    body.len(), range_start, end, content.len()
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(body);
                let _ = reader.read_to_end(&mut Vec::new());
            });
        }
    });
    address
}

#[test]
fn pull_downloads_at_a_revision_and_pins_the_file() {
    const REVISION: &str = "0123456789abcdef0123456789abcdef01234567";
    let content = std::fs::read(models_dir().join("SmolLM2-135M-Instruct.Q4_1.gguf")).unwrap();
    let endpoint = fake_hub("acme/smol", REVISION, "smol.gguf", content);
    let sandbox = Sandbox::new();
    let models = sandbox.dir.path().join("models");
    let out = Command::new(env!("CARGO_BIN_EXE_tuningfork"))
        .args([
            "models",
            "pull",
            "--repo",
            "acme/smol",
            "--revision",
            REVISION,
            "--file",
            "smol.gguf",
            "--name",
            "pulled",
        ])
        .args(["--endpoint", &endpoint])
        .env("TUNINGFORK_STORE", sandbox.store())
        .env("TUNINGFORK_MODELS", &models)
        .env("TUNINGFORK_CACHE", sandbox.dir.path().join("cache"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let registry = tuningfork::models::Registry::open(&models).unwrap();
    let pin = registry.get("pulled").unwrap();
    assert_eq!(
        pin.sha256,
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    );
    match &pin.source {
        tuningfork::models::Source::Huggingface {
            repo,
            revision,
            file,
        } => {
            assert_eq!(
                (repo.as_str(), revision.as_str(), file.as_str()),
                ("acme/smol", REVISION, "smol.gguf")
            );
        }
        other => panic!("unexpected source {other:?}"),
    }
    // The pulled model generates.
    let gen = sandbox.run_in(
        &models,
        &["generate", "--model", "pulled", "--max-tokens", "4", "Hi"],
    );
    assert!(gen.status.success(), "{}", stderr(&gen));
    // A file the hub does not have is a clear error.
    let missing = sandbox.run_in(
        &models,
        &[
            "models",
            "pull",
            "--repo",
            "acme/smol",
            "--revision",
            REVISION,
            "--file",
            "nope.gguf",
            "--endpoint",
            &endpoint,
        ],
    );
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("nope.gguf"),
        "{}",
        stderr(&missing)
    );
}

#[test]
fn bench_prints_prefill_and_decode_speed() {
    let sandbox = Sandbox::new();
    let out = sandbox.run(&[
        "bench",
        "--prompt-tokens",
        "64",
        "--gen-tokens",
        "8",
        "--repetitions",
        "1",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["prefill_tokens_per_s"].as_f64().unwrap() > 0.0);
    assert!(report["decode_tokens_per_s"].as_f64().unwrap() > 0.0);
    assert!(report["samples"][0]["prompt_tokens"].as_u64().unwrap() >= 64);
}

#[test]
fn bench_batched_measures_each_batch_size_both_ways() {
    let sandbox = Sandbox::new();
    let out = sandbox.run(&[
        "bench",
        "--batched",
        "--prompt-tokens",
        "32",
        "--gen-tokens",
        "6",
        "--sequences",
        "1,3",
        "--repetitions",
        "1",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for (row, b) in rows.iter().zip([1u64, 3]) {
        assert_eq!(row["sequences"], b);
        assert_eq!(row["prompt_tokens"], 32);
        for figure in [
            "prefill_tokens_per_s",
            "decode_tokens_per_s",
            "tokens_per_s",
        ] {
            assert!(row["passes"][figure].as_f64().unwrap() > 0.0, "{row}");
        }
        let generated = row["engine"]["generated_tokens"].as_u64().unwrap();
        assert!(generated > 0 && generated <= 6 * b, "{row}");
        assert!(row["engine"]["prompt_tokens"].as_u64().unwrap() >= 32 * b);
    }
    let zero = sandbox.run(&["bench", "--batched", "--sequences", "0,4"]);
    assert!(!zero.status.success());
    assert!(stderr(&zero).contains("--sequences"), "{}", stderr(&zero));
    let huge = sandbox.run(&["bench", "--batched", "--prompt-tokens", "99999999999"]);
    assert!(!huge.status.success());
    assert!(stderr(&huge).contains("at most"), "{}", stderr(&huge));
    assert!(!stderr(&huge).contains("panicked"), "{}", stderr(&huge));
}

#[test]
fn bad_arguments_fail_without_a_panic() {
    let sandbox = Sandbox::new();
    for args in [
        vec!["generate", "--temperature", "abc", "x"],
        vec!["generate", "--top-p", "5", "x"],
        vec!["generate", "--model", "nope", "x"],
        vec!["generate", "--grammar", "/nonexistent.gbnf", "x"],
        vec!["models", "inspect", "/nonexistent.gguf"],
    ] {
        let out = sandbox.run(&args);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(
            !stderr(&out).contains("panicked"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn a_reader_closing_the_pipe_is_not_an_error() {
    let sandbox = Sandbox::new();
    {
        let store = tuningfork::store::Store::open(&sandbox.store()).unwrap();
        let fingerprint = tuningfork::engine::EngineFingerprint::current();
        for _ in 0..1500 {
            store
                .begin_run(&tuningfork::store::NewRun {
                    kind: "generate",
                    config: serde_json::json!({}),
                    seed: None,
                    model_sha256: None,
                    fingerprint: &fingerprint,
                })
                .unwrap();
        }
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_tuningfork"))
        .args(["runs", "list", "--limit", "1500"])
        .env("TUNINGFORK_STORE", sandbox.store())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 16];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    // stdout is closed here, long before the listing (~170 KB) is written.
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
}
