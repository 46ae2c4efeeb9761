//! The one writer: [`Tx`], the transaction a change and its events are written in, with
//! group commit, and the checkpointer that keeps the WAL short.
//!
//! # Group commit
//!
//! SQLite allows one writer, and a commit costs more than the statements before it: it
//! appends every page the transaction touched to the WAL (a leases row touches the table,
//! three indexes, the resource row and the event log: eight or so 4 KiB pages). Under
//! concurrent load that cost, paid once per transaction while everyone else waits, capped
//! the lease round trip at ~2000/s. So transactions that meet in the queue share a commit:
//!
//! - each [`Tx`] is a `SAVEPOINT` inside an outer `BEGIN IMMEDIATE` transaction; rolling
//!   one back (dropping it) undoes only its own changes;
//! - [`Tx::commit`] releases its savepoint. If no other transaction is waiting for the
//!   writer, it commits the outer transaction at once, with every member of the group
//!   before it. Otherwise it leaves it open for the next in the queue and waits: the last
//!   of a run of queued transactions commits them all, and only then does each
//!   `commit()` return. Nothing is acknowledged before it is committed; a failed commit
//!   fails every member of the group. A transaction that finds nobody queued yields
//!   once first (see [`Tx::commit`]), and a group commits at [`MAX_GROUP`] members.
//! - A waiter that gives up (its request was cancelled) wakes the flusher, which takes
//!   the writer and commits a group nobody else is left to commit. It is not on the
//!   common path: handing the commit to another task cost a wake-up and a turn of the
//!   lock per group.
//!
//! The writer lock is an async mutex, so writers queue in arrival order instead of
//! meeting in SQLite's busy handler (which sleeps 1, 2, 5 … 100 ms between retries).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use chrono::Utc;
use rusqlite::Connection;
use tokio::sync::{Notify, OwnedMutexGuard, oneshot};

use crate::events::{NewEvent, append};
use crate::sql::ts;
use crate::{Inner, Result, Store, StoreError, sqlite};

/// Commits between checkpoints: about 1000 WAL pages, SQLite's own default.
const CHECKPOINT_EVERY: usize = 128;
/// And at least this often while anything was written.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);
/// Transactions a group may gather before it commits even with others queued, so
/// that under a steady stream nobody waits behind an ever-growing group.
const MAX_GROUP: usize = 64;
/// A WAL longer than this (16 MiB of 4 KiB pages) after a checkpoint is started over
/// with the writers paused; see [`checkpointer`].
const WAL_RESTART_FRAMES: i64 = 4096;

/// The writer connection and the group commit in progress.
pub(crate) struct Writer {
    conn: Connection,
    /// An outer transaction is open (holding released savepoints not yet committed).
    outer_open: bool,
    /// The `commit()` calls waiting for the outer transaction to commit.
    group: Vec<oneshot::Sender<Option<String>>>,
    /// The newest event id appended by the group, announced once it commits.
    group_last_event: i64,
}

impl Writer {
    pub(crate) fn new(conn: Connection) -> Writer {
        Writer {
            conn,
            outer_open: false,
            group: Vec::new(),
            group_last_event: 0,
        }
    }

    fn run(&self, sql: &str) -> rusqlite::Result<()> {
        self.conn.prepare_cached(sql)?.execute([])?;
        Ok(())
    }

    fn open_outer(&mut self) -> Result<()> {
        if self.outer_open {
            return Ok(());
        }
        if !self.conn.is_autocommit() {
            // Left open by a failure half-way; nothing in it was acknowledged.
            self.conn.execute_batch("ROLLBACK")?;
        }
        // IMMEDIATE takes SQLite's write lock up front: a deferred transaction that reads
        // and then writes fails (SQLITE_BUSY_SNAPSHOT) when another process committed in
        // between, whatever the busy timeout.
        self.run("BEGIN IMMEDIATE")?;
        self.outer_open = true;
        Ok(())
    }

    /// Commits the outer transaction and answers every waiting member of the group.
    fn flush(&mut self, inner: &Inner) -> Result<()> {
        if !self.outer_open {
            return Ok(());
        }
        let res = self.run("COMMIT");
        self.outer_open = false;
        if res.is_err() && !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        let failure = res.as_ref().err().map(|e| e.to_string());
        for member in self.group.drain(..) {
            let _ = member.send(failure.clone());
        }
        let last = std::mem::take(&mut self.group_last_event);
        if res.is_ok() {
            if last > 0 {
                inner.notify_committed(last);
            }
            if inner.commits.fetch_add(1, Ordering::Relaxed) % CHECKPOINT_EVERY
                == CHECKPOINT_EVERY - 1
            {
                inner.checkpoint.notify_one();
            }
        }
        Ok(res?)
    }

    /// Ends a failed group: rolls everything back and fails its members.
    fn abort(&mut self, why: &str) {
        if !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        self.outer_open = false;
        self.group_last_event = 0;
        for member in self.group.drain(..) {
            let _ = member.send(Some(why.to_string()));
        }
    }

