//! `tuningfork optimize` and `tuningfork resume`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use tuningfork::artifact::ArtifactModel;
use tuningfork::dataset;
use tuningfork::engine::Engine;
use tuningfork::generator::{load_engine, Generator};
use tuningfork::optimize::budget::{format_duration, parse_duration};
use tuningfork::optimize::run::LoopContext;
use tuningfork::optimize::{
    run_loop, BootstrapSettings, Budget, LoopOutcome, LoopSpec, Observer, OptimizerConfig, Tracker,
};
use tuningfork::store::{NewRun, OptimizationRow, RunRecord, RunStatus, Store};
use tuningfork::task::Task;

use super::args::{EngineArgs, GlobalArgs, OptimizeArgs, OptimizerName, RerunArgs, ResumeArgs};
use super::eval::use_artifact;
use super::{engine_config, open_registry, open_store, runtime};

fn optimizer_config(name: OptimizerName, args: &OptimizeArgs) -> OptimizerConfig {
    let settings = BootstrapSettings {
        max_bootstrapped: args.max_bootstrapped,
        max_labeled: args.max_labeled,
        max_rounds: args.max_rounds,
        threshold: args.threshold,
    };
    match name {
        OptimizerName::Labeled => OptimizerConfig::LabeledFewShot {
            k: args.max_labeled,
        },
        OptimizerName::Bootstrap => OptimizerConfig::BootstrapFewShot { settings },
        OptimizerName::RandomSearch => OptimizerConfig::RandomSearch {
            settings,
            candidates: args.candidates,
        },
    }
}

pub fn optimize(global: &GlobalArgs, args: OptimizeArgs) -> Result<()> {
    let budget = Budget {
        time_secs: args
            .budget_time
            .as_deref()
            .map(parse_duration)
            .transpose()
            .map_err(|e| anyhow::anyhow!("--budget-time: {e}"))?,
        calls: args.budget_calls,
        tokens: args.budget_tokens,
    };
    let mut configs = Vec::new();
    for name in &args.optimizers {
        let config = optimizer_config(*name, &args);
        config
            .validate()
            .map_err(|e| anyhow::anyhow!("--optimizer {}: {e}", config.name()))?;
        if !configs.contains(&config) {
            configs.push(config);
        }
    }
    let store = open_store(global)?;
    let registry = open_registry(global)?;
    let mut loops = Vec::new();
    for path in &args.tasks {
        let mut task = Task::load(path)?;
        let parent = use_artifact(global, &mut task, args.program.as_deref())?;
        let data = dataset::load(&task.dataset, &task.base_dir, &task.example_fields())?;
        let pin = registry.get(&task.task.model)?;
        for config in &configs {
            loops.push(LoopSpec {
                task_file: path.display().to_string(),
                task_source: task.source.clone(),
                program: task.program.clone(),
                parent: parent.clone(),
                optimizer: config.clone(),
                seed: args.seed.unwrap_or(task.task.seed),
                model: ArtifactModel {
                    name: pin.name.clone(),
                    sha256: pin.sha256.clone(),
                },
                train: data.train.0.examples.clone(),
                val: data.val.0.examples.clone(),
                test: data.test.0.examples.clone(),
                train_hash: data.train.0.hash.clone(),
                val_hash: data.val.0.hash.clone(),
                test_hash: data.test.0.hash.clone(),
            });
        }
    }
    if args.promote.is_some() && loops.len() != 1 {
        bail!(
            "--promote names one result, but this run has {} loops",
            loops.len()
        );
    }
    let engines = load_engines(global, &store, &loops, &args.engine)?;
    let first = &engines[&loops[0].model.name];
    let run_id = store.begin_run(&NewRun {
        kind: "optimize",
        config: serde_json::json!({
            "adapter_version": tuningfork::program::ADAPTER_VERSION,
            "tasks": args.tasks,
            "optimizers": configs,
            "budget": budget,
            "seed": args.seed,
            "engine": engine_config(&args.engine),
            "promote": args.promote,
        }),
        seed: Some(loops[0].seed),
        model_sha256: Some(first.model_sha256()),
        fingerprint: first.fingerprint(),
    })?;
    let mut pending = Vec::new();
    for (index, spec) in loops.into_iter().enumerate() {
        let task = spec.task()?;
        let id = store.begin_optimization(
            run_id,
            index as i64,
            &task.task.name,
            spec.optimizer.name(),
            &serde_json::to_value(&spec).expect("loop specs serialize"),
        )?;
        pending.push((id, spec));
    }
    let run = store.run(&run_id.to_string())?;
    let outcomes = execute(&store, &run, pending, &engines, budget, true)?;
    if let (Some(name), Some(Ok(outcome))) = (&args.promote, outcomes.first()) {
        store.promote(name, &outcome.artifact_hash)?;
    }
    report(&store, &run, &outcomes, args.json)
}

