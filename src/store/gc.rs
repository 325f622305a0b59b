//! Store growth: deleting old runs with everything only they use, and giving the space back.
//!
//! What is never deleted: artifacts and promotions (content, small, and what `serve` and
//! rollbacks use); a run still running; a run whose loop produced an artifact that a name
//! points or pointed at (its provenance); the run of a queue cycle not yet finished; the
//! replays of a kept run (unless named) and the run a kept replay replayed. A deleted run
//! takes its calls, results, candidates, traces, import record and replays with it, and the
//! replay runs made of it.

use std::collections::{BTreeMap, BTreeSet};

use rusqlite::OptionalExtension;
use serde::Serialize;

use super::traces::time_bound;
use super::{Store, StoreError};

/// Which runs to delete: started before a time, named, or both.
#[derive(Debug, Clone, Default)]
pub struct RunSelection {
    /// A UTC timestamp or an age (`30d`, `12h`).
    pub older_than: Option<String>,
    /// Run ids or uids.
    pub runs: Vec<String>,
}

/// One run a collection deletes or keeps.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GcRun {
    pub id: i64,
    pub uid: String,
    pub kind: String,
    pub status: String,
    pub started_at: String,
    pub calls: i64,
    /// Why a selected run is kept; `None` for a deleted one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kept_because: Option<String>,
}

/// What a collection deleted (or, in a dry run, would delete) and kept.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Collected {
    pub dry_run: bool,
    pub deleted: Vec<GcRun>,
    pub kept: Vec<GcRun>,
    /// Rows deleted with the runs, by table.
    pub rows: Vec<(String, usize)>,
    /// Free pages in the store file after the deletions, in bytes: what `VACUUM` gives back.
    pub free_bytes: u64,
}

impl Collected {
    pub fn calls(&self) -> i64 {
        self.deleted.iter().map(|r| r.calls).sum()
    }
}

/// The store file's size before and after a `VACUUM` (in a dry run: after, as it would be).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Vacuumed {
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// Tables that hold a run's rows, deleted children first. `{runs}` stands for the doomed
/// runs' ids.
const DELETIONS: &[(&str, &str)] = &[
    (
        "candidate_results",
        "DELETE FROM candidate_results WHERE optimization_id IN
           (SELECT id FROM optimizations WHERE run_id IN {runs})",
    ),
    (
        "candidates",
        "DELETE FROM candidates WHERE optimization_id IN
           (SELECT id FROM optimizations WHERE run_id IN {runs})",
    ),
    (
        "optimizations",
        "DELETE FROM optimizations WHERE run_id IN {runs}",
    ),
    (
        "eval_results",
        "DELETE FROM eval_results WHERE run_id IN {runs}",
    ),
    ("traces", "DELETE FROM traces WHERE run_id IN {runs}"),
    ("calls", "DELETE FROM calls WHERE run_id IN {runs}"),
    (
        "replays",
        "DELETE FROM replays WHERE run_id IN {runs} OR replay_run_id IN {runs}",
    ),
    (
        "run_imports",
        "DELETE FROM run_imports WHERE run_id IN {runs}",
    ),
    ("runs", "DELETE FROM runs WHERE id IN {runs}"),
];

/// Why a run must stay, if it must: checked in this order.
const KEEP: &[(&str, &str)] = &[
    (
        "it is still running",
        "SELECT status = 'running' FROM runs WHERE id = ?1",
    ),
    (
        "it produced a promoted artifact",
        "SELECT EXISTS (SELECT 1 FROM optimizations o JOIN promotions p
           ON p.hash = o.artifact_hash WHERE o.run_id = ?1)",
    ),
    (
        "a queued job's cycle still running uses it",
        "SELECT EXISTS (SELECT 1 FROM job_cycles c JOIN runs r ON r.uid = c.run_uid
           WHERE r.id = ?1 AND c.status IN ('running', 'interrupted'))",
    ),
];

impl Store {
    /// Deletes the selected runs and every row only they use (see the module's rules), all
    /// in one transaction; with `dry_run`, reports the same and changes nothing.
    pub fn collect_runs(
        &self,
        selection: &RunSelection,
        dry_run: bool,
    ) -> Result<Collected, StoreError> {
        if selection.older_than.is_none() && selection.runs.is_empty() {
            return Err(StoreError::Invalid(
                "choose the runs to delete: --older-than AGE (e.g. 30d) or --run ID".into(),
            ));
        }
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.sql_error(e))?;
        let sql = |e| self.sql_error(e);
        let mut selected: Vec<i64> = Vec::new();
        if let Some(age) = &selection.older_than {
            let (bound, value) = time_bound(age)?;
            let mut stmt = tx
                .prepare(&format!("SELECT id FROM runs WHERE started_at < {bound}"))
                .map_err(sql)?;
            let ids = stmt
                .query_map([value], |r| r.get::<_, i64>(0))
                .map_err(sql)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(sql)?;
            selected.extend(ids);
        }
        let mut named = Vec::new();
        for id in &selection.runs {
            let number: i64 = id.parse().unwrap_or(-1);
            let found: Option<i64> = tx
                .query_row(
                    "SELECT id FROM runs WHERE id = ?1 OR uid = ?2",
                    rusqlite::params![number, id],
                    |r| r.get(0),
                )
                .optional()
                .map_err(sql)?;
            named.push(found.ok_or_else(|| StoreError::NoSuchRun(id.clone()))?);
        }
        selected.extend(&named);
        selected.sort_unstable();
        selected.dedup();

