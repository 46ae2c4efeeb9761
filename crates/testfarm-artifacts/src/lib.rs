//! testfarm-artifacts: the bytes of the artifact repository, behind one small interface.
//!
//! Artifacts (kernels, device trees, root file systems) are content-addressed: a blob is
//! named by the SHA-256 of its bytes, so identical content is stored once and a download
//! can be checked against its name. Metadata (which build, which kind) lives in the store;
//! this crate only keeps bytes.
//!
//! [`BlobStore`] is modelled on the `object_store` crate's shape (`put`, `get_range`,
//! `delete`, `list`, streams of [`Bytes`]) so that an S3-compatible backend goes behind
//! it without callers changing: [`LocalDir`] keeps blobs in a directory, [`S3Store`] in
//! an S3-compatible bucket. A put never
//! holds the whole blob in memory, and nothing is visible under a digest until its bytes
//! are complete, synced and verified.
//!
//! Also here: [`InUse`], the registry of blobs being read (retention skips them), and
//! [`range`], HTTP `Range` headers against a blob's size.

mod digest;
mod in_use;
mod local;
pub mod range;
mod s3;

use std::ops::Range;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;

pub use digest::{Digest, DigestError};
pub use in_use::{InUse, InUseGuard};
pub use local::LocalDir;
pub use s3::{S3Settings, S3Store, parse_s3_url};

/// A stream of chunks: what a put reads and a get returns.
pub type ByteStream = BoxStream<'static, std::io::Result<Bytes>>;

/// Failures of a blob store. The source's failures (a client that went away mid-upload)
/// are told apart from the store's own, so an API can answer 400 rather than 500.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("no blob sha256:{0}")]
    NotFound(Digest),
    #[error("the content's sha256 is {actual}, not the expected {expected}; nothing was stored")]
    Mismatch { expected: Digest, actual: Digest },
    #[error("the content is larger than the limit of {limit} bytes; nothing was stored")]
    TooLarge { limit: u64 },
    #[error("range {start}-{end} is outside the blob's {size} bytes")]
    RangeNotSatisfiable { start: u64, end: u64, size: u64 },
    #[error("reading the content failed: {0}")]
    Source(std::io::Error),
    #[error("blob store I/O failed: {0}")]
    Io(#[from] std::io::Error),
    /// The object store (S3) refused or could not be reached.
    #[error("object store failed: {0}")]
    Remote(String),
}

/// How to put a blob.
#[derive(Debug, Clone, Copy, Default)]
pub struct PutOptions {
    /// The digest the content must have; anything else is refused and not stored.
    pub expected: Option<Digest>,
    /// Refuse content longer than this many bytes.
    pub max_size: Option<u64>,
}

/// What a put stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    pub digest: Digest,
    pub size: u64,
    /// False when the content was already there (stored once).
    pub created: bool,
}

/// A blob as listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobMeta {
    pub digest: Digest,
    pub size: u64,
}

/// A blob (or a range of it) being read.
pub struct Blob {
    /// The whole blob's size, whatever range is read.
    pub size: u64,
    /// The bytes the stream yields, `[start, end)`.
    pub range: Range<u64>,
    pub stream: ByteStream,
}

impl std::fmt::Debug for Blob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blob")
            .field("size", &self.size)
            .field("range", &self.range)
            .finish_non_exhaustive()
    }
}

/// The byte range a get reads: the whole blob without one; a given range must lie
/// within the blob and not be empty (but the empty range of an empty blob is fine).
pub(crate) fn checked_range(range: Option<Range<u64>>, size: u64) -> Result<Range<u64>, BlobError> {
    let range = range.unwrap_or(0..size);
    if range.start > range.end || range.end > size || (range.start == range.end && range != (0..0))
    {
        return Err(BlobError::RangeNotSatisfiable {
            start: range.start,
            end: range.end,
            size,
        });
    }
    Ok(range)
}

/// A content-addressed blob store. Object safe, so the server holds an
/// `Arc<dyn BlobStore>` whatever the backend.
pub trait BlobStore: Send + Sync + 'static {
    /// Stores the stream's bytes under their SHA-256, computed while they are written.
    /// With `expected`, a different digest is an error and nothing is stored; identical
    /// content already stored is kept once.
    fn put(&self, data: ByteStream, opts: PutOptions) -> BoxFuture<'_, Result<Stored, BlobError>>;

    /// Reads a blob, or the half-open byte range of it (which must lie within it and not
    /// be empty).
    fn get_range(
        &self,
        digest: Digest,
        range: Option<Range<u64>>,
    ) -> BoxFuture<'_, Result<Blob, BlobError>>;

    /// Deletes a blob; false when there was none.
    fn delete(&self, digest: Digest) -> BoxFuture<'_, Result<bool, BlobError>>;

    /// Every stored blob.
    fn list(&self) -> BoxFuture<'_, Result<Vec<BlobMeta>, BlobError>>;
}
