//! Blobs in a local directory: `<root>/sha256/ab/abcdef…` (the first two hex digits
//! shard the directory, as git does, so no directory holds more than a few thousand).
//!
//! A put writes `<root>/sha256/.tmp-<random>` (the same file system as its final name, so
//! the rename is atomic), hashing as it writes, fsyncs it, checks the digest, then renames
//! it to its content address and fsyncs the directory. A failed, refused or cancelled put
//! removes its temporary file; temporary files left by a crash are removed on open.

use std::io::{self, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::future::BoxFuture;
use sha2::Digest as _;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::{Blob, BlobError, BlobMeta, BlobStore, ByteStream, Digest, PutOptions, Stored};

/// Bytes read per chunk of a get.
const CHUNK: usize = 64 * 1024;
const TMP_PREFIX: &str = ".tmp-";

/// A blob store in a directory.
#[derive(Debug, Clone)]
pub struct LocalDir {
    root: PathBuf,
}

/// Removes a temporary file unless disarmed: covers errors and a put whose future is
/// dropped half-way (the client went away).
struct TempFile {
    path: PathBuf,
    armed: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl LocalDir {
    /// Opens (creating) the store at `root`, removing temporary files a crash left.
    pub fn open(root: &Path) -> io::Result<LocalDir> {
        let dir = root.join("sha256");
        std::fs::create_dir_all(&dir)?;
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                tracing::info!(path = %entry.path().display(), "removing an unfinished upload");
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(LocalDir {
            root: root.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where a blob's bytes live.
    pub fn path_of(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.root.join("sha256").join(&hex[..2]).join(hex)
    }

    async fn put_inner(&self, mut data: ByteStream, opts: PutOptions) -> Result<Stored, BlobError> {
        let dir = self.root.join("sha256");
        tokio::fs::create_dir_all(&dir).await?;
        let mut tmp = TempFile {
            path: dir.join(format!("{TMP_PREFIX}{:016x}", rand::random::<u64>())),
            armed: true,
        };
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp.path)
            .await?;
        let mut hasher = sha2::Sha256::new();
        let mut size: u64 = 0;
        while let Some(chunk) = data.next().await {
            let chunk = chunk.map_err(BlobError::Source)?;
            size = size.saturating_add(chunk.len() as u64);
            if let Some(limit) = opts.max_size
                && size > limit
            {
                return Err(BlobError::TooLarge { limit });
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await?;
        }
        file.flush().await?;
        file.sync_all().await?;
        drop(file);
        let digest = Digest::from_bytes(hasher.finalize().into());
        if let Some(expected) = opts.expected
            && expected != digest
        {
            return Err(BlobError::Mismatch {
                expected,
                actual: digest,
            });
        }
        let target = self.path_of(&digest);
        let shard = target.parent().unwrap_or(&dir).to_path_buf();
        tokio::fs::create_dir_all(&shard).await?;
        let created = if tokio::fs::try_exists(&target).await? {
            // Stored once: the temporary copy goes (TempFile's drop).
            false
        } else {
            tokio::fs::rename(&tmp.path, &target).await?;
            tmp.armed = false;
            sync_dir(shard).await?;
            true
        };
        Ok(Stored {
            digest,
            size,
            created,
        })
    }

    async fn get_inner(
        &self,
        digest: Digest,
        range: Option<Range<u64>>,
    ) -> Result<Blob, BlobError> {
        let path = self.path_of(&digest);
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(BlobError::NotFound(digest));
            }
            Err(e) => return Err(e.into()),
        };
        let size = file.metadata().await?.len();
        let range = crate::checked_range(range, size)?;
        if range.start > 0 {
            file.seek(SeekFrom::Start(range.start)).await?;
        }
        let left = range.end - range.start;
        let stream = futures::stream::try_unfold((file, left), |(mut file, left)| async move {
            if left == 0 {
                return Ok(None);
            }
            let want = usize::try_from(left).unwrap_or(CHUNK).min(CHUNK);
            let mut buf = BytesMut::zeroed(want);
            let n = file.read(&mut buf).await?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the blob is shorter than it was when opened",
                ));
            }
            buf.truncate(n);
            let chunk: Bytes = buf.freeze();
            Ok(Some((chunk, (file, left - n as u64))))
        });
        Ok(Blob {
            size,
            range,
            stream: stream.boxed(),
        })
    }

    async fn delete_inner(&self, digest: Digest) -> Result<bool, BlobError> {
        match tokio::fs::remove_file(self.path_of(&digest)).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    async fn list_inner(&self) -> Result<Vec<BlobMeta>, BlobError> {
        let mut out = Vec::new();
        let mut shards = match tokio::fs::read_dir(self.root.join("sha256")).await {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e.into()),
        };
        while let Some(shard) = shards.next_entry().await? {
            if !shard.file_type().await?.is_dir() {
                continue;
            }
            let mut files = tokio::fs::read_dir(shard.path()).await?;
            while let Some(f) = files.next_entry().await? {
                // Anything not named like a blob (an operator's stray file) is not one.
                let Some(digest) = f.file_name().to_str().and_then(|n| n.parse().ok()) else {
                    continue;
                };
                let meta = f.metadata().await?;
                if meta.is_file() {
                    out.push(BlobMeta {
                        digest,
                        size: meta.len(),
                    });
                }
            }
        }
        out.sort_by_key(|b| b.digest);
        Ok(out)
    }
}

