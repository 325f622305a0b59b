//! Traces of served requests: one row per HTTP request `serve` answered (or refused), with the
//! ids of the model calls it made, and the retention rules that keep a long-running server's
//! store bounded.

use rusqlite::OptionalExtension;

use super::{json_column, Store, StoreError};

/// A request to record.
#[derive(Debug, Clone, Default)]
pub struct NewTrace<'a> {
    /// From [`super::new_uid`], made by the caller so that a reply can name its trace before
    /// the trace is written.
    pub uid: &'a str,
    pub run_id: i64,
    pub endpoint: &'a str,
    pub model: &'a str,
    pub program: Option<&'a str>,
    pub artifact_hash: Option<&'a str>,
    pub user: Option<&'a str>,
    pub request: serde_json::Value,
    pub response: Option<serde_json::Value>,
    pub steps: Option<serde_json::Value>,
    pub call_ids: Vec<i64>,
    pub status: u16,
    pub error: Option<&'a str>,
    pub latency_ms: f64,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
}

/// A stored trace.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TraceRecord {
    pub id: i64,
    pub uid: String,
    pub run_id: i64,
    pub created_at: String,
    pub endpoint: String,
    pub model: String,
    pub program: Option<String>,
    pub artifact_hash: Option<String>,
    pub user: Option<String>,
    pub request: serde_json::Value,
    pub response: Option<serde_json::Value>,
    pub steps: Option<serde_json::Value>,
    pub call_ids: Vec<i64>,
    pub status: u16,
    pub error: Option<String>,
    pub latency_ms: f64,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub score: Option<f64>,
    pub feedback: Option<String>,
}

/// Which traces to read. Times are the store's UTC timestamps (`2026-11-22T08:00:00`, or a
/// prefix such as `2026-11-22`) or an age such as `30m`, `12h`, `7d`; `since` is inclusive,
/// `until` exclusive.
#[derive(Debug, Clone, Default)]
pub struct TraceFilter {
    /// A program's task name or the model name the client asked for.
    pub program: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    /// Only requests answered with an error (`true`) or only successful ones (`false`).
    pub errors: Option<bool>,
    pub min_score: Option<f64>,
    pub max_score: Option<f64>,
    /// Newest first, at most this many (all when `None`).
    pub limit: Option<usize>,
}

/// How many traces a server keeps: those younger than `keep_days` and, of those, the newest
/// `keep_max`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    pub keep_days: Option<u32>,
    pub keep_max: Option<u64>,
}

/// What a prune removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub traces: usize,
    pub calls: usize,
    /// Finished `serve` runs left with no trace and no call.
    pub runs: usize,
}

const TRACE_COLUMNS: &str = "id, uid, run_id, created_at, endpoint, model, program, \
    artifact_hash, user, request_json, response_json, steps_json, call_ids_json, status, error, \
    latency_ms, prompt_tokens, completion_tokens, score, feedback";

fn trace_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<TraceRecord> {
    let optional_json = |i: usize| -> rusqlite::Result<Option<serde_json::Value>> {
        let text: Option<String> = row.get(i)?;
        Ok(text.map(|t| serde_json::from_str(&t).unwrap_or(serde_json::Value::String(t))))
    };
    let call_ids: String = row.get(12)?;
    Ok(TraceRecord {
        id: row.get(0)?,
        uid: row.get(1)?,
        run_id: row.get(2)?,
        created_at: row.get(3)?,
        endpoint: row.get(4)?,
        model: row.get(5)?,
        program: row.get(6)?,
        artifact_hash: row.get(7)?,
        user: row.get(8)?,
        request: json_column(row, 9)?,
        response: optional_json(10)?,
        steps: optional_json(11)?,
        call_ids: serde_json::from_str(&call_ids).unwrap_or_default(),
        status: row.get(13)?,
        error: row.get(14)?,
        latency_ms: row.get(15)?,
        prompt_tokens: row.get(16)?,
        completion_tokens: row.get(17)?,
        score: row.get(18)?,
        feedback: row.get(19)?,
    })
}

