//! Reproducibility audits through the binary, on the real model: replay under other batching,
//! rerun from stored inputs, bundles that travel and show tampering, and model refusal.

mod common;

use std::path::Path;

use common::*;
use serde_json::Value;

/// A small optimization run in `sandbox`; returns its uid and its `--json` report.
fn optimization(sandbox: &Sandbox) -> (String, Value) {
    let (task, _) = small_task(sandbox.dir.path(), 16, 8, 8);
    let run = report(&sandbox.run(&[
        "optimize",
        task.to_str().unwrap(),
        "--max-labeled",
        "3",
        "--max-bootstrapped",
        "2",
        "--candidates",
        "1",
        "--json",
    ]));
    (run["run"].as_str().unwrap().to_string(), run)
}

fn replay(sandbox: &Sandbox, run: &str, extra: &[&str]) -> Value {
    let mut args = vec!["replay", run, "--json"];
    args.extend_from_slice(extra);
    report(&sandbox.run(&args))
}

fn assert_identical(replayed: &Value, calls: i64) {
    assert_eq!(replayed["diverged"], 0, "{replayed}");
    assert_eq!(replayed["checked"], calls, "{replayed}");
    assert_eq!(replayed["identical"], calls, "{replayed}");
    assert_eq!(replayed["fingerprint_differences"], serde_json::json!([]));
}

#[test]
fn an_optimization_run_replays_identically_under_any_batching() {
    let _serial = serial();
    let sandbox = Sandbox::new();
    let (uid, _) = optimization(&sandbox);
    let calls = count(&db(&sandbox), "SELECT COUNT(*) FROM calls WHERE run_id = 1");
    assert!(calls > 40, "{calls} calls");
    // Whatever batching arises: the defaults, then one request at a time with small batches
    // and no prefix reuse, then eight slots with everything submitted at once.
    assert_identical(&replay(&sandbox, &uid, &[]), calls);
    assert_identical(
        &replay(
            &sandbox,
            &uid,
            &[
                "--slots",
                "1",
                "--batch-size",
                "32",
                "--no-prefix-reuse",
                "--jobs",
                "1",
            ],
        ),
        calls,
    );
    assert_identical(
        &replay(&sandbox, &uid, &["--slots", "8", "--jobs", "200"]),
        calls,
    );
    // A sample recomputes only that many requests.
    let sampled = replay(&sandbox, &uid, &["--sample", "5", "--seed", "3"]);
    assert_eq!(sampled["recomputed"], 5);
    assert_eq!(sampled["diverged"], 0);
    // Replays recompute: their own calls are uncached, under runs of their own.
    let conn = db(&sandbox);
    assert_eq!(
        count(
            &conn,
            "SELECT COUNT(*) FROM calls WHERE run_id > 1 AND cached = 1"
        ),
        0
    );
    // The audit report lists the inputs, the environment and every replay.
    let audit = report(&sandbox.run(&["runs", "audit", &uid, "--json"]));
    assert_eq!(audit["replays"].as_array().unwrap().len(), 4);
    assert_eq!(audit["loops"][0]["splits"]["train"]["rows"], 16);
    assert_eq!(audit["models"][0]["name"], "smollm2-135m");
    assert!(audit["run"]["engine_fingerprint"]["system_info"].is_string());
    let text = sandbox.run(&["runs", "audit", &uid]);
    assert!(text.status.success());
    for part in [
        "AUDIT REPORT",
        "Environment",
        "Models",
        "Inputs and outcome",
        "Replays",
    ] {
        assert!(stdout(&text).contains(part), "{part}: {}", stdout(&text));
    }
}

