//! Programs, datasets, metrics and evaluation on the real model and the bundled examples.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::json;
use std::sync::Arc;
use tuningfork::dataset::{self, Split};
use tuningfork::eval::{self, EvalReport, ExampleContext};
use tuningfork::generator::Generator;
use tuningfork::lm::Lm;
use tuningfork::metrics::Judges;
use tuningfork::program::{PredictorKind, Values};
use tuningfork::task::Task;

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/examples")
        .join(name)
        .join("task.toml")
}

/// Evaluates `task`'s program on `split` through `generator` (also the judge).
fn evaluate_on(task: &Task, split: &Split, generator: &Generator) -> EvalReport {
    let lm: Arc<dyn Lm> = Arc::new(generator.clone());
    let context = ExampleContext {
        lm: Arc::clone(&lm),
        retriever: Arc::new(tuningfork::corpus::NoRetriever),
        judges: Judges::new(&task.task.model).with(task.task.model.clone(), lm),
        metric: task.metric.clone(),
        settings: task.generation.clone(),
        inputs: task.example_inputs(),
    };
    block_on(eval::evaluate(
        &context,
        &task.program,
        split,
        generator.store(),
        generator.run_id(),
        &|_| {},
    ))
    .unwrap()
}

/// The report with each step's call id cleared: a second evaluation makes new calls, and
/// everything else (replies, tokens, scores) must repeat.
fn without_call_ids(mut report: EvalReport) -> EvalReport {
    for result in &mut report.results {
        for step in &mut result.trace.steps {
            step.call_id = 0;
        }
    }
    report
}

fn evaluate(task: &Task, split: &str, use_cache: bool) -> EvalReport {
    let data = dataset::load(&task.dataset, &task.base_dir, &task.example_fields()).unwrap();
    let split = match split {
        "val" => data.val.0,
        "test" => data.test.0,
        _ => data.train.0,
    };
    let generator = generator(shared(SMOLLM), memory_store()).with_cache(use_cache);
    evaluate_on(task, &split, &generator)
}

/// The sentiment task with another `[metric]`, and the first `n` examples of its val split.
fn sentiment_with_metric(metric: &str, n: usize) -> (Task, Split) {
    let source = std::fs::read_to_string(example("sentiment"))
        .unwrap()
        .replace(
            "[metric]\nkind = \"exact_match\"\nfield = \"sentiment\"",
            metric,
        );
    let dir = example("sentiment").parent().unwrap().to_path_buf();
    let task = Task::parse(&source, &example("sentiment"), dir).unwrap();
    let data = dataset::load(&task.dataset, &task.base_dir, &task.example_fields()).unwrap();
    let mut split = data.val.0;
    split.examples.truncate(n);
    (task, split)
}

#[test]
fn every_output_parses_on_both_examples_and_results_repeat() {
    for name in ["sentiment", "contacts"] {
        let task = Task::load(&example(name)).unwrap();
        let first = evaluate(&task, "val", false);
        assert_eq!(
            first.failed,
            0,
            "{name}: unparsable replies: {:?}",
            first
                .results
                .iter()
                .filter_map(|r| r.error.clone())
                .collect::<Vec<_>>()
        );
        assert!(first.results.iter().all(|r| r.outputs.is_some()));
        assert!((0.0..=1.0).contains(&first.mean));
        let second = evaluate(&task, "val", false);
        assert_eq!(
            without_call_ids(first),
            without_call_ids(second),
            "{name}: a second evaluation differs"
        );
    }
}

#[test]
fn chain_of_thought_produces_reasoning_then_the_answer() {
    let mut task = Task::load(&example("sentiment")).unwrap();
    task.program.steps[0].kind = PredictorKind::ChainOfThought;
    task.generation.max_tokens = 96;
    let data = dataset::load(&task.dataset, &task.base_dir, &task.example_fields()).unwrap();
    let generator = generator(shared(SMOLLM), memory_store());
    let inputs: Values = [(
        "review".to_string(),
        data.val.0.examples[0].values["review"].clone(),
    )]
    .into();
    let prediction = block_on(task.program.forward(
        &generator,
        &tuningfork::corpus::NoRetriever,
        &inputs,
        &task.generation,
    ))
    .unwrap();
    let reasoning = prediction
        .outputs
        .get("reasoning")
        .and_then(|v| v.as_str())
        .unwrap();
    assert!(!reasoning.is_empty());
    let label = prediction.outputs["sentiment"].as_str().unwrap();
    assert!(["positive", "negative", "neutral"].contains(&label));
    assert!(prediction.trace.steps[0].raw.starts_with("reasoning: "));
}

#[test]
fn a_multi_step_program_passes_outputs_forward() {
    let source = r#"
[task]
name = "two-steps"

[[steps]]
name = "find_city"
instructions = "Find the city mentioned in the message."
inputs = [{ name = "message" }]
outputs = [{ name = "city", type = "text" }]

[[steps]]
name = "describe"
instructions = "Say whether the city is in Europe."
inputs = [{ name = "city" }]
outputs = [{ name = "in_europe", type = "boolean" }]

[dataset]
path = "data.jsonl"

[metric]
kind = "exact_match"
field = "city"

[generation]
max_tokens = 32
"#;
    let task = Task::parse(source, Path::new("two-steps.toml"), PathBuf::from(".")).unwrap();
    assert_eq!(task.example_inputs(), ["message"]);
    let generator = generator(shared(SMOLLM), memory_store());
    let inputs: Values = [(
        "message".to_string(),
        json!("Please ship 3 lamps to Anna, Lisbon."),
    )]
    .into();
    let prediction = block_on(task.program.forward(
        &generator,
        &tuningfork::corpus::NoRetriever,
        &inputs,
        &task.generation,
    ))
    .unwrap();
    assert_eq!(prediction.trace.steps.len(), 2);
    let city = prediction.outputs["city"].clone();
    assert_eq!(
        prediction.trace.steps[1].inputs["city"], city,
        "step 2 must read step 1's output"
    );
    assert!(prediction.outputs["in_europe"].is_boolean());
}

