-- 0002: per-example evaluation results. One row per example of an evaluated split, written as
-- soon as the example is scored, so an interrupted evaluation keeps what it finished.

CREATE TABLE eval_results (
    id            INTEGER PRIMARY KEY,
    run_id        INTEGER NOT NULL REFERENCES runs(id),
    split         TEXT NOT NULL,
    example_index INTEGER NOT NULL,
    source        TEXT NOT NULL,
    inputs_json   TEXT NOT NULL,
    gold_json     TEXT NOT NULL,
    outputs_json  TEXT,
    trace_json    TEXT NOT NULL,
    score         REAL NOT NULL,
    feedback      TEXT,
    error         TEXT,
    created_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    UNIQUE (run_id, split, example_index)
);
