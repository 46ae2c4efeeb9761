//! Log shipping: a job's output travels to the server as numbered chunks while it runs.
//!
//! Writers (the step's stdout/stderr readers, the agent's own step banners) put bytes into
//! a bounded channel; one shipper task cuts them into chunks of [`CHUNK_BYTES`] (up to
//! [`BURST_CHUNK_BYTES`] under a backlog), sent when full or every [`FLUSH_EVERY`], one at
//! a time and in order (the server appends
//! chunks to the job's log file in arrival order). A chunk that fails to send for a
//! connection reason is sent again with the same number, with backoff, until it lands: the
//! server stores a retried number once, so nothing is lost and nothing is doubled. A 409
//! (stale epoch) stops shipping and drops the job.
//!
//! The channel is the bounded buffer: when the server is slow, writers wait, and so does the
//! child writing to its pipe, instead of the agent's memory growing.

use std::future::Future;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::client::{Client, ClientError};
use crate::control::JobControl;

/// A chunk is sent once this much is buffered (or every [`FLUSH_EVERY`]).
pub const CHUNK_BYTES: usize = 256 * 1024;
/// Largest chunk: when output piles up faster than chunks land, chunks grow to this, as
/// the server's cost is per chunk (one transaction each) more than per byte.
pub const BURST_CHUNK_BYTES: usize = 1024 * 1024;
/// Longest a written byte waits before it is sent.
pub const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// Pieces buffered between writers and the shipper (each at most a pipe read, 64 KiB).
const CHANNEL_PIECES: usize = 64;
const BACKOFF_START: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Why one chunk did not land.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SinkError {
    /// Connection trouble or a server restarting: send the same chunk again.
    #[error("{0}")]
    Retry(String),
    /// 409: the lease moved on.
    #[error("stale epoch: {0}")]
    Stale(String),
    /// Refused for good (bad token, unknown job).
    #[error("{0}")]
    Refused(String),
}

/// Where chunks go. The agent's is [`ClientSink`]; tests inject failures with their own.
pub trait ChunkSink: Send + Sync + 'static {
    fn put(&self, seq: u64, body: Bytes) -> impl Future<Output = Result<(), SinkError>> + Send;
}

/// Sends chunks to `PUT /jobs/{id}/logs/{seq}` with the job's epoch.
#[derive(Debug, Clone)]
pub struct ClientSink {
    pub client: Client,
    pub job_id: String,
    pub epoch: u64,
}

impl ChunkSink for ClientSink {
    async fn put(&self, seq: u64, body: Bytes) -> Result<(), SinkError> {
        match self
            .client
            .put_log(&self.job_id, seq, self.epoch, body)
            .await
        {
            Ok(_) => Ok(()),
            Err(ClientError::StaleEpoch(d)) => Err(SinkError::Stale(d)),
            Err(e) if e.is_retryable() => Err(SinkError::Retry(e.to_string())),
            Err(e) => Err(SinkError::Refused(e.to_string())),
        }
    }
}

/// How shipping ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShipError {
    #[error("log chunk {seq} refused: stale epoch ({detail})")]
    Stale { seq: u64, detail: String },
    #[error("log chunk {seq} refused: {detail}")]
    Refused { seq: u64, detail: String },
}

/// What was shipped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShipStats {
    /// Chunks sent (numbered `0..chunks`).
    pub chunks: u64,
    pub bytes: u64,
    /// Sends that failed and were retried.
    pub retries: u64,
}

/// The writing end; clone it for each source.
#[derive(Debug, Clone)]
pub struct LogWriter {
    tx: mpsc::Sender<Bytes>,
}

impl LogWriter {
    /// Queues bytes; waits while the buffer is full. False once shipping has stopped.
    pub async fn write(&self, bytes: Bytes) -> bool {
        if bytes.is_empty() {
            return true;
        }
        self.tx.send(bytes).await.is_ok()
    }

