//! Runs that call a model without optimizing: an evaluation of a program on a split, one
//! prediction, one generation, and the throughput benchmarks.

use std::path::PathBuf;
use std::sync::Arc;

use super::{RunHandle, RunKind, Workspace, WorkspaceError};
use crate::bench::eval::{EvalBenchReport, EvalModeReport};
use crate::bench::{self, BenchOptions, BenchReport, ModeReport};
use crate::dataset::{self, Split};
use crate::engine::{Engine, EngineConfig, GenerationRequest};
use crate::eval::{self, EvalReport, ExampleContext, ExampleResult};
use crate::generator::{Generated, Generator};
use crate::observe::Observer;
use crate::program::{Prediction, Values};
use crate::task::Task;
use tokio_util::sync::CancellationToken;

/// Which split of a task's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitName {
    Train,
    Val,
    Test,
}

/// An evaluation of a task's program (or a stored artifact's) on one split.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalRequest {
    pub task: PathBuf,
    /// A stored artifact to evaluate instead of the task's program.
    pub program: Option<String>,
    pub split: SplitName,
    pub use_cache: bool,
    /// Recorded in the run's config under `check` (a regression check's task, program and
    /// split), so later checks find this one.
    pub check: Option<serde_json::Value>,
}

impl SplitName {
    /// This split of `data`.
    fn of(self, data: &dataset::Datasets) -> &Split {
        match self {
            SplitName::Train => &data.train.0,
            SplitName::Val => &data.val.0,
            SplitName::Test => &data.test.0,
        }
    }
}

/// What every example of an evaluation of `task` in `run` shares: the run's generators for
/// the task model and judges, its retriever, the metric and the settings.
fn example_context(
    ws: &Workspace,
    task: &Task,
    models: &super::TaskModels,
    run: &super::RunHandle,
    use_cache: bool,
) -> ExampleContext {
    let (lm, judges) = models.for_run(run, &task.task.model, run.group(0), use_cache);
    let retriever = models.retriever_for_run(ws, run, &task.task.model, run.group(0), use_cache);
    ExampleContext {
        lm,
        retriever,
        judges,
        metric: task.metric.clone(),
        settings: task.generation.clone(),
        inputs: task.example_inputs(),
    }
}

/// The outcome of [`evaluate()`]: the run and the split's report.
#[derive(Debug, Clone)]
pub struct Evaluated {
    pub run_id: i64,
    pub task: String,
    pub report: EvalReport,
}

/// Evaluates a program on a split; every result is stored as it is scored. `observer` hears
/// one `advance` per example.
pub async fn evaluate(
    ws: &Workspace,
    request: &EvalRequest,
    observer: &dyn Observer,
    cancel: CancellationToken,
) -> Result<Evaluated, WorkspaceError> {
    let mut task = Task::load(&request.task)?;
    let artifact = ws.use_artifact(&mut task, request.program.as_deref())?;
    let data = dataset::load(&task.dataset, &task.base_dir, &task.example_fields())?;
    let split = request.split.of(&data);
    let models = ws.task_models(&task)?;
    let run = ws.begin_run(
        RunKind::Eval,
        task_config(
            &task,
            ws.engine_config(),
            serde_json::json!({
                "split": split.name,
                "split_hash": split.hash,
                // The exact rows, so the run is self-contained.
                "examples": split.examples,
                "artifact": artifact,
                "train_hash": data.train.0.hash,
                "corpora": models.corpora,
                "val_hash": data.val.0.hash,
                "test_hash": data.test.0.hash,
                "data_cleaning": data.cleaning,
            }),
            request.check.clone(),
        ),
        Some(task.task.seed),
        &models.engine,
        cancel,
    )?;
    let context = example_context(ws, &task, &models, &run, request.use_cache);
    observer.stage(split.name, split.len() as u64);
    let on_done = |result: &ExampleResult| {
        observer.example_scored(result.score);
        observer.advance();
    };
    let report = run
        .drive(eval::evaluate(
            &context,
            &task.program,
            split,
            ws.store(),
            run.id,
            &on_done,
        ))
        .await?;
    Ok(Evaluated {
        run_id: run.id,
        task: task.task.name,
        report,
    })
}

