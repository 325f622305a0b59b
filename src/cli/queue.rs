//! `tuningfork queue …`, `worker`, `status`, `report` and `check`.

use anyhow::{bail, Context, Result};
use tuningfork::optimize::budget::parse_duration;
use tuningfork::queue::{self, JobRequest, QueueStatus, WorkerConfig, WorkerEvent};
use tuningfork::workspace::{self, CheckRequest, Workspace, WorkspaceConfig};

use super::args::{
    CheckArgs, GlobalArgs, QueueAddArgs, QueueCommand, ReportArgs, StatusArgs, WorkerArgs,
};
use super::optimize::{budget, optimizers};
use super::progress::CountBar;
use super::{open_store, read_store, workspace, Runner};

pub fn queue(global: &GlobalArgs, command: QueueCommand) -> Result<()> {
    match command {
        QueueCommand::Add(args) => add(global, *args),
        QueueCommand::List { all, json } => {
            let status = QueueStatus::read(&read_store(global)?, all, 0)?;
            if json {
                super::print_json(&status.to_json())?;
            } else {
                print!("{status}");
            }
            Ok(())
        }
        QueueCommand::Show { id, json } => {
            let store = read_store(global)?;
            let job = store.job(id)?;
            let cycles = store.cycles(id)?;
            if json {
                let value = serde_json::json!({
                    "job": queue::job_json(&job),
                    "cycles": cycles.iter().map(queue::cycle_json).collect::<Vec<_>>(),
                });
                return super::print_json(&value);
            }
            let status = QueueStatus {
                jobs: vec![job.clone()],
                recent: cycles.into_iter().rev().collect(),
            };
            print!("{status}");
            println!();
            println!("configuration:");
            super::print_json(&job.spec)?;
            Ok(())
        }
        QueueCommand::Cancel { id } => {
            let was = open_store(global)?.cancel_job(id)?;
            println!("job {id} cancelled (it was {was})");
            Ok(())
        }
    }
}

fn add(global: &GlobalArgs, args: QueueAddArgs) -> Result<()> {
    let notify = match &args.notify {
        Some(command) => match shlex::split(command) {
            Some(words) if !words.is_empty() => words,
            _ => bail!("--notify `{command}` is not a command line (check its quotes)"),
        },
        None => Vec::new(),
    };
    let every = args.every.as_deref().map(parse_duration).transpose();
    let request = JobRequest {
        tasks: args.tasks.clone(),
        optimizers: optimizers(&args.search),
        budget: budget(&args.search)?,
        seed: args.search.seed,
        program: args.search.program.clone(),
        proposer: args.search.proposer.clone(),
        promote: args.promote.clone(),
        margin: args.margin,
        notify,
        every_seconds: every.map_err(|e| anyhow::anyhow!("--every: {e}"))?,
        on_change: args.on_change,
    };
    let ws = Workspace::open(&WorkspaceConfig::new(&global.store, &global.models_dir))?;
    let id = queue::add_job(&ws, &request)?;
    let job = ws.store().job(id)?;
    println!(
        "job {id} queued: {} ({}); `tuningfork worker` runs it",
        queue::describe(&job),
        queue::schedule(&job)
    );
    Ok(())
}

pub fn worker(global: &GlobalArgs, args: WorkerArgs) -> Result<()> {
    let poll = parse_duration(&args.poll).map_err(|e| anyhow::anyhow!("--poll: {e}"))?;
    let config = WorkerConfig {
        poll: std::time::Duration::from_secs(poll.max(1)),
        drain: args.drain,
        ..WorkerConfig::default()
    };
    let ws = workspace(global, &args.engine)?;
    let runner = Runner::new()?;
    let mut idle_said = false;
    let idle = std::sync::Mutex::new(&mut idle_said);
    let events = |event: WorkerEvent| {
        let mut idle = idle.lock().unwrap_or_else(|p| p.into_inner());
        match event {
            WorkerEvent::Started {
                job,
                cycle,
                trigger,
                what,
            } => {
                **idle = false;
                eprintln!("job {job} cycle {cycle} ({trigger}): {what}");
            }
            WorkerEvent::Ended {
                job,
                cycle,
                status,
                text,
            } => eprintln!("job {job} cycle {cycle} {status}: {text}"),
            WorkerEvent::Idle { seconds } if !**idle => {
                **idle = true;
                eprintln!("nothing due; checking every {seconds} s (Ctrl-C stops)");
            }
            WorkerEvent::Idle { .. } => {}
        }
    };
    let summary = runner.run(queue::run_worker(&ws, &config, &events, runner.token()))?;
    eprintln!(
        "worker stopped: {} cycles ({} completed, {} failed, {} promoted)",
        summary.cycles, summary.completed, summary.failed, summary.promoted
    );
    Ok(())
}

pub fn status(global: &GlobalArgs, args: StatusArgs) -> Result<()> {
    let status = QueueStatus::read(&read_store(global)?, args.all, args.recent)?;
    if args.json {
        super::print_json(&status.to_json())?;
    } else {
        print!("{status}");
    }
    Ok(())
}

pub fn report(global: &GlobalArgs, args: ReportArgs) -> Result<()> {
    let store = read_store(global)?;
    let html = match (&args.run, &args.task) {
        (Some(run), _) => tuningfork::report::run_report(&store, run)?,
        (None, Some(task)) => tuningfork::report::task_history(&store, task)?,
        (None, None) => bail!("name a run, or a task with --task"),
    };
    std::fs::write(&args.out, html)
        .with_context(|| format!("cannot write the report to {}", args.out.display()))?;
    println!("wrote {}", args.out.display());
    Ok(())
}

pub fn check(global: &GlobalArgs, args: CheckArgs) -> Result<bool> {
    let request = CheckRequest {
        task: args.task.clone(),
        program: args.program.clone(),
        split: args.split.into(),
        min_score: args.min_score,
        tolerance: args.tolerance,
        use_cache: !args.no_cache,
    };
    let ws = workspace(global, &args.engine)?;
    let bar = CountBar::evaluation(&args.task);
    let runner = Runner::new()?;
    let report = runner.run(workspace::check(&ws, &request, &bar, runner.token()));
    drop(bar);
    let report = report?;
    if args.json {
        let mut value = serde_json::to_value(&report)?;
        value["passed"] = report.passed().into();
        super::print_json(&value)?;
    } else {
        println!("{report}");
    }
    Ok(report.passed())
}
