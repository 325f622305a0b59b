-- 0005: replays and imported runs. Each replay of a run recomputes its recorded calls and
-- compares the outputs byte for byte; its own calls are recorded under a run of kind `replay`.

CREATE TABLE replays (
    id                           INTEGER PRIMARY KEY,
    run_id                       INTEGER NOT NULL REFERENCES runs(id),
    replay_run_id                INTEGER REFERENCES runs(id),
    checked                      INTEGER NOT NULL,
    identical                    INTEGER NOT NULL,
    diverged                     INTEGER NOT NULL,
    skipped                      INTEGER NOT NULL,
    fingerprint_differences_json TEXT NOT NULL,
    report_json                  TEXT NOT NULL,
    created_at                   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX replays_by_run ON replays(run_id, id);

-- Runs that came from an audit bundle, with the digest (last hash) of that bundle.
CREATE TABLE run_imports (
    run_id        INTEGER PRIMARY KEY REFERENCES runs(id),
    bundle_digest TEXT NOT NULL,
    source        TEXT NOT NULL,
    imported_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
