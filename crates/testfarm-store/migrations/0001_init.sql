-- testfarm schema, version 1. Timestamps are RFC 3339 UTC text; structured values are
-- JSON text. Nothing here is SQLite-only beyond AUTOINCREMENT, which PostgreSQL spells
-- as an identity column in its own migration set.

CREATE TABLE resources (
    id              TEXT PRIMARY KEY,          -- ULID
    name            TEXT NOT NULL UNIQUE,
    kind            TEXT NOT NULL,
    labels          TEXT NOT NULL DEFAULT '{}',
    capabilities    TEXT NOT NULL DEFAULT '{}',
    board           TEXT,
    state           TEXT NOT NULL,
    health          TEXT NOT NULL,
    maintenance     TEXT,
    retired_reason  TEXT,
    agent           TEXT,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    last_seen       TEXT,
    -- Fencing: the epoch of the latest lease ever granted on this resource.
    last_epoch      INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX resources_kind_state ON resources (kind, state);

CREATE TABLE tokens (
    id              TEXT PRIMARY KEY,          -- public part of the token
    name            TEXT NOT NULL UNIQUE,
    role            TEXT NOT NULL,
    secret_sha256   BLOB NOT NULL,             -- SHA-256 of the secret part, never the secret
    created_at      TEXT NOT NULL,
    last_used_at    TEXT,
    revoked_at      TEXT
);

CREATE TABLE groups (
    name            TEXT PRIMARY KEY,
    selector        TEXT NOT NULL,
    description     TEXT NOT NULL DEFAULT '',
    created_at      TEXT NOT NULL
);

-- Append-only: rows are inserted in the same transaction as the change they record and
-- are never updated or deleted by the application.
CREATE TABLE events (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    at              TEXT NOT NULL,
    kind            TEXT NOT NULL,
    subject_type    TEXT NOT NULL,
    subject         TEXT NOT NULL,
    actor           TEXT NOT NULL,
    data            TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX events_subject ON events (subject_type, subject);

-- Leases: a resource (or a capacity share of a QEMU host) held by a job or a person.
-- Rows are kept after they end, for history and for `why`'s estimates.
CREATE TABLE leases (
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
);
CREATE INDEX leases_resource_state ON leases (resource_id, state);
CREATE INDEX leases_state_expiry ON leases (state, expires_at);