/// One prediction of a task's program (or a stored artifact's) on `input`.
#[derive(Debug, Clone, PartialEq)]
pub struct PredictRequest {
    pub task: PathBuf,
    pub program: Option<String>,
    /// A JSON object with every input field the program reads.
    pub input: serde_json::Value,
}

/// Runs the program once; the prediction carries every step's trace.
pub async fn predict(
    ws: &Workspace,
    request: &PredictRequest,
    cancel: CancellationToken,
) -> Result<Prediction, WorkspaceError> {
    let mut task = Task::load(&request.task)?;
    let artifact = ws.use_artifact(&mut task, request.program.as_deref())?;
    let example = r#"e.g. {"review": "Great kettle."}"#;
    let serde_json::Value::Object(object) = &request.input else {
        return Err(WorkspaceError::Invalid(format!(
            "the input must be a JSON object, {example}"
        )));
    };
    let mut values = Values::new();
    for field in task.example_inputs() {
        let value = object.get(&field).ok_or_else(|| {
            WorkspaceError::Invalid(format!(
                "the input lacks the field `{field}` that the program reads"
            ))
        })?;
        values.insert(field, value.clone());
    }
    let engine = ws.engine(&task.task.model)?;
    let (corpora, embedders) = ws.corpus_uses(&task.program, &task.task.model)?;
    super::check_reply_budget(&engine, &task)?;
    let run = ws.begin_run(
        RunKind::Predict,
        task_config(
            &task,
            ws.engine_config(),
            serde_json::json!({ "input": values, "artifact": artifact, "corpora": corpora }),
            None,
        ),
        Some(task.task.seed),
        &engine,
        cancel,
    )?;
    let generator = run.generator(engine, run.group(0), true);
    let retriever =
        super::corpus::run_retriever(ws, &run, &embedders, &task.task.model, run.group(0), true);
    run.drive(
        task.program
            .forward(&generator, retriever.as_ref(), &values, &task.generation),
    )
    .await
}

/// What a task-based run records: the task file, its program, metric and settings.
fn task_config(
    task: &Task,
    engine: &EngineConfig,
    details: serde_json::Value,
    check: Option<serde_json::Value>,
) -> serde_json::Value {
    let mut config = serde_json::json!({
        "task": task.task,
        "task_file": task.source,
        "program": task.program,
        "metric": task.metric,
        "generation": task.generation,
        "engine": engine,
        "details": details,
    });
    if let Some(check) = check {
        config["check"] = check;
    }
    config
}

/// One generation from a pinned model, recorded as a `generate` run; returns the run id too.
pub async fn generate(
    ws: &Workspace,
    model: &str,
    request: GenerationRequest,
    use_cache: bool,
    cancel: CancellationToken,
) -> Result<(i64, Generated), WorkspaceError> {
    let engine = ws.engine(model)?;
    let run = ws.begin_run(
        RunKind::Generate,
        serde_json::json!({
            "model": model,
            "engine": ws.engine_config(),
            "request": request,
            "cache": use_cache,
        }),
        Some(request.sampling.seed),
        &engine,
        cancel,
    )?;
    let generator = run.generator(engine, run.group(0), use_cache);
    let generated = run.drive(generator.generate(request)).await?;
    Ok((run.id, generated))
}

/// A benchmark's run over `engine`, and a generator recording into it (serving from the
/// cache only when `cache` is set).
fn begin_bench(
    ws: &Workspace,
    engine: Arc<Engine>,
    config: serde_json::Value,
    cache: bool,
    cancel: CancellationToken,
) -> Result<(RunHandle, Generator), WorkspaceError> {
    let run = ws.begin_run(RunKind::Bench, config, None, &engine, cancel)?;
    let generator = run.generator(engine, run.group(0), cache);
    Ok((run, generator))
}

