//! Retrieval corpora: passages, their per-corpus FTS5 index, and stored embeddings.
//!
//! Indexing compares passages by id and content hash, file by file, so re-adding a file
//! touches only the passages that changed; everything one `index_corpus` call does is one
//! transaction.

use std::collections::BTreeMap;

use rusqlite::{OptionalExtension, Transaction};

use super::{Store, StoreError};
use crate::corpus::{self, Chunker, Passage, SourcePassage};

/// A stored corpus.
#[derive(Debug, Clone, PartialEq)]
pub struct CorpusRecord {
    pub id: i64,
    pub name: String,
    pub created_at: String,
    pub updated_at: String,
    pub chunker: Chunker,
    pub content_hash: String,
    pub passages: usize,
    pub files: Vec<CorpusFileRecord>,
    /// Models with embeddings of this corpus: (model sha256, passages embedded).
    pub embedded: Vec<(String, usize)>,
}

/// A file a corpus was built from.
#[derive(Debug, Clone, PartialEq)]
pub struct CorpusFileRecord {
    pub path: String,
    pub file_hash: String,
    pub passages: usize,
    pub indexed_at: String,
}

/// One file to index: its path as recorded, the sha256 of its bytes, and its passages.
#[derive(Debug, Clone)]
pub struct FileIndex {
    pub path: String,
    pub file_hash: String,
    pub passages: Vec<SourcePassage>,
}

/// What indexing changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct IndexChange {
    pub created: bool,
    pub added: usize,
    pub updated: usize,
    pub removed: usize,
    pub unchanged: usize,
    /// Files whose bytes had not changed since they were last indexed.
    pub files_unchanged: usize,
    pub content_hash: String,
    pub passages: usize,
}

/// A corpus's embeddings from one model: passage ids and texts in id order, and the vectors
/// as one row-major matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredVectors {
    pub ids: Vec<String>,
    pub texts: Vec<String>,
    pub dim: usize,
    pub matrix: Vec<f32>,
}

fn fts_table(corpus_id: i64) -> String {
    format!("corpus_fts_{corpus_id}")
}

fn encode(vector: &[f32]) -> Vec<u8> {
    vector.iter().flat_map(|x| x.to_le_bytes()).collect()
}

impl Store {
    /// A corpus by name, with its files.
    pub fn corpus(&self, name: &str) -> Result<Option<CorpusRecord>, StoreError> {
        self.corpus_id(name)?
            .map(|id| self.corpus_by_id(id))
            .transpose()
    }

