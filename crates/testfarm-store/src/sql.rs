//! How values are stored: timestamps as RFC 3339 UTC text, ids (ULIDs) as text,
//! structured values as JSON text. One place, so every table spells them the same way and text comparisons in SQL
//! (`ORDER BY ended_at`, `last_used_at < ?`) order them in time.

use chrono::{DateTime, Utc};
use rusqlite::Row;
use rusqlite::types::ValueRef;
use ulid::Ulid;

use crate::{Result, StoreError};

/// A timestamp as stored: `2026-11-23T15:04:05.123456789+00:00` (sub-second digits in
/// groups of 3, as databases written by earlier versions have them).
pub(crate) fn ts(at: DateTime<Utc>) -> String {
    testfarm_core::timestamp::rfc3339(&at, false)
}

pub(crate) fn ts_opt(at: Option<DateTime<Utc>>) -> Option<String> {
    at.map(ts)
}

fn parse_ts(what: &'static str, text: &str) -> Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    // SQLite's own `datetime()` spelling, for rows an operator wrote by hand.
    chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
        .map(|n| n.and_utc())
        .map_err(|e| StoreError::Corrupt {
            what,
            detail: format!("timestamp {text:?}: {e}"),
        })
}

/// The text of a column, borrowed from the row (no copy; one lookup of the name).
fn text<'r>(row: &'r Row<'_>, col: &str) -> Result<&'r str> {
    as_text(row.get_ref(col)?, col)
}

fn as_text<'r>(v: ValueRef<'r>, col: &str) -> Result<&'r str> {
    v.as_str().map_err(|e| StoreError::Corrupt {
        what: "row",
        detail: format!("{col}: {e}"),
    })
}

/// Reads a NOT NULL timestamp column.
pub(crate) fn get_ts(row: &Row<'_>, col: &str) -> Result<DateTime<Utc>> {
    parse_ts("timestamp", text(row, col)?)
}

/// Reads a nullable timestamp column.
pub(crate) fn get_ts_opt(row: &Row<'_>, col: &str) -> Result<Option<DateTime<Utc>>> {
    match row.get_ref(col)? {
        ValueRef::Null => Ok(None),
        v => parse_ts("timestamp", as_text(v, col)?).map(Some),
    }
}

pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> String {
    // Serialising our own plain data types to JSON cannot fail (no maps with non-string
    // keys, no custom serialisers that error); fall back to null rather than panic.
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_string())
}

/// Reads a JSON text column into `T`.
pub(crate) fn get_json<T: serde::de::DeserializeOwned>(
    row: &Row<'_>,
    what: &'static str,
    col: &str,
) -> Result<T> {
    match row.get_ref(col)? {
        ValueRef::Text(t) => serde_json::from_slice(t).map_err(|e| StoreError::Corrupt {
            what,
            detail: e.to_string(),
        }),
        _ => Err(StoreError::Corrupt {
            what,
            detail: format!("column {col} is not JSON text"),
        }),
    }
}

/// Reads a nullable JSON text column.
pub(crate) fn get_json_opt<T: serde::de::DeserializeOwned>(
    row: &Row<'_>,
    what: &'static str,
    col: &str,
) -> Result<Option<T>> {
    match row.get_ref(col)? {
        ValueRef::Null => Ok(None),
        _ => get_json(row, what, col).map(Some),
    }
}

/// Maps a write that failed on a UNIQUE or PRIMARY KEY constraint to
/// [`StoreError::Duplicate`] naming what already exists.
pub(crate) fn unique(res: Result<usize>, what: &'static str, name: &str) -> Result<()> {
    match res {
        Ok(_) => Ok(()),
        Err(StoreError::Database(rusqlite::Error::SqliteFailure(e, _)))
            if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
        {
            Err(StoreError::Duplicate {
                what,
                name: name.to_string(),
            })
        }
        Err(e) => Err(e),
    }
}

/// A count or size column as the unsigned type the domain uses; negative is corrupt.
pub(crate) fn get_u64(row: &Row<'_>, what: &'static str, col: &str) -> Result<u64> {
    let v: i64 = row.get(col)?;
    u64::try_from(v).map_err(|e| StoreError::Corrupt {
        what,
        detail: format!("{col}: {e}"),
    })
}

/// A ULID stored as text in `col`; anything else is a corrupt `what`.
pub(crate) fn get_ulid(row: &Row<'_>, what: &'static str, col: &str) -> Result<Ulid> {
    Ulid::from_string(text(row, col)?).map_err(|e| StoreError::Corrupt {
        what,
        detail: format!("{col}: {e}"),
    })
}

/// A domain count as an SQLite integer (saturating: SQLite has no unsigned 64-bit).
pub(crate) fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Runs a cached query and maps every row with `f` (which may fail as corrupt data).
pub(crate) fn query_all<T>(
    conn: &rusqlite::Connection,
    sql: &str,
    args: impl rusqlite::Params,
    f: impl Fn(&Row<'_>) -> Result<T>,
) -> Result<Vec<T>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(args)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(f(r)?);
    }
    Ok(out)
}

/// Runs a cached query expected to return at most one row, mapped with `f`.
pub(crate) fn query_opt<T>(
    conn: &rusqlite::Connection,
    sql: &str,
    args: impl rusqlite::Params,
    f: impl FnOnce(&Row<'_>) -> Result<T>,
) -> Result<Option<T>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(args)?;
    match rows.next()? {
        Some(r) => f(r).map(Some),
        None => Ok(None),
    }
}

/// Runs a cached statement; returns the number of rows it changed.
pub(crate) fn exec(
    conn: &rusqlite::Connection,
    sql: &str,
    args: impl rusqlite::Params,
) -> Result<usize> {
    Ok(conn.prepare_cached(sql)?.execute(args)?)
}
