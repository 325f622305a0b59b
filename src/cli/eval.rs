//! `tuningfork eval` and `tuningfork predict`.

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use tuningfork::dataset;
use tuningfork::eval::{self, ExampleResult};
use tuningfork::generator::{load_engine, Generator};
use tuningfork::program::{Values, ADAPTER_VERSION};
use tuningfork::store::{NewRun, Store};
use tuningfork::task::Task;

use super::args::{EvalArgs, GlobalArgs, PredictArgs, SplitName};
use super::{engine_config, finish_run, open_engine, open_registry, open_store, runtime};

/// Opens the store, loads the task's model, and starts a run; also returns the judge's
/// generator when the metric needs one (the same engine when the judge model is the task's).
fn start(
    global: &GlobalArgs,
    task: &Task,
    engine: &super::args::EngineArgs,
    kind: &str,
    extra: serde_json::Value,
) -> Result<(Arc<Store>, Generator, Option<Generator>)> {
    let config = engine_config(engine);
    let (store, registry, engine_handle) = open_engine(global, &task.task.model, engine)?;
    let run_id = store.begin_run(&NewRun {
        kind,
        config: serde_json::json!({
            "task": task.task,
            "task_file": task.source,
            "program": task.program,
            "metric": task.metric,
            "generation": task.generation,
            "adapter_version": ADAPTER_VERSION,
            "engine": config,
            "details": extra,
        }),
        seed: Some(task.task.seed),
        model_sha256: Some(engine_handle.model_sha256()),
        fingerprint: engine_handle.fingerprint(),
    })?;
    let generator = Generator::new(Arc::clone(&engine_handle), Arc::clone(&store), run_id);
    let judge = match task.metric.judge_model() {
        None => None,
        Some(model) => match model.filter(|m| *m != task.task.model) {
            None => Some(generator.clone()),
            Some(model) => {
                // A second engine: its calls go to the same run.
                let judge_engine = Arc::new(load_engine(
                    &registry,
                    &store,
                    &model,
                    engine.verify,
                    config.clone(),
                )?);
                Some(Generator::new(judge_engine, Arc::clone(&store), run_id))
            }
        },
    };
    Ok((store, generator, judge))
}

/// Replaces the task's program with a stored artifact's, after checking that the artifact was
/// made for this task and this task's model; returns the artifact's hash.
pub(super) fn use_artifact(
    global: &GlobalArgs,
    task: &mut Task,
    reference: Option<&str>,
) -> Result<Option<String>> {
    let Some(reference) = reference else {
        return Ok(None);
    };
    let stored = open_store(global)?.artifact(reference)?;
    let artifact = stored.artifact;
    if artifact.task != task.task.name {
        bail!(
            "artifact {} was made for task `{}`, not `{}`",
            &stored.hash[..12],
            artifact.task,
            task.task.name
        );
    }
    let pin = open_registry(global)?.get(&task.task.model)?.clone();
    if artifact.model.sha256 != pin.sha256 {
        bail!(
            "artifact {} was made for model {} ({}), but the task uses {} ({}); results would not carry over",
            &stored.hash[..12],
            artifact.model.name,
            &artifact.model.sha256[..12],
            pin.name,
            &pin.sha256[..12]
        );
    }
    if artifact.adapter_version != ADAPTER_VERSION {
        bail!(
            "artifact {} was made with adapter version {}; this tuningfork renders prompts with version {ADAPTER_VERSION}",
            &stored.hash[..12],
            artifact.adapter_version
        );
    }
    artifact
        .program
        .validate(&task.example_inputs())
        .map_err(|e| anyhow::anyhow!("artifact {}: {e}", &stored.hash[..12]))?;
    task.program = artifact.program;
    Ok(Some(stored.hash))
}