    /// Commits what is pending, for shutdown, then folds the WAL into the database.
    pub(crate) fn close(&mut self, inner: &Inner) {
        let _ = self.flush(inner);
        let _ = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)");
    }
}

/// Wakes the flusher if dropped: held across the one await between a transaction's
/// release and its commit.
struct FlushIfDropped<'a>(&'a Inner);

impl Drop for FlushIfDropped<'_> {
    fn drop(&mut self) {
        self.0.flush.notify_one();
    }
}

/// Counts a task queued for the writer while it waits. A waiter dropped before it got
/// the writer (cancelled) may have been the one a deferred group counted on to commit
/// it, so it wakes the flusher.
struct Queued<'a> {
    inner: &'a Inner,
    acquired: bool,
}

impl<'a> Queued<'a> {
    fn new(inner: &'a Inner) -> Self {
        inner.queued.fetch_add(1, Ordering::SeqCst);
        Queued {
            inner,
            acquired: false,
        }
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.inner.queued.fetch_sub(1, Ordering::SeqCst);
        if !self.acquired {
            self.inner.flush.notify_one();
        }
    }
}

impl Store {
    /// Starts the one transaction a state change is written in. Waits, in order, for
    /// the transactions before it.
    pub async fn begin(&self) -> Result<Tx> {
        let mut w = {
            let mut queued = Queued::new(&self.inner);
            let w = self.inner.writer.clone().lock_owned().await;
            queued.acquired = true;
            w
        };
        // The first transaction of a group is the outer transaction itself: rolling it
        // back undoes nothing else, so it needs no savepoint (and no statement journal).
        let savepoint = w.outer_open;
        w.open_outer()?;
        if savepoint && let Err(e) = w.run("SAVEPOINT tx") {
            // Nobody could commit the group before us on a connection in this state.
            w.abort("the writer could not open a savepoint");
            return Err(e.into());
        }
        Ok(Tx {
            writer: Some(w),
            savepoint,
            events: Vec::new(),
            resources_changed: false,
            store: self.clone(),
        })
    }

    /// Starts the background tasks of the writer: the flusher that commits groups left
    /// behind by cancelled waiters, and the checkpointer. They end when the store is dropped.
    pub(crate) fn start_background(&self) {
        let weak = Arc::downgrade(&self.inner);
        let flush = self.inner.flush.clone();
        tokio::spawn(flusher(weak.clone(), flush));
        let checkpoint = self.inner.checkpoint.clone();
        tokio::spawn(checkpointer(weak, checkpoint));
    }
}

async fn flusher(store: Weak<Inner>, flush: Arc<Notify>) {
    loop {
        flush.notified().await;
        let Some(inner) = store.upgrade() else { return };
        // Queued behind any transactions still waiting, so they join the group first.
        let mut w = inner.writer.clone().lock_owned().await;
        // A group whose committer went away, or released work nobody is left to commit.
        if w.outer_open
            && let Err(e) = w.flush(&inner)
        {
            tracing::error!(error = %e, "group commit failed");
        }
    }
}

async fn checkpointer(store: Weak<Inner>, wake: Arc<Notify>) {
    let mut conn: Option<Arc<std::sync::Mutex<Connection>>> = None;
    let mut last_commits = 0;
    loop {
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(CHECKPOINT_INTERVAL) => {}
        }
        let Some(inner) = store.upgrade() else { return };
        let commits = inner.commits.load(Ordering::Relaxed);
        if commits == last_commits {
            continue;
        }
        last_commits = commits;
        let c = match &conn {
            Some(c) => c.clone(),
            None => match sqlite::open(&inner.path) {
                Ok(c) => conn.insert(Arc::new(std::sync::Mutex::new(c))).clone(),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot open the checkpoint connection");
                    continue;
                }
            },
        };
        drop(inner);
        // PASSIVE copies what it can without blocking the writer or readers; the fsync
        // of the database file happens here, not inside anyone's commit.
        let frames = match checkpoint(&c, "PASSIVE").await {
            Ok(frames) => frames,
            Err(e) => {
                tracing::warn!(error = %e, "WAL checkpoint failed");
                continue;
            }
        };
        if frames < WAL_RESTART_FRAMES {
            continue;
        }
        // Under a steady stream of commits a PASSIVE checkpoint never catches up with
        // the end of the WAL, so SQLite never starts it over and the file grows without
        // bound (477 MB after a few minutes of lease benchmark). Stop the writers for
        // one short checkpoint of what is left: the WAL restarts from its beginning and
        // `journal_size_limit` trims the file.
        let Some(inner) = store.upgrade() else { return };
        let mut w = inner.writer.clone().lock_owned().await;
        if let Err(e) = w.flush(&inner) {
            tracing::error!(error = %e, "group commit failed");
        }
        drop(inner);
        match checkpoint(&c, "RESTART").await {
            Ok(left) => tracing::debug!(frames, left, "WAL restarted"),
            Err(e) => tracing::warn!(error = %e, "WAL restart checkpoint failed"),
        }
        drop(w);
    }
}