        let mut collected = Collected {
            dry_run,
            ..Collected::default()
        };
        // Decide what stays before anything is added: a run kept for its own sake keeps its
        // replays (unless named) and the runs its replays replayed; a run that goes takes the
        // replay runs made of it. Repeat until nothing changes.
        let mut replays_of = tx
            .prepare(
                "SELECT replay_run_id FROM replays WHERE run_id = ?1 AND replay_run_id IS NOT NULL",
            )
            .map_err(sql)?;
        let mut replayed_by = tx
            .prepare("SELECT run_id FROM replays WHERE replay_run_id = ?1")
            .map_err(sql)?;
        let ids = |stmt: &mut rusqlite::Statement<'_>, id: i64| -> Result<Vec<i64>, StoreError> {
            stmt.query_map([id], |r| r.get::<_, i64>(0))
                .map_err(sql)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(sql)
        };
        let mut kept: BTreeMap<i64, String> = BTreeMap::new();
        let mut queue: Vec<i64> = selected.clone();
        let mut doomed: BTreeSet<i64> = BTreeSet::new();
        while let Some(id) = queue.pop() {
            if kept.contains_key(&id) || doomed.contains(&id) {
                continue;
            }
            let mut reason = None;
            for (why, query) in KEEP {
                let keep: bool = tx.query_row(query, [id], |r| r.get(0)).map_err(sql)?;
                if keep {
                    reason = Some(why.to_string());
                    break;
                }
            }
            if reason.is_none() {
                if let Some(original) = ids(&mut replayed_by, id)?
                    .into_iter()
                    .find(|o| !selected.contains(o) || kept.contains_key(o))
                {
                    if !named.contains(&id) {
                        reason = Some(format!("it replays run {original}, which stays"));
                    }
                }
            }
            match reason {
                Some(why) => {
                    kept.insert(id, why);
                    // The run it replayed stays with it, and so do its own replays.
                    for original in ids(&mut replayed_by, id)? {
                        if doomed.remove(&original) {
                            kept.insert(original, "a kept run replays it".into());
                        }
                    }
                    for replay in ids(&mut replays_of, id)? {
                        if !named.contains(&replay) && doomed.remove(&replay) {
                            kept.insert(replay, format!("it replays run {id}, which stays"));
                        }
                    }
                }
                None => {
                    doomed.insert(id);
                    queue.extend(ids(&mut replays_of, id)?);
                }
            }
        }
        drop((replays_of, replayed_by));
        let describe = |id: i64, kept_because: Option<String>| -> Result<GcRun, StoreError> {
            tx.query_row(
                "SELECT id, uid, kind, status, started_at,
                   (SELECT COUNT(*) FROM calls WHERE run_id = runs.id)
                 FROM runs WHERE id = ?1",
                [id],
                |r| {
                    Ok(GcRun {
                        id: r.get(0)?,
                        uid: r.get(1)?,
                        kind: r.get(2)?,
                        status: r.get(3)?,
                        started_at: r.get(4)?,
                        calls: r.get(5)?,
                        kept_because,
                    })
                },
            )
            .map_err(sql)
        };
        for id in &doomed {
            collected.deleted.push(describe(*id, None)?);
        }
        for (id, why) in &kept {
            collected.kept.push(describe(*id, Some(why.clone()))?);
        }
        let doomed: Vec<i64> = doomed.into_iter().collect();
        if !doomed.is_empty() {
            tx.execute_batch(
                "CREATE TEMP TABLE IF NOT EXISTS gc_doomed (id INTEGER PRIMARY KEY);
                 DELETE FROM gc_doomed;",
            )
            .map_err(sql)?;
            for id in &doomed {
                tx.execute("INSERT INTO gc_doomed (id) VALUES (?1)", [id])
                    .map_err(sql)?;
            }
            for (table, statement) in DELETIONS {
                let n = tx
                    .execute(
                        &statement.replace("{runs}", "(SELECT id FROM gc_doomed)"),
                        [],
                    )
                    .map_err(sql)?;
                collected.rows.push((table.to_string(), n));
            }
            tx.execute("DELETE FROM gc_doomed", []).map_err(sql)?;
        }
        // What a VACUUM would then give back: the free pages, deletions included.
        collected.free_bytes =
            pages(&tx, "freelist_count").map_err(sql)? * pages(&tx, "page_size").map_err(sql)?;
        if dry_run {
            tx.rollback().map_err(sql)?;
        } else {
            tx.commit().map_err(sql)?;
        }
        Ok(collected)
    }

    /// Rewrites the store file without its free pages (SQLite's `VACUUM`), giving the space
    /// that deletions freed back to the file system; with `dry_run`, only measures.
    pub fn vacuum(&self, dry_run: bool) -> Result<Vacuumed, StoreError> {
        let conn = self.conn();
        let pages = |pragma: &str| pages(&conn, pragma).map_err(|e| self.sql_error(e));
        let page_size = pages("page_size")?;
        let before = pages("page_count")? * page_size;
        if dry_run {
            let free = pages("freelist_count")? * page_size;
            return Ok(Vacuumed {
                bytes_before: before,
                bytes_after: before - free.min(before),
            });
        }
        conn.execute_batch("VACUUM; PRAGMA wal_checkpoint(TRUNCATE);")
            .map_err(|e| self.sql_error(e))?;
        Ok(Vacuumed {
            bytes_before: before,
            bytes_after: pages("page_count")? * page_size,
        })
    }
}

