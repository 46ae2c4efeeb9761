-- Two pages fewer in every lease commit. `events` had AUTOINCREMENT, which rewrites the
-- sqlite_sequence page on every insert; a plain INTEGER PRIMARY KEY takes max(id) + 1,
-- which grows for ever as long as the newest event is never deleted (retention keeps
-- it). `leases` had a TEXT primary key on a rowid table, so every insert also wrote the
-- key's separate unique index; WITHOUT ROWID stores the rows in the key's own b-tree.
CREATE TABLE events_new (
    id              INTEGER PRIMARY KEY,
    at              TEXT NOT NULL,
    kind            TEXT NOT NULL,
    subject_type    TEXT NOT NULL,
    subject         TEXT NOT NULL,
    actor           TEXT NOT NULL,
    data            TEXT NOT NULL DEFAULT '{}'
);
INSERT INTO events_new (id, at, kind, subject_type, subject, actor, data)
    SELECT id, at, kind, subject_type, subject, actor, data FROM events ORDER BY id;
DROP TABLE events;
ALTER TABLE events_new RENAME TO events;
CREATE INDEX events_subject ON events (subject_type, subject);
DELETE FROM sqlite_sequence WHERE name = 'events';

CREATE TABLE leases_new (
    id              TEXT PRIMARY KEY,          -- ULID
    resource_id     TEXT NOT NULL,
    holder_type     TEXT NOT NULL,             -- job | person
    holder          TEXT NOT NULL,
    epoch           INTEGER NOT NULL,
    state           TEXT NOT NULL,             -- active | released | expired
    share           TEXT NOT NULL DEFAULT '{}',
    created_at      TEXT NOT NULL,
    expires_at      TEXT NOT NULL,
    heartbeat_at    TEXT NOT NULL,
    heartbeat_ttl_ms INTEGER NOT NULL,
    ended_at        TEXT,
    end_reason      TEXT
) WITHOUT ROWID;
INSERT INTO leases_new SELECT id, resource_id, holder_type, holder, epoch, state, share,
    created_at, expires_at, heartbeat_at, heartbeat_ttl_ms, ended_at, end_reason FROM leases;
DROP TABLE leases;
ALTER TABLE leases_new RENAME TO leases;
CREATE INDEX leases_active ON leases (resource_id) WHERE state = 'active';
