-- Jobs, their steps and logs, agents and their measurements, scheduling policies.

CREATE TABLE jobs (
    id              TEXT PRIMARY KEY,          -- ULID
    name            TEXT NOT NULL,
    spec            TEXT NOT NULL,             -- JSON of the parsed JobSpec
    vars            TEXT NOT NULL DEFAULT '{}',
    priority        INTEGER NOT NULL,
    state           TEXT NOT NULL,
    submitter       TEXT NOT NULL,
    submitter_role  TEXT NOT NULL,
    resource_id     TEXT,
    resource_name   TEXT,
    lease_id        TEXT,
    attempt         INTEGER NOT NULL DEFAULT 1,
    reason          TEXT,                      -- why it ended (or why it was requeued)
    created_at      TEXT NOT NULL,
    queued_at       TEXT NOT NULL,
    assigned_at     TEXT,
    started_at      TEXT,
    ended_at        TEXT,
    last_report_at  TEXT,
    log_bytes       INTEGER NOT NULL DEFAULT 0,
    log_chunks      INTEGER NOT NULL DEFAULT 0,
    cancel_requested TEXT                      -- reason, while a running job is being cancelled
);
CREATE INDEX jobs_state ON jobs (state);
CREATE INDEX jobs_name_ended ON jobs (name, ended_at);

CREATE TABLE job_steps (
    job_id          TEXT NOT NULL,
    idx             INTEGER NOT NULL,
    kind            TEXT NOT NULL,
    always          INTEGER NOT NULL DEFAULT 0,
    outcome         TEXT NOT NULL,
    exit_code       INTEGER,
    duration_ms     INTEGER NOT NULL,
    reason          TEXT,
    PRIMARY KEY (job_id, idx)
);

-- The index of a job's log file: chunk `seq` is bytes [offset, offset+len) of the file.
CREATE TABLE log_chunks (
    job_id          TEXT NOT NULL,
    seq             INTEGER NOT NULL,
    offset          INTEGER NOT NULL,
    len             INTEGER NOT NULL,
    PRIMARY KEY (job_id, seq)
);

CREATE TABLE job_outputs (
    job_id          TEXT NOT NULL,
    name            TEXT NOT NULL,
    size            INTEGER NOT NULL,
    sha256          TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    PRIMARY KEY (job_id, name)
);

CREATE TABLE agents (
    name            TEXT PRIMARY KEY,          -- the agent token's name
    hostname        TEXT NOT NULL,
    version         TEXT NOT NULL,
    registered_at   TEXT NOT NULL,
    last_seen       TEXT NOT NULL
);

-- Last reported load per resource, and a short history (trimmed by the server).
CREATE TABLE resource_metrics (
    resource_id     TEXT NOT NULL,
    at              TEXT NOT NULL,
    metrics         TEXT NOT NULL,
    PRIMARY KEY (resource_id, at)
);

CREATE TABLE policies (
    name            TEXT PRIMARY KEY,
    priority        INTEGER NOT NULL DEFAULT 0,
    rule            TEXT NOT NULL,             -- JSON of testfarm_core::policy::PolicyRule
    created_at      TEXT NOT NULL
);
