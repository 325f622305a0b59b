//! The run lifecycle: a run begins with its kind and config, its calls are recorded under it,
//! and it ends with a typed status — completed, failed with the error, or interrupted when its
//! cancellation token fires. The library never exits the process: a front end cancels the
//! token (the command line on Ctrl-C, a server on shutdown) and gets
//! [`WorkspaceError::Interrupted`] back once everything finished so far is stored.

use std::future::Future;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::WorkspaceError;
use crate::engine::{Engine, EngineFingerprint};
use crate::generator::Generator;
use crate::program::grammar::GRAMMAR_VERSION;
use crate::program::ADAPTER_VERSION;
use crate::random::CHOICE_RNG_VERSION;
use crate::store::{NewRun, RunStatus, Store};

/// What a run does; stored as its `kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunKind {
    Generate,
    Eval,
    Predict,
    Optimize,
    Replay,
    Bench,
    Serve,
    /// Embedding a corpus.
    Index,
    /// A search of a corpus (`corpus search`).
    Search,
}

impl RunKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RunKind::Generate => "generate",
            RunKind::Eval => "eval",
            RunKind::Predict => "predict",
            RunKind::Optimize => "optimize",
            RunKind::Replay => "replay",
            RunKind::Bench => "bench",
            RunKind::Serve => "serve",
            RunKind::Index => "index",
            RunKind::Search => "search",
        }
    }
}

/// A run in progress: its ids, the store its calls go to, and its cancellation token.
#[derive(Clone)]
pub struct RunHandle {
    pub id: i64,
    pub uid: String,
    pub kind: RunKind,
    store: Arc<Store>,
    cancel: CancellationToken,
}

impl RunHandle {
    /// Begins a run of `kind`. `config` is stored with the versions of everything that decides
    /// its results (the adapter, the choice generator); the run records the sha256 of its
    /// main model and the fingerprint of the engine it runs on.
    pub fn begin(
        store: &Arc<Store>,
        kind: RunKind,
        mut config: serde_json::Value,
        seed: Option<u64>,
        model: (Option<&str>, &EngineFingerprint),
        cancel: CancellationToken,
    ) -> Result<RunHandle, WorkspaceError> {
        // Cancelled while models were verified and loaded: no run is begun at all.
        if cancel.is_cancelled() {
            return Err(WorkspaceError::Cancelled);
        }
        if let serde_json::Value::Object(map) = &mut config {
            map.entry("adapter_version")
                .or_insert_with(|| ADAPTER_VERSION.into());
            map.insert("choice_rng_version".into(), CHOICE_RNG_VERSION.into());
            map.insert("grammar_version".into(), GRAMMAR_VERSION.into());
        }
        // Space set aside earlier and released for a full disk is set aside again.
        store.keep_reserve();
        let id = store.begin_run(&NewRun {
            kind: kind.as_str(),
            config,
            seed,
            model_sha256: model.0,
            fingerprint: model.1,
        })?;
        Ok(RunHandle {
            id,
            uid: store.run(&id.to_string())?.uid,
            kind,
            store: Arc::clone(store),
            cancel,
        })
    }

    /// A handle on a stored run that goes on (a resumed optimization).
    pub fn reopen(
        store: &Arc<Store>,
        kind: RunKind,
        id: i64,
        uid: String,
        cancel: CancellationToken,
    ) -> Result<RunHandle, WorkspaceError> {
        if cancel.is_cancelled() {
            return Err(WorkspaceError::Cancelled);
        }
        store.reopen_run(id)?;
        Ok(RunHandle {
            id,
            uid,
            kind,
            store: Arc::clone(store),
            cancel,
        })
    }

    /// A generator whose calls are recorded under this run, in the scheduler queue `group`.
    pub fn generator(&self, engine: Arc<Engine>, group: u64, use_cache: bool) -> Generator {
        Generator::new(engine, Arc::clone(&self.store), self.id)
            .in_group(group)
            .with_cache(use_cache)
    }

    /// The scheduler queue of position `position` within this run (one per optimization
    /// loop), so that a run's loops take turns with each other and with other runs.
    pub fn group(&self, position: usize) -> u64 {
        ((self.id as u64) << 8) | (position as u64 & 0xff)
    }

    /// Runs `work` until it ends or the run is cancelled, and records how the run ended:
    /// completed, failed with the error, or interrupted (the work is dropped, which cancels
    /// its model calls; what it stored stays).
    pub async fn drive<T, E>(
        &self,
        work: impl Future<Output = Result<T, E>>,
    ) -> Result<T, WorkspaceError>
    where
        WorkspaceError: From<E>,
    {
        let result = tokio::select! {
            result = work => result.map_err(WorkspaceError::from),
            _ = self.cancel.cancelled() => Err(WorkspaceError::Interrupted {
                run: self.uid.clone(),
                kind: self.kind,
            }),
        };
        self.finish_or_keep(result)
    }

