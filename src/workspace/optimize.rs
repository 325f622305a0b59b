//! Optimization runs: start one from task files, resume one from the store, or rerun one from
//! its stored inputs and compare the two.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

use super::{RoleModels, RunHandle, RunKind, TaskModels, Workspace, WorkspaceError};
use crate::artifact::{short, ArtifactModel};
use crate::dataset;
use crate::observe::{Observer, Silent};
use crate::optimize::budget::format_duration;
use crate::optimize::run::LoopContext;
use crate::optimize::{run_loop, Budget, LoopOutcome, LoopSpec, OptimizerConfig, Tracker};
use crate::store::{OptimizationRow, RunRecord, RunStatus, RunSummary};
use crate::task::Task;
use tokio_util::sync::CancellationToken;

/// What to optimize, and how.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OptimizeRequest {
    /// Task files; each runs with each optimizer as its own loop.
    pub tasks: Vec<PathBuf>,
    pub optimizers: Vec<OptimizerConfig>,
    pub budget: Budget,
    /// Overrides each task's seed.
    pub seed: Option<u64>,
    /// Start from this stored artifact (hash, prefix or promoted name) instead of the task's
    /// program.
    pub program: Option<String>,
    /// Point this name at the result (a run of one loop only).
    pub promote: Option<String>,
    /// The proposer model of instruction optimizers (default: `qwen2.5-coder-0.5b` when
    /// pinned and present, else the task's model).
    pub proposer: Option<String>,
}

/// Makes the observer of each loop of a run (a progress bar, a status record).
pub trait LoopObservers: Send + Sync {
    /// The observer of the loop labelled `label` (`task · optimizer`), which counts against
    /// `tracker`.
    fn observer(&self, label: &str, tracker: &Arc<Tracker>) -> Arc<dyn Observer>;
}

impl LoopObservers for Silent {
    fn observer(&self, _label: &str, _tracker: &Arc<Tracker>) -> Arc<dyn Observer> {
        Arc::new(Silent)
    }
}

/// How an optimization run went: each loop's outcome (or error), in loop order, and the run's
/// totals.
#[derive(Debug, Clone)]
pub struct OptimizeReport {
    pub run: RunRecord,
    pub outcomes: Vec<Result<LoopOutcome, String>>,
    pub summary: RunSummary,
    pub wall_seconds: f64,
    /// Loops this call ran (a resume runs only the unfinished ones).
    pub loops_run: usize,
}

/// A rerun's report and where it departs from the original.
#[derive(Debug, Clone)]
pub struct RerunReport {
    pub original: String,
    pub report: OptimizeReport,
    pub departures: Vec<String>,
}

/// A task ready to optimize: parsed, its starting program chosen, its data read — from files,
/// or from a queued job's snapshot.
#[derive(Debug, Clone)]
pub struct TaskInput {
    /// The task file's path as given (for messages).
    pub file: String,
    /// The task, its program replaced by the starting artifact's when there is one.
    pub task: Task,
    /// The artifact the starting program came from.
    pub parent: Option<String>,
    pub data: dataset::Datasets,
}

/// The optimizers of `configs`, each checked, duplicates dropped.
pub fn unique_optimizers(
    configs: &[OptimizerConfig],
) -> Result<Vec<OptimizerConfig>, WorkspaceError> {
    let mut unique: Vec<OptimizerConfig> = Vec::new();
    for config in configs {
        config
            .validate()
            .map_err(|e| WorkspaceError::Invalid(format!("optimizer {}: {e}", config.name())))?;
        if !unique.contains(config) {
            unique.push(config.clone());
        }
    }
    if unique.is_empty() {
        return Err(WorkspaceError::Invalid(
            "an optimization needs at least one optimizer".into(),
        ));
    }
    Ok(unique)
}