/// A page-count pragma of the store (`page_size`, `page_count`, `freelist_count`).
fn pages(conn: &rusqlite::Connection, pragma: &str) -> rusqlite::Result<u64> {
    conn.pragma_query_value(None, pragma, |r| r.get::<_, i64>(0))
        .map(|n| n as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store with runs 1–5: 1 an old evaluation, 2 an old optimization whose artifact is
    /// promoted, 3 an old replay of 1, 4 a running run, 5 a new one; each with two calls.
    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.sqlite")).unwrap();
        store
            .conn()
            .execute_batch(
                "INSERT INTO runs (id, uid, kind, config_json, status, started_at,
                   engine_fingerprint_json, engine_fingerprint_id, host) VALUES
                   (1, 'u1', 'eval', '{}', 'completed', '2020-01-01', '{}', 'f', 'h'),
                   (2, 'u2', 'optimize', '{}', 'completed', '2020-01-02', '{}', 'f', 'h'),
                   (3, 'u3', 'replay', '{}', 'completed', '2020-01-03', '{}', 'f', 'h'),
                   (4, 'u4', 'optimize', '{}', 'running', '2020-01-04', '{}', 'f', 'h'),
                   (5, 'u5', 'eval', '{}', 'completed', '2099-01-01', '{}', 'f', 'h');
                 INSERT INTO calls (run_id, request_hash, model_sha256, engine_fingerprint_id,
                   request_json, prompt, latency_ms, cached)
                   SELECT id, 'h' || id, 'm', 'f', '{}', 'p', 1, 0 FROM runs
                   UNION ALL
                   SELECT id, 'h' || id, 'm', 'f', '{}', 'p', 1, 1 FROM runs;
                 INSERT INTO eval_results (run_id, split, example_index, source, inputs_json,
                   gold_json, trace_json, score) VALUES (1, 'test', 0, 'd:1', '{}', '{}', '{}', 1.0);
                 INSERT INTO artifacts (hash, task, json) VALUES ('a2', 't', '{}');
                 INSERT INTO promotions (name, hash) VALUES ('prod', 'a2');
                 INSERT INTO optimizations (id, run_id, loop_index, task, optimizer,
                   config_json, status, artifact_hash) VALUES
                   (1, 2, 0, 't', 'o', '{}', 'completed', 'a2');
                 INSERT INTO replays (run_id, replay_run_id, checked, identical, diverged,
                   skipped, fingerprint_differences_json, report_json)
                   VALUES (1, 3, 2, 2, 0, 0, '[]', '{}');",
            )
            .unwrap();
        (dir, store)
    }

    fn count(store: &Store, sql: &str) -> i64 {
        store.conn().query_row(sql, [], |r| r.get(0)).unwrap()
    }

    #[test]
    fn old_runs_go_with_what_only_they_use_and_what_others_need_stays() {
        let (_dir, store) = store();
        let selection = RunSelection {
            older_than: Some("2021-01-01".into()),
            runs: vec![],
        };
        let dry = store.collect_runs(&selection, true).unwrap();
        assert_eq!(count(&store, "SELECT COUNT(*) FROM runs"), 5);
        assert_eq!(count(&store, "SELECT COUNT(*) FROM calls"), 10);
        let done = store.collect_runs(&selection, false).unwrap();
        assert_eq!(dry.deleted, done.deleted);
        assert_eq!(dry.rows, done.rows);

        let ids = |runs: &[GcRun]| runs.iter().map(|r| r.id).collect::<Vec<_>>();
        // The evaluation and the replay made of it go; the promoted artifact's run and the
        // running run stay, saying why.
        assert_eq!(ids(&done.deleted), [1, 3]);
        assert_eq!(ids(&done.kept), [2, 4]);
        assert_eq!(
            done.kept[0].kept_because.as_deref(),
            Some("it produced a promoted artifact")
        );
        assert_eq!(
            done.kept[1].kept_because.as_deref(),
            Some("it is still running")
        );
        assert_eq!(done.calls(), 4);
        assert_eq!(count(&store, "SELECT COUNT(*) FROM calls"), 6);
        assert_eq!(count(&store, "SELECT COUNT(*) FROM eval_results"), 0);
        assert_eq!(count(&store, "SELECT COUNT(*) FROM replays"), 0);
        assert_eq!(count(&store, "SELECT COUNT(*) FROM artifacts"), 1);
        assert_eq!(count(&store, "SELECT COUNT(*) FROM promotions"), 1);
        let fk: i64 = count(&store, "SELECT COUNT(*) FROM pragma_foreign_key_check");
        assert_eq!(fk, 0);

        let before = store.vacuum(true).unwrap();
        let after = store.vacuum(false).unwrap();
        assert_eq!(before.bytes_before, after.bytes_before);
        assert!(after.bytes_after <= after.bytes_before);
    }

    #[test]
    fn a_kept_run_keeps_its_replays_and_a_kept_replay_its_original() {
        let (_dir, store) = store();
        // Run 2 (kept: its artifact is promoted) was replayed by run 6, a recent run.
        store
            .conn()
            .execute_batch(
                "INSERT INTO runs (id, uid, kind, config_json, status, started_at,
                   engine_fingerprint_json, engine_fingerprint_id, host) VALUES
                   (6, 'u6', 'replay', '{}', 'completed', '2099-01-02', '{}', 'f', 'h');
                 INSERT INTO replays (run_id, replay_run_id, checked, identical, diverged,
                   skipped, fingerprint_differences_json, report_json)
                   VALUES (2, 6, 2, 2, 0, 0, '[]', '{}');",
            )
            .unwrap();
        let done = store
            .collect_runs(
                &RunSelection {
                    older_than: Some("2021-01-01".into()),
                    runs: vec![],
                },
                false,
            )
            .unwrap();
        let ids = |runs: &[GcRun]| runs.iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(ids(&done.deleted), [1, 3]);
        assert_eq!(count(&store, "SELECT COUNT(*) FROM runs WHERE id = 6"), 1);
        assert_eq!(
            count(&store, "SELECT COUNT(*) FROM replays WHERE run_id = 2"),
            1
        );
        // Named, the replay goes (its original stays).
        let done = store
            .collect_runs(
                &RunSelection {
                    older_than: None,
                    runs: vec!["6".into()],
                },
                false,
            )
            .unwrap();
        assert_eq!(ids(&done.deleted), [6]);
        assert_eq!(count(&store, "SELECT COUNT(*) FROM runs WHERE id = 2"), 1);
        // A dry run counts what a vacuum would give back after its deletions: what the
        // collection itself then reports, and what the vacuum measures.
        let five = RunSelection {
            older_than: None,
            runs: vec!["5".into()],
        };
        let dry = store.collect_runs(&five, true).unwrap();
        assert_eq!(count(&store, "SELECT COUNT(*) FROM runs WHERE id = 5"), 1);
        let real = store.collect_runs(&five, false).unwrap();
        assert_eq!(dry.free_bytes, real.free_bytes);
        let v = store.vacuum(true).unwrap();
        assert_eq!(v.bytes_before - v.bytes_after, real.free_bytes);
    }

    #[test]
    fn runs_are_chosen_by_id_or_uid_and_unknown_ones_are_errors() {
        let (_dir, store) = store();
        let done = store
            .collect_runs(
                &RunSelection {
                    older_than: None,
                    runs: vec!["5".into(), "u1".into()],
                },
                false,
            )
            .unwrap();
        assert_eq!(done.deleted.len(), 3, "{done:?}");
        let err = store
            .collect_runs(
                &RunSelection {
                    older_than: None,
                    runs: vec!["nope".into()],
                },
                false,
            )
            .unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
        let err = store
            .collect_runs(&RunSelection::default(), false)
            .unwrap_err();
        assert!(err.to_string().contains("--older-than"), "{err}");
        let err = store
            .collect_runs(
                &RunSelection {
                    older_than: Some("last week".into()),
                    runs: vec![],
                },
                false,
            )
            .unwrap_err();
        assert!(err.to_string().contains("7d"), "{err}");
    }
}