/// Makes a rename into `dir` durable.
async fn sync_dir(dir: PathBuf) -> io::Result<()> {
    tokio::task::spawn_blocking(move || std::fs::File::open(&dir)?.sync_all())
        .await
        .map_err(io::Error::other)?
}

impl BlobStore for LocalDir {
    fn put(&self, data: ByteStream, opts: PutOptions) -> BoxFuture<'_, Result<Stored, BlobError>> {
        Box::pin(self.put_inner(data, opts))
    }

    fn get_range(
        &self,
        digest: Digest,
        range: Option<Range<u64>>,
    ) -> BoxFuture<'_, Result<Blob, BlobError>> {
        Box::pin(self.get_inner(digest, range))
    }

    fn delete(&self, digest: Digest) -> BoxFuture<'_, Result<bool, BlobError>> {
        Box::pin(self.delete_inner(digest))
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<BlobMeta>, BlobError>> {
        Box::pin(self.list_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    /// A stream of `n` chunks of `size` bytes each, chunk i filled with byte i.
    fn chunks(n: usize, size: usize) -> (ByteStream, Vec<u8>) {
        let all: Vec<u8> = (0..n).flat_map(|i| vec![i as u8; size]).collect();
        let stream = futures::stream::iter(
            (0..n).map(move |i| Ok::<_, io::Error>(Bytes::from(vec![i as u8; size]))),
        );
        (stream.boxed(), all)
    }

    async fn read_all(blob: Blob) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut s = blob.stream;
        while let Some(c) = s.next().await {
            out.extend_from_slice(&c?);
        }
        Ok(out)
    }

    /// Every file under the root, temporary ones included.
    fn files(root: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                if e.path().is_dir() {
                    stack.push(e.path());
                } else {
                    out.push(e.path());
                }
            }
        }
        out
    }

    #[tokio::test]
    async fn a_streamed_put_lands_under_its_digest() -> TestResult {
        let dir = tempfile::tempdir()?;
        let store = LocalDir::open(dir.path())?;
        // 4 MiB in 64 chunks: never one buffer.
        let (stream, all) = chunks(64, 64 * 1024);
        let stored = store.put(stream, PutOptions::default()).await?;
        assert_eq!(stored.digest, Digest::of(&all));
        assert_eq!(stored.size, all.len() as u64);
        assert!(stored.created);
        let hex = stored.digest.hex();
        let path = dir.path().join("sha256").join(&hex[..2]).join(&hex);
        assert_eq!(std::fs::read(&path)?, all);
        assert_eq!(files(dir.path()), vec![path]);
        let back = read_all(store.get_range(stored.digest, None).await?).await?;
        assert_eq!(back, all);
        Ok(())
    }

    #[tokio::test]
    async fn a_checksum_mismatch_leaves_nothing() -> TestResult {
        let dir = tempfile::tempdir()?;
        let store = LocalDir::open(dir.path())?;
        let (stream, _) = chunks(3, 1000);
        let wrong = Digest::of(b"something else");
        let err = store
            .put(
                stream,
                PutOptions {
                    expected: Some(wrong),
                    max_size: None,
                },
            )
            .await;
        assert!(matches!(err, Err(BlobError::Mismatch { expected, .. }) if expected == wrong));
        assert_eq!(files(dir.path()), Vec::<PathBuf>::new());
        assert!(store.list().await?.is_empty());
        // Too large, and a source that fails half-way: nothing either.
        let (stream, _) = chunks(3, 1000);
        let err = store
            .put(
                stream,
                PutOptions {
                    expected: None,
                    max_size: Some(2500),
                },
            )
            .await;
        assert!(matches!(err, Err(BlobError::TooLarge { limit: 2500 })));
        let failing = futures::stream::iter(vec![
            Ok(Bytes::from_static(b"abc")),
            Err(io::Error::new(io::ErrorKind::ConnectionReset, "gone")),
        ])
        .boxed();
        let err = store.put(failing, PutOptions::default()).await;
        assert!(matches!(err, Err(BlobError::Source(_))));
        assert_eq!(files(dir.path()), Vec::<PathBuf>::new());
        // And the right expected digest is accepted.
        let (stream, all) = chunks(3, 1000);
        let ok = store
            .put(
                stream,
                PutOptions {
                    expected: Some(Digest::of(&all)),
                    max_size: Some(3000),
                },
            )
            .await?;
        assert_eq!(ok.size, 3000);
        Ok(())
    }

    #[tokio::test]
    async fn identical_content_is_stored_once() -> TestResult {
        let dir = tempfile::tempdir()?;
        let store = LocalDir::open(dir.path())?;
        let (a, _) = chunks(5, 100);
        let (b, _) = chunks(5, 100);
        let first = store.put(a, PutOptions::default()).await?;
        let second = store.put(b, PutOptions::default()).await?;
        assert_eq!(first.digest, second.digest);
        assert!(first.created && !second.created);
        assert_eq!(files(dir.path()).len(), 1);
        assert_eq!(
            store.list().await?,
            vec![BlobMeta {
                digest: first.digest,
                size: 500
            }]
        );
        Ok(())
    }

    #[tokio::test]
    async fn ranges_read_exactly_their_bytes() -> TestResult {
        let dir = tempfile::tempdir()?;
        let store = LocalDir::open(dir.path())?;
        let (stream, all) = chunks(4, 100_000);
        let d = store.put(stream, PutOptions::default()).await?.digest;
        for r in [0..1, 5..10, 99_990..100_010, 0..400_000, 399_999..400_000] {
            let blob = store.get_range(d, Some(r.clone())).await?;
            assert_eq!(blob.size, 400_000);
            assert_eq!(blob.range, r);
            let start = usize::try_from(r.start)?;
            let end = usize::try_from(r.end)?;
            assert_eq!(read_all(blob).await?, all[start..end]);
        }
        #[allow(clippy::reversed_empty_ranges)]
        let bad = [400_000..400_001, 10..5, 7..7, 0..400_001];
        for r in bad {
            let err = store.get_range(d, Some(r)).await;
            assert!(
                matches!(
                    err,
                    Err(BlobError::RangeNotSatisfiable { size: 400_000, .. })
                ),
                "{err:?}"
            );
        }
        let missing = store.get_range(Digest::of(b"nope"), None).await;
        assert!(matches!(missing, Err(BlobError::NotFound(_))));
        Ok(())
    }

    #[tokio::test]
    async fn delete_and_list() -> TestResult {
        let dir = tempfile::tempdir()?;
        let store = LocalDir::open(dir.path())?;
        let mut digests = Vec::new();
        for i in 0..3u8 {
            let s = futures::stream::iter(vec![Ok(Bytes::from(vec![i; 10 + usize::from(i)]))]);
            digests.push(store.put(s.boxed(), PutOptions::default()).await?.digest);
        }
        // A stray file is not a blob.
        std::fs::write(dir.path().join("sha256").join("README"), "hi")?;
        let mut listed = store.list().await?;
        listed.sort_by_key(|b| b.size);
        assert_eq!(
            listed
                .iter()
                .map(|b| (b.digest, b.size))
                .collect::<Vec<_>>(),
            vec![(digests[0], 10), (digests[1], 11), (digests[2], 12)]
        );
        assert!(store.delete(digests[1]).await?);
        assert!(!store.delete(digests[1]).await?);
        assert_eq!(store.list().await?.len(), 2);
        assert!(matches!(
            store.get_range(digests[1], None).await,
            Err(BlobError::NotFound(_))
        ));
        Ok(())
    }

    #[tokio::test]
    async fn an_empty_blob_and_leftovers_of_a_crash() -> TestResult {
        let dir = tempfile::tempdir()?;
        let store = LocalDir::open(dir.path())?;
        let empty = store
            .put(futures::stream::empty().boxed(), PutOptions::default())
            .await?;
        assert_eq!(empty.digest, Digest::of(b""));
        assert_eq!(
            read_all(store.get_range(empty.digest, None).await?).await?,
            b""
        );
        let stale = dir.path().join("sha256").join(".tmp-0123");
        std::fs::write(&stale, "half an upload")?;
        let _ = LocalDir::open(dir.path())?;
        assert!(!stale.exists());
        Ok(())
    }
}
