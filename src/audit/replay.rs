//! Replay: recompute a run's recorded calls and compare every output byte for byte.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use super::AuditError;
use crate::engine::{EngineFingerprint, GenerationRequest};
use crate::generator::{encode_vector, EmbedCall, Generator};
use crate::models::Registry;
use crate::random::Rng;
use crate::store::{CallRecord, RunRecord, Store};

/// What to replay and how.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayOptions {
    /// Recompute only this many distinct requests, chosen with `seed`.
    pub sample: Option<usize>,
    pub seed: u64,
    /// Requests submitted at once.
    pub jobs: usize,
}

/// One stored call whose recomputed output differs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Divergence {
    pub call_id: i64,
    pub request_hash: String,
    /// The first differing token, counting the outputs' tokens from 0.
    pub token_position: usize,
    /// The first differing character.
    pub char_position: usize,
    pub stored: String,
    pub replayed: String,
    /// The request rendered to a different prompt than the stored one (a changed chat
    /// template or adapter).
    pub prompt_changed: bool,
}

/// A replay's outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplayReport {
    pub run: String,
    /// The run holding the replay's own (uncached) calls.
    pub replay_run: String,
    pub models: Vec<String>,
    /// `field: stored → now`, for each fingerprint field that differs.
    pub fingerprint_differences: Vec<String>,
    /// Calls stored in the run.
    pub calls: usize,
    /// Distinct requests recomputed.
    pub recomputed: usize,
    /// Stored calls compared (every stored call of each recomputed request).
    pub checked: usize,
    pub identical: usize,
    pub diverged: usize,
    /// Stored calls that had failed, with no output to compare.
    pub skipped: usize,
    pub divergences: Vec<Divergence>,
}

/// The fields of two fingerprints that differ, as `field: stored → now`.
pub fn fingerprint_differences(stored: &serde_json::Value, now: &EngineFingerprint) -> Vec<String> {
    let now = serde_json::to_value(now).expect("fingerprints serialize");
    let (Some(stored), Some(now)) = (stored.as_object(), now.as_object()) else {
        return vec!["the stored fingerprint cannot be read".into()];
    };
    let keys: std::collections::BTreeSet<&String> = stored.keys().chain(now.keys()).collect();
    keys.into_iter()
        .filter(|k| stored.get(*k) != now.get(*k))
        .map(|k| {
            let show = |v: Option<&serde_json::Value>| {
                v.map_or("(absent)".to_string(), |v| {
                    v.as_str().map_or_else(|| v.to_string(), str::to_string)
                })
            };
            format!("{k}: {} → {}", show(stored.get(k)), show(now.get(k)))
        })
        .collect()
}

/// What a replay found: counts, the engine's differences, each divergence.
impl std::fmt::Display for ReplayReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "replay of run {} ({} calls, model {}):",
            self.run,
            self.calls,
            self.models
                .iter()
                .map(|m| crate::artifact::short(m))
                .collect::<Vec<_>>()
                .join(", ")
        )?;
        writeln!(
    f,
            "  {} calls checked ({} distinct requests recomputed): {} identical, {} diverged; {} failed calls skipped",
            self.checked, self.recomputed, self.identical, self.diverged, self.skipped
        )?;
        if self.fingerprint_differences.is_empty() {
            writeln!(f, "  engine fingerprint: the same as the run's")?;
        } else {
            writeln!(f, "  engine fingerprint differs:")?;
            for d in &self.fingerprint_differences {
                writeln!(f, "    {d}")?;
            }
        }
        for d in &self.divergences {
            writeln!(f)?;
            writeln!(
                f,
                "  call {} ({}): differs from token {} (character {}){}",
                d.call_id,
                crate::artifact::short(&d.request_hash),
                d.token_position,
                d.char_position,
                if d.prompt_changed {
                    "; the prompt renders differently now"
                } else {
                    ""
                }
            )?;
            writeln!(f, "    stored:   {:?}", d.stored)?;
            writeln!(f, "    replayed: {:?}", d.replayed)?;
        }
        write!(f, "  recorded as replay run {}", self.replay_run)
    }
}

/// The name of the pin whose sha256 is `sha`. A model that is no longer pinned is refused:
/// a replay runs only the exact file the run used.
pub fn pinned_name(registry: &Registry, sha: &str) -> Result<String, AuditError> {
    if let Some(pin) = registry.models().iter().find(|p| p.sha256 == sha) {
        return Ok(pin.name.clone());
    }
    let pinned = registry
        .models()
        .iter()
        .map(|p| format!("{} = {}", p.name, p.sha256))
        .collect::<Vec<_>>()
        .join(", ");
    Err(AuditError::ModelNotPinned {
        sha256: sha.to_string(),
        registry: registry.path().display().to_string(),
        pinned: if pinned.is_empty() {
            "none".to_string()
        } else {
            pinned
        },
    })
}

/// The model sha256s a run's calls used, in order of first use.
pub fn models_of(calls: &[CallRecord]) -> Vec<String> {
    let mut shas: Vec<String> = Vec::new();
    for call in calls {
        if !shas.contains(&call.model_sha256) {
            shas.push(call.model_sha256.clone());
        }
    }
    shas
}