    /// A line from the agent itself (step banners, reasons), marked so it stands out.
    pub async fn note(&self, text: &str) -> bool {
        self.write(Bytes::from(format!("[testfarm] {text}\n")))
            .await
    }
}

/// The shipper task. Drop every [`LogWriter`], then await [`Shipper::finish`].
#[derive(Debug)]
pub struct Shipper {
    task: JoinHandle<Result<ShipStats, ShipError>>,
}

impl Shipper {
    /// Waits until every written byte has landed (or shipping was refused).
    pub async fn finish(self) -> Result<ShipStats, ShipError> {
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(ShipError::Refused {
                seq: 0,
                detail: format!("the log shipper stopped: {e}"),
            }),
        }
    }

    /// Stops at once (the job was dropped); unsent bytes are discarded.
    pub fn abort(&self) {
        self.task.abort();
    }
}

/// Starts shipping to `sink`. On a stale epoch it raises `control`'s drop.
pub fn spawn<S: ChunkSink>(sink: S, control: JobControl) -> (LogWriter, Shipper) {
    let (tx, rx) = mpsc::channel(CHANNEL_PIECES);
    let task = tokio::spawn(ship(sink, rx, control));
    (LogWriter { tx }, Shipper { task })
}

async fn ship<S: ChunkSink>(
    sink: S,
    mut rx: mpsc::Receiver<Bytes>,
    control: JobControl,
) -> Result<ShipStats, ShipError> {
    let mut stats = ShipStats::default();
    let mut buf = BytesMut::with_capacity(2 * CHUNK_BYTES);
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let result = loop {
        tokio::select! {
            piece = rx.recv() => match piece {
                Some(p) => {
                    buf.extend_from_slice(&p);
                    if buf.len() >= CHUNK_BYTES {
                        // A backlog (the step writes faster than chunks land): take what
                        // is already waiting, so fewer, larger chunks carry it.
                        while buf.len() < BURST_CHUNK_BYTES {
                            match rx.try_recv() {
                                Ok(p) => buf.extend_from_slice(&p),
                                Err(_) => break,
                            }
                        }
                    }
                    let mut r = Ok(());
                    while buf.len() >= CHUNK_BYTES && r.is_ok() {
                        let n = buf.len().min(BURST_CHUNK_BYTES);
                        let chunk = buf.split_to(n).freeze();
                        r = send(&sink, &mut stats, chunk).await;
                    }
                    if let Err(e) = r {
                        break Err(e);
                    }
                }
                None => {
                    let mut r = Ok(());
                    while !buf.is_empty() && r.is_ok() {
                        let n = buf.len().min(CHUNK_BYTES);
                        r = send(&sink, &mut stats, buf.split_to(n).freeze()).await;
                    }
                    break r;
                }
            },
            _ = tick.tick() => {
                if !buf.is_empty() {
                    let n = buf.len().min(CHUNK_BYTES);
                    if let Err(e) = send(&sink, &mut stats, buf.split_to(n).freeze()).await {
                        break Err(e);
                    }
                }
            }
        }
    };
    match result {
        Ok(()) => Ok(stats),
        Err(e) => {
            if let ShipError::Stale { seq, detail } = &e {
                tracing::warn!(seq, %detail, "log chunk refused (stale epoch): dropping the job");
                control.drop_job();
            }
            // Keep writers from blocking on a full channel while the job winds down.
            rx.close();
            while rx.recv().await.is_some() {}
            Err(e)
        }
    }
}