pub fn resume(global: &GlobalArgs, args: ResumeArgs) -> Result<()> {
    let store = open_store(global)?;
    let run = store.run(&args.run)?;
    if run.kind != "optimize" {
        bail!(
            "run {} is a `{}` run; only optimization runs can be resumed",
            run.uid,
            run.kind
        );
    }
    let rows = store.optimizations(run.id)?;
    let mut outcomes: Vec<Option<Result<LoopOutcome, String>>> = vec![None; rows.len()];
    let mut pending = Vec::new();
    for (position, row) in rows.iter().enumerate() {
        let finished = matches!(row.status.as_str(), "completed" | "stopped");
        let stored = row
            .summary
            .clone()
            .and_then(|s| serde_json::from_value::<LoopOutcome>(s).ok());
        match stored {
            Some(outcome) if finished => outcomes[position] = Some(Ok(outcome)),
            _ => pending.push((position, row.id, stored_loop(&run, row)?)),
        }
    }
    if pending.is_empty() {
        eprintln!("run {} has nothing left to do", run.uid);
    } else {
        let budget: Budget =
            serde_json::from_value(run.config["budget"].clone()).unwrap_or_default();
        let specs: Vec<LoopSpec> = pending.iter().map(|(_, _, s)| s.clone()).collect();
        let engines = stored_run_engines(global, &store, &run, &specs, &args.engine)?;
        store.reopen_run(run.id)?;
        eprintln!(
            "resuming run {}: {} of {} loops left",
            run.uid,
            pending.len(),
            rows.len()
        );
        let resumed = execute(
            &store,
            &run,
            pending
                .iter()
                .map(|(_, id, spec)| (*id, spec.clone()))
                .collect(),
            &engines,
            budget,
            true,
        )?;
        for ((position, _, _), outcome) in pending.iter().zip(resumed) {
            outcomes[*position] = Some(outcome);
        }
        if let Some(name) = run.config["promote"].as_str() {
            if let Some(Some(Ok(outcome))) = outcomes.first() {
                store.promote(name, &outcome.artifact_hash)?;
            }
        }
    }
    let outcomes: Vec<Result<LoopOutcome, String>> = outcomes.into_iter().flatten().collect();
    let run = store.run(&run.uid)?;
    report(&store, &run, &outcomes, args.json)
}

/// A stored loop's spec, read back from its row.
fn stored_loop(run: &RunRecord, row: &OptimizationRow) -> Result<LoopSpec> {
    serde_json::from_value(row.config.clone()).with_context(|| {
        format!(
            "loop {} of run {} cannot be read back",
            row.loop_index, run.uid
        )
    })
}

