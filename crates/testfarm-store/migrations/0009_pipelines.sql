-- Pipelines and their stages. A stage's job is an ordinary job (jobs table); the stage
-- row links it to its pipeline, so a job's end can find the pipeline to advance.

CREATE TABLE pipelines (
    id              TEXT PRIMARY KEY,          -- ULID
    name            TEXT NOT NULL,
    spec            TEXT NOT NULL,             -- the parsed spec, JSON
    vars            TEXT NOT NULL,             -- after --var, JSON
    overrides       TEXT NOT NULL,             -- names given with --var, JSON list
    priority        INTEGER,                   -- given at submit, else each job's own
    state           TEXT NOT NULL,             -- running | passed | failed | error | cancelled
    submitter       TEXT NOT NULL,
    submitter_role  TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    ended_at        TEXT,
    failed_stage    TEXT,
    reason          TEXT,
    cancel_requested TEXT                      -- set by a cancel while stages still run
) WITHOUT ROWID;
CREATE INDEX pipelines_name ON pipelines (name, id);
CREATE INDEX pipelines_running ON pipelines (state) WHERE state = 'running';

CREATE TABLE pipeline_stages (
    pipeline_id     TEXT NOT NULL REFERENCES pipelines (id) ON DELETE CASCADE,
    position        INTEGER NOT NULL,
    name            TEXT NOT NULL,
    needs           TEXT NOT NULL,             -- JSON list of stage names
    state           TEXT NOT NULL,             -- waiting | queued | running | passed | failed | error | timed_out | cancelled | skipped
    job_id          TEXT,
    started_at      TEXT,
    ended_at        TEXT,
    reason          TEXT,
    PRIMARY KEY (pipeline_id, name)
) WITHOUT ROWID;
CREATE INDEX pipeline_stages_job ON pipeline_stages (job_id) WHERE job_id IS NOT NULL;

-- A stage's template reads the builds its needed stages' jobs made.
CREATE INDEX IF NOT EXISTS builds_source_job ON builds (source_job) WHERE source_job IS NOT NULL;