/// A time bound as SQL: a timestamp (prefix) compared as text, or an age such as `12h`
/// computed by SQLite from now. Anything else is refused with the forms that work.
pub(crate) fn time_bound(text: &str) -> Result<(String, String), StoreError> {
    let bad = || {
        StoreError::Invalid(format!(
            "`{text}` is not a time: give a UTC timestamp such as 2026-11-22 or \
             2026-11-22T08:30:00, or an age such as 30m, 12h or 7d"
        ))
    };
    let text = text.trim();
    if let Some(unit) = text.chars().last().filter(|c| "smhd".contains(*c)) {
        if let Ok(n) = text[..text.len() - 1].parse::<u32>() {
            let unit = match unit {
                's' => "seconds",
                'm' => "minutes",
                'h' => "hours",
                _ => "days",
            };
            return Ok((
                "strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?)".to_string(),
                format!("-{n} {unit}"),
            ));
        }
        return Err(bad());
    }
    let timestamp = text.replace(' ', "T");
    let well_formed = timestamp.len() >= 4
        && timestamp
            .chars()
            .all(|c| c.is_ascii_digit() || "-T:.Z".contains(c))
        && timestamp.starts_with(|c: char| c.is_ascii_digit());
    if !well_formed {
        return Err(bad());
    }
    Ok(("?".to_string(), timestamp))
}

