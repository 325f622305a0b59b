//! Optimization loops, their candidates and their per-example results.

use rusqlite::OptionalExtension;
use serde::{Deserialize, Serialize};

use super::runs::{status_column, LoopStatus};
use super::{json_column, optional_json, typed_column, Store, StoreError};

/// A stored optimization loop.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OptimizationRow {
    pub id: i64,
    pub run_id: i64,
    pub loop_index: i64,
    pub task: String,
    pub optimizer: String,
    pub config: serde_json::Value,
    pub status: LoopStatus,
    pub stop_reason: Option<String>,
    pub artifact_hash: Option<String>,
    pub baseline_hash: Option<String>,
    pub summary: Option<serde_json::Value>,
}

/// A stored candidate program.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CandidateRow {
    pub ordinal: i64,
    pub label: String,
    pub parent_ordinal: Option<i64>,
    pub program_hash: String,
    pub program: serde_json::Value,
    pub val_score: Option<f64>,
}

/// One example run by one subject (a candidate program or a teacher setup).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultRow {
    pub subject: String,
    pub split: String,
    pub example_index: i64,
    pub source: String,
    pub outputs: Option<serde_json::Value>,
    pub trace: crate::program::Trace,
    pub score: f64,
    pub feedback: Option<String>,
    pub error: Option<String>,
    pub tokens: i64,
}

impl Store {
    /// Records a new optimization loop of a run and returns its id.
    pub fn begin_optimization(
        &self,
        run_id: i64,
        loop_index: i64,
        task: &str,
        optimizer: &str,
        config: &serde_json::Value,
    ) -> Result<i64, StoreError> {
        let ids =
            self.begin_optimizations(run_id, &[(loop_index, task, optimizer, config.clone())])?;
        Ok(ids[0])
    }

