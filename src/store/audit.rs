//! Replay results, and a run's rows as plain records for audit bundles.

use rusqlite::types::{Value as SqlValue, ValueRef};
use serde::Serialize;
use serde_json::{Map, Value};

use super::{json_column, Store, StoreError};

/// A stored replay.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplayRow {
    pub id: i64,
    pub run_id: i64,
    pub replay_run_id: Option<i64>,
    pub checked: i64,
    pub identical: i64,
    pub diverged: i64,
    pub skipped: i64,
    pub fingerprint_differences: Value,
    pub report: Value,
    pub created_at: String,
}

/// One row of a run's data: its kind (the table it comes from) and its columns.
#[derive(Debug, Clone, PartialEq)]
pub struct BundleRecord {
    pub kind: String,
    pub data: Map<String, Value>,
}

/// Bundle record kinds and their tables, in the order they are written and imported.
pub const BUNDLE_TABLES: &[(&str, &str)] = &[
    ("run", "runs"),
    ("model", "models"),
    ("optimization", "optimizations"),
    ("candidate", "candidates"),
    ("result", "candidate_results"),
    ("eval_result", "eval_results"),
    ("call", "calls"),
    ("artifact", "artifacts"),
];

fn to_json(value: ValueRef<'_>) -> Value {
    match value {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::from(i),
        ValueRef::Real(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
        ValueRef::Text(t) => Value::String(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::String(hex::encode(b)),
    }
}

fn to_sql(value: &Value) -> SqlValue {
    match value {
        Value::Null => SqlValue::Null,
        Value::Bool(b) => SqlValue::Integer(i64::from(*b)),
        Value::Number(n) => match n.as_i64() {
            Some(i) => SqlValue::Integer(i),
            None => SqlValue::Real(n.as_f64().unwrap_or(0.0)),
        },
        Value::String(s) => SqlValue::Text(s.clone()),
        other => SqlValue::Text(other.to_string()),
    }
}

impl Store {
    /// Records a replay's outcome.
    #[allow(clippy::too_many_arguments)]
    pub fn record_replay(
        &self,
        run_id: i64,
        replay_run_id: i64,
        checked: i64,
        identical: i64,
        diverged: i64,
        skipped: i64,
        fingerprint_differences: &Value,
        report: &Value,
    ) -> Result<i64, StoreError> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO replays (run_id, replay_run_id, checked, identical, diverged, skipped,
                                  fingerprint_differences_json, report_json)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            rusqlite::params![
                run_id,
                replay_run_id,
                checked,
                identical,
                diverged,
                skipped,
                fingerprint_differences.to_string(),
                report.to_string()
            ],
        )
        .map_err(|e| self.sql_error(e))?;
        Ok(conn.last_insert_rowid())
    }

    /// A run's replays, oldest first.
    pub fn replays(&self, run_id: i64) -> Result<Vec<ReplayRow>, StoreError> {
        let conn = self.conn();
        let mut statement = conn
            .prepare(
                "SELECT id, run_id, replay_run_id, checked, identical, diverged, skipped,
                        fingerprint_differences_json, report_json, created_at
                 FROM replays WHERE run_id = ?1 ORDER BY id",
            )
            .map_err(|e| self.sql_error(e))?;
        let rows = statement
            .query_map([run_id], |r| {
                Ok(ReplayRow {
                    id: r.get(0)?,
                    run_id: r.get(1)?,
                    replay_run_id: r.get(2)?,
                    checked: r.get(3)?,
                    identical: r.get(4)?,
                    diverged: r.get(5)?,
                    skipped: r.get(6)?,
                    fingerprint_differences: json_column(r, 7)?,
                    report: json_column(r, 8)?,
                    created_at: r.get(9)?,
                })
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| self.sql_error(e))?;
        Ok(rows)
    }

    /// Every row of `table` selected by `filter` (an SQL condition on `?1`), as JSON objects
    /// with one key per column, in rowid order.
    fn rows_as_json(
        &self,
        table: &str,
        filter: &str,
        param: i64,
    ) -> Result<Vec<Map<String, Value>>, StoreError> {
        let conn = self.conn();
        let sql = format!("SELECT * FROM {table} WHERE {filter} ORDER BY rowid");
        let mut statement = conn.prepare(&sql).map_err(|e| self.sql_error(e))?;
        let names: Vec<String> = statement
            .column_names()
            .iter()
            .map(|s| s.to_string())
            .collect();
        let rows = statement
            .query_map([param], |row| {
                let mut object = Map::new();
                for (i, name) in names.iter().enumerate() {
                    object.insert(name.clone(), to_json(row.get_ref(i)?));
                }
                Ok(object)
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| self.sql_error(e))?;
        Ok(rows)
    }

    /// Everything stored about a run, as records in [`BUNDLE_TABLES`] order: the run, the
    /// models its calls used, its optimization loops with their candidates and results, its
    /// evaluation results, its calls, and the artifacts its loops made.
    pub fn run_records(&self, run_id: i64) -> Result<Vec<BundleRecord>, StoreError> {
        let filters: &[(&str, &str)] = &[
            ("runs", "id = ?1"),
            (
                "models",
                "sha256 IN (SELECT model_sha256 FROM calls WHERE run_id = ?1
                            UNION SELECT model_sha256 FROM runs WHERE id = ?1)",
            ),
            ("optimizations", "run_id = ?1"),
            (
                "candidates",
                "optimization_id IN (SELECT id FROM optimizations WHERE run_id = ?1)",
            ),
            (
                "candidate_results",
                "optimization_id IN (SELECT id FROM optimizations WHERE run_id = ?1)",
            ),
            ("eval_results", "run_id = ?1"),
            ("calls", "run_id = ?1"),
            (
                "artifacts",
                "hash IN (SELECT artifact_hash FROM optimizations WHERE run_id = ?1
                          UNION SELECT baseline_hash FROM optimizations WHERE run_id = ?1)",
            ),
        ];
        let mut records = Vec::new();
        for ((kind, table), (_, filter)) in BUNDLE_TABLES.iter().zip(filters) {
            for data in self.rows_as_json(table, filter, run_id)? {
                records.push(BundleRecord {
                    kind: kind.to_string(),
                    data,
                });
            }
        }
        Ok(records)
    }

    /// Where an imported run came from: the digest of its bundle, the file, and when.
    pub fn run_import(&self, run_id: i64) -> Result<Option<(String, String, String)>, StoreError> {
        use rusqlite::OptionalExtension;
        self.conn()
            .query_row(
                "SELECT bundle_digest, source, imported_at FROM run_imports WHERE run_id = ?1",
                [run_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(|e| self.sql_error(e))
    }

    /// Stores the records of one run (from [`Store::run_records`] on another store) in one
    /// transaction, giving rows new local ids, with the digest of the bundle they came from.
    /// Returns the new run id. Refuses a run whose uid is already here.
    pub fn import_run_records(
        &self,
        records: &[BundleRecord],
        bundle_digest: &str,
        source: &str,
    ) -> Result<i64, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.sql_error(e))?;
        let mut run_id: Option<i64> = None;
        let mut optimization_ids = std::collections::BTreeMap::new();
        // Each table's columns, read once: only these keys of a record are inserted.
        let mut table_columns: std::collections::BTreeMap<&str, Vec<String>> =
            std::collections::BTreeMap::new();
        for record in records {
            let Some(&(_, table)) = BUNDLE_TABLES.iter().find(|(k, _)| *k == record.kind) else {
                return Err(StoreError::Corrupt(format!(
                    "unknown record kind `{}`",
                    record.kind
                )));
            };
            if !table_columns.contains_key(table) {
                let mut statement = tx
                    .prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))
                    .map_err(|e| self.sql_error(e))?;
                let names = statement
                    .query_map([], |r| r.get::<_, String>(0))
                    .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                    .map_err(|e| self.sql_error(e))?;
                table_columns.insert(table, names);
            }
            let columns = &table_columns[table];
            let mut data = record.data.clone();
            let old_id = data.get("id").and_then(Value::as_i64);
            match record.kind.as_str() {
                "run" => {
                    let uid = data.get("uid").and_then(Value::as_str).unwrap_or_default();
                    let exists: bool = tx
                        .query_row("SELECT COUNT(*) > 0 FROM runs WHERE uid = ?1", [uid], |r| {
                            r.get(0)
                        })
                        .map_err(|e| self.sql_error(e))?;
                    if exists {
                        return Err(StoreError::Corrupt(format!(
                            "run {uid} is already in this store"
                        )));
                    }
                    data.remove("id");
                }
                "optimization" | "eval_result" | "call" => {
                    data.remove("id");
                    data.insert("run_id".into(), Value::from(run_id.unwrap_or(-1)));
                }
                "candidate" | "result" => {
                    data.remove("id");
                    let old = data.get("optimization_id").and_then(Value::as_i64);
                    let new = old.and_then(|o| optimization_ids.get(&o)).copied();
                    data.insert("optimization_id".into(), Value::from(new.unwrap_or(-1)));
                }
                _ => {}
            }
            let keys: Vec<&String> = data.keys().filter(|k| columns.contains(k)).collect();
            let placeholders = (1..=keys.len())
                .map(|i| format!("?{i}"))
                .collect::<Vec<_>>()
                .join(", ");
            let names = keys
                .iter()
                .map(|k| k.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            let verb = match record.kind.as_str() {
                // Content-addressed: the same model or artifact may already be here.
                "model" | "artifact" => "INSERT OR IGNORE",
                _ => "INSERT",
            };
            let values: Vec<SqlValue> = keys.iter().map(|k| to_sql(&data[*k])).collect();
            tx.execute(
                &format!("{verb} INTO {table} ({names}) VALUES ({placeholders})"),
                rusqlite::params_from_iter(values),
            )
            .map_err(|e| self.sql_error(e))?;
            let new_id = tx.last_insert_rowid();
            match record.kind.as_str() {
                "run" => run_id = Some(new_id),
                "optimization" => {
                    if let Some(old) = old_id {
                        optimization_ids.insert(old, new_id);
                    }
                }
                _ => {}
            }
        }
        let run_id = run_id.ok_or_else(|| StoreError::Corrupt("the bundle has no run".into()))?;
        tx.execute(
            "INSERT INTO run_imports (run_id, bundle_digest, source) VALUES (?1, ?2, ?3)",
            rusqlite::params![run_id, bundle_digest, source],
        )
        .map_err(|e| self.sql_error(e))?;
        tx.commit().map_err(|e| self.sql_error(e))?;
        Ok(run_id)
    }
}
