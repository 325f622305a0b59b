//! The `tuningfork` binary: parse arguments, call the library, map errors to exit codes.

mod cli;

use std::process::ExitCode;

use clap::Parser;
use tuningfork::workspace::{RunKind, WorkspaceError};

fn main() -> ExitCode {
    let args = cli::args::Cli::parse();
    init_tracing(args.global.verbose);
    // `println!` panics when stdout is a closed pipe (`tuningfork runs show 3 | head`); that is
    // the reader's choice, not an error: stay quiet and exit 0.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !is_broken_pipe(info.payload()) {
            default_hook(info);
        }
    }));
    let outcome = match std::panic::catch_unwind(|| cli::run(args)) {
        Ok(outcome) => outcome,
        Err(payload) if is_broken_pipe(payload.as_ref()) => return ExitCode::SUCCESS,
        Err(payload) => std::panic::resume_unwind(payload),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // A closed pipe (`tuningfork runs list | head`) is not a failure.
            if err
                .chain()
                .filter_map(|e| e.downcast_ref::<std::io::Error>())
                .any(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            {
                return ExitCode::SUCCESS;
            }
            match err.downcast_ref() {
                Some(WorkspaceError::Interrupted { run, kind }) => {
                    if *kind == RunKind::Optimize {
                        eprintln!("{err}; continue it with: tuningfork resume {run}");
                    } else {
                        eprintln!("{err}");
                    }
                    return ExitCode::from(130);
                }
                Some(WorkspaceError::Cancelled) => {
                    eprintln!("{err}");
                    return ExitCode::from(130);
                }
                _ => {}
            }
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(payload: &(dyn std::any::Any + Send)) -> bool {
    let message = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("");
    message.contains("Broken pipe")
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn,llama_cpp_2=off,llama-cpp-2=off",
        1 => "info,llama_cpp_2=warn",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("TUNINGFORK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .init();
}
