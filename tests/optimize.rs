//! Optimization runs through the binary, on the real model: every optimizer, concurrent loops,
//! held-out discipline, budgets, resume after `kill -9`, and artifacts that travel.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::*;
use serde_json::Value;
use tuningfork::optimize::program_hash;
use tuningfork::program::Program;

/// The ids of the calls made for the final test-split evaluation.
fn test_stage_calls(conn: &rusqlite::Connection) -> BTreeSet<i64> {
    let mut statement = conn
        .prepare("SELECT trace_json FROM candidate_results WHERE split = 'test'")
        .unwrap();
    let traces: Vec<String> = statement
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    traces
        .iter()
        .flat_map(|t| {
            serde_json::from_str::<Vec<Value>>(t)
                .unwrap()
                .into_iter()
                .map(|step| step["call_id"].as_i64().unwrap())
        })
        .collect()
}

fn artifact(sandbox: &Sandbox, hash: &str) -> Value {
    let shown = sandbox.run(&["artifacts", "show", hash]);
    assert!(shown.status.success(), "{}", stderr(&shown));
    let text = stdout(&shown);
    // The first line is the hash.
    let (_, json) = text.split_once('\n').unwrap();
    serde_json::from_str(json).unwrap()
}

#[test]
fn every_optimizer_runs_on_one_engine_and_never_sees_the_test_split() {
    let _serial = serial();
    let sandbox = Sandbox::new();
    let (task, test_reviews) = small_task(sandbox.dir.path(), 24, 12, 12);
    let task = task.to_str().unwrap();
    let run = report(&sandbox.run(&[
        "optimize",
        task,
        "--optimizer",
        "labeled",
        "--optimizer",
        "bootstrap",
        "--optimizer",
        "random-search",
        "--max-labeled",
        "4",
        "--max-bootstrapped",
        "2",
        "--candidates",
        "2",
        "--json",
    ]));
    let loops = run["loops"].as_array().unwrap();
    assert_eq!(loops.len(), 3, "{run}");
    assert_eq!(run["status"], "completed");
    for (outcome, optimizer) in
        loops
            .iter()
            .zip(["labeled_few_shot", "bootstrap_few_shot", "random_search"])
    {
        assert_eq!(outcome["optimizer"], optimizer);
        assert_eq!(outcome["status"], "completed", "{outcome}");
        let stored = artifact(&sandbox, outcome["artifact_hash"].as_str().unwrap());
        let demos = stored["program"]["steps"][0]["demos"].as_array().unwrap();
        if optimizer != "random_search" {
            // Labeled: k = 4; bootstrap: traced demos filled up to 4 with labeled ones.
            assert_eq!(demos.len(), 4, "{optimizer}: {stored}");
            assert_eq!(stored["parent"], outcome["baseline_hash"]);
        }
        assert!(stored["scores"]["test"].is_number(), "{stored}");
    }
    let search = &loops[2];
    // Random search keeps zero-shot among its candidates, so it never ends below it on val.
    assert!(
        search["optimized"]["val"].as_f64().unwrap() >= search["baseline"]["val"].as_f64().unwrap()
    );
    // Baseline, zero-shot, labeled, bootstrap and two shuffled bootstraps.
    assert_eq!(search["candidates"], 6);

    let conn = db(&sandbox);
    // Bootstrapping stored the teacher's traces.
    let teacher = count(
        &conn,
        "SELECT COUNT(*) FROM candidate_results WHERE subject LIKE 'teacher:%' AND split = 'train'
           AND trace_json LIKE '%\"outputs\":{%'",
    );
    assert!(teacher >= 2, "{teacher} teacher traces");
    // The test split was run only for each loop's baseline and result...
    let test_subjects = count(
        &conn,
        "SELECT COUNT(*) FROM (SELECT DISTINCT optimization_id, subject FROM candidate_results
           WHERE split = 'test')",
    );
    assert!((3..=6).contains(&test_subjects), "{test_subjects}");
    // ...and no other call ever showed the model a test example.
    let test_calls = test_stage_calls(&conn);
    let mut statement = conn.prepare("SELECT id, prompt FROM calls").unwrap();
    let calls: Vec<(i64, String)> = statement
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut seen_in_test_stage = 0;
    for (id, prompt) in &calls {
        if test_reviews
            .iter()
            .any(|review| prompt.contains(review.as_str()))
        {
            assert!(
                test_calls.contains(id),
                "call {id} saw test data outside the final evaluation"
            );
            seen_in_test_stage += 1;
        }
    }
    assert!(seen_in_test_stage >= 12, "{seen_in_test_stage}");

    // The result travels: export, import into a fresh store, and the same test score there.
    let hash = search["artifact_hash"].as_str().unwrap();
    let file = sandbox.dir.path().join("best.json");
    let exported = sandbox.run(&["artifacts", "export", hash, "--out", file.to_str().unwrap()]);
    assert!(exported.status.success(), "{}", stderr(&exported));
    let elsewhere = Sandbox::new();
    let imported = elsewhere.run(&["artifacts", "import", file.to_str().unwrap()]);
    assert!(imported.status.success(), "{}", stderr(&imported));
    assert_eq!(stdout(&imported).trim(), hash);
    let eval = elsewhere.run(&["eval", task, "--split", "test", "--program", hash, "--json"]);
    let eval = report(&eval);
    assert_eq!(eval["mean"], search["optimized"]["test"]);

    // And to DSPy's format and back, to the same program.
    let dspy = sandbox.dir.path().join("dspy.json");
    let exported = sandbox.run(&[
        "artifacts",
        "export",
        hash,
        "--format",
        "dspy",
        "--out",
        dspy.to_str().unwrap(),
    ]);
    assert!(exported.status.success(), "{}", stderr(&exported));
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&dspy).unwrap()).unwrap();
    assert!(
        saved["classify"]["signature"]["instructions"].is_string(),
        "{saved}"
    );
    let back = elsewhere.run(&[
        "artifacts",
        "import",
        dspy.to_str().unwrap(),
        "--format",
        "dspy",
        "--task",
        task,
    ]);
    assert!(back.status.success(), "{}", stderr(&back));
    let program: Program =
        serde_json::from_value(artifact(&elsewhere, stdout(&back).trim())["program"].clone())
            .unwrap();
    let original: Program =
        serde_json::from_value(artifact(&sandbox, hash)["program"].clone()).unwrap();
    assert_eq!(program_hash(&program), program_hash(&original));
}