#[test]
fn eval_and_predict_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("s.sqlite");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_tuningfork"))
            .args(args)
            .env("TUNINGFORK_STORE", &store)
            .env("TUNINGFORK_MODELS", models_dir())
            .output()
            .unwrap()
    };
    let task = example("sentiment");
    let out = run(&["eval", task.to_str().unwrap(), "--split", "test", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["split"], "test");
    assert_eq!(report["results"].as_array().unwrap().len(), 60);
    assert_eq!(
        report["failed"], 0,
        "every reply parses on the test split too"
    );

    // Every example is stored with its output and score.
    let stored = tuningfork::store::Store::open(&store).unwrap();
    let results = stored.eval_results(1, "test").unwrap();
    assert_eq!(results.len(), 60);
    let mean = results.iter().map(|r| r.score).sum::<f64>() / 60.0;
    assert!((mean - report["mean"].as_f64().unwrap()).abs() < 1e-9);

    let out = run(&[
        "predict",
        task.to_str().unwrap(),
        "--input",
        r#"{"review": "The kettle broke after a day."}"#,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let outputs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(outputs["sentiment"].is_string());

    let out = run(&[
        "predict",
        task.to_str().unwrap(),
        "--input",
        r#"{"text": "x"}"#,
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("`review`"));

    // A broken dataset line is reported with its file and line.
    let broken_dir = dir.path().join("broken");
    std::fs::create_dir_all(&broken_dir).unwrap();
    let mut data = std::fs::read_to_string(task.parent().unwrap().join("data.jsonl")).unwrap();
    data = data.replacen("\n", "\n{broken\n", 4);
    std::fs::write(broken_dir.join("data.jsonl"), data).unwrap();
    std::fs::copy(&task, broken_dir.join("task.toml")).unwrap();
    let out = run(&["eval", broken_dir.join("task.toml").to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("data.jsonl:2"), "{err}");
}

#[test]
fn a_judge_grades_with_a_recorded_model_call() {
    let (task, split) = sentiment_with_metric(
        "[metric]\nkind = \"judge\"\ninstructions = \"The sentiment must match the expected one.\"",
        6,
    );
    let store = memory_store();
    let generator = generator(shared(SMOLLM), std::sync::Arc::clone(&store));
    let report = evaluate_on(&task, &split, &generator);
    assert_eq!(report.results.len(), 6);
    for result in &report.results {
        assert!(
            [0.0, 0.25, 0.5, 0.75, 1.0].contains(&result.score),
            "{result:?}"
        );
        assert!(
            result.feedback.as_deref().is_some_and(|f| !f.is_empty()),
            "{result:?}"
        );
    }
    // Program and judge calls are both in the store: two per example.
    let calls = store.run_calls(generator.run_id()).unwrap();
    assert_eq!(calls.len(), 12);
    assert_eq!(
        calls
            .iter()
            .filter(|c| c.prompt.contains("You grade a prediction"))
            .count(),
        6
    );
}

#[test]
fn a_failing_metric_fails_its_example_not_the_evaluation() {
    let (task, split) = sentiment_with_metric(
        "[metric]\nkind = \"command\"\nprogram = [\"sleep\", \"5\"]\ntimeout_s = 0.2",
        3,
    );
    let generator = generator(shared(SMOLLM), memory_store());
    let report = evaluate_on(&task, &split, &generator);
    assert_eq!(report.results.len(), 3);
    for result in &report.results {
        assert_eq!(result.score, 0.0);
        assert!(result.outputs.is_some());
        assert!(
            result
                .error
                .as_deref()
                .unwrap()
                .contains("longer than 0.2 s"),
            "{result:?}"
        );
    }
    let stored = generator
        .store()
        .eval_results(generator.run_id(), "val")
        .unwrap();
    assert_eq!(stored.len(), 3);
}

#[test]
fn a_killed_evaluation_keeps_every_result_it_stored() {
    let dir = tempfile::tempdir().unwrap();
    let store_path = dir.path().join("s.sqlite");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tuningfork"))
        .args([
            "eval",
            example("contacts").to_str().unwrap(),
            "--split",
            "train",
        ])
        .env("TUNINGFORK_STORE", &store_path)
        .env("TUNINGFORK_MODELS", models_dir())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until a few examples are stored, then kill it without warning.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let stored = loop {
        std::thread::sleep(std::time::Duration::from_millis(200));
        let count = rusqlite::Connection::open(&store_path)
            .ok()
            .and_then(|c| {
                c.query_row("SELECT COUNT(*) FROM eval_results", [], |r| {
                    r.get::<_, i64>(0)
                })
                .ok()
            })
            .unwrap_or(0);
        if count >= 3 {
            break count;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no results were stored"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the evaluation ended too early to be killed"
        );
    };
    child.kill().unwrap();
    child.wait().unwrap();

    let store = tuningfork::store::Store::open(&store_path).unwrap();
    let run = store.run("1").unwrap();
    assert_eq!(
        run.status,
        tuningfork::store::RunStatus::Running,
        "a killed run is left as it was"
    );
    let results = store.eval_results(1, "train").unwrap();
    assert!(results.len() as i64 >= stored);
    for result in &results {
        assert!(result.outputs.is_some() || result.error.is_some());
    }
    // Every stored result's model call is stored too.
    assert!(store.run_calls(1).unwrap().len() >= results.len());
}
