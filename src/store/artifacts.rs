//! Stored artifacts and promoted names.

use rusqlite::OptionalExtension;

use super::{Store, StoreError};
use crate::artifact::Artifact;

/// A stored artifact with its hash and when it was stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredArtifact {
    pub hash: String,
    pub created_at: String,
    pub artifact: Artifact,
}

impl Store {
    /// The first column of every row of `sql`.
    fn strings(&self, sql: &str, params: impl rusqlite::Params) -> Result<Vec<String>, StoreError> {
        let conn = self.conn();
        let mut statement = conn.prepare(sql).map_err(|e| self.sql_error(e))?;
        let rows = statement
            .query_map(params, |r| r.get(0))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| self.sql_error(e))?;
        Ok(rows)
    }

    /// Stores an artifact (once per content hash) and returns its hash.
    pub fn save_artifact(&self, artifact: &Artifact) -> Result<String, StoreError> {
        let hash = artifact.content_hash();
        self.conn()
            .execute(
                "INSERT INTO artifacts (hash, task, json, parent) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(hash) DO NOTHING",
                rusqlite::params![hash, artifact.task, artifact.to_json(), artifact.parent],
            )
            .map_err(|e| self.sql_error(e))?;
        Ok(hash)
    }

    /// An artifact by promoted name, full hash, or unique hash prefix (at least 6 digits).
    pub fn artifact(&self, reference: &str) -> Result<StoredArtifact, StoreError> {
        let hash = match self.promoted(reference)? {
            Some(hash) => hash,
            None => self.resolve_hash(reference)?,
        };
        let conn = self.conn();
        let (json, created_at): (String, String) = conn
            .query_row(
                "SELECT json, created_at FROM artifacts WHERE hash = ?1",
                [&hash],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(|e| self.sql_error(e))?;
        let artifact = Artifact::from_json(&json, &format!("stored artifact {hash}"))
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok(StoredArtifact {
            hash,
            created_at,
            artifact,
        })
    }

    fn resolve_hash(&self, prefix: &str) -> Result<String, StoreError> {
        let not_found = || StoreError::NoSuchArtifact(prefix.to_string());
        if prefix.len() < 6 || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(not_found());
        }
        let hashes = self.strings(
            "SELECT hash FROM artifacts WHERE hash LIKE ?1 || '%' LIMIT 2",
            [prefix.to_lowercase()],
        )?;
        match hashes.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(not_found()),
            _ => Err(StoreError::AmbiguousArtifact(prefix.to_string())),
        }
    }

    /// Every stored artifact, newest first.
    pub fn list_artifacts(&self) -> Result<Vec<StoredArtifact>, StoreError> {
        let hashes = self.strings(
            "SELECT hash FROM artifacts ORDER BY created_at DESC, hash",
            [],
        )?;
        hashes.iter().map(|h| self.artifact(h)).collect()
    }

    /// The hash a name currently points at.
    pub fn promoted(&self, name: &str) -> Result<Option<String>, StoreError> {
        self.conn()
            .query_row(
                "SELECT hash FROM promotions WHERE name = ?1 ORDER BY id DESC LIMIT 1",
                [name],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.sql_error(e))
    }

    /// Points `name` at the artifact `reference` resolves to; returns its hash. A name that
    /// looks like a hash is refused: it would shadow the artifacts whose hashes it starts.
    pub fn promote(&self, name: &str, reference: &str) -> Result<String, StoreError> {
        if name.len() >= 6 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(StoreError::HashLikeName(name.to_string()));
        }
        let hash = self.artifact(reference)?.hash;
        self.conn()
            .execute(
                "INSERT INTO promotions (name, hash) VALUES (?1, ?2)",
                rusqlite::params![name, hash],
            )
            .map_err(|e| self.sql_error(e))?;
        Ok(hash)
    }

    /// Points `name` back at the artifact it pointed at before its current one; returns it.
    pub fn rollback(&self, name: &str) -> Result<String, StoreError> {
        let history = self.strings(
            "SELECT hash FROM promotions WHERE name = ?1 ORDER BY id DESC",
            [name],
        )?;
        let current = history
            .first()
            .ok_or_else(|| StoreError::NoSuchArtifact(name.to_string()))?;
        let previous = history
            .iter()
            .find(|h| *h != current)
            .ok_or_else(|| StoreError::NothingToRollBack(name.to_string()))?
            .clone();
        self.conn()
            .execute(
                "INSERT INTO promotions (name, hash) VALUES (?1, ?2)",
                rusqlite::params![name, previous],
            )
            .map_err(|e| self.sql_error(e))?;
        Ok(previous)
    }
}
