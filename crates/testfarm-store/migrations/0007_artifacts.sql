-- The artifact repository's metadata: builds, the artifacts each holds (their bytes are
-- content-addressed blobs outside the database, named by sha256), and build tags.
-- Build ids are ULIDs, so ordering by id orders by creation: "latest" is the highest id.

CREATE TABLE builds (
    id              TEXT PRIMARY KEY,          -- ULID
    commit_id       TEXT NOT NULL,             -- the source revision built
    branch          TEXT NOT NULL,
    arch            TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    pinned          INTEGER NOT NULL DEFAULT 0,
    source_job      TEXT,                      -- the job that built it, if any
    created_by      TEXT NOT NULL
) WITHOUT ROWID;
-- "Latest build of branch B": walk this index backwards from the branch's newest id.
CREATE INDEX builds_branch ON builds (branch, id);
CREATE INDEX builds_commit ON builds (commit_id);

CREATE TABLE artifacts (
    build_id        TEXT NOT NULL REFERENCES builds (id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    kind            TEXT NOT NULL,             -- kernel | dtb | initrd | rootfs | modules | firmware | other
    sha256          TEXT NOT NULL,             -- lowercase hex; the blob's address
    size            INTEGER NOT NULL,
    created_at      TEXT NOT NULL,
    PRIMARY KEY (build_id, name)
) WITHOUT ROWID;
-- "… that has an artifact of kind K": one probe per build walked.
CREATE INDEX artifacts_kind_build ON artifacts (kind, build_id);
-- Downloads by digest, and "is this blob still referenced".
CREATE INDEX artifacts_sha256 ON artifacts (sha256);

CREATE TABLE build_tags (
    build_id        TEXT NOT NULL REFERENCES builds (id) ON DELETE CASCADE,
    tag             TEXT NOT NULL,
    PRIMARY KEY (build_id, tag)
) WITHOUT ROWID;
CREATE INDEX build_tags_tag ON build_tags (tag, build_id);
