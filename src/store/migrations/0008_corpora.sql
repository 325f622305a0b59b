-- 0008: retrieval corpora. A corpus is a named set of passages read from files (JSONL, plain
-- text, Markdown); each corpus gets its own FTS5 index, `corpus_fts_<id>`, created when the
-- corpus is (so BM25's statistics come from that corpus alone), over `passages` as external
-- content. Embeddings are stored per passage, model and engine build; they go with the passage
-- when its text changes.

CREATE TABLE corpora (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    created_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    -- How plain text and Markdown were split into passages (corpus::Chunker as JSON).
    chunker_json  TEXT NOT NULL,
    -- sha256 over every passage's id and hash, in id order (corpus::content_hash).
    content_hash  TEXT NOT NULL
);

-- The files a corpus was built from, with the sha256 of their bytes when last indexed.
CREATE TABLE corpus_files (
    corpus_id  INTEGER NOT NULL REFERENCES corpora(id) ON DELETE CASCADE,
    path       TEXT NOT NULL,
    file_hash  TEXT NOT NULL,
    indexed_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (corpus_id, path)
);

CREATE TABLE passages (
    id            INTEGER PRIMARY KEY,
    corpus_id     INTEGER NOT NULL REFERENCES corpora(id) ON DELETE CASCADE,
    -- The user's id (JSONL) or `<file name>#<n>` (text and Markdown).
    passage_id    TEXT NOT NULL,
    file          TEXT NOT NULL,
    line          INTEGER NOT NULL,
    text          TEXT NOT NULL,
    metadata_json TEXT,
    -- corpus::passage_hash of id, text and metadata.
    hash          TEXT NOT NULL,
    UNIQUE (corpus_id, passage_id)
);
CREATE INDEX passages_by_file ON passages (corpus_id, file);

-- One embedding per passage, model and engine build (little-endian f32). `call_id` is the
-- recorded call that computed it (NULL once that call's run is collected).
CREATE TABLE passage_vectors (
    passage        INTEGER NOT NULL REFERENCES passages(id) ON DELETE CASCADE,
    model_sha256   TEXT NOT NULL,
    fingerprint_id TEXT NOT NULL,
    call_id        INTEGER REFERENCES calls(id) ON DELETE SET NULL,
    dim            INTEGER NOT NULL,
    vector         BLOB NOT NULL,
    PRIMARY KEY (passage, model_sha256, fingerprint_id)
);