/// The engines for a stored run's loops, refusing a model whose pin no longer matches the
/// sha256 the run used.
fn stored_run_engines(
    global: &GlobalArgs,
    store: &Store,
    run: &RunRecord,
    specs: &[LoopSpec],
    args: &EngineArgs,
) -> Result<BTreeMap<String, Arc<Engine>>> {
    let engines = load_engines(global, store, specs, args)?;
    for spec in specs {
        let engine = &engines[&spec.model.name];
        if engine.model_sha256() != spec.model.sha256 {
            bail!(
                "run {} used model `{}` with sha256 {}, but it is now pinned to {}; restore the pin to continue",
                run.uid,
                spec.model.name,
                spec.model.sha256,
                engine.model_sha256()
            );
        }
    }
    Ok(engines)
}

/// Starts a new run from the stored inputs of an optimization run and compares the two.
pub fn rerun(global: &GlobalArgs, args: RerunArgs) -> Result<()> {
    let store = open_store(global)?;
    let original = store.run(&args.run)?;
    if original.kind != "optimize" {
        bail!(
            "run {} is a `{}` run; rerun repeats optimization runs (`tuningfork replay` checks any run's calls)",
            original.uid,
            original.kind
        );
    }
    let rows = store.optimizations(original.id)?;
    let specs = rows
        .iter()
        .map(|row| stored_loop(&original, row))
        .collect::<Result<Vec<_>>>()?;
    if specs.is_empty() {
        bail!("run {} has no optimization loops", original.uid);
    }
    let engines = stored_run_engines(global, &store, &original, &specs, &args.engine)?;
    let first = &engines[&specs[0].model.name];
    let mut config = original.config.clone();
    config["rerun_of"] = serde_json::Value::String(original.uid.clone());
    config["engine"] = serde_json::to_value(engine_config(&args.engine))?;
    let run_id = store.begin_run(&NewRun {
        kind: "optimize",
        config,
        seed: original.seed.map(|s| s as u64),
        model_sha256: Some(first.model_sha256()),
        fingerprint: first.fingerprint(),
    })?;
    let mut pending = Vec::new();
    for (row, spec) in rows.iter().zip(specs) {
        let id = store.begin_optimization(
            run_id,
            row.loop_index,
            &row.task,
            &row.optimizer,
            &row.config,
        )?;
        pending.push((id, spec));
    }
    let run = store.run(&run_id.to_string())?;
    eprintln!(
        "rerunning {} as run {} from its stored inputs{}",
        original.uid,
        run.uid,
        if args.use_cache {
            ""
        } else {
            ", recomputing every call"
        }
    );
    let budget: Budget =
        serde_json::from_value(original.config["budget"].clone()).unwrap_or_default();
    let outcomes = execute(&store, &run, pending, &engines, budget, args.use_cache)?;
    let departures = tuningfork::audit::compare_runs(&store, original.id, run.id)?;
    if args.json {
        let run = store.run(&run.uid)?;
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "original": original.uid,
                "rerun": run.uid,
                "status": run.status,
                "loops": outcomes.iter().map(|o| match o {
                    Ok(o) => serde_json::to_value(o).expect("outcomes serialize"),
                    Err(e) => serde_json::json!({ "error": e }),
                }).collect::<Vec<_>>(),
                "departures": departures,
            }))?
        );
    } else {
        report(&store, &run, &outcomes, false)?;
        println!();
        if departures.is_empty() {
            println!(
                "rerun {} matches run {}: every candidate, every stored result, the same artifacts and scores",
                run.uid, original.uid
            );
        } else {
            println!("rerun {} departs from run {}:", run.uid, original.uid);
            for d in &departures {
                println!("  {d}");
            }
        }
    }
    if !departures.is_empty() {
        bail!(
            "the rerun departs from run {} at {} points",
            original.uid,
            departures.len()
        );
    }
    Ok(())
}