/// One loop per task and optimizer, with the models pinned now.
pub fn loop_specs(
    ws: &Workspace,
    inputs: &[TaskInput],
    configs: &[OptimizerConfig],
    seed: Option<u64>,
    proposer: Option<&str>,
) -> Result<Vec<LoopSpec>, WorkspaceError> {
    let mut loops = Vec::new();
    for input in inputs {
        let (task, data) = (&input.task, &input.data);
        let pin = ws.registry().get(&task.task.model)?;
        let proposer = RoleModels::of(task)
            .with_proposer(ws.registry(), proposer)?
            .proposer
            .map(|name| ws.registry().get(&name).cloned())
            .transpose()?;
        for config in configs {
            if matches!(config, OptimizerConfig::KnnFewShot { .. }) {
                knn_has_a_pool(task, &input.file)?;
            }
            loops.push(LoopSpec {
                task_file: input.file.clone(),
                task_source: task.source.clone(),
                program: task.program.clone(),
                parent: input.parent.clone(),
                optimizer: config.clone(),
                seed: seed.unwrap_or(task.task.seed),
                model: ArtifactModel {
                    name: pin.name.clone(),
                    sha256: pin.sha256.clone(),
                },
                proposer: proposer
                    .as_ref()
                    .filter(|_| config.needs_proposer())
                    .map(|p| ArtifactModel {
                        name: p.name.clone(),
                        sha256: p.sha256.clone(),
                    }),
                train: data.train.0.examples.clone(),
                val: data.val.0.examples.clone(),
                test: data.test.0.examples.clone(),
                train_hash: data.train.0.hash.clone(),
                val_hash: data.val.0.hash.clone(),
                test_hash: data.test.0.hash.clone(),
                cleaning: data.cleaning.clone(),
            });
        }
    }
    Ok(loops)
}

/// KNN shows labeled training examples, so some optimized step must read and write fields the
/// data has: refused before anything runs otherwise.
fn knn_has_a_pool(task: &Task, file: &str) -> Result<(), WorkspaceError> {
    let fields = task.example_fields();
    let usable = task
        .program
        .steps
        .iter()
        .filter(|s| s.optimize)
        .any(|s| s.labeled_by(|field| fields.iter().any(|f| f == field)));
    if usable {
        Ok(())
    } else {
        Err(WorkspaceError::Invalid(format!(
            "{file}: the knn optimizer shows labeled training examples, but no optimized step \
             reads only fields of the data and writes one of them; use bootstrap or \
             random-search, whose demonstrations come from traces"
        )))
    }
}

/// Starts an optimization run: one loop per task and optimizer, all sharing the engine pool
/// and taking turns in the scheduler.
pub async fn optimize(
    ws: &Workspace,
    request: &OptimizeRequest,
    observers: &dyn LoopObservers,
    cancel: CancellationToken,
) -> Result<OptimizeReport, WorkspaceError> {
    let configs = unique_optimizers(&request.optimizers)?;
    if request.tasks.is_empty() {
        return Err(WorkspaceError::Invalid(
            "an optimization needs at least one task and one optimizer".into(),
        ));
    }
    let mut inputs = Vec::new();
    for path in &request.tasks {
        let mut task = Task::load(path)?;
        let parent = ws.use_artifact(&mut task, request.program.as_deref())?;
        let data = dataset::load(&task.dataset, &task.base_dir, &task.example_fields())?;
        inputs.push(TaskInput {
            file: path.display().to_string(),
            task,
            parent,
            data,
        });
    }
    let loops = loop_specs(
        ws,
        &inputs,
        &configs,
        request.seed,
        request.proposer.as_deref(),
    )?;
    if request.promote.is_some() && loops.len() != 1 {
        return Err(WorkspaceError::Invalid(format!(
            "promoting names one result, but this run has {} loops",
            loops.len()
        )));
    }
    let config = serde_json::json!({
        "tasks": request.tasks,
        "optimizers": configs,
        "budget": request.budget,
        "seed": request.seed,
        "engine": ws.engine_config(),
        "promote": request.promote,
        "proposer": request.proposer,
    });
    let report = optimize_loops(ws, loops, config, &request.budget, observers, cancel).await?;
    if let (Some(name), Some(Ok(outcome))) = (&request.promote, report.outcomes.first()) {
        ws.store().promote(name, &outcome.artifact_hash)?;
    }
    Ok(report)
}

