-- Build runs: what each build step did (seed 004 R3): where it ran, how it ended, how
-- long it took, its peak CPU and memory, what it built from and what it kept. One row per
-- build step of each attempt of a job; the history per build server is computed from
-- these (count, average duration, success rate).

CREATE TABLE build_runs (
    job_id            TEXT NOT NULL,
    attempt           INTEGER NOT NULL,
    step_idx          INTEGER NOT NULL,
    server            TEXT NOT NULL,             -- the build server (resource name)
    outcome           TEXT NOT NULL,             -- passed | failed | error | timed_out | cancelled
    duration_ms       INTEGER NOT NULL,
    peak_cpu_pct      REAL,                      -- percent of one cpu
    peak_memory_bytes INTEGER,
    source            TEXT NOT NULL,
    git_ref           TEXT,
    commit_id         TEXT,
    branch            TEXT,
    arch              TEXT,
    config            TEXT,
    toolchain         TEXT,
    build_id          TEXT,                      -- the artifact repository's build, if any
    artifacts         TEXT NOT NULL DEFAULT '[]', -- JSON: [{name, kind, size, sha256}]
    ended_at          TEXT NOT NULL,
    PRIMARY KEY (job_id, attempt, step_idx)
) WITHOUT ROWID;
-- History of one server, newest first.
CREATE INDEX build_runs_server ON build_runs (server, ended_at);
CREATE INDEX build_runs_ended ON build_runs (ended_at);