/// One engine per model the loops use (their tasks' and their judges').
fn load_engines(
    global: &GlobalArgs,
    store: &Store,
    loops: &[LoopSpec],
    args: &EngineArgs,
) -> Result<BTreeMap<String, Arc<Engine>>> {
    let registry = open_registry(global)?;
    let mut engines = BTreeMap::new();
    for spec in loops {
        let task = spec.task()?;
        let mut models = vec![task.task.model.clone()];
        if let Some(judge) = task.metric.judge_model() {
            models.push(judge.unwrap_or_else(|| task.task.model.clone()));
        }
        for model in models {
            if let std::collections::btree_map::Entry::Vacant(entry) = engines.entry(model) {
                let engine = load_engine(
                    &registry,
                    store,
                    entry.key(),
                    args.verify,
                    engine_config(args),
                )?;
                entry.insert(Arc::new(engine));
            }
        }
    }
    Ok(engines)
}

/// Runs the loops concurrently and records how the run ended. Ctrl-C marks the run
/// interrupted (resumable) and exits.
fn execute(
    store: &Arc<Store>,
    run: &RunRecord,
    loops: Vec<(i64, LoopSpec)>,
    engines: &BTreeMap<String, Arc<Engine>>,
    budget: Budget,
    use_cache: bool,
) -> Result<Vec<Result<LoopOutcome, String>>> {
    let tracker = Arc::new(Tracker::new(budget));
    let bars = MultiProgress::new();
    let runtime = runtime()?;
    let results = runtime.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for (position, (optimization_id, spec)) in loops.into_iter().enumerate() {
            let task = spec.task()?;
            let engine = Arc::clone(&engines[&task.task.model]);
            let generator = Generator::new(engine, Arc::clone(store), run.id)
                .in_group(((run.id as u64) << 8) | position as u64)
                .with_cache(use_cache);
            let judge = task.metric.judge_model().map(|model| {
                let model = model.unwrap_or_else(|| task.task.model.clone());
                Generator::new(Arc::clone(&engines[&model]), Arc::clone(store), run.id)
                    .in_group(((run.id as u64) << 8) | position as u64)
                    .with_cache(use_cache)
            });
            let bar = bars.add(ProgressBar::new(0));
            bar.set_style(
                ProgressStyle::with_template("{spinner} {elapsed:>4} [{bar:20}] {pos}/{len} {msg}")
                    .expect("the template is valid")
                    .progress_chars("=> "),
            );
            bar.enable_steady_tick(std::time::Duration::from_millis(250));
            let observer = Arc::new(BarObserver {
                bar,
                tracker: Arc::clone(&tracker),
                label: format!("{} · {}", task.task.name, spec.optimizer.name()),
                state: Mutex::new((String::new(), None)),
            });
            let context = LoopContext {
                store: Arc::clone(store),
                optimization_id,
                run_uid: run.uid.clone(),
                generator,
                judge,
                tracker: Arc::clone(&tracker),
                observer: observer.clone(),
            };
            set.spawn(async move {
                let result = run_loop(&spec, context).await;
                observer.bar.finish_and_clear();
                (position, result.map_err(|e| e.to_string()))
            });
        }
        let mut results: Vec<Option<Result<LoopOutcome, String>>> = vec![None; set.len()];
        loop {
            tokio::select! {
                joined = set.join_next() => match joined {
                    Some(joined) => {
                        let (position, result) = joined.expect("loops do not panic");
                        results[position] = Some(result);
                    }
                    None => break,
                },
                _ = tokio::signal::ctrl_c() => {
                    set.abort_all();
                    store.finish_run(run.id, RunStatus::Interrupted, Some("interrupted by Ctrl-C"))?;
                    bars.clear().ok();
                    eprintln!("interrupted; everything finished so far is stored. Continue with: tuningfork resume {}", run.uid);
                    std::process::exit(130);
                }
            }
        }
        anyhow::Ok(results.into_iter().map(|r| r.expect("every loop ended")).collect::<Vec<_>>())
    })?;
    let failures: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    if failures.is_empty() {
        store.finish_run(run.id, RunStatus::Completed, None)?;
    } else {
        let message = failures
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        store.finish_run(run.id, RunStatus::Failed, Some(&message))?;
    }
    Ok(results)
}