    /// Records all the loops of a run at once, `(loop index, task, optimizer, config)` each,
    /// in one transaction: a run never has only some of its loops (a full disk part-way
    /// would otherwise leave a run that resumes without the rest). Returns their ids.
    pub fn begin_optimizations(
        &self,
        run_id: i64,
        loops: &[(i64, &str, &str, serde_json::Value)],
    ) -> Result<Vec<i64>, StoreError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| self.sql_error(e))?;
        let mut ids = Vec::with_capacity(loops.len());
        for (loop_index, task, optimizer, config) in loops {
            tx.execute(
                "INSERT INTO optimizations (run_id, loop_index, task, optimizer, config_json, status)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'running')",
                rusqlite::params![run_id, loop_index, task, optimizer, config.to_string()],
            )
            .map_err(|e| self.sql_error(e))?;
            ids.push(tx.last_insert_rowid());
        }
        tx.commit().map_err(|e| self.sql_error(e))?;
        Ok(ids)
    }

    /// The optimization loops of a run, in loop order.
    pub fn optimizations(&self, run_id: i64) -> Result<Vec<OptimizationRow>, StoreError> {
        let conn = self.conn();
        let mut statement = conn
            .prepare(
                "SELECT id, run_id, loop_index, task, optimizer, config_json, status, stop_reason,
                        artifact_hash, baseline_hash, summary_json
                 FROM optimizations WHERE run_id = ?1 ORDER BY loop_index",
            )
            .map_err(|e| self.sql_error(e))?;
        let rows = statement
            .query_map([run_id], |r| {
                Ok(OptimizationRow {
                    id: r.get(0)?,
                    run_id: r.get(1)?,
                    loop_index: r.get(2)?,
                    task: r.get(3)?,
                    optimizer: r.get(4)?,
                    config: json_column(r, 5)?,
                    status: status_column(r, 6, LoopStatus::parse)?,
                    stop_reason: r.get(7)?,
                    artifact_hash: r.get(8)?,
                    baseline_hash: r.get(9)?,
                    summary: optional_json(r, 10)?,
                })
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| self.sql_error(e))?;
        Ok(rows)
    }

    /// Records how a loop ended.
    pub fn finish_optimization(
        &self,
        id: i64,
        status: LoopStatus,
        stop_reason: Option<&str>,
        artifact_hash: Option<&str>,
        baseline_hash: Option<&str>,
        summary: &serde_json::Value,
    ) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "UPDATE optimizations SET status = ?2, stop_reason = ?3, artifact_hash = ?4,
                   baseline_hash = ?5, summary_json = ?6,
                   updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
                 WHERE id = ?1",
                rusqlite::params![
                    id,
                    status.as_str(),
                    stop_reason,
                    artifact_hash,
                    baseline_hash,
                    summary.to_string()
                ],
            )
            .map_err(|e| self.sql_error(e))?;
        Ok(())
    }

    /// Records candidate `ordinal` of a loop. When it is already stored (a resumed run), returns
    /// the stored program hash instead, for the caller to check.
    pub fn propose_candidate(
        &self,
        optimization_id: i64,
        candidate: &CandidateRow,
    ) -> Result<Option<String>, StoreError> {
        let conn = self.conn();
        let existing: Option<String> = conn
            .query_row(
                "SELECT program_hash FROM candidates WHERE optimization_id = ?1 AND ordinal = ?2",
                rusqlite::params![optimization_id, candidate.ordinal],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.sql_error(e))?;
        if existing.is_some() {
            return Ok(existing);
        }
        conn.execute(
            "INSERT INTO candidates (optimization_id, ordinal, label, parent_ordinal,
                                     program_hash, program_json)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            rusqlite::params![
                optimization_id,
                candidate.ordinal,
                candidate.label,
                candidate.parent_ordinal,
                candidate.program_hash,
                candidate.program.to_string()
            ],
        )
        .map_err(|e| self.sql_error(e))?;
        Ok(None)
    }

    /// Records a candidate's score on the whole validation split.
    pub fn set_candidate_score(
        &self,
        optimization_id: i64,
        ordinal: i64,
        score: f64,
    ) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "UPDATE candidates SET val_score = ?3 WHERE optimization_id = ?1 AND ordinal = ?2",
                rusqlite::params![optimization_id, ordinal, score],
            )
            .map_err(|e| self.sql_error(e))?;
        Ok(())
    }

    /// A loop's candidates in proposal order.
    pub fn candidates(&self, optimization_id: i64) -> Result<Vec<CandidateRow>, StoreError> {
        let conn = self.conn();
        let mut statement = conn
            .prepare(
                "SELECT ordinal, label, parent_ordinal, program_hash, program_json, val_score
                 FROM candidates WHERE optimization_id = ?1 ORDER BY ordinal",
            )
            .map_err(|e| self.sql_error(e))?;
        let rows = statement
            .query_map([optimization_id], |r| {
                Ok(CandidateRow {
                    ordinal: r.get(0)?,
                    label: r.get(1)?,
                    parent_ordinal: r.get(2)?,
                    program_hash: r.get(3)?,
                    program: json_column(r, 4)?,
                    val_score: r.get(5)?,
                })
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| self.sql_error(e))?;
        Ok(rows)
    }

    /// Stores one example's result (once: a result already stored is kept).
    pub fn record_result(&self, optimization_id: i64, row: &ResultRow) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "INSERT INTO candidate_results (optimization_id, subject, split, example_index,
                     source, outputs_json, trace_json, score, feedback, error, tokens)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                 ON CONFLICT DO NOTHING",
                rusqlite::params![
                    optimization_id,
                    row.subject,
                    row.split,
                    row.example_index,
                    row.source,
                    row.outputs.as_ref().map(|o| o.to_string()),
                    serde_json::to_string(&row.trace).expect("traces serialize"),
                    row.score,
                    row.feedback,
                    row.error,
                    row.tokens,
                ],
            )
            .map_err(|e| self.sql_error(e))?;
        Ok(())
    }

    /// The stored results of one subject on one split, by example index.
    pub fn results(
        &self,
        optimization_id: i64,
        subject: &str,
        split: &str,
    ) -> Result<Vec<ResultRow>, StoreError> {
        let conn = self.conn();
        let mut statement = conn
            .prepare(
                "SELECT subject, split, example_index, source, outputs_json, trace_json, score,
                        feedback, error, tokens
                 FROM candidate_results
                 WHERE optimization_id = ?1 AND subject = ?2 AND split = ?3
                 ORDER BY example_index",
            )
            .map_err(|e| self.sql_error(e))?;
        let rows = statement
            .query_map(rusqlite::params![optimization_id, subject, split], |r| {
                Ok(ResultRow {
                    subject: r.get(0)?,
                    split: r.get(1)?,
                    example_index: r.get(2)?,
                    source: r.get(3)?,
                    outputs: optional_json(r, 4)?,
                    trace: typed_column(r, 5)?,
                    score: r.get(6)?,
                    feedback: r.get(7)?,
                    error: r.get(8)?,
                    tokens: r.get(9)?,
                })
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| self.sql_error(e))?;
        Ok(rows)
    }

    /// How many results a loop has stored per split (for reports and tests).
    pub fn result_counts(
        &self,
        optimization_id: i64,
    ) -> Result<Vec<(String, String, i64)>, StoreError> {
        let conn = self.conn();
        let mut statement = conn
            .prepare(
                "SELECT subject, split, COUNT(*) FROM candidate_results
                 WHERE optimization_id = ?1 GROUP BY subject, split ORDER BY subject, split",
            )
            .map_err(|e| self.sql_error(e))?;
        let rows = statement
            .query_map([optimization_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| self.sql_error(e))?;
        Ok(rows)
    }

    /// Seconds from a run's start to its end (or to now, while it runs).
    pub fn run_seconds(&self, id: i64) -> Result<f64, StoreError> {
        self.conn()
            .query_row(
                "SELECT (julianday(COALESCE(ended_at, strftime('%Y-%m-%dT%H:%M:%fZ', 'now')))
                         - julianday(started_at)) * 86400.0 FROM runs WHERE id = ?1",
                [id],
                |r| r.get(0),
            )
            .map_err(|e| self.sql_error(e))
    }

    /// Marks a run as running again (resume).
    pub fn reopen_run(&self, id: i64) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "UPDATE runs SET status = 'running', error = NULL, ended_at = NULL WHERE id = ?1",
                [id],
            )
            .map_err(|e| self.sql_error(e))?;
        Ok(())
    }
}