impl Store {
    /// Records one served request; returns its id.
    pub fn record_trace(&self, trace: &NewTrace<'_>) -> Result<i64, StoreError> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO traces (uid, run_id, endpoint, model, program, artifact_hash, user,
                                 request_json, response_json, steps_json, call_ids_json, status,
                                 error, latency_ms, prompt_tokens, completion_tokens)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
            rusqlite::params![
                trace.uid,
                trace.run_id,
                trace.endpoint,
                trace.model,
                trace.program,
                trace.artifact_hash,
                trace.user,
                trace.request.to_string(),
                trace.response.as_ref().map(|r| r.to_string()),
                trace.steps.as_ref().map(|s| s.to_string()),
                serde_json::to_string(&trace.call_ids).expect("ids serialize"),
                trace.status,
                trace.error,
                trace.latency_ms,
                trace.prompt_tokens,
                trace.completion_tokens,
            ],
        )
        .map_err(|e| self.sql_error(e))?;
        Ok(conn.last_insert_rowid())
    }

    /// One trace by id or uid.
    pub fn trace(&self, id_or_uid: &str) -> Result<TraceRecord, StoreError> {
        let sql = format!("SELECT {TRACE_COLUMNS} FROM traces WHERE id = ?1 OR uid = ?2");
        let id: i64 = id_or_uid.parse().unwrap_or(-1);
        self.conn()
            .query_row(&sql, rusqlite::params![id, id_or_uid], trace_from_row)
            .optional()
            .map_err(|e| self.sql_error(e))?
            .ok_or_else(|| StoreError::NoSuchTrace(id_or_uid.to_string()))
    }

    /// The traces `filter` selects, newest first.
    pub fn traces(&self, filter: &TraceFilter) -> Result<Vec<TraceRecord>, StoreError> {
        let mut conditions = Vec::new();
        let mut values: Vec<rusqlite::types::Value> = Vec::new();
        if let Some(program) = &filter.program {
            conditions.push("(program = ? OR model = ?)".to_string());
            values.push(program.clone().into());
            values.push(program.clone().into());
        }
        for (bound, op) in [(&filter.since, ">="), (&filter.until, "<")] {
            if let Some(bound) = bound {
                let (sql, value) = time_bound(bound)?;
                conditions.push(format!("created_at {op} {sql}"));
                values.push(value.into());
            }
        }
        match filter.errors {
            Some(true) => conditions.push("status >= 400".to_string()),
            Some(false) => conditions.push("status < 400".to_string()),
            None => {}
        }
        if let Some(min) = filter.min_score {
            conditions.push("score >= ?".to_string());
            values.push(min.into());
        }
        if let Some(max) = filter.max_score {
            conditions.push("score <= ?".to_string());
            values.push(max.into());
        }
        let clause = if conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conditions.join(" AND "))
        };
        let limit = filter.limit.map_or(-1, |l| l as i64);
        let sql =
            format!("SELECT {TRACE_COLUMNS} FROM traces {clause} ORDER BY id DESC LIMIT {limit}");
        let conn = self.conn();
        let mut statement = conn.prepare(&sql).map_err(|e| self.sql_error(e))?;
        let rows = statement
            .query_map(rusqlite::params_from_iter(values), trace_from_row)
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| self.sql_error(e))?;
        Ok(rows)
    }

    /// How many traces `run_id` recorded.
    pub fn trace_count(&self, run_id: i64) -> Result<u64, StoreError> {
        self.conn()
            .query_row(
                "SELECT COUNT(*) FROM traces WHERE run_id = ?1",
                [run_id],
                |r| r.get(0),
            )
            .map_err(|e| self.sql_error(e))
    }

    /// Attaches a client's judgement to a trace (a score in [0, 1], optional feedback text).
    pub fn score_trace(
        &self,
        id_or_uid: &str,
        score: f64,
        feedback: Option<&str>,
    ) -> Result<(), StoreError> {
        if !(0.0..=1.0).contains(&score) {
            return Err(StoreError::Invalid(format!(
                "a trace's score must be between 0 and 1, not {score}"
            )));
        }
        let id = self.trace(id_or_uid)?.id;
        self.conn()
            .execute(
                "UPDATE traces SET score = ?2, feedback = ?3 WHERE id = ?1",
                rusqlite::params![id, score, feedback],
            )
            .map_err(|e| self.sql_error(e))?;
        Ok(())
    }

    /// Deletes the traces `retention` does not keep, with the model calls they made (calls of
    /// other runs are never touched) and the finished `serve` runs left empty, in one
    /// transaction.
    pub fn prune_traces(&self, retention: &Retention) -> Result<Pruned, StoreError> {
        self.prune_traces_or_count(retention, false)
    }

    /// As [`Store::prune_traces`]; with `dry_run`, counts what would go and keeps it.
    pub fn prune_traces_or_count(
        &self,
        retention: &Retention,
        dry_run: bool,
    ) -> Result<Pruned, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.sql_error(e))?;
        tx.execute_batch("CREATE TEMP TABLE IF NOT EXISTS doomed (id INTEGER PRIMARY KEY)")
            .map_err(|e| self.sql_error(e))?;
        tx.execute("DELETE FROM doomed", [])
            .map_err(|e| self.sql_error(e))?;
        if let Some(days) = retention.keep_days {
            tx.execute(
                "INSERT OR IGNORE INTO doomed SELECT id FROM traces
                 WHERE created_at < strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?1)",
                [format!("-{days} days")],
            )
            .map_err(|e| self.sql_error(e))?;
        }
        if let Some(max) = retention.keep_max {
            tx.execute(
                "INSERT OR IGNORE INTO doomed SELECT id FROM traces
                 ORDER BY id DESC LIMIT -1 OFFSET ?1",
                [max as i64],
            )
            .map_err(|e| self.sql_error(e))?;
        }
        let calls = tx
            .execute(
                "DELETE FROM calls WHERE id IN (
                   SELECT CAST(j.value AS INTEGER) FROM traces t, json_each(t.call_ids_json) j
                   WHERE t.id IN (SELECT id FROM doomed))
                 AND run_id IN (SELECT id FROM runs WHERE kind = 'serve')",
                [],
            )
            .map_err(|e| self.sql_error(e))?;
        let traces = tx
            .execute("DELETE FROM traces WHERE id IN (SELECT id FROM doomed)", [])
            .map_err(|e| self.sql_error(e))?;
        let runs = tx
            .execute(
                "DELETE FROM runs WHERE kind = 'serve' AND status != 'running'
                   AND NOT EXISTS (SELECT 1 FROM traces t WHERE t.run_id = runs.id)
                   AND NOT EXISTS (SELECT 1 FROM calls c WHERE c.run_id = runs.id)
                   AND NOT EXISTS (SELECT 1 FROM replays r
                                   WHERE r.run_id = runs.id OR r.replay_run_id = runs.id)
                   AND NOT EXISTS (SELECT 1 FROM run_imports i WHERE i.run_id = runs.id)",
                [],
            )
            .map_err(|e| self.sql_error(e))?;
        tx.execute("DELETE FROM doomed", [])
            .and_then(|_| if dry_run { tx.rollback() } else { tx.commit() })
            .map_err(|e| self.sql_error(e))?;
        Ok(Pruned {
            traces,
            calls,
            runs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_bounds_take_timestamps_and_ages_and_refuse_the_rest() {
        assert_eq!(time_bound("2026-11-22").unwrap().1, "2026-11-22");
        assert_eq!(
            time_bound("2026-11-22 08:00").unwrap().1,
            "2026-11-22T08:00"
        );
        assert_eq!(time_bound("12h").unwrap().1, "-12 hours");
        assert_eq!(time_bound("7d").unwrap().1, "-7 days");
        for bad in ["yesterday", "12x", "h", "'; DROP TABLE traces; --", ""] {
            let error = time_bound(bad).unwrap_err().to_string();
            assert!(error.contains("30m, 12h or 7d"), "{bad}: {error}");
        }
    }

    fn serve_run(store: &Store) -> i64 {
        let fingerprint = crate::engine::EngineFingerprint::current();
        store
            .begin_run(&crate::store::NewRun {
                kind: "serve",
                config: serde_json::json!({}),
                seed: None,
                model_sha256: None,
                fingerprint: &fingerprint,
            })
            .unwrap()
    }

    fn record(store: &Store, run_id: i64, program: &str, status: u16) -> String {
        let uid = crate::store::new_uid();
        store
            .record_trace(&NewTrace {
                uid: &uid,
                run_id,
                endpoint: "predict",
                model: program,
                program: Some(program),
                request: serde_json::json!({"review": "fine"}),
                status,
                ..NewTrace::default()
            })
            .unwrap();
        uid
    }

    #[test]
    fn traces_are_filtered_scored_and_pruned_newest_kept() {
        let store = Store::open_in_memory().unwrap();
        let run = serve_run(&store);
        let first = record(&store, run, "sentiment", 200);
        record(&store, run, "contacts", 200);
        let failed = record(&store, run, "sentiment", 400);
        let of = |filter: TraceFilter| -> Vec<String> {
            store
                .traces(&filter)
                .unwrap()
                .into_iter()
                .map(|t| t.uid)
                .collect()
        };
        let sentiment = || TraceFilter {
            program: Some("sentiment".into()),
            ..TraceFilter::default()
        };
        assert_eq!(of(sentiment()), vec![failed.clone(), first.clone()]);
        let errors = TraceFilter {
            errors: Some(true),
            ..sentiment()
        };
        assert_eq!(of(errors), vec![failed.clone()]);
        store.score_trace(&first, 0.0, Some("wrong label")).unwrap();
        assert!(store.score_trace(&first, 1.5, None).is_err());
        let low = TraceFilter {
            max_score: Some(0.5),
            ..TraceFilter::default()
        };
        assert_eq!(of(low), vec![first.clone()]);
        assert_eq!(
            store.trace(&first).unwrap().feedback.as_deref(),
            Some("wrong label")
        );
        let future = TraceFilter {
            since: Some("9999-01-01".into()),
            ..TraceFilter::default()
        };
        assert!(of(future).is_empty());

        let pruned = store
            .prune_traces(&Retention {
                keep_days: None,
                keep_max: Some(1),
            })
            .unwrap();
        assert_eq!(pruned.traces, 2);
        assert_eq!(of(TraceFilter::default()), vec![failed]);
        assert!(matches!(
            store.trace(&first),
            Err(StoreError::NoSuchTrace(_))
        ));
    }
}
