-- 0004: optimization loops, the candidate programs they proposed, and every per-example result
-- they computed. Results are written as each example finishes, so a killed run resumes
-- without redoing them.

-- One optimizer over one task inside a run. `config_json` holds everything needed to resume
-- without the original files: the task file as written, the starting program, the optimizer
-- settings, the seed and the exact rows of every split.
CREATE TABLE optimizations (
    id            INTEGER PRIMARY KEY,
    run_id        INTEGER NOT NULL REFERENCES runs(id),
    loop_index    INTEGER NOT NULL,
    task          TEXT NOT NULL,
    optimizer     TEXT NOT NULL,
    config_json   TEXT NOT NULL,
    status        TEXT NOT NULL
        CHECK (status IN ('running', 'completed', 'stopped', 'failed')),
    stop_reason   TEXT,
    artifact_hash TEXT,
    baseline_hash TEXT,
    summary_json  TEXT,
    updated_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    UNIQUE (run_id, loop_index)
);

-- Every program an optimizer proposed, in proposal order. `val_score` is set once the
-- program has been scored on the whole validation split.
CREATE TABLE candidates (
    id              INTEGER PRIMARY KEY,
    optimization_id INTEGER NOT NULL REFERENCES optimizations(id),
    ordinal         INTEGER NOT NULL,
    label           TEXT NOT NULL,
    parent_ordinal  INTEGER,
    program_hash    TEXT NOT NULL,
    program_json    TEXT NOT NULL,
    val_score       REAL,
    created_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    UNIQUE (optimization_id, ordinal)
);

-- One example run by one subject: a candidate program (by program hash) or a teacher setup
-- (by a key derived from its program and settings). `trace_json` holds every step's inputs,
-- parsed outputs, raw reply and call id.
CREATE TABLE candidate_results (
    id              INTEGER PRIMARY KEY,
    optimization_id INTEGER NOT NULL REFERENCES optimizations(id),
    subject         TEXT NOT NULL,
    split           TEXT NOT NULL CHECK (split IN ('train', 'val', 'test')),
    example_index   INTEGER NOT NULL,
    source          TEXT NOT NULL,
    outputs_json    TEXT,
    trace_json      TEXT NOT NULL,
    score           REAL NOT NULL,
    feedback        TEXT,
    error           TEXT,
    tokens          INTEGER NOT NULL DEFAULT 0,
    created_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    UNIQUE (optimization_id, subject, split, example_index)
);
