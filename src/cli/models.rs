//! `tuningfork models …`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use tuningfork::models::gguf_info;
use tuningfork::models::hub::HubFile;
use tuningfork::models::pinning;

use super::args::{GlobalArgs, ModelsCommand};
use super::{open_registry, open_store};

pub fn run(global: &GlobalArgs, command: ModelsCommand) -> Result<()> {
    match command {
        ModelsCommand::List => list(global),
        ModelsCommand::Inspect { model, json } => inspect(global, &model, json),
        ModelsCommand::Verify { name } => verify(global, name.as_deref()),
        ModelsCommand::Add { path, name } => add(global, &path, &name),
        ModelsCommand::Pull {
            repo,
            revision,
            file,
            name,
            endpoint,
        } => pull(
            global,
            HubFile {
                repo,
                revision,
                file,
                endpoint,
            },
            name,
        ),
    }
}

fn list(global: &GlobalArgs) -> Result<()> {
    let registry = open_registry(global)?;
    if registry.models().is_empty() {
        println!("no models pinned in {}", registry.path().display());
    } else {
        print!("{}", registry.table());
    }
    Ok(())
}

fn inspect(global: &GlobalArgs, model: &str, json: bool) -> Result<()> {
    let path = if Path::new(model).is_file() {
        PathBuf::from(model)
    } else {
        let registry = open_registry(global)?;
        let pin = registry.get(model)?;
        let path = registry.file_path(pin);
        if !path.exists() {
            bail!(
                "model `{model}` is pinned but {} is missing; {}",
                path.display(),
                pin.fetch_hint()
            );
        }
        path
    };
    let summary = gguf_info::inspect(&path)?;
    if json {
        super::print_json(&summary)?;
    } else {
        print!("{}", summary.describe(&path));
    }
    Ok(())
}

fn verify(global: &GlobalArgs, name: Option<&str>) -> Result<()> {
    let registry = open_registry(global)?;
    let store = open_store(global)?;
    let names: Vec<String> = match name {
        Some(n) => vec![n.to_string()],
        None => registry.models().iter().map(|m| m.name.clone()).collect(),
    };
    let mut failures = 0;
    for name in &names {
        match registry.verify(name, &store, true) {
            Ok(pinned) => println!("ok      {name}  {}", pinned.sha256()),
            Err(e) => {
                failures += 1;
                println!("FAILED  {name}  {e}");
            }
        }
    }
    if failures > 0 {
        bail!("{failures} of {} models failed verification", names.len());
    }
    Ok(())
}

fn add(global: &GlobalArgs, path: &Path, name: &str) -> Result<()> {
    let mut registry = open_registry(global)?;
    let pin = registry.pin_local(path, name)?;
    print_pinned(&registry, &pin);
    Ok(())
}

fn pull(global: &GlobalArgs, spec: HubFile, name: Option<String>) -> Result<()> {
    if !pinning::is_commit(&spec.revision) {
        eprintln!(
            "warning: revision `{}` is not a commit hash; the pin records the file's sha256, so a moved branch will be refused later",
            spec.revision
        );
    }
    let mut registry = open_registry(global)?;
    let pin = registry.pin_from_hub(spec, name, &pinning::hub_cache_dir())?;
    print_pinned(&registry, &pin);
    Ok(())
}

fn print_pinned(registry: &tuningfork::models::Registry, pin: &tuningfork::models::ModelPin) {
    println!(
        "pinned {}: {} ({} bytes, sha256 {})",
        pin.name,
        registry.file_path(pin).display(),
        pin.size,
        pin.sha256
    );
}