/// Begins a run of `loops` under `config` (recorded as the run's config; it must hold the
/// `budget`, which resume reads back) and runs them to the end.
pub async fn optimize_loops(
    ws: &Workspace,
    loops: Vec<LoopSpec>,
    config: serde_json::Value,
    budget: &Budget,
    observers: &dyn LoopObservers,
    cancel: CancellationToken,
) -> Result<OptimizeReport, WorkspaceError> {
    let Some(seed) = loops.first().map(|l| l.seed) else {
        return Err(WorkspaceError::Invalid(
            "an optimization needs at least one task and one optimizer".into(),
        ));
    };
    let loops = prepare(ws, loops)?;
    let mut config = config;
    config["corpora"] = corpora_of(&loops);
    let run = ws.begin_run(
        RunKind::Optimize,
        config,
        Some(seed),
        &loops[0].models.engine,
        cancel,
    )?;
    let pending = run.fail_on_error(|| {
        let rows: Vec<(i64, &str, &str, serde_json::Value)> = loops
            .iter()
            .enumerate()
            .map(|(index, prepared)| {
                (
                    index as i64,
                    prepared.task.task.name.as_str(),
                    prepared.spec.optimizer.name(),
                    serde_json::to_value(&prepared.spec).expect("loop specs serialize"),
                )
            })
            .collect();
        let ids = ws.store().begin_optimizations(run.id, &rows)?;
        Ok(ids.into_iter().zip(loops).collect::<Vec<_>>())
    })?;
    let outcomes = execute(ws, &run, pending, budget, true, observers).await?;
    report(ws, &run.uid, outcomes)
}

/// Continues an interrupted or failed optimization run from the store: finished loops are
/// read back, the others run again, reading back every stored result instead of recomputing
/// it.
pub async fn resume(
    ws: &Workspace,
    run_ref: &str,
    observers: &dyn LoopObservers,
    cancel: CancellationToken,
) -> Result<OptimizeReport, WorkspaceError> {
    let stored = optimization_run(ws, run_ref, "resumed")?;
    let rows = ws.store().optimizations(stored.id)?;
    let mut outcomes: Vec<Option<Result<LoopOutcome, String>>> = vec![None; rows.len()];
    let mut pending = Vec::new();
    for (position, row) in rows.iter().enumerate() {
        match finished_outcome(row) {
            Some(outcome) => outcomes[position] = Some(Ok(outcome)),
            None => pending.push((position, row.id, stored_loop(&stored, row)?)),
        }
    }
    let resumed_loops = pending.len();
    if !pending.is_empty() {
        let budget = stored_budget(&stored)?;
        let specs: Vec<&LoopSpec> = pending.iter().map(|(_, _, s)| s).collect();
        check_pins(ws, &stored, &specs)?;
        let positions: Vec<usize> = pending.iter().map(|(position, _, _)| *position).collect();
        let ids: Vec<i64> = pending.iter().map(|(_, id, _)| *id).collect();
        let prepared = prepare(ws, pending.into_iter().map(|(_, _, spec)| spec).collect())?;
        check_corpora(&stored.config["corpora"], &corpora_of(&prepared))?;
        let run = RunHandle::reopen(
            ws.store(),
            RunKind::Optimize,
            stored.id,
            stored.uid.clone(),
            cancel,
        )?;
        let resumed = execute(
            ws,
            &run,
            ids.into_iter().zip(prepared).collect(),
            &budget,
            true,
            observers,
        )
        .await?;
        for (position, outcome) in positions.into_iter().zip(resumed) {
            outcomes[position] = Some(outcome);
        }
        if let Some(name) = stored.config["promote"].as_str() {
            if let Some(Some(Ok(outcome))) = outcomes.first() {
                ws.store().promote(name, &outcome.artifact_hash)?;
            }
        }
    }
    let mut report = report(ws, &stored.uid, outcomes.into_iter().flatten().collect())?;
    report.loops_run = resumed_loops;
    Ok(report)
}

