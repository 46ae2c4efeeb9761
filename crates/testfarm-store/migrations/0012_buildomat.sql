-- buildomat factory instances: one buildomat worker served by one board under one testfarm
-- job's lease. Kept after they are destroyed, as history. States move forward only:
-- created → running → destroying → destroyed.

CREATE TABLE buildomat_instances (
    id              TEXT PRIMARY KEY,          -- ULID; the worker's `private` on buildomat
    state           TEXT NOT NULL,             -- created | running | destroying | destroyed
    bmat_job        TEXT NOT NULL,             -- buildomat job id (the lease we took)
    bmat_worker     TEXT NOT NULL UNIQUE,      -- buildomat worker id
    target          TEXT NOT NULL,             -- buildomat target id
    board           TEXT NOT NULL,             -- the board's resource id
    job_id          TEXT,                      -- the testfarm job holding the board
    lease_id        TEXT,                      -- its lease, once placed
    hold            INTEGER NOT NULL DEFAULT 0,
    destroy_reason  TEXT,
    created_at      TEXT NOT NULL,
    last_progress   TEXT NOT NULL,
    destroyed_at    TEXT
) WITHOUT ROWID;
CREATE INDEX buildomat_instances_live ON buildomat_instances (state) WHERE state <> 'destroyed';