/// When a candidate's validation score was complete, in seconds since its run began, and how
/// many calls the run had made by then.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScoredAt {
    pub ordinal: i64,
    pub seconds: f64,
    pub calls: i64,
}

impl Store {
    /// For each candidate of a loop scored on the whole validation split: when its last
    /// validation result was stored, and the run's calls by then.
    pub fn scored_at(&self, optimization_id: i64) -> Result<Vec<ScoredAt>, StoreError> {
        let conn = self.conn();
        let mut statement = conn
            .prepare(
                "SELECT c.ordinal,
                        (julianday(t.at) - julianday(r.started_at)) * 86400.0,
                        (SELECT COUNT(*) FROM calls WHERE run_id = r.id AND created_at <= t.at)
                 FROM candidates c
                 JOIN optimizations o ON o.id = c.optimization_id
                 JOIN runs r ON r.id = o.run_id
                 JOIN (SELECT subject, MAX(created_at) AS at FROM candidate_results
                       WHERE optimization_id = ?1 AND split = 'val' GROUP BY subject) t
                   ON t.subject = c.program_hash
                 WHERE c.optimization_id = ?1 AND c.val_score IS NOT NULL
                 ORDER BY c.ordinal",
            )
            .map_err(|e| self.sql_error(e))?;
        let rows = statement
            .query_map([optimization_id], |r| {
                Ok(ScoredAt {
                    ordinal: r.get(0)?,
                    seconds: r.get(1)?,
                    calls: r.get(2)?,
                })
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| self.sql_error(e))?;
        Ok(rows)
    }
}