/// Runs `optimize` with `options` uninterrupted, then again killed twice with SIGKILL — once
/// when `first_kill` counts at least 1, then when the stored results have grown by 25 — and
/// resumed with other thread and slot counts; the resumed run must end at the uninterrupted
/// run's artifacts and compute no stored call again.
fn killed_twice_resumes_to_the_same_artifacts(options: &[&str], first_kill: &str) {
    let args = |task: &str| {
        let mut args = vec![
            "optimize".to_string(),
            task.to_string(),
            "--json".to_string(),
        ];
        args.extend(options.iter().map(|o| o.to_string()));
        args
    };

    // The uninterrupted run.
    let reference = Sandbox::new();
    let (task, _) = small_task(reference.dir.path(), 24, 12, 12);
    let a: Vec<String> = args(task.to_str().unwrap());
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let uninterrupted = report(&reference.run(&a));
    let computed = |sandbox: &Sandbox| {
        count(
            &db(sandbox),
            "SELECT COUNT(*) FROM calls WHERE cached = 0 AND error IS NULL",
        )
    };
    let reference_computed = computed(&reference);

    // The same run, killed twice. It starts with other thread and slot counts than it
    // finishes with.
    let sandbox = Sandbox::new();
    let (task, _) = small_task(sandbox.dir.path(), 24, 12, 12);
    let b: Vec<String> = args(task.to_str().unwrap());
    let mut b: Vec<&str> = b.iter().map(String::as_str).collect();
    b.extend(["--threads", "1", "--slots", "2"]);
    let results = "SELECT COUNT(*) FROM candidate_results";
    let child = sandbox.command_in(&models_dir(), &b).spawn().unwrap();
    kill_when(&sandbox, child, first_kill, 1);
    let first = count(&db(&sandbox), results);
    let conn = db(&sandbox);
    let status: String = conn
        .query_row("SELECT status FROM runs WHERE id = 1", [], |r| r.get(0))
        .unwrap();
    assert_eq!(status, "running");
    drop(conn);
    let child = sandbox
        .command_in(&models_dir(), &["resume", "1", "--slots", "8"])
        .spawn()
        .unwrap();
    let second = kill_when(&sandbox, child, results, first + 25);
    assert!(second > first);
    let resumed = report(&sandbox.run(&["resume", "1", "--json"]));
    assert_eq!(resumed["status"], "completed", "{resumed}");

    let loops = uninterrupted["loops"].as_array().unwrap();
    for (i, x) in loops.iter().enumerate() {
        let y = &resumed["loops"][i];
        assert_eq!(x["artifact_hash"], y["artifact_hash"], "{x}\n{y}");
        assert_eq!(x["baseline"], y["baseline"]);
        assert_eq!(x["optimized"], y["optimized"]);
    }
    // Nothing stored was computed again.
    assert!(
        computed(&sandbox) <= reference_computed,
        "{} calls computed across the kills, {reference_computed} without",
        computed(&sandbox)
    );
    // Resuming a finished run changes nothing.
    let again = report(&sandbox.run(&["resume", "1", "--json"]));
    assert_eq!(
        again["loops"][0]["artifact_hash"],
        loops[0]["artifact_hash"]
    );
}