/// Starts a new run from the stored inputs of an optimization run (not from files), and
/// compares every candidate, result, artifact and score with the original's.
pub async fn rerun(
    ws: &Workspace,
    run_ref: &str,
    use_cache: bool,
    observers: &dyn LoopObservers,
    cancel: CancellationToken,
) -> Result<RerunReport, WorkspaceError> {
    let original = optimization_run(ws, run_ref, "rerun")?;
    let rows = ws.store().optimizations(original.id)?;
    let specs = rows
        .iter()
        .map(|row| stored_loop(&original, row))
        .collect::<Result<Vec<_>, _>>()?;
    if specs.is_empty() {
        return Err(WorkspaceError::Invalid(format!(
            "run {} has no optimization loops",
            original.uid
        )));
    }
    check_pins(ws, &original, &specs.iter().collect::<Vec<_>>())?;
    let budget = stored_budget(&original)?;
    let mut config = match &original.config {
        serde_json::Value::Object(map) => map.clone(),
        _ => {
            return Err(WorkspaceError::Invalid(format!(
                "the config of run {} is not a JSON object; the store was altered",
                original.uid
            )))
        }
    };
    config.insert("rerun_of".into(), original.uid.clone().into());
    config.insert(
        "engine".into(),
        serde_json::to_value(ws.engine_config()).expect("configs serialize"),
    );
    let prepared = prepare(ws, specs)?;
    let run = ws.begin_run(
        RunKind::Optimize,
        config.into(),
        original.seed.map(|s| s as u64),
        &prepared[0].models.engine,
        cancel,
    )?;
    let pending = run.fail_on_error(|| {
        let loops: Vec<(i64, &str, &str, serde_json::Value)> = rows
            .iter()
            .map(|row| {
                (
                    row.loop_index,
                    row.task.as_str(),
                    row.optimizer.as_str(),
                    row.config.clone(),
                )
            })
            .collect();
        let ids = ws.store().begin_optimizations(run.id, &loops)?;
        Ok(ids.into_iter().zip(prepared).collect::<Vec<_>>())
    })?;
    let outcomes = execute(ws, &run, pending, &budget, use_cache, observers).await?;
    let departures = crate::audit::compare_runs(ws.store(), original.id, run.id)?;
    Ok(RerunReport {
        original: original.uid,
        report: report(ws, &run.uid, outcomes)?,
        departures,
    })
}

/// The stored optimization run `run_ref`; `what` says what was to be done with it.
fn optimization_run(
    ws: &Workspace,
    run_ref: &str,
    what: &str,
) -> Result<RunRecord, WorkspaceError> {
    let run = ws.store().run(run_ref)?;
    if run.kind != RunKind::Optimize.as_str() {
        return Err(WorkspaceError::Invalid(format!(
            "run {} is a `{}` run; only optimization runs can be {what} (`tuningfork replay` checks any run's calls)",
            run.uid, run.kind
        )));
    }
    Ok(run)
}

/// A finished loop's stored outcome; `None` when the loop has to run (again): it did not
/// finish, or its outcome cannot be read back (running it again reads every stored result
/// back, so nothing is recomputed).
fn finished_outcome(row: &OptimizationRow) -> Option<LoopOutcome> {
    if !row.status.is_finished() {
        return None;
    }
    serde_json::from_value(row.summary.clone()?).ok()
}

/// A stored loop's spec, read back from its row.
fn stored_loop(run: &RunRecord, row: &OptimizationRow) -> Result<LoopSpec, WorkspaceError> {
    serde_json::from_value(row.config.clone()).map_err(|e| {
        WorkspaceError::Invalid(format!(
            "loop {} of run {} cannot be read back ({e}); the store was altered",
            row.loop_index, run.uid
        ))
    })
}

/// The budget a run was started with. One that cannot be read back is an error: resuming
/// without the budget would silently run unlimited.
fn stored_budget(run: &RunRecord) -> Result<Budget, WorkspaceError> {
    serde_json::from_value(run.config["budget"].clone()).map_err(|e| {
        WorkspaceError::Invalid(format!(
            "the budget of run {} cannot be read back ({e}); the store was altered, so the run is not continued without it",
            run.uid
        ))
    })
}

/// Refuses a stored run whose models are no longer pinned to the sha256 it used.
fn check_pins(ws: &Workspace, run: &RunRecord, specs: &[&LoopSpec]) -> Result<(), WorkspaceError> {
    for model in specs
        .iter()
        .flat_map(|spec| std::iter::once(&spec.model).chain(&spec.proposer))
    {
        let pin = ws.registry().get(&model.name)?;
        if pin.sha256 != model.sha256 {
            return Err(WorkspaceError::Invalid(format!(
                "run {} used model `{}` with sha256 {}, but it is now pinned to {}; restore the pin to continue",
                run.uid, model.name, model.sha256, pin.sha256
            )));
        }
    }
    Ok(())
}

/// A loop ready to run: its spec, its task, and its models loaded.
struct Prepared {
    spec: LoopSpec,
    task: Task,
    models: TaskModels,
}

