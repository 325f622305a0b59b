//! Glue between the command line and the library: each subcommand turns its arguments into a
//! library request, calls the workspace, and prints the report.

pub mod args;
mod artifacts;
mod audit;
mod bench;
mod corpus;
mod eval;
mod generate;
mod models;
mod optimize;
mod progress;
mod queue;
mod runs;
mod serve;

use std::future::Future;

use anyhow::{Context, Result};
use tuningfork::engine::EngineConfig;
use tuningfork::models::Registry;
use tuningfork::store::Store;
use tuningfork::workspace::{CancellationToken, Workspace, WorkspaceConfig, WorkspaceError};

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
        Command::Serve(args) => serve::serve(&cli.global, args),
        Command::Traces(command) => serve::traces(&cli.global, command),
        Command::Dataset(command) => serve::dataset(&cli.global, command),
        Command::Queue(command) => queue::queue(&cli.global, command),
        Command::Worker(args) => queue::worker(&cli.global, args),
        Command::Status(args) => queue::status(&cli.global, args),
        Command::Report(args) => queue::report(&cli.global, args),
        Command::Corpus(command) => corpus::run(&cli.global, command),
        Command::Check(args) => match queue::check(&cli.global, args)? {
            true => Ok(()),
            false => anyhow::bail!("the check failed (see above)"),
        },
    }
}

/// Prints `value` as indented JSON on stdout: the `--json` output of every command.
fn print_json(value: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn open_store(global: &GlobalArgs) -> Result<Store> {
    Ok(Store::open(&global.store)?)
}

/// The store for a command that only reads it: works on a read-only store as well.
fn read_store(global: &GlobalArgs) -> Result<Store> {
    Ok(Store::open_for_reading(&global.store)?)
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
        jump_forward: !args.no_jump_forward,
        gpu_layers: args.gpu_layers,
    }
}

/// The workspace of a command that runs models.
fn workspace(global: &GlobalArgs, engine: &EngineArgs) -> Result<Workspace> {
    Ok(Workspace::open(&WorkspaceConfig {
        store: global.store.clone(),
        models_dir: global.models_dir.clone(),
        engine: engine_config(engine),
        verify: engine.verify,
    })?)
}

/// Runs workspace calls on an async runtime; Ctrl-C cancels their token, and the library
/// records the run as interrupted before the error comes back.
struct Runner {
    runtime: tokio::runtime::Runtime,
    cancel: CancellationToken,
}

impl Runner {
    fn new() -> Result<Runner> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        let cancel = CancellationToken::new();
        let on_ctrl_c = cancel.clone();
        #[cfg(unix)]
        {
            // SIGTERM (a service manager stopping us) ends the run the way Ctrl-C does.
            let on_term = cancel.clone();
            runtime.spawn(async move {
                use tokio::signal::unix::{signal, SignalKind};
                if let Ok(mut term) = signal(SignalKind::terminate()) {
                    term.recv().await;
                    on_term.cancel();
                }
            });
        }
        runtime.spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                on_ctrl_c.cancel();
                // A second Ctrl-C does not wait for the run to be recorded.
                if tokio::signal::ctrl_c().await.is_ok() {
                    std::process::exit(130);
                }
            }
        });
        Ok(Runner { runtime, cancel })
    }

    fn token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    fn run<T>(&self, work: impl Future<Output = Result<T, WorkspaceError>>) -> Result<T> {
        Ok(self.runtime.block_on(work)?)
    }
}
