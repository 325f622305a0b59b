//! `tuningfork artifacts …`.

use std::path::Path;

use anyhow::{bail, Context, Result};
use tuningfork::artifact::Artifact;
use tuningfork::dspy;
use tuningfork::task::Task;
use tuningfork::workspace::{Workspace, WorkspaceConfig};

use super::args::{ArtifactFormat, ArtifactsCommand, GlobalArgs};
use super::{open_store, read_store};

pub fn run(global: &GlobalArgs, command: ArtifactsCommand) -> Result<()> {
    // The registry is read only by the commands that make artifacts for a task's model.
    let workspace = || -> Result<Workspace> {
        Ok(Workspace::open(&WorkspaceConfig::new(
            &global.store,
            &global.models_dir,
        ))?)
    };
    let reads_only = matches!(
        command,
        ArtifactsCommand::List
            | ArtifactsCommand::Show { .. }
            | ArtifactsCommand::Diff { .. }
            | ArtifactsCommand::Export { .. }
    );
    let store = if reads_only {
        read_store(global)?
    } else {
        open_store(global)?
    };
    match command {
        ArtifactsCommand::Create { task } => {
            let task = Task::load(&task)?;
            let artifact = workspace()?.artifact_for(&task, task.program.clone())?;
            let hash = store.save_artifact(&artifact)?;
            println!("{hash}");
        }
        ArtifactsCommand::List => {
            let artifacts = store.list_artifacts()?;
            if artifacts.is_empty() {
                println!("no artifacts in {}", global.store.display());
                return Ok(());
            }
            println!(
                "{:<14} {:<16} {:<14} {:>7} {:>7}  CREATED",
                "HASH", "TASK", "MODEL", "VAL", "TEST"
            );
            for stored in artifacts {
                let a = &stored.artifact;
                let score = |s: &str| {
                    a.scores
                        .get(s)
                        .map_or("-".to_string(), |v| format!("{v:.3}"))
                };
                println!(
                    "{:<14} {:<16} {:<14} {:>7} {:>7}  {}",
                    tuningfork::artifact::short(&stored.hash),
                    a.task,
                    a.model.name,
                    score("val"),
                    score("test"),
                    stored.created_at
                );
            }
        }
        ArtifactsCommand::Show { id } => {
            let stored = store.artifact(&id)?;
            println!("hash {}", stored.hash);
            println!("{}", stored.artifact.to_json());
        }
        ArtifactsCommand::Diff { a, b } => {
            let (a, b) = (store.artifact(&a)?, store.artifact(&b)?);
            let lines = a.artifact.diff(&b.artifact);
            if lines.is_empty() {
                println!("no differences");
            }
            for line in lines {
                println!("{line}");
            }
        }
        ArtifactsCommand::Export { id, out, format } => {
            let stored = store.artifact(&id)?;
            let json = match format {
                ArtifactFormat::Tuningfork => stored.artifact.to_json(),
                ArtifactFormat::Dspy => {
                    serde_json::to_string_pretty(&dspy::export(&stored.artifact.program)?)?
                }
            };
            match out {
                Some(path) => std::fs::write(&path, json + "\n")
                    .with_context(|| format!("cannot write {}", path.display()))?,
                None => println!("{json}"),
            }
        }
        ArtifactsCommand::Import { file, format, task } => {
            let artifact = match (format, task) {
                (ArtifactFormat::Tuningfork, None) => read_artifact(&file)?,
                (ArtifactFormat::Tuningfork, Some(_)) => {
                    bail!("--task is only for --format dspy; a tuningfork artifact names its task")
                }
                (ArtifactFormat::Dspy, None) => bail!(
                    "a DSPy program does not carry its fields' types or model; name its task with --task TASK.toml"
                ),
                (ArtifactFormat::Dspy, Some(task)) => {
                    let task = Task::load(&task)?;
                    let text = std::fs::read_to_string(&file)
                        .with_context(|| format!("cannot read {}", file.display()))?;
                    let name = file.display().to_string();
                    let (program, notes) = dspy::import_onto(&text, &name, &task)?;
                    for note in notes {
                        eprintln!("note: {note}");
                    }
                    workspace()?.artifact_for(&task, program)?
                }
            };
            let hash = store.save_artifact(&artifact)?;
            println!("{hash}");
        }
        ArtifactsCommand::Promote { name, id } => {
            let hash = store.promote(&name, &id)?;
            println!("{name} -> {hash}");
        }
        ArtifactsCommand::Rollback { name } => {
            let hash = store.rollback(&name)?;
            println!("{name} -> {hash}");
        }
    }
    Ok(())
}

fn read_artifact(path: &Path) -> Result<Artifact> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(Artifact::from_json(&text, &path.display().to_string())?)
}
