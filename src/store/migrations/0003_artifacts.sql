-- 0003: program artifacts by content hash, and the history of promoted names (for rollback).

CREATE TABLE artifacts (
    hash       TEXT PRIMARY KEY,
    task       TEXT NOT NULL,
    json       TEXT NOT NULL,
    parent     TEXT,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

-- Every promotion is kept; a name points at its latest row. Rollback adds a row that points
-- at the artifact promoted before the current one.
CREATE TABLE promotions (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    hash        TEXT NOT NULL REFERENCES artifacts(hash),
    promoted_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX promotions_by_name ON promotions(name, id);
