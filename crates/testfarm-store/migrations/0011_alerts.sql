-- Alerts (one open row per rule and subject while its condition holds), what the lab did
-- about them (recovery attempts), and their notifications per channel (deliveries), kept
-- so a restarted server resumes what it had not delivered.

CREATE TABLE alerts (
    id              TEXT PRIMARY KEY,          -- ULID
    rule            TEXT NOT NULL,             -- core::alert::Rule
    subject         TEXT NOT NULL,
    severity        TEXT NOT NULL,             -- info | warning | critical
    state           TEXT NOT NULL,             -- open | acknowledged | resolved
    summary         TEXT NOT NULL,
    details         TEXT NOT NULL DEFAULT '{}',-- JSON
    first_seen      TEXT NOT NULL,
    last_seen       TEXT NOT NULL,
    count           INTEGER NOT NULL DEFAULT 1,
    acknowledged_at TEXT,
    acknowledged_by TEXT,
    resolved_at     TEXT,
    resolved_by     TEXT
) WITHOUT ROWID;
-- At most one open alert per (rule, subject).
CREATE UNIQUE INDEX alerts_open_key ON alerts (rule, subject) WHERE state <> 'resolved';
CREATE INDEX alerts_by_state ON alerts (state, severity);

CREATE TABLE alert_recovery (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id        TEXT NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
    at              TEXT NOT NULL,
    action          TEXT NOT NULL,
    result          TEXT NOT NULL
);
CREATE INDEX alert_recovery_by_alert ON alert_recovery (alert_id, id);

CREATE TABLE alert_deliveries (
    id              TEXT PRIMARY KEY,          -- ULID, also the webhook's delivery id
    alert_id        TEXT NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
    channel         TEXT NOT NULL,             -- webhook:NAME | email
    event           TEXT NOT NULL,             -- raised | resolved
    state           TEXT NOT NULL,             -- pending | delivered | undelivered
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    next_attempt_at TEXT,
    delivered_at    TEXT,
    created_at      TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX alert_deliveries_by_alert ON alert_deliveries (alert_id);
CREATE INDEX alert_deliveries_due ON alert_deliveries (next_attempt_at) WHERE state = 'pending';