#[test]
fn a_run_killed_at_several_points_resumes_to_the_same_artifact() {
    let _serial = serial();
    // Killed during the baseline, then during the candidates.
    killed_twice_resumes_to_the_same_artifacts(
        &[
            "--max-labeled",
            "4",
            "--max-bootstrapped",
            "2",
            "--candidates",
            "2",
        ],
        "SELECT COUNT(*) >= 5 FROM candidate_results",
    );
}

#[test]
fn instruction_optimizers_killed_while_proposing_and_searching_resume_to_the_same_artifacts() {
    let _serial = serial();
    // Killed once the proposer has answered, then during the search and reflections.
    killed_twice_resumes_to_the_same_artifacts(
        &INSTRUCTION_OPTIONS,
        "SELECT COUNT(*) FROM calls c JOIN models m ON m.sha256 = c.model_sha256
           WHERE m.name = 'qwen2.5-coder-0.5b'",
    );
}

#[test]
fn budgets_stop_a_run_cleanly_with_the_best_program_so_far() {
    let _serial = serial();
    for (flag, value, reason) in [
        ("--budget-calls", "30", "calls budget (30)"),
        ("--budget-tokens", "4000", "tokens budget (4000)"),
        ("--budget-time", "2s", "time budget (2s)"),
    ] {
        let sandbox = Sandbox::new();
        let (task, _) = small_task(sandbox.dir.path(), 24, 12, 12);
        let run = report(&sandbox.run(&[
            "optimize",
            task.to_str().unwrap(),
            "--max-labeled",
            "4",
            flag,
            value,
            "--promote",
            "nightly",
            "--json",
        ]));
        let outcome = &run["loops"][0];
        assert_eq!(outcome["status"], "stopped", "{flag}: {outcome}");
        assert!(
            outcome["stop_reason"].as_str().unwrap().contains(reason),
            "{flag}: {outcome}"
        );
        // The result is a stored program with its held-out score, promoted as asked.
        let stored = artifact(&sandbox, outcome["artifact_hash"].as_str().unwrap());
        assert!(stored["scores"]["test"].is_number());
        assert_eq!(artifact(&sandbox, "nightly"), stored);
        let conn = db(&sandbox);
        let search_calls =
            count(&conn, "SELECT COUNT(*) FROM calls") as usize - test_stage_calls(&conn).len();
        if flag == "--budget-calls" {
            assert!(search_calls <= 30, "{search_calls} calls");
        }
    }
}