#[test]
fn a_rerun_and_a_bundle_reach_the_same_results_and_tampering_is_named() {
    let _serial = serial();
    let sandbox = Sandbox::new();
    let (uid, original) = optimization(&sandbox);

    // A rerun from the stored inputs (the task and data files are gone) recomputes every call
    // and reaches the same artifact and scores.
    std::fs::remove_file(sandbox.dir.path().join("train.jsonl")).unwrap();
    std::fs::remove_file(sandbox.dir.path().join("task.toml")).unwrap();
    let rerun = report(&sandbox.run(&["rerun", &uid, "--json"]));
    assert_eq!(rerun["departures"], serde_json::json!([]), "{rerun}");
    assert_eq!(
        rerun["loops"][0]["artifact_hash"],
        original["loops"][0]["artifact_hash"]
    );
    assert_eq!(
        rerun["loops"][0]["optimized"],
        original["loops"][0]["optimized"]
    );
    let rerun_uid = rerun["rerun"].as_str().unwrap();
    assert_eq!(
        count(
            &db(&sandbox),
            &format!(
                "SELECT COUNT(*) FROM calls WHERE cached = 1 AND run_id =
                   (SELECT id FROM runs WHERE uid = '{rerun_uid}')"
            )
        ),
        0
    );

    // The bundle, imported into a fresh store, replays identically there.
    let bundle = sandbox.dir.path().join("run.bundle");
    let exported = sandbox.run(&["runs", "export", &uid, "--out", bundle.to_str().unwrap()]);
    assert!(exported.status.success(), "{}", stderr(&exported));
    let verified = sandbox.run(&["runs", "verify", bundle.to_str().unwrap()]);
    assert!(
        stdout(&verified).contains("intact"),
        "{}",
        stderr(&verified)
    );
    let elsewhere = Sandbox::new();
    let imported = elsewhere.run(&["runs", "import", bundle.to_str().unwrap()]);
    assert!(imported.status.success(), "{}", stderr(&imported));
    let calls = count(&db(&elsewhere), "SELECT COUNT(*) FROM calls");
    assert_eq!(
        calls,
        count(&db(&sandbox), "SELECT COUNT(*) FROM calls WHERE run_id = 1")
    );
    assert_identical(&replay(&elsewhere, &uid, &[]), calls);
    let audit = report(&elsewhere.run(&["runs", "audit", &uid, "--json"]));
    assert_eq!(
        audit["loops"][0]["outcome"]["artifact_hash"],
        original["loops"][0]["artifact_hash"]
    );
    let digest = stdout(&exported)
        .split("digest ")
        .nth(1)
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(audit["imported_from"]["bundle_digest"], digest.as_str());
    // Importing the same run twice is refused.
    let again = elsewhere.run(&["runs", "import", bundle.to_str().unwrap()]);
    assert!(!again.status.success());
    assert!(stderr(&again).contains("already"), "{}", stderr(&again));

    // An edited output, an edited score and a removed record are each named.
    let text = std::fs::read_to_string(&bundle).unwrap();
    let edit = |kind: &str, change: &dyn Fn(&mut Value)| -> (String, String) {
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        let index = lines
            .iter()
            .position(|l| serde_json::from_str::<Value>(l).unwrap()["kind"] == kind)
            .unwrap();
        let mut record: Value = serde_json::from_str(&lines[index]).unwrap();
        change(&mut record["data"]);
        let id = record["data"]["id"].to_string();
        lines[index] = record.to_string();
        (
            lines.join("\n") + "\n",
            format!("record {index} ({kind} id {id})"),
        )
    };
    let check = |edited: &str, expected: &str| {
        let path = sandbox.dir.path().join("edited.bundle");
        std::fs::write(&path, edited).unwrap();
        let verified = sandbox.run(&["runs", "verify", path.to_str().unwrap()]);
        assert!(!verified.status.success());
        assert!(
            stderr(&verified).contains(expected),
            "{expected}: {}",
            stderr(&verified)
        );
        let fresh = Sandbox::new();
        let imported = fresh.run(&["runs", "import", path.to_str().unwrap()]);
        assert!(!imported.status.success());
        assert!(!fresh.store().exists() || count(&db(&fresh), "SELECT COUNT(*) FROM runs") == 0);
    };
    let (edited, named) = edit("call", &|data| {
        data["output"] = Value::String("sentiment: neutral".into())
    });
    check(&edited, &named);
    let (edited, named) = edit("result", &|data| {
        let score = data["score"].as_f64().unwrap();
        data["score"] = serde_json::json!(1.0 - score);
    });
    check(&edited, &named);
    let mut lines: Vec<&str> = text.lines().collect();
    lines.remove(5);
    check(&(lines.join("\n") + "\n"), "record 6");
}

#[test]
fn a_model_file_that_is_not_the_runs_is_refused() {
    let _serial = serial();
    let sandbox = Sandbox::new();
    let generated = sandbox.run(&["generate", "--max-tokens", "8", "Say hello."]);
    assert!(generated.status.success(), "{}", stderr(&generated));
    // A stored output that the model does not give is found and named.
    let conn = db(&sandbox);
    let output: String = conn
        .query_row("SELECT output FROM calls WHERE id = 1", [], |r| r.get(0))
        .unwrap();
    conn.execute(
        "UPDATE calls SET output = ?1 WHERE id = 1",
        [format!("{output} (edited)")],
    )
    .unwrap();
    drop(conn);
    let out = sandbox.run(&["replay", "1", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let replayed: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(replayed["diverged"], 1);
    let divergence = &replayed["divergences"][0];
    assert_eq!(divergence["call_id"], 1);
    assert_eq!(divergence["replayed"], output.as_str());
    assert_eq!(divergence["char_position"], output.chars().count());
    assert!(divergence["token_position"].as_u64().unwrap() > 0);
    assert_eq!(count(&db(&sandbox), "SELECT diverged FROM replays"), 1);

    let real = models_dir();
    let registry = std::fs::read_to_string(real.join("models.toml")).unwrap();
    let smollm = "SmolLM2-135M-Instruct.Q4_1.gguf";

    // The same pin, but the file has one byte changed: re-hashed and refused.
    let altered = sandbox.dir.path().join("altered");
    std::fs::create_dir(&altered).unwrap();
    std::fs::write(altered.join("models.toml"), &registry).unwrap();
    let mut bytes = std::fs::read(real.join(smollm)).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(altered.join(smollm), bytes).unwrap();
    let out = sandbox.run_in(&altered, &["replay", "1"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53")
            && stderr(&out).contains("refusing"),
        "{}",
        stderr(&out)
    );

    // The name now pinned to another model: the run's model is not pinned, so refused.
    let repinned = sandbox.dir.path().join("repinned");
    std::fs::create_dir(&repinned).unwrap();
    let gemma_sha = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818";
    let swapped = registry
        .replace(
            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            gemma_sha,
        )
        .replace(smollm, "gemma-3-270m-q4_k_m.gguf");
    std::fs::write(repinned.join("models.toml"), swapped).unwrap();
    link_or_copy(
        &real.join("gemma-3-270m-q4_k_m.gguf"),
        &repinned.join("gemma-3-270m-q4_k_m.gguf"),
    );
    let out = sandbox.run_in(&repinned, &["replay", "1"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no pin"), "{}", stderr(&out));
    // The refused replays recorded nothing.
    assert_eq!(count(&db(&sandbox), "SELECT COUNT(*) FROM replays"), 1);
}

fn link_or_copy(from: &Path, to: &Path) {
    if std::fs::hard_link(from, to).is_err() {
        std::fs::copy(from, to).unwrap();
    }
}
