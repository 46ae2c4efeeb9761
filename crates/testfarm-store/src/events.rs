//! The append-only event log. [`append`] takes a transaction so an event is written with
//! the change it records, or not at all.

use chrono::{DateTime, Utc};
use sqlx::{Row, Sqlite, SqlitePool, Transaction};
use testfarm_api::Event;

use crate::{Result, Store, from_json, to_json};

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

/// Appends an event inside the caller's transaction and returns its id.
pub async fn append(
    tx: &mut Transaction<'_, Sqlite>,
    at: DateTime<Utc>,
    event: &NewEvent,
) -> Result<i64> {
    let row = sqlx::query(
        "INSERT INTO events (at, kind, subject_type, subject, actor, data) VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(at)
    .bind(&event.kind)
    .bind(event.subject_type)
    .bind(&event.subject)
    .bind(&event.actor)
    .bind(to_json(&event.data))
    .fetch_one(&mut **tx)
    .await?;
    Ok(row.try_get(0)?)
}

pub(crate) async fn latest_id(pool: &SqlitePool) -> Result<i64> {
    let row = sqlx::query("SELECT COALESCE(MAX(id), 0) FROM events")
        .fetch_one(pool)
        .await?;
    Ok(row.try_get(0)?)
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
        let rows = sqlx::query(
            "SELECT id, at, kind, subject_type, subject, actor, data FROM events
             WHERE id > ? AND (? IS NULL OR subject_type = ?) AND (? IS NULL OR subject = ?)
             ORDER BY id LIMIT ?",
        )
        .bind(filter.after)
        .bind(&filter.subject_type)
        .bind(&filter.subject_type)
        .bind(&filter.subject)
        .bind(&filter.subject)
        .bind(i64::from(filter.limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let data: String = r.try_get("data")?;
                Ok(Event {
                    id: r.try_get("id")?,
                    at: r.try_get("at")?,
                    kind: r.try_get("kind")?,
                    subject_type: r.try_get("subject_type")?,
                    subject: r.try_get("subject")?,
                    actor: r.try_get("actor")?,
                    data: from_json("event data", &data)?,
                })
            })
            .collect()
    }

    /// Starts the one transaction a state change is written in.
    pub async fn begin(&self) -> Result<Tx> {
        let guard = self.write_lock.clone().lock_owned().await;
        Ok(Tx {
            _writer: guard,
            // IMMEDIATE takes the write lock up front: a deferred transaction that reads
            // and then writes fails at once (SQLITE_BUSY_SNAPSHOT) when another writer
            // committed in between, whatever the busy timeout.
            inner: self.pool.begin_with("BEGIN IMMEDIATE").await?,
            events: Vec::new(),
            store: self.clone(),
        })
    }
}

/// A transaction that collects the events of the change it writes. [`Tx::commit`]
/// appends them in the same transaction, commits, and wakes event subscribers;
/// dropping a `Tx` rolls everything back, events included.
pub struct Tx {
    /// Held until the transaction commits or is dropped (see `Store::write_lock`).
    _writer: tokio::sync::OwnedMutexGuard<()>,
    pub(crate) inner: Transaction<'static, Sqlite>,
    events: Vec<NewEvent>,
    store: Store,
}

impl Tx {
    /// Records an event to be appended at commit.
    pub fn record(&mut self, event: NewEvent) {
        self.events.push(event);
    }

    /// The underlying connection, for queries of this crate's modules.
    pub(crate) fn conn(&mut self) -> &mut sqlx::SqliteConnection {
        &mut self.inner
    }

    pub async fn commit(mut self) -> Result<()> {
        let now = Utc::now();
        let mut last = 0;
        for e in std::mem::take(&mut self.events) {
            last = append(&mut self.inner, now, &e).await?;
        }
        self.inner.commit().await?;
        if last > 0 {
            self.store.notify_committed(last);
        }
        Ok(())
    }
}