#[test]
fn bad_options_and_unknown_runs_are_clear_errors() {
    let sandbox = Sandbox::new();
    let (task, _) = small_task(sandbox.dir.path(), 24, 12, 12);
    let task = task.to_str().unwrap();
    let out = sandbox.run(&["optimize", task, "--budget-time", "8x"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--budget-time") && stderr(&out).contains("8h"),
        "{}",
        stderr(&out)
    );
    let out = sandbox.run(&[
        "optimize",
        task,
        "--optimizer",
        "bootstrap",
        "--max-rounds",
        "0",
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("max rounds"), "{}", stderr(&out));
    // The answer step reads passages a search finds, which the data does not hold: there is
    // nothing for knn to show, and it says so before anything runs.
    let rag = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/examples/rag/task.toml");
    let out = sandbox.run(&["optimize", rag.to_str().unwrap(), "--optimizer", "knn"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("rag/task.toml: the knn optimizer shows labeled training examples"),
        "{}",
        stderr(&out)
    );
    let out = sandbox.run(&["resume", "42"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no run 42"), "{}", stderr(&out));
    let out = sandbox.run(&["artifacts", "import", task, "--format", "dspy"]);
    assert!(stderr(&out).contains("--task"), "{}", stderr(&out));
    // Nothing was started, so nothing is half-recorded.
    assert!(!sandbox.store().exists() || count(&db(&sandbox), "SELECT COUNT(*) FROM runs") == 0);
}

#[test]
fn a_program_saved_by_dspy_imports_onto_its_task() {
    // `dspy-program.json` was written by DSPy 3.4.1's `Module.save` for the sentiment task.
    let sandbox = Sandbox::new();
    let examples =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/examples/sentiment");
    let file = examples.join("dspy-program.json");
    let task = examples.join("task.toml");
    let imported = sandbox.run(&[
        "artifacts",
        "import",
        file.to_str().unwrap(),
        "--format",
        "dspy",
        "--task",
        task.to_str().unwrap(),
    ]);
    assert!(imported.status.success(), "{}", stderr(&imported));
    let stored = artifact(&sandbox, stdout(&imported).trim());
    let step = &stored["program"]["steps"][0];
    assert_eq!(
        step["signature"]["instructions"],
        "Decide whether the product review is positive, negative or neutral."
    );
    assert_eq!(step["demos"].as_array().unwrap().len(), 3);
    assert_eq!(step["demos"][0]["outputs"]["sentiment"], "neutral");
    assert_eq!(stored["task"], "sentiment");
    // And back out in the same layout DSPy wrote.
    let exported = sandbox.run(&[
        "artifacts",
        "export",
        stdout(&imported).trim(),
        "--format",
        "dspy",
    ]);
    let ours: Value = serde_json::from_str(&stdout(&exported)).unwrap();
    let theirs: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(ours["classify"]["demos"][1], theirs["classify"]["demos"][1]);
    assert_eq!(
        ours["classify"]["signature"]["instructions"],
        theirs["classify"]["signature"]["instructions"]
    );
    assert_eq!(
        ours["classify"]["signature"]["fields"][0]["prefix"],
        theirs["classify"]["signature"]["fields"][0]["prefix"]
    );
}

#[test]
fn knn_makes_the_small_model_answer_neutral_and_dspy_export_refuses_it() {
    let _serial = serial();
    let sandbox = Sandbox::new();
    let (task, _) = small_task(sandbox.dir.path(), 60, 12, 24);
    let task = task.to_str().unwrap();
    let run = report(&sandbox.run(&["optimize", task, "--optimizer", "knn", "--json"]));
    let outcome = &run["loops"][0];
    assert_eq!(outcome["status"], "completed", "{run}");
    assert_eq!(outcome["retrieved"], 3, "{outcome}");
    let (before, after) = (
        outcome["baseline"]["test"].as_f64().unwrap(),
        outcome["optimized"]["test"].as_f64().unwrap(),
    );
    assert!(after > before + 0.2, "test {before} -> {after}");
    // Zero-shot, SmolLM2-135M never answers `neutral`; shown the reviews most like the
    // input, it does, and rightly, on held-out test examples.
    let conn = db(&sandbox);
    let right_neutral = count(
        &conn,
        "SELECT COUNT(*) FROM candidate_results WHERE split = 'test' AND score = 1.0
           AND json_extract(outputs_json, '$.sentiment') = 'neutral'",
    );
    assert!(
        right_neutral >= 2,
        "{right_neutral} neutral test answers right"
    );
    // The program keeps its pool: the whole training split, and nothing else.
    let stored = artifact(&sandbox, outcome["artifact_hash"].as_str().unwrap());
    let nearest = &stored["program"]["steps"][0]["nearest"];
    assert_eq!(nearest["k"], 3);
    assert_eq!(nearest["pool"].as_array().unwrap().len(), 60);
    // DSPy's format holds fixed demonstrations only: the export is refused, with the fix.
    let export = sandbox.run(&[
        "artifacts",
        "export",
        outcome["artifact_hash"].as_str().unwrap(),
        "--format",
        "dspy",
    ]);
    assert!(!export.status.success());
    assert!(
        stderr(&export).contains("--format tuningfork"),
        "{}",
        stderr(&export)
    );
}

/// MIPROv2 and GEPA as two loops of one run, small enough for a test.
const INSTRUCTION_OPTIONS: [&str; 18] = [
    "--optimizer",
    "mipro",
    "--optimizer",
    "gepa",
    "--proposer",
    "qwen2.5-coder-0.5b",
    "--max-labeled",
    "4",
    "--max-bootstrapped",
    "2",
    "--trials",
    "5",
    "--minibatch",
    "6",
    "--metric-calls",
    "60",
    "--seed",
    "7",
];

#[test]
fn instruction_optimizers_propose_with_the_pinned_proposer_and_rerun_from_the_cache() {
    let _serial = serial();
    let sandbox = Sandbox::new();
    let (task, _) = small_task(sandbox.dir.path(), 24, 12, 12);
    let task = task.to_str().unwrap();
    let mut args = vec!["optimize", task, "--json"];
    args.extend(INSTRUCTION_OPTIONS);
    let run = report(&sandbox.run(&args));
    assert_eq!(run["status"], "completed", "{run}");
    let loops = run["loops"].as_array().unwrap();
    for (outcome, optimizer) in loops.iter().zip(["mipro", "gepa"]) {
        assert_eq!(outcome["optimizer"], optimizer);
        assert_eq!(outcome["status"], "completed", "{outcome}");
        // The baseline is a candidate of both, so neither ends below it on validation.
        assert!(outcome["optimized"]["val"].as_f64() >= outcome["baseline"]["val"].as_f64());
        assert!(
            outcome["notes"].as_array().is_some_and(|n| !n.is_empty()),
            "{outcome}"
        );
    }
    // MIPROv2 summarised the data and proposed instructions; every one of them is either a
    // candidate instruction or a rejection with its reason.
    let notes: Vec<&str> = loops[0]["notes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(notes[0].starts_with("data summary"), "{notes:?}");
    assert!(
        notes[1..]
            .iter()
            .all(|n| n.contains(" instruction ") || n.contains("rejected (")),
        "{notes:?}"
    );
    // The proposer's calls are in the store under its own model, apart from the task model's.
    let shares = run["by_model"].as_array().unwrap();
    assert_eq!(shares.len(), 2, "{run}");
    assert_eq!(shares[1]["model"], "qwen2.5-coder-0.5b");
    assert!(shares[1]["calls"].as_i64().unwrap() >= 2);
    let conn = db(&sandbox);
    let framed = count(
        &conn,
        "SELECT COUNT(*) FROM calls c JOIN models m ON m.sha256 = c.model_sha256
           WHERE m.name = 'qwen2.5-coder-0.5b'
             AND (c.output LIKE 'instruction: %' OR c.output LIKE 'summary: %')",
    );
    assert_eq!(
        framed,
        shares[1]["calls"].as_i64().unwrap(),
        "every reply in its frame"
    );
    // `runs show` lists the proposed instructions and the notes.
    let shown = sandbox.run(&["runs", "show", run["run"].as_str().unwrap()]);
    assert!(stdout(&shown).contains("notes:"), "{}", stdout(&shown));
    // A replay recomputes every call, the proposer's too, byte for byte.
    let replayed = report(&sandbox.run(&["replay", run["run"].as_str().unwrap(), "--json"]));
    assert_eq!(replayed["diverged"], 0, "{replayed}");
    assert_eq!(replayed["identical"], run["calls"], "{replayed}");

    // The same command again: every call, the proposer's included, from the cache, and the
    // same artifacts.
    let again = report(&sandbox.run(&args));
    assert_eq!(again["cache_hits"], again["calls"], "{again}");
    for (a, b) in loops.iter().zip(again["loops"].as_array().unwrap()) {
        assert_eq!(a["artifact_hash"], b["artifact_hash"]);
    }
}

#[test]
fn gepa_reflects_on_a_judge_s_feedback_text() {
    let _serial = serial();
    let sandbox = Sandbox::new();
    let (task, _) = small_task(sandbox.dir.path(), 18, 9, 6);
    // The metric is a model: the task's own grades (0 to 1, with a sentence of feedback).
    let text = std::fs::read_to_string(&task).unwrap();
    let metric_at = text.find("[metric]").unwrap();
    let generation_at = text.find("[generation]").unwrap();
    let judged = format!(
        "{}[metric]\nkind = \"judge\"\ninstructions = \"The predicted sentiment must be the expected one; neutral means facts without an opinion.\"\n\n{}",
        &text[..metric_at],
        &text[generation_at..]
    );
    std::fs::write(&task, judged).unwrap();
    let run = report(&sandbox.run(&[
        "optimize",
        task.to_str().unwrap(),
        "--optimizer",
        "gepa",
        "--metric-calls",
        "30",
        "--json",
    ]));
    assert_eq!(run["status"], "completed", "{run}");
    let outcome = &run["loops"][0];
    assert_eq!(outcome["status"], "completed", "{outcome}");
    assert!(outcome["optimized"]["val"].as_f64() >= outcome["baseline"]["val"].as_f64());
    // Some reflection showed the proposer the judge's own words about an example.
    let conn = db(&sandbox);
    let reflections = count(
        &conn,
        "SELECT COUNT(*) FROM calls WHERE prompt LIKE '%What happened with it:%'
           AND prompt LIKE '%feedback: %' AND prompt NOT LIKE '%feedback: `sentiment` was%'",
    );
    assert!(reflections >= 1, "{run}");
}
