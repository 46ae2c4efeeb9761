-- Boards managed by agents: what each board is doing and holds (board_status), the
-- requests queued for its agent (board_actions), and its power/flash/deploy/health
-- history (board_history). A board is still a row of `resources`; these hang off it.

CREATE TABLE board_status (
    resource_id     TEXT PRIMARY KEY REFERENCES resources (id) ON DELETE CASCADE,
    status          TEXT NOT NULL,             -- JSON: testfarm_store::boards::BoardStatus
    updated_at      TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE board_actions (
    id              TEXT PRIMARY KEY,          -- ULID
    resource_id     TEXT NOT NULL REFERENCES resources (id) ON DELETE CASCADE,
    board           TEXT NOT NULL,
    agent           TEXT NOT NULL,             -- the agent that must answer it
    action          TEXT NOT NULL,             -- power_on | power_off | … | console
    state           TEXT NOT NULL,             -- pending | sent | done | failed
    requested_by    TEXT NOT NULL,
    reason          TEXT,
    lease_id        TEXT,
    session         TEXT,
    created_at      TEXT NOT NULL,
    sent_at         TEXT,
    finished_at     TEXT,
    result          TEXT                       -- JSON BoardActionResult, once finished
) WITHOUT ROWID;
CREATE INDEX board_actions_open ON board_actions (agent, state) WHERE state IN ('pending', 'sent');

CREATE TABLE board_history (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    resource_id     TEXT NOT NULL REFERENCES resources (id) ON DELETE CASCADE,
    at              TEXT NOT NULL,
    kind            TEXT NOT NULL,             -- power | flash | deploy | recovery | health | quarantine
    action          TEXT NOT NULL,
    actor           TEXT NOT NULL,
    ok              INTEGER NOT NULL,
    job_id          TEXT,
    build_id        TEXT,
    detail          TEXT NOT NULL DEFAULT ''
);
CREATE INDEX board_history_by_board ON board_history (resource_id, kind, id);

-- The resource a job's last attempt ended with a lab error on: its retry prefers another
-- resource that matches (`core::placement`), so a broken board does not eat every retry.
ALTER TABLE jobs ADD COLUMN avoid_resource TEXT;
