//! The append-only event log. Events are appended by [`crate::Tx::commit`], in the
//! transaction of the change they record, so they are written with it or not at all.
//! Retention prunes it from its oldest end ([`crate::Tx::prune_events`]).

use chrono::{DateTime, Utc};
use rusqlite::{Connection, params};
use testfarm_api::Event;

use crate::sql::{get_json, get_ts, query_all, to_json, ts};
use crate::{Result, Store};

/// An event about to be recorded.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub kind: String,
    pub subject_type: &'static str,
    pub subject: String,
    pub actor: String,
    pub data: serde_json::Value,
}

impl NewEvent {
    pub fn new(
        kind: impl Into<String>,
        subject_type: &'static str,
        subject: impl Into<String>,
        actor: impl Into<String>,
    ) -> Self {
        NewEvent {
            kind: kind.into(),
            subject_type,
            subject: subject.into(),
            actor: actor.into(),
            data: serde_json::Value::Object(Default::default()),
        }
    }

    pub fn with_data(mut self, data: serde_json::Value) -> Self {
        self.data = data;
        self
    }
}

/// Appends an event on `conn` (inside its open transaction) and returns its id.
pub(crate) fn append(conn: &Connection, at: &str, event: &NewEvent) -> Result<i64> {
    conn.prepare_cached(
        "INSERT INTO events (at, kind, subject_type, subject, actor, data) VALUES (?, ?, ?, ?, ?, ?)",
    )?
    .execute(params![
        at,
        event.kind,
        event.subject_type,
        event.subject,
        event.actor,
        to_json(&event.data)
    ])?;
    Ok(conn.last_insert_rowid())
}

impl crate::Tx {
    /// Deletes up to `limit` of the oldest events recorded before `before`, never the
    /// newest event (ids continue from it, so live streams resume without gaps). Looks at
    /// the `limit` oldest rows only: events are appended in time order, so nothing older
    /// hides behind them. Returns how many went.
    pub async fn prune_events(&mut self, before: DateTime<Utc>, limit: usize) -> Result<usize> {
        let n = self
            .conn()
            .prepare_cached(
                "DELETE FROM events WHERE id IN (
                     SELECT id FROM events WHERE id < (SELECT MAX(id) FROM events)
                     ORDER BY id LIMIT ?2)
                 AND julianday(at) < julianday(?1)",
            )?
            .execute(params![
                ts(before),
                i64::try_from(limit).unwrap_or(i64::MAX)
            ])?;
        Ok(n)
    }
}

pub(crate) fn latest_id(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row("SELECT COALESCE(MAX(id), 0) FROM events", [], |r| r.get(0))?)
}

/// Filters for [`Store::list_events`].
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub after: i64,
    pub subject_type: Option<String>,
    pub subject: Option<String>,
    pub limit: u32,
}

impl Store {
    /// Events with id > `after`, oldest first.
    pub async fn list_events(&self, filter: &EventFilter) -> Result<Vec<Event>> {
        self.read(|c| {
            query_all(
                c,
                "SELECT id, at, kind, subject_type, subject, actor, data FROM events
                 WHERE id > ?1 AND (?2 IS NULL OR subject_type = ?2) AND (?3 IS NULL OR subject = ?3)
                 ORDER BY id LIMIT ?4",
                params![
                    filter.after,
                    filter.subject_type,
                    filter.subject,
                    i64::from(filter.limit)
                ],
                |r| {
                    Ok(Event {
                        id: r.get("id")?,
                        at: get_ts(r, "at")?,
                        kind: r.get("kind")?,
                        subject_type: r.get("subject_type")?,
                        subject: r.get("subject")?,
                        actor: r.get("actor")?,
                        data: get_json(r, "event data", "data")?,
                    })
                },
            )
        })
    }

    /// The newest event's id (0 when there is none): where a live view that has just
    /// rendered the current state starts its stream.
    pub async fn last_event_id(&self) -> Result<i64> {
        self.read(|c| {
            Ok(
                crate::sql::query_opt(c, "SELECT MAX(id) AS id FROM events", [], |r| {
                    Ok(r.get::<_, Option<i64>>("id")?)
                })?
                .flatten()
                .unwrap_or(0),
            )
        })
    }
}
