//! testfarm-store: persistence. The schema lives in `migrations/`; every query lives in
//! this crate, one module per table. Each change to lab state is one transaction that
//! also appends its [`events`] row, so the event log never disagrees with the state.
//!
//! SQLite is the embedded default (one file, WAL mode). Nothing SQLite-specific leaks
//! out of this crate: callers see typed functions and [`StoreError`], so a PostgreSQL
//! backend can be added beside `sqlite` without touching the domain or the server.

pub mod agents;
pub mod events;
pub mod groups;
pub mod jobs;
pub mod leases;
pub mod policies;
pub mod resources;
pub mod results;
mod sqlite;
pub mod tokens;

use std::path::Path;

use sqlx::SqlitePool;
use tokio::sync::watch;

pub use events::{NewEvent, Tx};

/// Failures of the store. Conflicts and absences are distinct so the API can answer
/// 409 and 404 without parsing messages.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{what} {name:?} already exists")]
    Duplicate { what: &'static str, name: String },
    #[error("{what} {name:?} not found")]
    NotFound { what: &'static str, name: String },
    #[error("stored {what} is corrupt: {detail}")]
    Corrupt { what: &'static str, detail: String },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The handle every part of the server shares. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
    /// The id of the newest committed event; SSE streams wait on it.
    latest_event: watch::Sender<i64>,
    /// SQLite has one writer at a time. Writers queue here, in order, instead of meeting
    /// in SQLite's busy handler, which sleeps 1, 2, 5 … 100 ms between retries: with
    /// several connections that turned a sub-millisecond write into tens of milliseconds
    /// and, under load, "database is locked" errors. Readers never take it (WAL).
    write_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl Store {
    /// Opens (creating and migrating if needed) the SQLite database at `path`.
    pub async fn open(path: &Path) -> Result<Store> {
        let pool = sqlite::connect(path).await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        let latest = events::latest_id(&pool).await?;
        let (latest_event, _) = watch::channel(latest);
        Ok(Store {
            pool,
            latest_event,
            write_lock: std::sync::Arc::default(),
        })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Subscribes to "a new event was committed" notifications.
    pub fn subscribe_events(&self) -> watch::Receiver<i64> {
        self.latest_event.subscribe()
    }

    /// Called after a transaction that appended events has committed.
    pub(crate) fn notify_committed(&self, id: i64) {
        self.latest_event.send_if_modified(|cur| {
            if id > *cur {
                *cur = id;
                true
            } else {
                false
            }
        });
    }

    /// Cheap liveness check of the database for `/readyz`.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Closes the pool, waiting for connections to be returned, and checkpoints the WAL.
    pub async fn close(&self) {
        let _ = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.pool)
            .await;
        self.pool.close().await;
    }
}

pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> String {
    // Serialising our own plain data types to JSON cannot fail (no maps with non-string
    // keys, no custom serialisers that error); fall back to null rather than panic.
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_string())
}

pub(crate) fn from_json<T: serde::de::DeserializeOwned>(
    what: &'static str,
    text: &str,
) -> Result<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt {
        what,
        detail: e.to_string(),
    })
}

pub(crate) fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}
