//! Model calls: every generation, computed or served from the exact cache.

use rusqlite::{OptionalExtension, Row};
use serde::Serialize;

use super::{json_column, Store, StoreError};

/// A call about to be recorded.
#[derive(Debug, Clone)]
pub struct NewCall<'a> {
    pub run_id: i64,
    pub request_hash: &'a str,
    pub model_sha256: &'a str,
    pub engine_fingerprint_id: &'a str,
    pub request_json: &'a str,
    pub prompt: &'a str,
    pub output: &'a str,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub stop_reason: Option<&'a str>,
    /// Where the token budget cut the output short (a byte offset), if it did.
    pub cut_at: Option<u32>,
    pub latency_ms: f64,
    pub cached: bool,
    pub error: Option<&'a str>,
}

/// A stored call.
#[derive(Debug, Clone, Serialize)]
pub struct CallRecord {
    pub id: i64,
    pub run_id: i64,
    pub request_hash: String,
    pub model_sha256: String,
    pub engine_fingerprint_id: String,
    pub request: serde_json::Value,
    pub prompt: String,
    pub output: String,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub stop_reason: Option<String>,
    pub cut_at: Option<u32>,
    pub latency_ms: f64,
    pub cached: bool,
    pub error: Option<String>,
    pub created_at: String,
}

const CALL_COLUMNS: &str = "id, run_id, request_hash, model_sha256, engine_fingerprint_id, \
     request_json, prompt, output, prompt_tokens, completion_tokens, stop_reason, latency_ms, \
     cached, error, created_at, cut_at";

fn call_from_row(row: &Row<'_>) -> rusqlite::Result<CallRecord> {
    Ok(CallRecord {
        id: row.get(0)?,
        run_id: row.get(1)?,
        request_hash: row.get(2)?,
        model_sha256: row.get(3)?,
        engine_fingerprint_id: row.get(4)?,
        request: json_column(row, 5)?,
        prompt: row.get(6)?,
        output: row.get(7)?,
        prompt_tokens: row.get(8)?,
        completion_tokens: row.get(9)?,
        stop_reason: row.get(10)?,
        latency_ms: row.get(11)?,
        cached: row.get(12)?,
        error: row.get(13)?,
        created_at: row.get(14)?,
        cut_at: row.get(15)?,
    })
}

impl Store {
    /// Records a call and returns its id.
    pub fn record_call(&self, call: &NewCall<'_>) -> Result<i64, StoreError> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO calls (run_id, request_hash, model_sha256, engine_fingerprint_id,
                                request_json, prompt, output, prompt_tokens, completion_tokens,
                                stop_reason, latency_ms, cached, error, cut_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            rusqlite::params![
                call.run_id,
                call.request_hash,
                call.model_sha256,
                call.engine_fingerprint_id,
                call.request_json,
                call.prompt,
                call.output,
                call.prompt_tokens,
                call.completion_tokens,
                call.stop_reason,
                call.latency_ms,
                call.cached,
                call.error,
                call.cut_at,
            ],
        )
        .map_err(|e| self.sql_error(e))?;
        Ok(conn.last_insert_rowid())
    }

    /// The first successfully computed call with this request hash: the exact cache.
    pub fn cached_call(&self, request_hash: &str) -> Result<Option<CallRecord>, StoreError> {
        let sql = format!(
            "SELECT {CALL_COLUMNS} FROM calls
             WHERE request_hash = ?1 AND cached = 0 AND error IS NULL ORDER BY id LIMIT 1"
        );
        self.conn()
            .query_row(&sql, [request_hash], call_from_row)
            .optional()
            .map_err(|e| self.sql_error(e))
    }

    /// Every call of a run, in the order they were recorded.
    pub fn run_calls(&self, run_id: i64) -> Result<Vec<CallRecord>, StoreError> {
        let conn = self.conn();
        let sql = format!("SELECT {CALL_COLUMNS} FROM calls WHERE run_id = ?1 ORDER BY id");
        let mut statement = conn.prepare(&sql).map_err(|e| self.sql_error(e))?;
        let calls = statement
            .query_map([run_id], call_from_row)
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| self.sql_error(e))?;
        Ok(calls)
    }

    /// Prompt and completion tokens of the calls `ids`, summed.
    pub fn call_tokens(&self, ids: &[i64]) -> Result<(u32, u32), StoreError> {
        let conn = self.conn();
        let mut statement = conn
            .prepare("SELECT prompt_tokens, completion_tokens FROM calls WHERE id = ?1")
            .map_err(|e| self.sql_error(e))?;
        let mut sums = (0u32, 0u32);
        for id in ids {
            let (prompt, completion): (u32, u32) = statement
                .query_row([id], |row| Ok((row.get(0)?, row.get(1)?)))
                .map_err(|e| self.sql_error(e))?;
            sums.0 += prompt;
            sums.1 += completion;
        }
        Ok(sums)
    }
}
