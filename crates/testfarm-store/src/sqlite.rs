//! The SQLite backend's connections and migrations.
//!
//! Connections: WAL so readers never wait for the writer; `synchronous = NORMAL`, which
//! in WAL mode is durable across a process crash (`kill -9`), and loses at most the last
//! transactions on power loss, never consistency; a busy timeout for another process
//! (the `sqlite3` shell) holding the lock; foreign keys on; a statement cache large
//! enough for every query of this crate.
//!
//! Migrations: the files in `migrations/`, applied in order, each in its own transaction,
//! with the schema version kept in `PRAGMA user_version`. Hand-written (30 lines) rather
//! than `rusqlite_migration`, whose releases pin an older rusqlite, and because databases
//! created by testfarm before 0.2 recorded their migrations in sqlx's
//! `_sqlx_migrations` table, which this adopts.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::{Result, StoreError};

/// The schema, in order. Version N is `MIGRATIONS[N - 1]`.
const MIGRATIONS: &[(&str, &str)] = &[
    ("0001_init", include_str!("../migrations/0001_init.sql")),
    ("0002_jobs", include_str!("../migrations/0002_jobs.sql")),
    (
        "0003_results",
        include_str!("../migrations/0003_results.sql"),
    ),
    (
        "0004_last_lease_end",
        include_str!("../migrations/0004_last_lease_end.sql"),
    ),
    (
        "0005_lean_lease_indexes",
        include_str!("../migrations/0005_lean_lease_indexes.sql"),
    ),
    (
        "0006_lean_history_tables",
        include_str!("../migrations/0006_lean_history_tables.sql"),
    ),
    (
        "0007_artifacts",
        include_str!("../migrations/0007_artifacts.sql"),
    ),
    (
        "0008_build_runs",
        include_str!("../migrations/0008_build_runs.sql"),
    ),
    (
        "0009_pipelines",
        include_str!("../migrations/0009_pipelines.sql"),
    ),
    ("0010_boards", include_str!("../migrations/0010_boards.sql")),
    ("0011_alerts", include_str!("../migrations/0011_alerts.sql")),
    (
        "0012_buildomat",
        include_str!("../migrations/0012_buildomat.sql"),
    ),
];

pub(crate) fn open(path: &Path) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI,
    )?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.set_prepared_statement_cache_capacity(128);
    // Checkpoints run on their own connection and thread (see `writer`), not inside
    // whichever commit crosses the threshold, where their fsync stalled every writer.
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    // When the WAL starts over, its file is cut back to this (it otherwise keeps the
    // size of its longest run).
    conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
    Ok(conn)
}

/// Brings the schema up to date. Refuses a database newer than this binary.
pub(crate) fn migrate(conn: &mut Connection) -> Result<()> {
    adopt_sqlx_history(conn)?;
    let current: u32 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let known = u32::try_from(MIGRATIONS.len()).unwrap_or(u32::MAX);
    if current > known {
        return Err(StoreError::Migrate {
            version: current,
            detail: format!(
                "the database is at schema version {current}, newer than this testfarm knows ({known}); \
                 run the newer testfarm or restore a backup"
            ),
        });
    }
    for (version, (name, sql)) in (1..).zip(MIGRATIONS).skip(current as usize) {
        let failed = |e: rusqlite::Error| StoreError::Migrate {
            version,
            detail: format!("{name}: {e}"),
        };
        let tx = conn.transaction().map_err(failed)?;
        tx.execute_batch(sql).map_err(failed)?;
        tx.pragma_update(None, "user_version", version)
            .map_err(failed)?;
        tx.commit().map_err(failed)?;
        tracing::info!(version, name, "database migrated");
    }
    Ok(())
}

