//! Per-example evaluation results.

use serde::Serialize;

use super::{json_column, optional_json, typed_column, Store, StoreError};

/// One scored example, as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalRecord {
    pub split: String,
    pub example_index: i64,
    pub source: String,
    pub inputs: serde_json::Value,
    pub gold: serde_json::Value,
    pub outputs: Option<serde_json::Value>,
    pub trace: crate::program::Trace,
    pub score: f64,
    pub feedback: Option<String>,
    pub error: Option<String>,
}

impl Store {
    pub fn record_eval(&self, run_id: i64, record: &EvalRecord) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "INSERT INTO eval_results (run_id, split, example_index, source, inputs_json,
                     gold_json, outputs_json, trace_json, score, feedback, error)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                rusqlite::params![
                    run_id,
                    record.split,
                    record.example_index,
                    record.source,
                    record.inputs.to_string(),
                    record.gold.to_string(),
                    record.outputs.as_ref().map(|o| o.to_string()),
                    serde_json::to_string(&record.trace).expect("traces serialize"),
                    record.score,
                    record.feedback,
                    record.error,
                ],
            )
            .map_err(|e| self.sql_error(e))?;
        Ok(())
    }

    /// A run's results for `split`, by example index.
    pub fn eval_results(&self, run_id: i64, split: &str) -> Result<Vec<EvalRecord>, StoreError> {
        let conn = self.conn();
        let mut statement = conn
            .prepare(
                "SELECT split, example_index, source, inputs_json, gold_json, outputs_json,
                        trace_json, score, feedback, error
                 FROM eval_results WHERE run_id = ?1 AND split = ?2 ORDER BY example_index",
            )
            .map_err(|e| self.sql_error(e))?;
        let rows = statement
            .query_map(rusqlite::params![run_id, split], |row| {
                Ok(EvalRecord {
                    split: row.get(0)?,
                    example_index: row.get(1)?,
                    source: row.get(2)?,
                    inputs: json_column(row, 3)?,
                    gold: json_column(row, 4)?,
                    outputs: optional_json(row, 5)?,
                    trace: typed_column(row, 6)?,
                    score: row.get(7)?,
                    feedback: row.get(8)?,
                    error: row.get(9)?,
                })
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| self.sql_error(e))?;
        Ok(rows)
    }
}

impl Store {
    /// Marks an evaluation run as a passed check: later checks compare with it.
    pub fn mark_check_passed(&self, run_id: i64) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "UPDATE runs SET config_json = json_set(config_json, '$.check_passed', json('true'))
                 WHERE id = ?1",
                [run_id],
            )
            .map_err(|e| self.sql_error(e))?;
        Ok(())
    }

    /// The last passed check recorded with `check` = `key` in its run's config, with its
    /// results on the key's split.
    pub fn last_check(
        &self,
        key: &serde_json::Value,
    ) -> Result<Option<(super::RunRecord, Vec<EvalRecord>)>, StoreError> {
        let uid: Option<String> = {
            use rusqlite::OptionalExtension;
            self.conn()
                .query_row(
                    "SELECT uid FROM runs WHERE kind = 'eval' AND status = 'completed'
                       AND json_extract(config_json, '$.check') = json(?1)
                       AND json_extract(config_json, '$.check_passed') = 1
                     ORDER BY id DESC LIMIT 1",
                    [key.to_string()],
                    |r| r.get(0),
                )
                .optional()
                .map_err(|e| self.sql_error(e))?
        };
        let Some(uid) = uid else { return Ok(None) };
        let run = self.run(&uid)?;
        let split = key["split"].as_str().unwrap_or("test");
        let records = self.eval_results(run.id, split)?;
        Ok(Some((run, records)))
    }
}