/// Runs `PRAGMA wal_checkpoint(MODE)` on a blocking thread; returns the frames in the
/// WAL when it ran.
async fn checkpoint(conn: &Arc<std::sync::Mutex<Connection>>, mode: &'static str) -> Result<i64> {
    let c = Arc::clone(conn);
    let done = tokio::task::spawn_blocking(move || {
        let c = c.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        c.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
            r.get::<_, i64>(1)
        })
    })
    .await;
    match done {
        Ok(res) => Ok(res?),
        Err(e) => Err(StoreError::Commit(format!(
            "the checkpoint thread failed: {e}"
        ))),
    }
}

/// A transaction that collects the events of the change it writes. [`Tx::commit`]
/// appends them in the same transaction, commits (alone or with its group), and wakes
/// event subscribers; dropping a `Tx` rolls everything back, events included.
pub struct Tx {
    /// The writer, held until the transaction is released or dropped.
    writer: Option<OwnedMutexGuard<Writer>>,
    /// Whether this transaction is a savepoint inside a group's outer transaction.
    savepoint: bool,
    events: Vec<NewEvent>,
    /// Whether this transaction changed the set of resources or their labels (so the
    /// selectable cache must be dropped once it commits).
    resources_changed: bool,
    store: Store,
}

impl Tx {
    /// Records an event to be appended at commit.
    pub fn record(&mut self, event: NewEvent) {
        self.events.push(event);
    }

    /// Notes that this transaction rewrote, added or removed a resource row.
    pub(crate) fn resources_changed(&mut self) {
        self.resources_changed = true;
    }

    /// The connection, inside this transaction, for queries of this crate's modules.
    pub(crate) fn conn(&self) -> &Connection {
        // `writer` is only taken by `commit`, which consumes the Tx.
        match &self.writer {
            Some(w) => &w.conn,
            None => unreachable!("a Tx is used after commit"),
        }
    }

    pub async fn commit(mut self) -> Result<()> {
        let inner = Arc::clone(&self.store.inner);
        let changed = self.resources_changed;
        let res = self.commit_inner().await;
        if res.is_ok() && changed {
            inner.selectable.invalidate();
        }
        res
    }

    async fn commit_inner(&mut self) -> Result<()> {
        let Some(w) = self.writer.as_mut() else {
            return Ok(());
        };
        let now = ts(Utc::now());
        let mut last = 0;
        for e in std::mem::take(&mut self.events) {
            last = append(&w.conn, &now, &e)?;
        }
        if self.savepoint {
            w.run("RELEASE tx")?;
        }
        w.group_last_event = w.group_last_event.max(last);
        self.store
            .inner
            .transactions
            .fetch_add(1, Ordering::Relaxed);
        let Some(mut w) = self.writer.take() else {
            return Ok(());
        };
        let queued = || self.store.inner.queued.load(Ordering::SeqCst);
        if queued() == 0 && w.group.len() < MAX_GROUP {
            // Before committing alone, let the requests that are ready run up to their
            // own `begin`: `yield_now` has the runtime poll its sockets first, so on a
            // one-thread server every request that arrived meanwhile joins this commit.
            // Dropped here (its request cancelled), it leaves its work released into the
            // open outer transaction: the flusher commits that.
            let armed = FlushIfDropped(&self.store.inner);
            tokio::task::yield_now().await;
            std::mem::forget(armed);
        }
        if queued() == 0 || w.group.len() >= MAX_GROUP {
            // Nobody to share a commit with (or the group is as large as it may grow):
            // commit now, with any group before us.
            return w.flush(&self.store.inner);
        }
        let (done, wait) = oneshot::channel();
        w.group.push(done);
        drop(w);
        match wait.await {
            Ok(None) => Ok(()),
            Ok(Some(failure)) => Err(StoreError::Commit(failure)),
            Err(_) => Err(StoreError::Commit(
                "the store closed before the commit".into(),
            )),
        }
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        let Some(mut w) = self.writer.take() else {
            return;
        };
        if !self.savepoint {
            // The group's first transaction: nobody else is in the outer one yet.
            w.abort("rolled back");
            return;
        }
        // Undo only this transaction; members of the group before it keep theirs.
        let undone = w.run("ROLLBACK TO tx").and_then(|()| w.run("RELEASE tx"));
        match undone {
            Err(e) => {
                tracing::error!(error = %e, "rollback of an abandoned transaction failed");
                w.abort("a transaction in the same commit group failed to roll back");
            }
            Ok(()) if w.group.is_empty() => w.abort("rolled back"),
            // The group before this transaction is still to commit: by the next in the
            // queue, or now if nobody waits.
            Ok(()) if self.store.inner.queued.load(Ordering::SeqCst) > 0 => {}
            Ok(()) => {
                if let Err(e) = w.flush(&self.store.inner) {
                    tracing::error!(error = %e, "group commit failed");
                }
            }
        }
    }
}