    /// Records how the run ended and returns `result`; when the run failed and even recording
    /// that fails (a full disk), the run's own error is the one returned.
    fn finish_or_keep<T>(&self, result: Result<T, WorkspaceError>) -> Result<T, WorkspaceError> {
        match (self.finish(&result), result) {
            (Ok(()), result) => result,
            (Err(finishing), Ok(_)) => Err(finishing),
            (Err(finishing), Err(e)) => {
                tracing::warn!(
                    "could not record how run {} ended ({finishing}); it stays `running`, \
                     and `tuningfork resume {}` carries it on",
                    self.uid,
                    self.uid
                );
                Err(e)
            }
        }
    }

    /// Runs setup work that follows the run's beginning (recording its loops); an error marks
    /// the run failed, so that no run is left `running` by a failure before its work began.
    pub fn fail_on_error<T>(
        &self,
        work: impl FnOnce() -> Result<T, WorkspaceError>,
    ) -> Result<T, WorkspaceError> {
        let result = work();
        if result.is_err() {
            return self.finish_or_keep(result);
        }
        result
    }

    /// Records how the run ended from `result`. A run stopped by a full disk is interrupted,
    /// not failed: nothing is wrong with it, and once there is space it can carry on. When
    /// the disk is full, the space set aside beside the store is released for this write.
    pub fn finish<T>(&self, result: &Result<T, WorkspaceError>) -> Result<(), WorkspaceError> {
        let disk_full = self.store.take_disk_full();
        if disk_full {
            self.store.release_reserve();
        }
        let (status, error) = match result {
            Ok(_) => (RunStatus::Completed, None),
            Err(WorkspaceError::Interrupted { .. }) => (
                RunStatus::Interrupted,
                Some("interrupted before it finished".to_string()),
            ),
            Err(e) if disk_full => (RunStatus::Interrupted, Some(format!("interrupted: {e}"))),
            Err(e) => (RunStatus::Failed, Some(e.to_string())),
        };
        let write = || self.store.finish_run(self.id, status, error.as_deref());
        match write() {
            Err(_) if self.store.take_disk_full() => {
                self.store.release_reserve();
                write()?
            }
            other => other?,
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn begin(store: &Arc<Store>, cancel: CancellationToken) -> RunHandle {
        RunHandle::begin(
            store,
            RunKind::Eval,
            serde_json::json!({ "task": "t" }),
            Some(3),
            (None, &EngineFingerprint::current()),
            cancel,
        )
        .unwrap()
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn a_run_ends_completed_failed_or_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("s.sqlite")).unwrap());
        let rt = runtime();

        let ok = begin(&store, CancellationToken::new());
        let stored = store.run(&ok.uid).unwrap();
        assert_eq!(stored.status, RunStatus::Running);
        assert_eq!(stored.config["choice_rng_version"], CHOICE_RNG_VERSION);
        assert_eq!(stored.config["adapter_version"], ADAPTER_VERSION);
        assert_eq!(stored.config["grammar_version"], GRAMMAR_VERSION);
        let value = rt
            .block_on(ok.drive(async { Ok::<_, WorkspaceError>(5) }))
            .unwrap();
        assert_eq!(value, 5);
        assert_eq!(store.run(&ok.uid).unwrap().status, RunStatus::Completed);

        let failing = begin(&store, CancellationToken::new());
        let err = rt
            .block_on(
                failing.drive(async {
                    Err::<(), _>(WorkspaceError::Invalid("the metric broke".into()))
                }),
            )
            .unwrap_err();
        assert!(err.to_string().contains("the metric broke"));
        let stored = store.run(&failing.uid).unwrap();
        assert_eq!(stored.status, RunStatus::Failed);
        assert_eq!(stored.error.as_deref(), Some("the metric broke"));

        // Cancelling the token stops work that would never end by itself.
        let cancel = CancellationToken::new();
        let interrupted = begin(&store, cancel.clone());
        let err = rt
            .block_on(async {
                let stopper = cancel.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    stopper.cancel();
                });
                interrupted
                    .drive(std::future::pending::<Result<(), WorkspaceError>>())
                    .await
            })
            .unwrap_err();
        assert!(
            matches!(err, WorkspaceError::Interrupted { ref run, .. } if *run == interrupted.uid)
        );
        assert_eq!(
            store.run(&interrupted.uid).unwrap().status,
            RunStatus::Interrupted
        );
    }

    #[test]
    fn a_token_cancelled_before_the_run_begins_begins_no_run() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("s.sqlite")).unwrap());
        let cancel = CancellationToken::new();
        cancel.cancel();
        let err = RunHandle::begin(
            &store,
            RunKind::Eval,
            serde_json::json!({}),
            None,
            (None, &EngineFingerprint::current()),
            cancel,
        )
        .err()
        .expect("a cancelled token begins nothing");
        assert!(matches!(err, WorkspaceError::Cancelled));
        assert!(store.list_runs(10).unwrap().is_empty());
    }

    #[test]
    fn each_position_of_a_run_has_its_own_scheduler_queue() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("s.sqlite")).unwrap());
        let a = begin(&store, CancellationToken::new());
        let b = begin(&store, CancellationToken::new());
        assert_ne!(a.group(0), a.group(1));
        assert_ne!(a.group(0), b.group(0));
        assert_ne!(a.group(1), b.group(1));
    }
}