/// Prefill and decode speed of a model, with the cache off; returns the run id too.
pub async fn bench(
    ws: &Workspace,
    model: &str,
    options: &BenchOptions,
    cancel: CancellationToken,
) -> Result<(i64, BenchReport), WorkspaceError> {
    let config = serde_json::json!({
        "model": model,
        "engine": ws.engine_config(),
        "prompt_tokens": options.prompt_tokens,
        "gen_tokens": options.gen_tokens,
        "repetitions": options.repetitions,
    });
    let (run, generator) = begin_bench(ws, ws.engine(model)?, config, false, cancel)?;
    let report = run.drive(bench::run(&generator, options)).await?;
    Ok((run.id, report))
}

/// `llama-batched-bench`'s workload (see [`bench::batched`]) on a fresh engine sized for it:
/// as many slots as the largest batch, a batch size that holds every prompt of it, and a
/// context per slot that holds one sequence.
pub async fn bench_batched(
    ws: &Workspace,
    model: &str,
    options: &bench::batched::BatchedOptions,
    cancel: CancellationToken,
) -> Result<(i64, bench::batched::BatchedReport), WorkspaceError> {
    if options.sequences.is_empty() || options.sequences.contains(&0) {
        return Err(WorkspaceError::Invalid(
            "--sequences needs batch sizes of at least 1, e.g. --sequences 1,4,8".to_string(),
        ));
    }
    if options.prompt_tokens == 0 || options.gen_tokens == 0 {
        return Err(WorkspaceError::Invalid(
            "--prompt-tokens and --gen-tokens need at least 1 token each".to_string(),
        ));
    }
    let most = options.sequences.iter().copied().max().unwrap_or(1);
    let base = ws.engine_config().clone();
    // Room for the distinct first line each engine-path request carries.
    let prompt = options.prompt_tokens.saturating_add(32);
    let per_sequence = prompt.saturating_add(options.gen_tokens);
    // Far beyond what a benchmark needs, and within what one context can hold.
    const MOST_TOKENS: u32 = 32_768;
    if per_sequence > MOST_TOKENS || most > 64 {
        return Err(WorkspaceError::Invalid(format!(
            "--batched takes at most 64 sequences of at most {} tokens each (prompt and \
             generated)",
            MOST_TOKENS - 32
        )));
    }
    let config = EngineConfig {
        slots: most,
        n_batch: base.n_batch.max(most * prompt),
        n_ctx: per_sequence.next_multiple_of(256),
        ..base
    };
    let engine = Arc::new(ws.fresh_engine(model, &config)?);
    let config = serde_json::json!({
        "benchmark": "batched",
        "model": model,
        "engine": config,
        "prompt_tokens": options.prompt_tokens,
        "gen_tokens": options.gen_tokens,
        "sequences": options.sequences,
        "repetitions": options.repetitions,
    });
    let (run, generator) = begin_bench(ws, engine, config, false, cancel)?;
    let report = run.drive(bench::batched::run(&generator, options)).await?;
    Ok((run.id, report))
}

/// A task's split to measure evaluation throughput on.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalBenchRequest {
    pub task: PathBuf,
    /// A stored artifact to evaluate instead of the task's program.
    pub program: Option<String>,
    pub split: SplitName,
}