/// Sends one chunk with the next number, retrying connection failures with backoff.
async fn send<S: ChunkSink>(
    sink: &S,
    stats: &mut ShipStats,
    chunk: Bytes,
) -> Result<(), ShipError> {
    let seq = stats.chunks;
    let mut backoff = BACKOFF_START;
    loop {
        match sink.put(seq, chunk.clone()).await {
            Ok(()) => {
                stats.chunks += 1;
                stats.bytes += chunk.len() as u64;
                return Ok(());
            }
            Err(SinkError::Retry(detail)) => {
                stats.retries += 1;
                tracing::debug!(seq, %detail, "log chunk failed, retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
            Err(SinkError::Stale(detail)) => return Err(ShipError::Stale { seq, detail }),
            Err(SinkError::Refused(detail)) => return Err(ShipError::Refused { seq, detail }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::control::Signal;

    /// A server's log store in memory that fails some sends: stores a retried seq once,
    /// and fails (like a dropped connection) after storing on some attempts too.
    #[derive(Clone, Default)]
    struct Flaky {
        inner: Arc<Mutex<FlakyState>>,
    }

    #[derive(Default)]
    struct FlakyState {
        attempts: u64,
        chunks: std::collections::BTreeMap<u64, Bytes>,
        stale_at: Option<u64>,
    }

    impl ChunkSink for Flaky {
        async fn put(&self, seq: u64, body: Bytes) -> Result<(), SinkError> {
            let mut s = self.inner.lock().unwrap();
            s.attempts += 1;
            let n = s.attempts;
            if s.stale_at == Some(seq) {
                return Err(SinkError::Stale("lease ended".into()));
            }
            // Every 3rd attempt fails before storing, every 5th after storing (the
            // answer was lost on the way back).
            if n.is_multiple_of(3) {
                return Err(SinkError::Retry("connection reset".into()));
            }
            assert!(seq <= s.chunks.len() as u64, "chunk {seq} skipped ahead");
            s.chunks.entry(seq).or_insert(body);
            if n.is_multiple_of(5) {
                return Err(SinkError::Retry("connection reset after write".into()));
            }
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_lost_nothing_doubled_under_failures() {
        let sink = Flaky::default();
        let (w, shipper) = spawn(sink.clone(), JobControl::new());
        let mut expected = Vec::new();
        for i in 0..3000u32 {
            let line = format!("line {i} {}\n", "x".repeat((i % 700) as usize));
            expected.extend_from_slice(line.as_bytes());
            assert!(w.write(Bytes::from(line)).await);
            if i % 500 == 0 {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
        drop(w);
        let stats = tokio::time::timeout(Duration::from_secs(600), shipper.finish())
            .await
            .unwrap()
            .unwrap();
        let s = sink.inner.lock().unwrap();
        let got: Vec<u8> = s.chunks.values().flat_map(|b| b.iter().copied()).collect();
        assert_eq!(got.len(), expected.len());
        assert!(got == expected, "log differs");
        assert_eq!(stats.chunks, s.chunks.len() as u64);
        assert!(stats.retries > 0);
        assert!(s.chunks.values().all(|c| c.len() <= BURST_CHUNK_BYTES));
    }

    #[tokio::test(start_paused = true)]
    async fn small_writes_are_flushed_on_time() {
        let sink = Flaky::default();
        let (w, _shipper) = spawn(sink.clone(), JobControl::new());
        assert!(w.note("hello").await);
        tokio::time::sleep(FLUSH_EVERY * 2).await;
        let s = sink.inner.lock().unwrap();
        assert_eq!(
            s.chunks.get(&0).map(|b| b.as_ref()),
            Some(&b"[testfarm] hello\n"[..])
        );
    }

    #[tokio::test(start_paused = true)]
    async fn stale_epoch_stops_and_drops_the_job() {
        let sink = Flaky::default();
        sink.inner.lock().unwrap().stale_at = Some(1);
        let control = JobControl::new();
        let (w, shipper) = spawn(sink.clone(), control.clone());
        for _ in 0..20 {
            // Never blocks for good: the shipper drains after the refusal.
            w.write(Bytes::from(vec![b'a'; 64 * 1024])).await;
        }
        drop(w);
        let e = shipper.finish().await.unwrap_err();
        assert!(matches!(e, ShipError::Stale { seq: 1, .. }), "{e}");
        assert_eq!(control.get(), Signal::Drop);
    }
}