    /// A corpus's row id and content hash, by name.
    pub fn corpus_id(&self, name: &str) -> Result<Option<i64>, StoreError> {
        self.conn()
            .query_row("SELECT id FROM corpora WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| self.sql_error(e))
    }

    /// Every corpus, by name.
    pub fn corpora(&self) -> Result<Vec<CorpusRecord>, StoreError> {
        let ids: Vec<i64> = {
            let conn = self.conn();
            let mut statement = conn
                .prepare("SELECT id FROM corpora ORDER BY name")
                .map_err(|e| self.sql_error(e))?;
            let rows = statement
                .query_map([], |r| r.get(0))
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(|e| self.sql_error(e))?;
            rows
        };
        ids.into_iter().map(|id| self.corpus_by_id(id)).collect()
    }

    fn corpus_by_id(&self, id: i64) -> Result<CorpusRecord, StoreError> {
        let conn = self.conn();
        let sql = |e| self.sql_error(e);
        let (name, created_at, updated_at, chunker_json, content_hash): (
            String,
            String,
            String,
            String,
            String,
        ) = conn
            .query_row(
                "SELECT name, created_at, updated_at, chunker_json, content_hash
                 FROM corpora WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .map_err(sql)?;
        let chunker = serde_json::from_str(&chunker_json)
            .map_err(|e| StoreError::Corrupt(format!("corpus {name}'s chunker: {e}")))?;
        let passages: i64 = conn
            .query_row(
                "SELECT count(*) FROM passages WHERE corpus_id = ?1",
                [id],
                |r| r.get(0),
            )
            .map_err(sql)?;
        let mut statement = conn
            .prepare(
                "SELECT f.path, f.file_hash, f.indexed_at,
                        (SELECT count(*) FROM passages p WHERE p.corpus_id = f.corpus_id
                                                          AND p.file = f.path)
                 FROM corpus_files f WHERE f.corpus_id = ?1 ORDER BY f.path",
            )
            .map_err(sql)?;
        let files = statement
            .query_map([id], |r| {
                Ok(CorpusFileRecord {
                    path: r.get(0)?,
                    file_hash: r.get(1)?,
                    indexed_at: r.get(2)?,
                    passages: r.get::<_, i64>(3)? as usize,
                })
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(sql)?;
        let mut statement = conn
            .prepare(
                "SELECT v.model_sha256, count(*) FROM passage_vectors v
                 JOIN passages p ON p.id = v.passage
                 WHERE p.corpus_id = ?1 GROUP BY v.model_sha256 ORDER BY v.model_sha256",
            )
            .map_err(sql)?;
        let embedded = statement
            .query_map([id], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as usize)))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(sql)?;
        Ok(CorpusRecord {
            id,
            name,
            created_at,
            updated_at,
            chunker,
            content_hash,
            passages: passages as usize,
            files,
            embedded,
        })
    }

    /// The stored sha256 of each file of a corpus, by path (empty for a new corpus).
    pub fn corpus_file_hashes(&self, name: &str) -> Result<BTreeMap<String, String>, StoreError> {
        let conn = self.conn();
        let mut statement = conn
            .prepare(
                "SELECT f.path, f.file_hash FROM corpus_files f
                 JOIN corpora c ON c.id = f.corpus_id WHERE c.name = ?1",
            )
            .map_err(|e| self.sql_error(e))?;
        let rows = statement
            .query_map([name], |r| Ok((r.get(0)?, r.get(1)?)))
            .and_then(|rows| rows.collect::<rusqlite::Result<BTreeMap<_, _>>>())
            .map_err(|e| self.sql_error(e))?;
        Ok(rows)
    }

    /// Indexes `files` into the corpus `name` (created, with its full-text index, when new),
    /// in one transaction: per file, passages that are new are added, changed ones replaced
    /// (their embeddings go with them), and ones the file no longer has removed. Files of the
    /// corpus not in `files` are left as they are. A passage id used by another file of the
    /// corpus is refused.
    pub fn index_corpus(
        &self,
        name: &str,
        chunker: &Chunker,
        files: &[FileIndex],
    ) -> Result<IndexChange, StoreError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| self.sql_error(e))?;
        let change = self
            .index_in(&tx, name, chunker, files)
            .and_then(|change| {
                tx.commit().map_err(|e| self.sql_error(e))?;
                Ok(change)
            })?;
        Ok(change)
    }