/// The evaluation benchmark: the split evaluated with the cache off, once decoding
/// grammar-forced text step by step and once with jump-forward spans, each on a freshly
/// loaded engine (never two at once) and as its own run. `on_mode` hears each mode as it ends.
pub async fn bench_eval(
    ws: &Workspace,
    request: &EvalBenchRequest,
    on_mode: &(dyn Fn(&EvalModeReport) + Sync),
    cancel: CancellationToken,
) -> Result<EvalBenchReport, WorkspaceError> {
    let mut task = Task::load(&request.task)?;
    let artifact = ws.use_artifact(&mut task, request.program.as_deref())?;
    let data = dataset::load(&task.dataset, &task.base_dir, &task.example_fields())?;
    let split = request.split.of(&data);
    let models = ws.task_models(&task)?;
    let base = ws.engine_config().clone();
    let mut modes = Vec::new();
    let mut outputs = Vec::new();
    for (mode, jump_forward) in [("stepwise", false), ("jump-forward", true)] {
        let config = EngineConfig {
            jump_forward,
            ..base.clone()
        };
        let engine = Arc::new(ws.fresh_engine(&task.task.model, &config)?);
        let run = ws.begin_run(
            RunKind::Bench,
            task_config(
                &task,
                &config,
                serde_json::json!({
                    "benchmark": "eval",
                    "mode": mode,
                    "split": split.name,
                    "split_hash": split.hash,
                    "artifact": artifact,
                    "corpora": models.corpora,
                }),
                None,
            ),
            Some(task.task.seed),
            &engine,
            cancel.clone(),
        )?;
        let models = super::TaskModels {
            engine: Arc::clone(&engine),
            ..models.clone()
        };
        let context = example_context(ws, &task, &models, &run, false);
        let started = std::time::Instant::now();
        let report = run
            .drive(eval::evaluate(
                &context,
                &task.program,
                split,
                ws.store(),
                run.id,
                &|_| {},
            ))
            .await?;
        let wall_s = started.elapsed().as_secs_f64();
        let measured = EvalModeReport {
            mode: mode.to_string(),
            run_id: run.id,
            examples: report.results.len(),
            wall_s,
            examples_per_s: report.results.len() as f64 / wall_s.max(1e-9),
            mean_score: report.mean,
            failed: report.failed,
            cut: report.cut,
            stats: engine.stats(),
        };
        on_mode(&measured);
        modes.push(measured);
        outputs.push(
            report
                .results
                .into_iter()
                .map(|r| (r.outputs, r.error))
                .collect::<Vec<_>>(),
        );
    }
    Ok(EvalBenchReport {
        task: task.task.name.clone(),
        split: split.name.to_string(),
        model: task.task.model.clone(),
        identical_outputs: outputs.windows(2).all(|w| w[0] == w[1]),
        modes,
    })
}

/// The scheduler benchmark: the same shared-prefix workload one request at a time, batched,
/// batched with prefix reuse, and again from a warm cache; each mode on a freshly loaded
/// engine (never two at once), each its own run. `on_mode` hears each mode as it ends.
pub async fn bench_scheduler(
    ws: &Workspace,
    model: &str,
    requests: usize,
    gen_tokens: u32,
    on_mode: &(dyn Fn(&ModeReport) + Sync),
    cancel: CancellationToken,
) -> Result<Vec<ModeReport>, WorkspaceError> {
    let base = ws.engine_config().clone();
    let workload = bench::shared_prefix_workload(requests, gen_tokens);
    let modes = [
        ("a  one at a time, no reuse", 1, false, false, false),
        ("b  batched, no reuse", base.slots, false, true, false),
        ("c  batched, prefix reuse", base.slots, true, true, false),
        ("d  warm-cache rerun", base.slots, true, true, true),
    ];
    let mut reports = Vec::new();
    for (mode, slots, prefix_reuse, concurrent, cache) in modes {
        let config = EngineConfig {
            slots,
            prefix_reuse,
            ..base.clone()
        };
        let engine = Arc::new(ws.fresh_engine(model, &config)?);
        let config = serde_json::json!({
            "benchmark": "scheduler",
            "mode": mode,
            "model": model,
            "engine": config,
            "requests": requests,
            "gen_tokens": gen_tokens,
            "cache": cache,
        });
        let (run, generator) = begin_bench(ws, engine, config, cache, cancel.clone())?;
        let report = run
            .drive(bench::run_workload(&generator, &workload, concurrent, mode))
            .await?;
        on_mode(&report);
        reports.push(report);
    }
    Ok(reports)
}
