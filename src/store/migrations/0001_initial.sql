-- 0001: the first schema. Models seen, verified file hashes, runs, and every model call.
-- Forward-only: never edit this file once shipped; add 0002_*.sql instead.

-- A model file by content. `pin_json` is the registry entry it was loaded under,
-- `metadata_json` what its GGUF header says.
CREATE TABLE models (
    sha256        TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    file          TEXT NOT NULL,
    size          INTEGER NOT NULL,
    pin_json      TEXT NOT NULL,
    metadata_json TEXT,
    first_seen    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

-- Hashes already verified, keyed by where the file is and what it looked like then, so that a
-- large model is not re-hashed on every start.
CREATE TABLE verified_files (
    path        TEXT PRIMARY KEY,
    size        INTEGER NOT NULL,
    mtime_ns    TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    verified_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

-- One invocation of tuningfork that produced model calls.
CREATE TABLE runs (
    id                      INTEGER PRIMARY KEY,
    uid                     TEXT NOT NULL UNIQUE,
    kind                    TEXT NOT NULL,
    config_json             TEXT NOT NULL,
    seed                    INTEGER,
    status                  TEXT NOT NULL
        CHECK (status IN ('running', 'completed', 'failed', 'interrupted')),
    started_at              TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    ended_at                TEXT,
    model_sha256            TEXT,
    engine_fingerprint_json TEXT NOT NULL,
    engine_fingerprint_id   TEXT NOT NULL,
    host                    TEXT NOT NULL,
    error                   TEXT
);

-- Every generation, computed or served from the cache. `request_hash` covers the model
-- sha256, the engine fingerprint, the rendered prompt and every sampling parameter.
CREATE TABLE calls (
    id                    INTEGER PRIMARY KEY,
    run_id                INTEGER NOT NULL REFERENCES runs(id),
    request_hash          TEXT NOT NULL,
    model_sha256          TEXT NOT NULL,
    engine_fingerprint_id TEXT NOT NULL,
    request_json          TEXT NOT NULL,
    prompt                TEXT NOT NULL,
    output                TEXT NOT NULL DEFAULT '',
    prompt_tokens         INTEGER NOT NULL DEFAULT 0,
    completion_tokens     INTEGER NOT NULL DEFAULT 0,
    stop_reason           TEXT,
    latency_ms            REAL NOT NULL,
    cached                INTEGER NOT NULL CHECK (cached IN (0, 1)),
    error                 TEXT,
    created_at            TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE INDEX calls_by_request ON calls(request_hash) WHERE cached = 0 AND error IS NULL;
CREATE INDEX calls_by_run ON calls(run_id);
