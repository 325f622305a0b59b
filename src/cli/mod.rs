//! Glue between the command line and the library: each subcommand builds library objects from
//! its arguments, calls the library, and prints.

pub mod args;
mod artifacts;
mod audit;
mod bench;
mod eval;
mod generate;
mod models;
mod optimize;
mod runs;

use std::sync::Arc;

use anyhow::{Context, Result};
use tuningfork::engine::{Engine, EngineConfig};
use tuningfork::generator::load_engine;
use tuningfork::models::Registry;
use tuningfork::store::{RunStatus, Store};

use args::{Cli, Command, EngineArgs, GlobalArgs};

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Generate(args) => generate::run(&cli.global, args),
        Command::Models(command) => models::run(&cli.global, command),
        Command::Runs(command) => runs::run(&cli.global, command),
        Command::Bench(args) => bench::run(&cli.global, args),
        Command::Eval(args) => eval::eval(&cli.global, args),
        Command::Predict(args) => eval::predict(&cli.global, args),
        Command::Artifacts(command) => artifacts::run(&cli.global, command),
        Command::Optimize(args) => optimize::optimize(&cli.global, args),
        Command::Resume(args) => optimize::resume(&cli.global, args),
        Command::Replay(args) => audit::replay(&cli.global, args),
        Command::Rerun(args) => optimize::rerun(&cli.global, args),
    }
}

fn open_store(global: &GlobalArgs) -> Result<Arc<Store>> {
    Ok(Arc::new(Store::open(&global.store)?))
}

fn open_registry(global: &GlobalArgs) -> Result<Registry> {
    Ok(Registry::open(&global.models_dir)?)
}

fn engine_config(args: &EngineArgs) -> EngineConfig {
    EngineConfig {
        threads: args.threads,
        n_ctx: args.ctx_size,
        n_batch: args.batch_size,
        slots: args.slots,
        prefix_reuse: !args.no_prefix_reuse,
        gpu_layers: args.gpu_layers,
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Opens the store and the registry, and loads the pinned model `model` with the engine
/// options.
fn open_engine(
    global: &GlobalArgs,
    model: &str,
    args: &EngineArgs,
) -> Result<(Arc<Store>, Registry, Arc<Engine>)> {
    let store = open_store(global)?;
    let registry = open_registry(global)?;
    let engine = load_engine(&registry, &store, model, args.verify, engine_config(args))?;
    Ok((store, registry, Arc::new(engine)))
}

/// Records how a run ended (completed, or failed with the error) and passes the result on.
fn finish_run<T, E: std::fmt::Display>(
    store: &Store,
    run_id: i64,
    result: Result<T, E>,
) -> Result<T>
where
    anyhow::Error: From<E>,
{
    match result {
        Ok(value) => {
            store.finish_run(run_id, RunStatus::Completed, None)?;
            Ok(value)
        }
        Err(e) => {
            store.finish_run(run_id, RunStatus::Failed, Some(&e.to_string()))?;
            Err(e.into())
        }
    }
}