    fn index_in(
        &self,
        tx: &Transaction<'_>,
        name: &str,
        chunker: &Chunker,
        files: &[FileIndex],
    ) -> Result<IndexChange, StoreError> {
        let sql = |e| self.sql_error(e);
        let chunker_json = serde_json::to_string(chunker).expect("chunkers serialize");
        let mut change = IndexChange::default();
        let existing: Option<i64> = tx
            .query_row("SELECT id FROM corpora WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()
            .map_err(sql)?;
        let corpus_id = match existing {
            Some(id) => id,
            None => {
                change.created = true;
                tx.execute(
                    "INSERT INTO corpora (name, chunker_json, content_hash) VALUES (?1, ?2, '')",
                    rusqlite::params![name, chunker_json],
                )
                .map_err(sql)?;
                let id = tx.last_insert_rowid();
                tx.execute_batch(&format!(
                    "CREATE VIRTUAL TABLE {} USING fts5(text, content='passages', \
                     content_rowid='id', tokenize='{}')",
                    fts_table(id),
                    corpus::FTS_TOKENIZER
                ))
                .map_err(sql)?;
                id
            }
        };
        let fts = fts_table(corpus_id);
        for file in files {
            let stored_hash: Option<String> = tx
                .query_row(
                    "SELECT file_hash FROM corpus_files WHERE corpus_id = ?1 AND path = ?2",
                    rusqlite::params![corpus_id, file.path],
                    |r| r.get(0),
                )
                .optional()
                .map_err(sql)?;
            let mut stored: BTreeMap<String, (i64, String, String)> = BTreeMap::new();
            {
                let mut statement = tx
                    .prepare(
                        "SELECT passage_id, id, hash, text FROM passages
                         WHERE corpus_id = ?1 AND file = ?2",
                    )
                    .map_err(sql)?;
                let rows = statement
                    .query_map(rusqlite::params![corpus_id, file.path], |r| {
                        Ok((r.get(0)?, (r.get(1)?, r.get(2)?, r.get(3)?)))
                    })
                    .map_err(sql)?;
                for row in rows {
                    let (id, rest) = row.map_err(sql)?;
                    stored.insert(id, rest);
                }
            }
            if stored_hash.as_deref() == Some(file.file_hash.as_str()) {
                change.files_unchanged += 1;
            }
            let mut seen = std::collections::BTreeSet::new();
            for passage in &file.passages {
                seen.insert(passage.id.clone());
                let hash =
                    corpus::passage_hash(&passage.id, &passage.text, passage.metadata.as_ref());
                match stored.get(&passage.id) {
                    Some((_, old_hash, _)) if *old_hash == hash => {
                        change.unchanged += 1;
                        continue;
                    }
                    Some((row, _, old_text)) => {
                        delete_passage(tx, &fts, *row, old_text).map_err(sql)?;
                        change.updated += 1;
                    }
                    None => {
                        let other: Option<(String, i64)> = tx
                            .query_row(
                                "SELECT file, line FROM passages
                                 WHERE corpus_id = ?1 AND passage_id = ?2",
                                rusqlite::params![corpus_id, passage.id],
                                |r| Ok((r.get(0)?, r.get(1)?)),
                            )
                            .optional()
                            .map_err(sql)?;
                        if let Some((other_file, other_line)) = other {
                            return Err(StoreError::Invalid(format!(
                                "passage id `{}` of {} line {} is already in corpus `{name}` \
                                 from {other_file} line {other_line}; ids must be unique in a \
                                 corpus",
                                passage.id, file.path, passage.line
                            )));
                        }
                        change.added += 1;
                    }
                }
                let metadata = passage
                    .metadata
                    .as_ref()
                    .map(|m| serde_json::Value::Object(m.clone()).to_string());
                tx.execute(
                    "INSERT INTO passages (corpus_id, passage_id, file, line, text, metadata_json, hash)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    rusqlite::params![
                        corpus_id,
                        passage.id,
                        file.path,
                        passage.line as i64,
                        passage.text,
                        metadata,
                        hash
                    ],
                )
                .map_err(sql)?;
                let row = tx.last_insert_rowid();
                tx.execute(
                    &format!("INSERT INTO {fts} (rowid, text) VALUES (?1, ?2)"),
                    rusqlite::params![row, passage.text],
                )
                .map_err(sql)?;
            }
            for (id, (row, _, text)) in &stored {
                if !seen.contains(id) {
                    delete_passage(tx, &fts, *row, text).map_err(sql)?;
                    change.removed += 1;
                }
            }
            tx.execute(
                "INSERT INTO corpus_files (corpus_id, path, file_hash) VALUES (?1, ?2, ?3)
                 ON CONFLICT(corpus_id, path) DO UPDATE SET file_hash = excluded.file_hash,
                   indexed_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
                rusqlite::params![corpus_id, file.path, file.file_hash],
            )
            .map_err(sql)?;
        }
        let hashes: Vec<(String, String)> = {
            let mut statement = tx
                .prepare("SELECT passage_id, hash FROM passages WHERE corpus_id = ?1")
                .map_err(sql)?;
            let rows = statement
                .query_map([corpus_id], |r| Ok((r.get(0)?, r.get(1)?)))
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(sql)?;
            rows
        };
        change.passages = hashes.len();
        change.content_hash =
            corpus::content_hash(hashes.iter().map(|(i, h)| (i.as_str(), h.as_str())));
        tx.execute(
            "UPDATE corpora SET content_hash = ?2, chunker_json = ?3,
               updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
             WHERE id = ?1",
            rusqlite::params![corpus_id, change.content_hash, chunker_json],
        )
        .map_err(sql)?;
        Ok(change)
    }

