//! `tuningfork models …`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tuningfork::models::gguf_info::{self, human_count};
use tuningfork::models::hashing::sha256_file;
use tuningfork::models::hub::{self, HubFile};
use tuningfork::models::{ModelPin, Source};

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
        return Ok(());
    }
    println!(
        "{:<16} {:<10} {:>10}  {:<14} FILE",
        "NAME", "PRESENT", "SIZE", "SHA256"
    );
    for pin in registry.models() {
        let present = registry.file_path(pin).exists();
        println!(
            "{:<16} {:<10} {:>10}  {:<14} {}",
            pin.name,
            if present { "yes" } else { "no" },
            format!("{:.1} MB", pin.size as f64 / 1e6),
            &pin.sha256[..12],
            pin.file
        );
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
        println!("{}", serde_json::to_string_pretty(&summary)?);
        return Ok(());
    }
    let or_none = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_string());
    println!("file            {}", path.display());
    println!("gguf            {}", summary.gguf_version);
    println!("name            {}", or_none(&summary.name));
    println!("architecture    {}", or_none(&summary.architecture));
    println!(
        "parameters      {} ({})",
        human_count(summary.parameters),
        summary.parameters
    );
    println!("quantization    {}", or_none(&summary.file_type));
    let types: Vec<String> = summary
        .tensor_types
        .iter()
        .map(|(t, n)| format!("{t}×{n}"))
        .collect();
    println!("tensor types    {}", types.join(", "));
    println!(
        "context length  {}",
        summary
            .context_length
            .map_or("-".to_string(), |c| c.to_string())
    );
    match &summary.chat_template {
        Some(t) => println!("chat template   yes ({} chars)", t.len()),
        None => println!("chat template   none (conversations use the plain format)"),
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
    if registry.get(name).is_ok() {
        bail!(
            "a model named `{name}` is already pinned in {}; choose another --name",
            registry.path().display()
        );
    }
    let summary = gguf_info::inspect(path).with_context(|| {
        format!(
            "{} does not look like a GGUF model; only GGUF files can be pinned",
            path.display()
        )
    })?;
    let file_name = path
        .file_name()
        .and_then(|f| f.to_str())
        .context("the path has no usable file name")?
        .to_string();
    let target = registry.dir().join(&file_name);
    let same_file =
        target.exists() && std::fs::canonicalize(&target).ok() == std::fs::canonicalize(path).ok();
    if target.exists() && !same_file {
        bail!(
            "{} already exists; rename your file or remove the existing one",
            target.display()
        );
    }
    if !same_file {
        std::fs::create_dir_all(registry.dir())?;
        std::fs::copy(path, &target)
            .with_context(|| format!("cannot copy {} to {}", path.display(), target.display()))?;
    }
    let sha256 = sha256_file(&target)?;
    let size = std::fs::metadata(&target)?.len();
    let original = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    registry.add(ModelPin {
        name: name.to_string(),
        file: file_name,
        sha256: sha256.clone(),
        size,
        description: summary.name.clone(),
        source: Source::Local { path: original },
    })?;
    println!(
        "pinned {name}: {} ({size} bytes, sha256 {sha256})",
        target.display()
    );
    Ok(())
}

fn pull(global: &GlobalArgs, spec: HubFile, name: Option<String>) -> Result<()> {
    let mut registry = open_registry(global)?;
    let name = name.unwrap_or_else(|| {
        Path::new(&spec.file)
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("model")
            .to_lowercase()
    });
    if registry.get(&name).is_ok() {
        bail!(
            "a model named `{name}` is already pinned in {}; choose another --name",
            registry.path().display()
        );
    }
    if spec.revision.len() != 40 || !spec.revision.bytes().all(|b| b.is_ascii_hexdigit()) {
        eprintln!(
            "warning: revision `{}` is not a commit hash; the pin records the file's sha256, so a moved branch will be refused later",
            spec.revision
        );
    }
    let cache = hub_cache_dir();
    let downloaded = hub::download(&spec, &cache, true)?;
    let file_name = Path::new(&spec.file)
        .file_name()
        .and_then(|f| f.to_str())
        .context("the remote file has no usable name")?
        .to_string();
    let target = registry.dir().join(&file_name);
    if target.exists() {
        bail!(
            "{} already exists; remove it or pull under another name",
            target.display()
        );
    }
    std::fs::create_dir_all(registry.dir())?;
    std::fs::copy(&downloaded, &target).with_context(|| {
        format!(
            "cannot copy {} to {}",
            downloaded.display(),
            target.display()
        )
    })?;
    let sha256 = sha256_file(&target)?;
    let size = std::fs::metadata(&target)?.len();
    let description = gguf_info::inspect(&target).ok().and_then(|s| s.name);
    registry.add(ModelPin {
        name: name.clone(),
        file: file_name,
        sha256: sha256.clone(),
        size,
        description,
        source: Source::Huggingface {
            repo: spec.repo,
            revision: spec.revision,
            file: spec.file,
        },
    })?;
    println!(
        "pinned {name}: {} ({size} bytes, sha256 {sha256})",
        target.display()
    );
    Ok(())
}

fn hub_cache_dir() -> PathBuf {
    std::env::var_os("TUNINGFORK_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|p| PathBuf::from(p).join("tuningfork")))
        .or_else(|| std::env::var_os("HOME").map(|p| PathBuf::from(p).join(".cache/tuningfork")))
        .unwrap_or_else(|| PathBuf::from(".cache/tuningfork"))
        .join("hub")
}
