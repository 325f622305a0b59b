//! Glue between the command line and the library: each subcommand builds library objects from
//! its arguments, calls the library, and prints.

pub mod args;
mod bench;
mod eval;
mod generate;
mod models;
mod runs;

use std::sync::Arc;

use anyhow::{Context, Result};
use tuningfork::engine::EngineConfig;
use tuningfork::models::Registry;
use tuningfork::store::Store;

use args::{Cli, Command, EngineArgs, GlobalArgs};

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Generate(args) => generate::run(&cli.global, args),
        Command::Models(command) => models::run(&cli.global, command),
        Command::Runs(command) => runs::run(&cli.global, command),
        Command::Bench(args) => bench::run(&cli.global, args),
        Command::Eval(args) => eval::eval(&cli.global, args),
        Command::Predict(args) => eval::predict(&cli.global, args),
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