    /// The first `limit` passages of a corpus in id order: (id, file, line, text).
    pub fn corpus_passages(
        &self,
        corpus_id: i64,
        limit: usize,
    ) -> Result<Vec<(String, String, i64, String)>, StoreError> {
        let conn = self.conn();
        let mut statement = conn
            .prepare(
                "SELECT passage_id, file, line, text FROM passages WHERE corpus_id = ?1
                 ORDER BY passage_id LIMIT ?2",
            )
            .map_err(|e| self.sql_error(e))?;
        let rows = statement
            .query_map(rusqlite::params![corpus_id, limit as i64], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| self.sql_error(e))?;
        Ok(rows)
    }

    /// Runs `work` (this store's own calls) in one transaction: committed when it returns
    /// `Ok`, rolled back otherwise. For many small writes at once, by a caller that is the
    /// store's only writer meanwhile (the connection is shared).
    pub(crate) fn in_transaction<T>(
        &self,
        work: impl FnOnce() -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.conn()
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| self.sql_error(e))?;
        match work() {
            Ok(value) => {
                self.conn()
                    .execute_batch("COMMIT")
                    .map_err(|e| self.sql_error(e))?;
                Ok(value)
            }
            Err(e) => {
                let _ = self.conn().execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }

    /// Deletes a corpus, its passages, embeddings and index. `false` when there was none.
    pub fn remove_corpus(&self, name: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let sql = |e| self.sql_error(e);
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(sql)?;
        let id: Option<i64> = tx
            .query_row("SELECT id FROM corpora WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()
            .map_err(sql)?;
        let Some(id) = id else {
            return Ok(false);
        };
        tx.execute_batch(&format!("DROP TABLE IF EXISTS {}", fts_table(id)))
            .map_err(sql)?;
        tx.execute("DELETE FROM corpora WHERE id = ?1", [id])
            .map_err(sql)?;
        tx.commit().map_err(sql)?;
        Ok(true)
    }

    /// The `k` best passages of a corpus for an FTS5 query (see [`corpus::fts_query`]) by
    /// BM25, best first, ties by passage id. Scores are BM25's (higher is better).
    pub fn search_bm25(
        &self,
        corpus_id: i64,
        fts_query: &str,
        k: usize,
    ) -> Result<Vec<Passage>, StoreError> {
        let conn = self.conn();
        let fts = fts_table(corpus_id);
        let mut statement = conn
            .prepare_cached(&format!(
                "SELECT p.passage_id, p.text, -bm25({fts}) AS score
                 FROM {fts} JOIN passages p ON p.id = {fts}.rowid
                 WHERE {fts} MATCH ?1
                 ORDER BY score DESC, p.passage_id LIMIT ?2"
            ))
            .map_err(|e| self.sql_error(e))?;
        let rows = statement
            .query_map(rusqlite::params![fts_query, k as i64], |r| {
                Ok(Passage {
                    id: r.get(0)?,
                    text: r.get(1)?,
                    score: r.get(2)?,
                })
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| self.sql_error(e))?;
        Ok(rows)
    }

    /// Passages of a corpus with no embedding from (model, engine build): row id and text, in
    /// passage id order.
    pub fn passages_to_embed(
        &self,
        corpus_id: i64,
        model_sha256: &str,
        fingerprint_id: &str,
    ) -> Result<Vec<(i64, String)>, StoreError> {
        let conn = self.conn();
        let mut statement = conn
            .prepare(
                "SELECT p.id, p.text FROM passages p
                 WHERE p.corpus_id = ?1 AND NOT EXISTS (
                   SELECT 1 FROM passage_vectors v WHERE v.passage = p.id
                     AND v.model_sha256 = ?2 AND v.fingerprint_id = ?3)
                 ORDER BY p.passage_id",
            )
            .map_err(|e| self.sql_error(e))?;
        let rows = statement
            .query_map(
                rusqlite::params![corpus_id, model_sha256, fingerprint_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| self.sql_error(e))?;
        Ok(rows)
    }

    /// Stores one passage's embedding.
    pub fn store_vector(
        &self,
        passage: i64,
        model_sha256: &str,
        fingerprint_id: &str,
        call_id: Option<i64>,
        vector: &[f32],
    ) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "INSERT OR REPLACE INTO passage_vectors
                   (passage, model_sha256, fingerprint_id, call_id, dim, vector)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                rusqlite::params![
                    passage,
                    model_sha256,
                    fingerprint_id,
                    call_id,
                    vector.len() as i64,
                    encode(vector)
                ],
            )
            .map_err(|e| self.sql_error(e))?;
        Ok(())
    }

    /// Every embedding of a corpus from (model, engine build), in passage id order; `None`
    /// when some passage has none.
    pub fn corpus_vectors(
        &self,
        corpus_id: i64,
        model_sha256: &str,
        fingerprint_id: &str,
    ) -> Result<Option<StoredVectors>, StoreError> {
        let conn = self.conn();
        let mut statement = conn
            .prepare(
                "SELECT p.passage_id, p.text, v.dim, v.vector FROM passages p
                 LEFT JOIN passage_vectors v ON v.passage = p.id
                   AND v.model_sha256 = ?2 AND v.fingerprint_id = ?3
                 WHERE p.corpus_id = ?1 ORDER BY p.passage_id",
            )
            .map_err(|e| self.sql_error(e))?;
        let mut rows = statement
            .query(rusqlite::params![corpus_id, model_sha256, fingerprint_id])
            .map_err(|e| self.sql_error(e))?;
        let mut out = StoredVectors {
            ids: Vec::new(),
            texts: Vec::new(),
            dim: 0,
            matrix: Vec::new(),
        };
        while let Some(row) = rows.next().map_err(|e| self.sql_error(e))? {
            let dim: Option<i64> = row.get(2).map_err(|e| self.sql_error(e))?;
            let Some(dim) = dim else {
                return Ok(None);
            };
            let bytes: Vec<u8> = row.get(3).map_err(|e| self.sql_error(e))?;
            let dim = dim as usize;
            if bytes.len() != dim * 4 || (out.dim != 0 && out.dim != dim) {
                return Err(StoreError::Corrupt(format!(
                    "an embedding of corpus {corpus_id} has {} bytes for {dim} dimensions",
                    bytes.len()
                )));
            }
            out.dim = dim;
            out.ids.push(row.get(0).map_err(|e| self.sql_error(e))?);
            out.texts.push(row.get(1).map_err(|e| self.sql_error(e))?);
            out.matrix.extend(
                bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            );
        }
        Ok(Some(out))
    }
}

/// Removes a passage and its full-text entry (an external-content FTS5 table is told the old
/// text, so it can remove the right terms).
fn delete_passage(tx: &Transaction<'_>, fts: &str, row: i64, text: &str) -> rusqlite::Result<()> {
    tx.execute(
        &format!("INSERT INTO {fts} ({fts}, rowid, text) VALUES ('delete', ?1, ?2)"),
        rusqlite::params![row, text],
    )?;
    tx.execute("DELETE FROM passages WHERE id = ?1", [row])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passage(id: &str, text: &str) -> SourcePassage {
        SourcePassage {
            id: id.into(),
            text: text.into(),
            metadata: None,
            file: "a.jsonl".into(),
            line: 1,
        }
    }

    fn file(path: &str, hash: &str, passages: Vec<SourcePassage>) -> FileIndex {
        FileIndex {
            path: path.into(),
            file_hash: hash.into(),
            passages,
        }
    }

    fn search(store: &Store, name: &str, query: &str) -> Vec<String> {
        let corpus = store.corpus(name).unwrap().unwrap();
        store
            .search_bm25(corpus.id, &corpus::fts_query(query).unwrap(), 3)
            .unwrap()
            .into_iter()
            .map(|p| p.id)
            .collect()
    }

    #[test]
    fn reindexing_touches_only_changed_passages() {
        let store = Store::open_in_memory().unwrap();
        let chunker = Chunker::default();
        let first = vec![
            passage("1", "the red ferry leaves at noon"),
            passage("2", "the blue ferry leaves at dawn"),
            passage("3", "the museum opens on mondays"),
        ];
        let change = store
            .index_corpus("town", &chunker, &[file("a.jsonl", "h1", first.clone())])
            .unwrap();
        assert!(change.created);
        assert_eq!((change.added, change.passages), (3, 3));
        assert_eq!(search(&store, "town", "blue ferry"), ["2", "1"]);

        let again = store
            .index_corpus("town", &chunker, &[file("a.jsonl", "h1", first)])
            .unwrap();
        assert_eq!((again.added, again.updated, again.removed), (0, 0, 0));
        assert_eq!(again.unchanged, 3);
        assert_eq!(again.content_hash, change.content_hash);

        let edited = vec![
            passage("1", "the red ferry leaves at noon"),
            passage("2", "the green ferry leaves at dusk"),
            passage("4", "the library lends maps"),
        ];
        let third = store
            .index_corpus("town", &chunker, &[file("a.jsonl", "h2", edited)])
            .unwrap();
        assert_eq!(
            (third.added, third.updated, third.removed, third.unchanged),
            (1, 1, 1, 1)
        );
        assert_ne!(third.content_hash, change.content_hash);
        // The index follows: old words are gone, new ones found.
        assert_eq!(search(&store, "town", "blue museum"), Vec::<String>::new());
        let mut found = search(&store, "town", "green maps");
        found.sort();
        assert_eq!(found, ["2", "4"]);
    }

    #[test]
    fn ids_are_unique_across_files_and_corpora_are_separate() {
        let store = Store::open_in_memory().unwrap();
        let chunker = Chunker::default();
        store
            .index_corpus(
                "a",
                &chunker,
                &[file("x.jsonl", "h", vec![passage("1", "one")])],
            )
            .unwrap();
        let err = store
            .index_corpus(
                "a",
                &chunker,
                &[file("y.jsonl", "h", vec![passage("1", "uno")])],
            )
            .unwrap_err()
            .to_string();
        assert!(err.contains("`1`") && err.contains("x.jsonl"), "{err}");
        // The refused file left nothing behind.
        assert_eq!(store.corpus("a").unwrap().unwrap().files.len(), 1);
        store
            .index_corpus(
                "b",
                &chunker,
                &[file("y.jsonl", "h", vec![passage("1", "one two")])],
            )
            .unwrap();
        assert_eq!(search(&store, "a", "one"), ["1"]);
        assert!(store.remove_corpus("a").unwrap());
        assert!(!store.remove_corpus("a").unwrap());
        assert_eq!(search(&store, "b", "one"), ["1"]);
        assert_eq!(store.corpora().unwrap().len(), 1);
    }

    #[test]
    fn vectors_go_with_changed_passages() {
        let store = Store::open_in_memory().unwrap();
        let chunker = Chunker::default();
        store
            .index_corpus(
                "c",
                &chunker,
                &[file(
                    "a",
                    "h",
                    vec![passage("1", "one"), passage("2", "two")],
                )],
            )
            .unwrap();
        let id = store.corpus("c").unwrap().unwrap().id;
        assert!(store.corpus_vectors(id, "m", "f").unwrap().is_none());
        for (row, _) in store.passages_to_embed(id, "m", "f").unwrap() {
            store
                .store_vector(row, "m", "f", None, &[row as f32, 0.5])
                .unwrap();
        }
        let vectors = store.corpus_vectors(id, "m", "f").unwrap().unwrap();
        assert_eq!(vectors.ids, ["1", "2"]);
        assert_eq!((vectors.dim, vectors.matrix.len()), (2, 4));
        store
            .index_corpus(
                "c",
                &chunker,
                &[file(
                    "a",
                    "h2",
                    vec![passage("1", "one"), passage("2", "deux")],
                )],
            )
            .unwrap();
        let missing = store.passages_to_embed(id, "m", "f").unwrap();
        assert_eq!(missing.len(), 1);
        assert_eq!(missing[0].1, "deux");
    }
}
