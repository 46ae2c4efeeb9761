//! testfarm-store: persistence. The schema lives in `migrations/`; every query lives in
//! this crate, one module per table. Each change to lab state is one transaction that
//! also appends its [`events`] row, so the event log never disagrees with the state.
//!
//! SQLite is the embedded default (one file, WAL mode), driven through `rusqlite`.
//! Nothing SQLite-specific leaks out of this crate: callers see typed functions and
//! [`StoreError`], so a PostgreSQL backend can be added beside `sqlite` without touching
//! the domain or the server.
//!
//! Why statements run inline on the caller's task, not on a database thread: a point
//! read or write on SQLite takes a few microseconds, less than handing work to another
//! thread and waking back up (that hand-off was ~75 µs per statement with the previous
//! channel-based driver, and it dominated both the scheduler's writes and the lease
//! round trip). Writers queue on an async mutex and share commits ([`writer`]); readers
//! take one of a few idle connections (WAL: readers never wait for the writer).

pub mod agents;
pub mod alerts;
pub mod artifacts;
pub mod boards;
pub mod build_runs;
pub mod buildomat;
pub mod dashboard;
pub mod events;
pub mod groups;
pub mod jobs;
pub mod leases;
pub mod pipelines;
pub mod policies;
pub mod resources;
pub mod results;
mod sql;
mod sqlite;
pub mod tokens;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::Connection;
use tokio::sync::watch;

pub use events::NewEvent;
pub use writer::Tx;

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
    Database(#[from] rusqlite::Error),
    #[error("commit failed: {0}")]
    Commit(String),
    #[error("database migration {version} failed: {detail}")]
    Migrate { version: u32, detail: String },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Counters of the writer, for `/metrics` and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteStats {
    pub commits: u64,
    pub transactions: u64,
}

/// How many idle read connections are kept open.
const IDLE_READERS: usize = 8;

/// The handle every part of the server shares. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// SQLite has one writer at a time; see [`writer`].
    writer: Arc<tokio::sync::Mutex<writer::Writer>>,
    /// Tasks waiting for the writer (a committer with company defers to the group).
    queued: AtomicUsize,
    /// Wakes the flusher when a group is waiting for its commit.
    flush: Arc<tokio::sync::Notify>,
    /// Wakes the checkpointer early, after many commits.
    checkpoint: Arc<tokio::sync::Notify>,
    /// Commits so far (when to checkpoint), and the transactions they carried.
    commits: AtomicUsize,
    transactions: AtomicUsize,
    /// Idle read connections; a reader takes one, or opens one when none is idle.
    readers: Mutex<Vec<Connection>>,
    /// The id of the newest committed event; SSE streams wait on it.
    latest_event: watch::Sender<i64>,
    /// What lease selectors match against, kept while the resource set is unchanged.
    selectable: resources::SelectableCache,
}

impl Inner {
    /// Called after a transaction that appended events has committed.
    fn notify_committed(&self, id: i64) {
        self.latest_event.send_if_modified(|cur| {
            if id > *cur {
                *cur = id;
                true
            } else {
                false
            }
        });
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Lets the flusher see the store is gone and end.
        self.flush.notify_one();
    }
}

impl Store {
    /// Opens (creating and migrating if needed) the SQLite database at `path`.
    pub async fn open(path: &Path) -> Result<Store> {
        let mut writer = sqlite::open(path)?;
        sqlite::migrate(&mut writer)?;
        let latest = events::latest_id(&writer)?;
        let (latest_event, _) = watch::channel(latest);
        let store = Store {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                writer: Arc::new(tokio::sync::Mutex::new(writer::Writer::new(writer))),
                queued: AtomicUsize::new(0),
                flush: Arc::default(),
                checkpoint: Arc::default(),
                commits: AtomicUsize::new(0),
                transactions: AtomicUsize::new(0),
                readers: Mutex::new(Vec::new()),
                latest_event,
                selectable: Default::default(),
            }),
        };
        store.start_background();
        Ok(store)
    }

    /// Runs `f` on an idle read connection. Reads see what was committed when their
    /// statement started.
    pub(crate) fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let idle = self
            .inner
            .readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let conn = match idle {
            Some(c) => c,
            None => sqlite::open(&self.inner.path)?,
        };
        let out = f(&conn);
        let mut idle = self
            .inner
            .readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if idle.len() < IDLE_READERS {
            idle.push(conn);
        }
        out
    }

    /// Subscribes to "a new event was committed" notifications.
    pub fn subscribe_events(&self) -> watch::Receiver<i64> {
        self.inner.latest_event.subscribe()
    }

    /// How many commits the writer made and how many transactions they carried (more
    /// transactions than commits means group commit is sharing the cost under load).
    pub fn write_stats(&self) -> WriteStats {
        use std::sync::atomic::Ordering::Relaxed;
        WriteStats {
            commits: self.inner.commits.load(Relaxed) as u64,
            transactions: self.inner.transactions.load(Relaxed) as u64,
        }
    }

    /// Cheap liveness check of the database for `/readyz`.
    pub async fn ping(&self) -> Result<()> {
        self.read(|c| Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?))?;
        Ok(())
    }

    /// Waits for the writer to be idle, commits what is pending and checkpoints the WAL
    /// into the database file.
    pub async fn close(&self) {
        self.inner.writer.lock().await.close(&self.inner);
        self.inner
            .readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}