/// The corpora the loops search, each once, as the run records them.
fn corpora_of(loops: &[Prepared]) -> serde_json::Value {
    let mut uses: Vec<&super::CorpusUse> = Vec::new();
    for prepared in loops {
        for corpus in &prepared.models.corpora {
            if !uses.contains(&corpus) {
                uses.push(corpus);
            }
        }
    }
    serde_json::to_value(uses).expect("corpus uses serialize")
}

/// A resumed run must search the corpora it began with: results from two versions of a
/// corpus would be mixed.
fn check_corpora(
    recorded: &serde_json::Value,
    now: &serde_json::Value,
) -> Result<(), WorkspaceError> {
    let hashes = |value: &serde_json::Value| -> Vec<(String, String)> {
        value
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|u| {
                Some((
                    u["corpus"].as_str()?.to_string(),
                    u["content_hash"].as_str()?.to_string(),
                ))
            })
            .collect()
    };
    let now = hashes(now);
    for (corpus, hash) in hashes(recorded) {
        if let Some((_, current)) = now.iter().find(|(c, _)| *c == corpus) {
            if *current != hash {
                return Err(WorkspaceError::Invalid(format!(
                    "corpus `{corpus}` changed since this run began (content {} then, {} now); \
                     resuming would mix results from both: start a new optimization, or restore \
                     the corpus's files and `corpus add` them again",
                    &hash[..12.min(hash.len())],
                    &current[..12.min(current.len())]
                )));
            }
        }
    }
    Ok(())
}

/// Parses each loop's task and loads every model it needs, before a run is begun or
/// reopened, so that a missing or mismatched model file leaves no half-started run.
fn prepare(ws: &Workspace, specs: Vec<LoopSpec>) -> Result<Vec<Prepared>, WorkspaceError> {
    specs
        .into_iter()
        .map(|spec| {
            let task = spec.task()?;
            let mut models = ws.task_models(&task)?;
            if let Some(proposer) = &spec.proposer {
                models.proposer = Some(ws.engine(&proposer.name)?);
            }
            Ok(Prepared { spec, task, models })
        })
        .collect()
}

/// Runs the loops concurrently and records how the run ended. A cancelled run stops its
/// loops, is marked interrupted and returns [`WorkspaceError::Interrupted`].
async fn execute(
    ws: &Workspace,
    run: &RunHandle,
    loops: Vec<(i64, Prepared)>,
    budget: &Budget,
    use_cache: bool,
    observers: &dyn LoopObservers,
) -> Result<Vec<Result<LoopOutcome, String>>, WorkspaceError> {
    let tracker = Arc::new(Tracker::new(budget.clone()));
    let mut set = tokio::task::JoinSet::new();
    for (position, (optimization_id, prepared)) in loops.into_iter().enumerate() {
        let Prepared { spec, task, models } = prepared;
        let (lm, judges) = models.for_run(run, &task.task.model, run.group(position), use_cache);
        let proposer = models.proposer_for_run(run, run.group(position), use_cache);
        let retriever =
            models.retriever_for_run(ws, run, &task.task.model, run.group(position), use_cache);
        let observer = observers.observer(
            &format!("{} · {}", task.task.name, spec.optimizer.name()),
            &tracker,
        );
        let context = LoopContext {
            store: Arc::clone(ws.store()),
            optimization_id,
            run_uid: run.uid.clone(),
            lm,
            retriever,
            judges,
            proposer,
            tracker: Arc::clone(&tracker),
            observer,
        };
        set.spawn(async move {
            let result = run_loop(&spec, context).await;
            (position, result.map_err(|e| e.to_string()))
        });
    }
    let mut results: Vec<Option<Result<LoopOutcome, String>>> = vec![None; set.len()];
    let joined = run
        .drive(async {
            while let Some(joined) = set.join_next().await {
                let (position, result) = joined.expect("loops do not panic");
                results[position] = Some(result);
            }
            let failures: Vec<&str> = results
                .iter()
                .flatten()
                .filter_map(|r| r.as_ref().err().map(String::as_str))
                .collect();
            if failures.is_empty() {
                Ok(())
            } else {
                Err(WorkspaceError::LoopsFailed(failures.join("; ")))
            }
        })
        .await;
    // `drive` recorded how the run ended: completed, failed by a loop (interrupted when the
    // disk filled up), or interrupted; each loop's own outcome is reported either way.
    match joined {
        Ok(()) | Err(WorkspaceError::LoopsFailed(_)) => {}
        Err(e) => return Err(e),
    }
    Ok(results
        .into_iter()
        .map(|r| r.expect("every loop ended"))
        .collect())
}

