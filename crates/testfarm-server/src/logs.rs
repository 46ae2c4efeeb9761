//! Job logs: one file per job under `<data_dir>/jobs/<id>/log`, indexed by the
//! `log_chunks` table. A chunk is appended only when its sequence number is the next
//! expected one, so a retried chunk is stored once; before appending, the file is cut
//! back to the length the database vouches for, so bytes written by a request that
//! died before its commit are never doubled.

use std::collections::HashMap;
use std::io::SeekFrom;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use chrono::Utc;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::error::ApiError;
use crate::state::AppState;

/// Largest chunk accepted.
pub const MAX_CHUNK: usize = 8 * 1024 * 1024;

/// Per-key async locks (one per job being written).
#[derive(Default)]
pub struct KeyedLocks {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl KeyedLocks {
    pub(crate) fn get(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > 4096 {
            map.retain(|_, l| Arc::strong_count(l) > 1);
        }
        map.entry(key.to_string()).or_default().clone()
    }
}

pub fn job_dir(state: &AppState, job: &str) -> PathBuf {
    state.data_dir.join("jobs").join(job)
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::Internal(format!("log storage: {e}"))
}

/// Stores chunk `seq` of a job's log for an agent presenting `epoch`; returns the next
/// expected sequence number. The epoch is checked in the same transaction as the append,
/// so a chunk can never land after its lease ended.
pub async fn append(
    state: &AppState,
    caller: &crate::auth::Caller,
    job_id: &str,
    epoch: u64,
    seq: u64,
    bytes: &[u8],
) -> Result<u64, ApiError> {
    let lock = state.log_locks.get(job_id);
    let _guard = lock.lock().await;
    let mut tx = state.store.begin().await?;
    let (job, _) = crate::routes::agents::fenced(
        &mut tx,
        caller,
        job_id,
        epoch,
        Utc::now(),
        state.awake.since(),
    )
    .await?;
    let next = job.log_chunks;
    if seq < next {
        return Ok(next); // a retry of a stored chunk
    }
    if seq > next {
        return Err(ApiError::unprocessable(
            "seq",
            format!("log chunk {seq} arrived before chunk {next}; send {next} first"),
        ));
    }
    write_chunk(state, tx, job, bytes).await
}

/// Appends to the log of a job the server runs itself (no agent, no epoch): the next
/// chunk, whatever its number.
pub async fn append_server(state: &AppState, job_id: &str, bytes: &[u8]) -> Result<u64, ApiError> {
    let lock = state.log_locks.get(job_id);
    let _guard = lock.lock().await;
    let mut tx = state.store.begin().await?;
    let job = tx.get_job(job_id).await?;
    write_chunk(state, tx, job, bytes).await
}

/// Writes `bytes` as the job's next chunk and commits `tx`; the caller holds the job's lock.
async fn write_chunk(
    state: &AppState,
    mut tx: testfarm_store::Tx,
    mut job: testfarm_store::jobs::JobRow,
    bytes: &[u8],
) -> Result<u64, ApiError> {
    let next = job.log_chunks;
    let job_id = job.job.id.clone();
    let job_id = job_id.as_str();
    let dir = job_dir(state, job_id);
    tokio::fs::create_dir_all(&dir).await.map_err(internal)?;
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(dir.join("log"))
        .await
        .map_err(internal)?;
    let offset = job.job.log_bytes;
    file.set_len(offset).await.map_err(internal)?;
    file.seek(SeekFrom::Start(offset)).await.map_err(internal)?;
    file.write_all(bytes).await.map_err(internal)?;
    file.flush().await.map_err(internal)?;
    let len = bytes.len() as u64;
    tx.insert_log_chunk(job_id, next, offset, len).await?;
    job.job.log_bytes = offset + len;
    job.log_chunks = next + 1;
    job.last_report_at = Some(Utc::now());
    tx.update_job(&job).await?;
    tx.commit().await?;
    state.log_written.send_modify(|v| *v += 1);
    Ok(next + 1)
}

/// Bytes `[offset, size)` of a job's log (size as the database knows it).
pub async fn read(
    state: &AppState,
    job_id: &str,
    offset: u64,
    size: u64,
) -> Result<Vec<u8>, ApiError> {
    if offset >= size {
        return Ok(Vec::new());
    }
    let path = job_dir(state, job_id).join("log");
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(internal(e)),
    };
    file.seek(SeekFrom::Start(offset)).await.map_err(internal)?;
    // At most 16 MiB per response; followers come back for the rest.
    let want = (size - offset).min(16 * 1024 * 1024);
    let mut buf = Vec::with_capacity(usize::try_from(want).unwrap_or(0));
    file.take(want)
        .read_to_end(&mut buf)
        .await
        .map_err(internal)?;
    Ok(buf)
}
