-- 0007: the optimization queue. A job is an optimization to run once, on a schedule or when its
-- data changes; each time it runs is a cycle, with the optimization run it started and the
-- promotion decision it took. Jobs hold their full configuration and a snapshot of their tasks
-- and data, so they do not depend on files staying where they were.

CREATE TABLE jobs (
    id             INTEGER PRIMARY KEY,
    created_at     TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    -- What to run: optimizers, budget, seed, promotion, notification (never changes).
    spec_json      TEXT NOT NULL,
    -- The tasks and their data as last read (updated when a cycle runs on new inputs).
    inputs_json    TEXT NOT NULL,
    -- sha256 of the tasks as written and their data, as last run.
    input_hash     TEXT NOT NULL,
    every_seconds  INTEGER,
    on_change      INTEGER NOT NULL DEFAULT 0 CHECK (on_change IN (0, 1)),
    -- queued: runs as soon as a worker is free; running: a worker holds it; waiting: a
    -- recurring job between cycles; done, failed, cancelled: it will not run again.
    status         TEXT NOT NULL
        CHECK (status IN ('queued', 'running', 'waiting', 'done', 'failed', 'cancelled')),
    -- When a waiting job is due by its schedule.
    next_at        TEXT,
    -- The worker holding a running job, and until when its claim holds without a heartbeat.
    worker         TEXT,
    worker_pid     INTEGER,
    worker_host    TEXT,
    lease_until    TEXT,
    -- What the worker is doing: stage, progress, best score, budget left.
    progress_json  TEXT,
    error          TEXT,
    updated_at     TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE INDEX jobs_by_status ON jobs(status);

-- One run of a job. `run_uid` is the optimization run it started (also findable from the
-- run's config, `job.cycle`); `decision_json` the promotion gate's decision with both scores.
CREATE TABLE job_cycles (
    id            INTEGER PRIMARY KEY,
    job_id        INTEGER NOT NULL REFERENCES jobs(id),
    -- queued (the first run), schedule, change (the inputs' hash changed).
    trigger       TEXT NOT NULL,
    status        TEXT NOT NULL
        CHECK (status IN ('running', 'completed', 'failed', 'interrupted')),
    input_hash    TEXT NOT NULL,
    run_uid       TEXT,
    artifact_hash TEXT,
    decision_json TEXT,
    summary_json  TEXT,
    error         TEXT,
    started_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    ended_at      TEXT
);

CREATE INDEX job_cycles_by_job ON job_cycles(job_id);