/// A loop's progress bar: stage, calls, tokens, the best validation score and time left.
struct BarObserver {
    bar: ProgressBar,
    tracker: Arc<Tracker>,
    label: String,
    /// The current stage and the best score so far.
    state: Mutex<(String, Option<f64>)>,
}

impl BarObserver {
    fn refresh(&self) {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let best = state.1.map_or("-".to_string(), |b| format!("{b:.3}"));
        let left = self.tracker.time_left().map_or(String::new(), |d| {
            format!(" · {} left", format_duration(d.as_secs()))
        });
        self.bar.set_message(format!(
            "{} · {} · calls {} · tokens {} · best val {best}{left}",
            self.label,
            state.0,
            self.tracker.calls(),
            self.tracker.tokens(),
        ));
    }
}

impl Observer for BarObserver {
    fn stage(&self, stage: &str, total: u64) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).0 = stage.to_string();
        self.bar.set_length(total);
        self.bar.set_position(0);
        self.refresh();
    }

    fn advance(&self) {
        self.bar.inc(1);
        self.refresh();
    }

    fn scored(&self, _label: &str, _score: f64, best: f64) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).1 = Some(best);
        self.refresh();
    }
}

fn score(value: Option<f64>) -> String {
    value.map_or("-".to_string(), |v| format!("{v:.3}"))
}

/// Prints the baseline vs optimized table of every loop and the run's totals.
fn report(
    store: &Store,
    run: &RunRecord,
    outcomes: &[Result<LoopOutcome, String>],
    json: bool,
) -> Result<()> {
    let run = &store.run(&run.uid)?;
    let summary = store.summarize(run.clone())?;
    let wall = store.run_seconds(run.id)?;
    if json {
        let loops: Vec<serde_json::Value> = outcomes
            .iter()
            .map(|o| match o {
                Ok(outcome) => serde_json::to_value(outcome).expect("outcomes serialize"),
                Err(e) => serde_json::json!({ "error": e }),
            })
            .collect();
        let value = serde_json::json!({
            "run": run.uid,
            "status": summary.run.status,
            "loops": loops,
            "calls": summary.calls,
            "cache_hits": summary.cache_hits,
            "tokens": summary.prompt_tokens + summary.completion_tokens,
            "wall_seconds": wall,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        for outcome in outcomes {
            match outcome {
                Ok(o) => {
                    println!();
                    println!("{} · {} — {}", o.task, o.optimizer, o.status);
                    if let Some(reason) = &o.stop_reason {
                        println!("  stopped early: {reason}");
                    }
                    println!("  {:<10} {:>7} {:>7}", "", "val", "test");
                    println!(
                        "  {:<10} {:>7} {:>7}",
                        "baseline",
                        score(o.baseline.val),
                        score(Some(o.baseline.test))
                    );
                    println!(
                        "  {:<10} {:>7} {:>7}   test {:+.3}",
                        "optimized",
                        score(o.optimized.val),
                        score(Some(o.optimized.test)),
                        o.optimized.test - o.baseline.test
                    );
                    println!(
                        "  chose `{}` of {} candidates ({} demonstrations)",
                        o.chosen, o.candidates, o.demos
                    );
                    println!(
                        "  artifact {} (parent {})",
                        &o.artifact_hash[..12],
                        &o.baseline_hash[..12]
                    );
                }
                Err(e) => {
                    println!();
                    println!("a loop failed: {e}");
                }
            }
        }
        println!();
        println!(
            "run {} ({}): {} calls, {} from the cache, {} tokens, {}",
            run.id,
            run.uid,
            summary.calls,
            summary.cache_hits,
            summary.prompt_tokens + summary.completion_tokens,
            format_duration(wall.round() as u64)
        );
    }
    if let Some(e) = outcomes.iter().find_map(|o| o.as_ref().err()) {
        bail!(
            "{e}; fix the cause and continue with `tuningfork resume {}`",
            run.uid
        );
    }
    Ok(())
}
