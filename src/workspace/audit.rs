//! Replays: recompute a stored run's calls with the cache off and compare every output.

use std::collections::BTreeMap;

use super::{RunKind, Workspace, WorkspaceError};
use crate::audit::replay::{self, ReplayOptions, ReplayReport};
use crate::audit::AuditError;
use crate::engine::EngineFingerprint;
use crate::generator::Generator;
use tokio_util::sync::CancellationToken;

/// Which run to replay, and how.
#[derive(Debug, Clone)]
pub struct ReplayRequest {
    /// The run's id or uid.
    pub run: String,
    pub options: ReplayOptions,
}

/// Replays a run: every model it used is found among the pins by sha256 and re-hashed, every
/// distinct request recomputed, every stored output compared. The replay is a run of its own
/// and its report is stored with the replayed run. `on_done` hears each recomputed request.
pub async fn replay(
    ws: &Workspace,
    request: &ReplayRequest,
    on_done: &(dyn Fn() + Sync),
    cancel: CancellationToken,
) -> Result<ReplayReport, WorkspaceError> {
    let store = ws.store();
    let run = store.run(&request.run)?;
    let calls = store.run_calls(run.id)?;
    let shas = replay::models_of(&calls);
    if calls.is_empty() {
        return Err(AuditError::Invalid(format!(
            "run {} recorded no model calls; there is nothing to replay",
            run.uid
        ))
        .into());
    }
    let mut engines = BTreeMap::new();
    for sha in &shas {
        let name = replay::pinned_name(ws.registry(), sha)?;
        // Re-hashed whatever the store remembers: a replay trusts only the file itself.
        let engine = ws
            .pool
            .get(ws.registry(), store, &name, ws.engine_config(), true)?;
        engines.insert(sha.clone(), engine);
    }
    let differences =
        replay::fingerprint_differences(&run.engine_fingerprint, &EngineFingerprint::current());
    let handle = ws.begin_run(
        RunKind::Replay,
        serde_json::json!({
            "replayed": run.uid,
            "options": request.options,
            "engine": ws.engine_config(),
        }),
        Some(request.options.seed),
        &engines[&shas[0]],
        cancel,
    )?;
    let replay_run = store.run(&handle.uid)?;
    let generators: BTreeMap<String, Generator> = engines
        .into_iter()
        .map(|(sha, engine)| (sha, handle.generator(engine, handle.group(0), false)))
        .collect();
    let mut report = handle
        .drive(replay::replay(
            &run,
            &calls,
            &replay_run,
            &generators,
            &request.options,
            on_done,
        ))
        .await?;
    report.fingerprint_differences = differences;
    replay::record(store, &run, &replay_run, &report)?;
    Ok(report)
}