fn first_difference<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Recomputes `calls`, the stored calls of `run`, through `generators` (one per model sha256,
/// with the cache off, recording under the replay's own run) and compares each stored output.
/// `on_done` is called after each recomputed request.
pub async fn replay(
    run: &RunRecord,
    calls: &[CallRecord],
    replay_run: &RunRecord,
    generators: &BTreeMap<String, Generator>,
    options: &ReplayOptions,
    on_done: &(dyn Fn() + Sync),
) -> Result<ReplayReport, AuditError> {
    let skipped = calls.iter().filter(|c| c.error.is_some()).count();
    // Distinct requests, each with every stored call that made it, in order of first call.
    let mut groups: Vec<(String, Vec<CallRecord>)> = Vec::new();
    let mut position: BTreeMap<String, usize> = BTreeMap::new();
    for call in calls.iter().filter(|c| c.error.is_none()) {
        match position.get(&call.request_hash) {
            Some(&i) => groups[i].1.push(call.clone()),
            None => {
                position.insert(call.request_hash.clone(), groups.len());
                groups.push((call.request_hash.clone(), vec![call.clone()]));
            }
        }
    }
    let chosen: Vec<usize> = match options.sample {
        Some(n) if n < groups.len() => {
            let mut picked = Rng::new(options.seed).choose(groups.len(), n);
            picked.sort_unstable();
            picked
        }
        _ => (0..groups.len()).collect(),
    };
    // Submitted in prompt order, so that requests sharing a prefix (one candidate's examples)
    // reach the engine together and reuse it; results are placed by index either way.
    let mut order = chosen.clone();
    order.sort_by(|&a, &b| groups[a].1[0].prompt.cmp(&groups[b].1[0].prompt));
    let permits = Arc::new(tokio::sync::Semaphore::new(options.jobs.max(1)));
    let mut set = tokio::task::JoinSet::new();
    for &index in &order {
        let first = groups[index].1[0].clone();
        let generator = generators
            .get(&first.model_sha256)
            .ok_or_else(|| {
                AuditError::Invalid(format!("no engine for model {}", first.model_sha256))
            })?
            .clone();
        let permits = Arc::clone(&permits);
        if let Ok(call) = serde_json::from_value::<EmbedCall>(first.request.clone()) {
            // An embedding: recomputed and compared as its stored hex vector.
            set.spawn(async move {
                let _permit = permits
                    .acquire_owned()
                    .await
                    .expect("the semaphore stays open");
                let embedded = generator.embed(&call.embed.text).await?;
                let pooling_changed = embedded.vector.is_empty()
                    || call.embed.pooling != generator.engine().pooling();
                Ok::<_, AuditError>((index, pooling_changed, encode_vector(&embedded.vector), 0))
            });
            continue;
        }
        let request: GenerationRequest =
            serde_json::from_value(first.request.clone()).map_err(|e| {
                AuditError::Invalid(format!("call {} has an unreadable request: {e}", first.id))
            })?;
        set.spawn(async move {
            let _permit = permits
                .acquire_owned()
                .await
                .expect("the semaphore stays open");
            let rendered = generator.engine().prepare(request.clone())?.rendered;
            let generated = generator.generate(request).await?;
            let stored_tokens = generator.engine().tokenize(&first.output);
            let replayed_tokens = generator.engine().tokenize(&generated.completion.text);
            Ok::<_, AuditError>((
                index,
                rendered != first.prompt,
                generated.completion.text,
                first_difference(&stored_tokens, &replayed_tokens),
            ))
        });
    }
    let mut outcomes = BTreeMap::new();
    while let Some(joined) = set.join_next().await {
        let (index, prompt_changed, text, token_position) =
            joined.expect("replay tasks do not panic")?;
        on_done();
        outcomes.insert(index, (prompt_changed, text, token_position));
    }
    let mut report = ReplayReport {
        run: run.uid.clone(),
        replay_run: replay_run.uid.clone(),
        models: models_of(calls),
        fingerprint_differences: Vec::new(),
        calls: calls.len(),
        recomputed: chosen.len(),
        checked: 0,
        identical: 0,
        diverged: 0,
        skipped,
        divergences: Vec::new(),
    };
    for (index, (prompt_changed, text, token_position)) in outcomes {
        for call in &groups[index].1 {
            report.checked += 1;
            if call.output == text && !prompt_changed {
                report.identical += 1;
                continue;
            }
            report.diverged += 1;
            let stored: Vec<char> = call.output.chars().collect();
            let replayed: Vec<char> = text.chars().collect();
            report.divergences.push(Divergence {
                call_id: call.id,
                request_hash: call.request_hash.clone(),
                token_position,
                char_position: first_difference(&stored, &replayed),
                stored: call.output.clone(),
                replayed: text.clone(),
                prompt_changed,
            });
        }
    }
    report.divergences.sort_by_key(|d| d.call_id);
    Ok(report)
}

/// Stores a replay's report with the run it replayed.
pub fn record(
    store: &Store,
    run: &RunRecord,
    replay_run: &RunRecord,
    report: &ReplayReport,
) -> Result<i64, AuditError> {
    Ok(store.record_replay(
        run.id,
        replay_run.id,
        report.checked as i64,
        report.identical as i64,
        report.diverged as i64,
        report.skipped as i64,
        &serde_json::to_value(&report.fingerprint_differences).expect("strings serialize"),
        &serde_json::to_value(report).expect("reports serialize"),
    )?)
}