pub fn eval(global: &GlobalArgs, args: EvalArgs) -> Result<()> {
    let mut task = Task::load(&args.task)?;
    let artifact = use_artifact(global, &mut task, args.program.as_deref())?;
    let data = dataset::load(&task.dataset, &task.base_dir, &task.example_fields())?;
    let split = match args.split {
        SplitName::Train => &data.train.0,
        SplitName::Val => &data.val.0,
        SplitName::Test => &data.test.0,
    };
    let (store, generator, judge) = start(
        global,
        &task,
        &args.engine,
        "eval",
        serde_json::json!({
            "split": split.name,
            "split_hash": split.hash,
            // The exact rows, so the run is self-contained.
            "examples": split.examples,
            "artifact": artifact,
            "train_hash": data.train.0.hash,
            "val_hash": data.val.0.hash,
            "test_hash": data.test.0.hash,
        }),
    )?;
    let generator = generator.with_cache(!args.no_cache);
    let run_id = generator.run_id();
    let bar = ProgressBar::new(split.len() as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {msg} [{bar:30}] {pos}/{len} {elapsed_precise} eta {eta}",
        )
        .expect("the template is valid")
        .progress_chars("=> "),
    );
    bar.set_message(format!("{} {}", task.task.name, split.name));
    let scored = std::sync::Mutex::new((0.0f64, 0usize));
    let on_done = |result: &ExampleResult| {
        let mut s = scored.lock().unwrap_or_else(|p| p.into_inner());
        s.0 += result.score;
        s.1 += 1;
        bar.set_message(format!(
            "{} {} mean {:.3}",
            task.task.name,
            split.name,
            s.0 / s.1 as f64
        ));
        bar.inc(1);
    };
    let inputs = task.example_inputs();
    let evaluation = eval::Evaluation {
        program: &task.program,
        split,
        inputs: &inputs,
        metric: &task.metric,
        settings: &task.generation,
    };
    let result = runtime()?.block_on(eval::evaluate(
        &evaluation,
        &generator,
        judge.as_ref(),
        &on_done,
    ));
    bar.finish_and_clear();
    let report = finish_run(&store, run_id, result)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "{} on {} ({} examples, split {}): mean score {:.3}",
        task.task.name,
        split.name,
        report.results.len(),
        &report.split_hash[..12],
        report.mean
    );
    println!(
        "run {run_id}; {} examples could not be parsed",
        report.failed
    );
    let mut misses: Vec<&ExampleResult> = report.results.iter().filter(|r| r.score < 1.0).collect();
    misses.sort_by(|a, b| a.score.total_cmp(&b.score));
    if !misses.is_empty() {
        println!();
        println!(
            "lowest-scoring examples ({} of {}):",
            misses.len().min(10),
            misses.len()
        );
        for r in misses.iter().take(10) {
            let what = r
                .feedback
                .clone()
                .or_else(|| r.error.clone())
                .unwrap_or_default();
            println!("  {:.2}  {}  {}", r.score, r.source, what);
        }
    }
    Ok(())
}

pub fn predict(global: &GlobalArgs, args: PredictArgs) -> Result<()> {
    let mut task = Task::load(&args.task)?;
    let artifact = use_artifact(global, &mut task, args.program.as_deref())?;
    let input: serde_json::Value = serde_json::from_str(&args.input)
        .context("--input must be a JSON object, e.g. '{\"review\": \"Great kettle.\"}'")?;
    let serde_json::Value::Object(object) = input else {
        bail!("--input must be a JSON object, e.g. '{{\"review\": \"Great kettle.\"}}'");
    };
    let mut values = Values::new();
    for field in task.example_inputs() {
        let value = object
            .get(&field)
            .with_context(|| format!("--input lacks the field `{field}` that the program reads"))?;
        values.insert(field, value.clone());
    }
    let (store, generator, _) = start(
        global,
        &task,
        &args.engine,
        "predict",
        serde_json::json!({ "input": values, "artifact": artifact }),
    )?;
    let run_id = generator.run_id();
    let result = runtime()?.block_on(task.program.forward(&generator, &values, &task.generation));
    let prediction = finish_run(&store, run_id, result)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&prediction)?);
    } else {
        println!("{}", serde_json::to_string_pretty(&prediction.outputs)?);
    }
    Ok(())
}