/// A database written by an earlier testfarm (sqlx) has `user_version` 0 and its applied
/// migrations in `_sqlx_migrations`; take the version from there.
fn adopt_sqlx_history(conn: &Connection) -> Result<()> {
    let current: u32 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let has_sqlx: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations')",
        [],
        |r| r.get(0),
    )?;
    if current != 0 || !has_sqlx {
        return Ok(());
    }
    let applied: u32 = conn.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations WHERE success",
        [],
        |r| r.get(0),
    )?;
    conn.pragma_update(None, "user_version", applied)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_a_new_database_to_the_latest_version_once() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Corrupt {
            what: "test",
            detail: e.to_string(),
        })?;
        let path = dir.path().join("t.db");
        let mut c = open(&path)?;
        migrate(&mut c)?;
        migrate(&mut c)?; // idempotent
        let v: u32 = c.pragma_query_value(None, "user_version", |r| r.get(0))?;
        assert_eq!(v as usize, MIGRATIONS.len());
        let mode: String = c.pragma_query_value(None, "journal_mode", |r| r.get(0))?;
        assert_eq!(mode, "wal");
        Ok(())
    }

    #[test]
    fn adopts_a_database_migrated_by_sqlx() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Corrupt {
            what: "test",
            detail: e.to_string(),
        })?;
        let path = dir.path().join("old.db");
        let mut c = open(&path)?;
        // What the previous release left: tables of migrations 1..=3 and sqlx's history.
        for (_, sql) in &MIGRATIONS[..3] {
            c.execute_batch(sql)?;
        }
        c.execute_batch(
            "CREATE TABLE _sqlx_migrations (version BIGINT PRIMARY KEY, description TEXT NOT NULL,
               installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, success BOOLEAN NOT NULL,
               checksum BLOB NOT NULL, execution_time BIGINT NOT NULL);
             INSERT INTO _sqlx_migrations VALUES (1, 'init', '', 1, x'', 0), (2, 'jobs', '', 1, x'', 0),
               (3, 'results', '', 1, x'', 0);",
        )?;
        migrate(&mut c)?;
        let v: u32 = c.pragma_query_value(None, "user_version", |r| r.get(0))?;
        assert_eq!(v as usize, MIGRATIONS.len());
        Ok(())
    }

    #[test]
    fn history_tables_keep_their_rows_and_event_ids_go_on() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Corrupt {
            what: "test",
            detail: e.to_string(),
        })?;
        let mut c = open(&dir.path().join("v5.db"))?;
        // A database at version 5, with history in both tables.
        for (_, sql) in &MIGRATIONS[..5] {
            c.execute_batch(sql)?;
        }
        c.pragma_update(None, "user_version", 5)?;
        c.execute_batch(
            "INSERT INTO events (at, kind, subject_type, subject, actor) VALUES
               ('2026-01-01T00:00:00Z', 'a', 'lease', 'l1', 'x'),
               ('2026-01-01T00:00:01Z', 'b', 'lease', 'l2', 'x');
             DELETE FROM events WHERE id = 1;
             INSERT INTO leases (id, resource_id, holder_type, holder, epoch, state, created_at,
                                 expires_at, heartbeat_at, heartbeat_ttl_ms)
               VALUES ('01A', 'r1', 'person', 'ann', 3, 'active', 't', 't', 't', 1000),
                      ('01B', 'r1', 'person', 'bob', 2, 'released', 't', 't', 't', 1000);",
        )?;
        migrate(&mut c)?;
        let kinds: Vec<(i64, String)> = c
            .prepare("SELECT id, kind FROM events ORDER BY id")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        assert_eq!(kinds, vec![(2, "b".to_string())]);
        c.execute(
            "INSERT INTO events (at, kind, subject_type, subject, actor) VALUES ('t', 'c', 'lease', 'l3', 'x')",
            [],
        )?;
        assert_eq!(c.last_insert_rowid(), 3, "ids go on from the newest");
        let active: String = c.query_row(
            "SELECT holder FROM leases WHERE resource_id = 'r1' AND state = 'active'",
            [],
            |r| r.get(0),
        )?;
        assert_eq!(active, "ann");
        let n: i64 = c.query_row("SELECT COUNT(*) FROM leases", [], |r| r.get(0))?;
        assert_eq!(n, 2);
        // The plan for an active lease by resource still uses the partial index.
        let plan: String = c.query_row(
            "EXPLAIN QUERY PLAN SELECT id FROM leases WHERE resource_id = 'r1' AND state = 'active'",
            [],
            |r| r.get(3),
        )?;
        assert!(plan.contains("leases_active"), "{plan}");
        Ok(())
    }

    #[test]
    fn refuses_a_database_from_a_newer_testfarm() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Corrupt {
            what: "test",
            detail: e.to_string(),
        })?;
        let mut c = open(&dir.path().join("new.db"))?;
        c.pragma_update(None, "user_version", 99)?;
        let err = migrate(&mut c)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("newer than this testfarm"), "{err}");
        Ok(())
    }
}
