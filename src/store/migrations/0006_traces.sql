-- 0006: requests answered by `tuningfork serve`, one row each, under the server's run (kind
-- `serve`). The model calls a request made are ordinary rows of `calls` under the same run;
-- `call_ids_json` lists them. `score` and `feedback` are what a client reported afterwards.

CREATE TABLE traces (
    id                INTEGER PRIMARY KEY,
    uid               TEXT NOT NULL UNIQUE,
    run_id            INTEGER NOT NULL REFERENCES runs(id),
    created_at        TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    -- `chat.completions`, `completions` or `predict`.
    endpoint          TEXT NOT NULL,
    -- The model name the client asked for, as given.
    model             TEXT NOT NULL,
    -- For a program call: the task's name and the artifact that answered.
    program           TEXT,
    artifact_hash     TEXT,
    -- OpenAI's `user` field, when the client sent one.
    user              TEXT,
    request_json      TEXT NOT NULL,
    response_json     TEXT,
    -- A program call's inputs and per-step trace: {"inputs": {...}, "steps": [...]}.
    steps_json        TEXT,
    call_ids_json     TEXT NOT NULL DEFAULT '[]',
    -- The HTTP status of the answer.
    status            INTEGER NOT NULL,
    error             TEXT,
    latency_ms        REAL NOT NULL,
    prompt_tokens     INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    score             REAL,
    feedback          TEXT
);
CREATE INDEX traces_by_time ON traces(created_at);
CREATE INDEX traces_by_program ON traces(program, created_at);