fn report(
    ws: &Workspace,
    run_uid: &str,
    outcomes: Vec<Result<LoopOutcome, String>>,
) -> Result<OptimizeReport, WorkspaceError> {
    let run = ws.store().run(run_uid)?;
    let summary = ws.store().summarize(run.clone())?;
    let wall_seconds = ws.store().run_seconds(run.id)?;
    Ok(OptimizeReport {
        run,
        loops_run: outcomes.len(),
        outcomes,
        summary,
        wall_seconds,
    })
}

impl OptimizeReport {
    /// The first loop error, if a loop failed.
    pub fn first_error(&self) -> Option<&str> {
        self.outcomes
            .iter()
            .find_map(|o| o.as_ref().err().map(String::as_str))
    }

    /// The report as JSON: the run, each loop's outcome, and the totals.
    pub fn to_json(&self) -> serde_json::Value {
        #[derive(Serialize)]
        struct Json<'a> {
            run: &'a str,
            status: RunStatus,
            loops: Vec<serde_json::Value>,
            calls: i64,
            cache_hits: i64,
            tokens: i64,
            by_model: &'a [crate::store::ModelShare],
            wall_seconds: f64,
        }
        serde_json::to_value(Json {
            run: &self.run.uid,
            status: self.run.status,
            loops: self
                .outcomes
                .iter()
                .map(|o| match o {
                    Ok(outcome) => serde_json::to_value(outcome).expect("outcomes serialize"),
                    Err(e) => serde_json::json!({ "error": e }),
                })
                .collect(),
            calls: self.summary.calls,
            cache_hits: self.summary.cache_hits,
            tokens: self.summary.prompt_tokens + self.summary.completion_tokens,
            by_model: &self.summary.by_model,
            wall_seconds: self.wall_seconds,
        })
        .expect("reports serialize")
    }
}

fn score(value: Option<f64>) -> String {
    value.map_or("-".to_string(), |v| format!("{v:.3}"))
}

/// The baseline vs optimized table of every loop, then the run's totals.
impl std::fmt::Display for OptimizeReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for outcome in &self.outcomes {
            writeln!(f)?;
            let o = match outcome {
                Ok(o) => o,
                Err(e) => {
                    writeln!(f, "a loop failed: {e}")?;
                    continue;
                }
            };
            writeln!(f, "{} · {} — {}", o.task, o.optimizer, o.status)?;
            if let Some(reason) = &o.stop_reason {
                writeln!(f, "  stopped early: {reason}")?;
            }
            writeln!(f, "  {:<10} {:>7} {:>7}", "", "val", "test")?;
            writeln!(
                f,
                "  {:<10} {:>7} {:>7}",
                "baseline",
                score(o.baseline.val),
                score(Some(o.baseline.test))
            )?;
            writeln!(
                f,
                "  {:<10} {:>7} {:>7}   test {:+.3}",
                "optimized",
                score(o.optimized.val),
                score(Some(o.optimized.test)),
                o.optimized.test - o.baseline.test
            )?;
            writeln!(
                f,
                "  chose `{}` of {} candidates ({})",
                o.chosen,
                o.candidates,
                o.demonstrations()
            )?;
            writeln!(
                f,
                "  artifact {} (parent {})",
                short(&o.artifact_hash),
                short(&o.baseline_hash)
            )?;
        }
        writeln!(f)?;
        write!(
            f,
            "run {} ({}): {} calls, {} from the cache, {} tokens, {}",
            self.run.id,
            self.run.uid,
            self.summary.calls,
            self.summary.cache_hits,
            self.summary.prompt_tokens + self.summary.completion_tokens,
            format_duration(self.wall_seconds.round() as u64)
        )?;
        if self.summary.by_model.len() > 1 {
            let shares: Vec<String> = self
                .summary
                .by_model
                .iter()
                .map(|m| format!("{} {} calls, {} tokens", m.model, m.calls, m.tokens))
                .collect();
            write!(f, "\n  by model: {}", shares.join("; "))?;
        }
        Ok(())
    }
}
