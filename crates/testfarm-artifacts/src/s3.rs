//! Blobs in an S3-compatible object store (AWS S3, MinIO, Ceph radosgw, s3s-fs), through
//! the `object_store` crate: `<prefix>/sha256/<hex>`, the same content addressing as
//! [`crate::LocalDir`], so several servers can share one bucket.
//!
//! A put streams: the bytes go up as a multipart upload in parts of [`PART`] bytes (at most
//! two in flight), hashed as they pass. Nothing is visible under a name until the upload
//! completes, so a put is atomic as a local rename is:
//! - with an expected digest (agents always send one), the upload goes straight to its
//!   final name and is aborted before completion when the bytes turn out different;
//! - without one, it goes to `<prefix>/tmp/<random>` and is copied to its name once the
//!   digest is known. S3's single-request copy is limited to 5 GiB: larger uploads must
//!   declare their digest.
//!
//! Content of less than one part is sent in one request. A blob already stored is not
//! sent again; its bytes are still read and checked against the digest they claim.

use std::io;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::future::BoxFuture;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{
    GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig, WriteMultipart,
};
use sha2::Digest as _;

use crate::{Blob, BlobError, BlobMeta, BlobStore, ByteStream, Digest, PutOptions, Stored};

/// Bytes per multipart part. S3 wants at least 5 MiB for every part but the last.
const PART: usize = 8 << 20;
/// Parts uploading at once: bounds a put's memory to about `(INFLIGHT + 1) * PART`.
const INFLIGHT: usize = 2;
/// Temporary objects older than this are left-overs of a crash (another server may be
/// uploading the younger ones into the same bucket).
const STALE_TMP: chrono::TimeDelta = chrono::TimeDelta::hours(24);

/// Where the bucket is and how to sign requests. Credentials come from the server's
/// configuration by reference (a file or environment variables), never inline.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Settings {
    pub bucket: String,
    /// Key prefix inside the bucket (no leading or trailing `/`); may be empty.
    pub prefix: String,
    /// `https://s3.eu-west-1.amazonaws.com`, `http://127.0.0.1:9000`; `None` for AWS's
    /// default endpoint of the region.
    pub endpoint: Option<String>,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
    /// Requests addressed `bucket.endpoint/key` rather than `endpoint/bucket/key`.
    pub virtual_hosted: bool,
}

impl std::fmt::Debug for S3Settings {
    /// Never prints the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Settings")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// `s3://bucket/some/prefix` split into bucket and prefix.
pub fn parse_s3_url(url: &str) -> Result<(String, String), String> {
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| format!("{url:?} is not an s3://bucket/prefix URL"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let valid_bucket = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if !valid_bucket {
        return Err(format!(
            "{bucket:?} is not a bucket name (3 to 63 lowercase letters, digits, '-' or '.')"
        ));
    }
    let prefix = prefix.trim_matches('/');
    if prefix
        .split('/')
        .any(|p| p.is_empty() || p == "." || p == "..")
        && !prefix.is_empty()
    {
        return Err(format!(
            "the prefix {prefix:?} has an empty, '.' or '..' part"
        ));
    }
    Ok((bucket.to_string(), prefix.to_string()))
}

/// A blob store in an S3 bucket.
#[derive(Debug, Clone)]
pub struct S3Store {
    store: Arc<dyn ObjectStore>,
    /// `<prefix>/sha256`
    blobs: Path,
    /// `<prefix>/tmp`
    tmp: Path,
    describe: String,
}

fn remote(e: object_store::Error) -> BlobError {
    BlobError::Remote(e.to_string())
}

impl S3Store {
    /// Builds the client. Nothing is sent yet: [`S3Store::check`] tells whether the bucket
    /// answers.
    pub fn new(settings: &S3Settings) -> Result<S3Store, BlobError> {
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&settings.bucket)
            .with_region(&settings.region)
            .with_access_key_id(&settings.access_key_id)
            .with_secret_access_key(&settings.secret_access_key)
            .with_virtual_hosted_style_request(settings.virtual_hosted)
            // A few quick retries of 5xx and connection errors; a store that stays down
            // fails the put with its cause instead of holding an upload for minutes.
            .with_retry(RetryConfig {
                max_retries: 3,
                retry_timeout: Duration::from_secs(30),
                ..RetryConfig::default()
            });
        if let Some(endpoint) = &settings.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        if let Some(token) = &settings.session_token {
            builder = builder.with_token(token);
        }
        let store = builder.build().map_err(remote)?;
        let root = Path::from(settings.prefix.as_str());
        Ok(S3Store {
            store: Arc::new(store),
            blobs: root.clone().join("sha256"),
            tmp: root.join("tmp"),
            describe: format!(
                "s3://{}/{}{}",
                settings.bucket,
                settings.prefix,
                settings
                    .endpoint
                    .as_ref()
                    .map(|e| format!(" at {e}"))
                    .unwrap_or_default()
            ),
        })
    }

    /// Lists one page of the prefix: proves the endpoint, the credentials and the bucket.
    /// Also removes temporary objects a crash left more than a day ago.
    pub async fn check(&self) -> Result<(), BlobError> {
        let mut listing = self.store.list(Some(&self.tmp));
        let cutoff = chrono::Utc::now() - STALE_TMP;
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(remote)?;
            if meta.last_modified < cutoff {
                tracing::info!(key = %meta.location, "removing an unfinished upload");
                let _ = self.store.delete(&meta.location).await;
            }
        }
        Ok(())
    }

    /// `s3://bucket/prefix at endpoint`, for logs and `/healthz`.
    pub fn describe(&self) -> &str {
        &self.describe
    }

    fn key(&self, digest: &Digest) -> Path {
        self.blobs.clone().join(digest.hex())
    }

    async fn exists(&self, key: &Path) -> Result<Option<u64>, BlobError> {
        match self.store.head(key).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(remote(e)),
        }
    }

    async fn put_inner(&self, mut data: ByteStream, opts: PutOptions) -> Result<Stored, BlobError> {
        if let Some(expected) = opts.expected
            && self.exists(&self.key(&expected)).await?.is_some()
        {
            // Stored once: read and check the bytes, send none of them.
            let (digest, size) = hash_all(&mut data, opts.max_size).await?;
            check_expected(opts.expected, digest)?;
            return Ok(Stored {
                digest,
                size,
                created: false,
            });
        }
        let target = match opts.expected {
            Some(d) => self.key(&d),
            None => self.tmp.clone().join(format!(
                "{:016x}{:016x}",
                rand::random::<u64>(),
                rand::random::<u64>()
            )),
        };
        let mut hasher = sha2::Sha256::new();
        let mut size: u64 = 0;
        let mut first = BytesMut::new();
        let mut upload: Option<WriteMultipart> = None;
        let outcome: Result<(), BlobError> = async {
            while let Some(chunk) = data.next().await {
                let chunk = chunk.map_err(BlobError::Source)?;
                size = size.saturating_add(chunk.len() as u64);
                if let Some(limit) = opts.max_size
                    && size > limit
                {
                    return Err(BlobError::TooLarge { limit });
                }
                hasher.update(&chunk);
                match &mut upload {
                    Some(up) => {
                        up.wait_for_capacity(INFLIGHT).await.map_err(remote)?;
                        up.put(chunk);
                    }
                    None => {
                        first.extend_from_slice(&chunk);
                        if first.len() >= PART {
                            let started =
                                self.store.put_multipart(&target).await.map_err(remote)?;
                            let mut up = WriteMultipart::new_with_chunk_size(started, PART);
                            up.put(std::mem::take(&mut first).freeze());
                            upload = Some(up);
                        }
                    }
                }
            }
            Ok(())
        }
        .await;
        let digest = Digest::from_bytes(hasher.finalize().into());
        let outcome = outcome.and_then(|()| check_expected(opts.expected, digest));
        if let Err(e) = outcome {
            if let Some(up) = upload {
                let _ = up.abort().await;
            }
            return Err(e);
        }
        match upload {
            Some(up) => {
                up.finish().await.map_err(remote)?;
            }
            None => {
                self.store
                    .put(&target, PutPayload::from(first.freeze()))
                    .await
                    .map_err(remote)?;
            }
        }
        let created = if opts.expected.is_some() {
            true
        } else {
            let key = self.key(&digest);
            let created = if self.exists(&key).await?.is_some() {
                false
            } else {
                self.store.copy(&target, &key).await.map_err(remote)?;
                true
            };
            if let Err(e) = self.store.delete(&target).await {
                tracing::warn!(key = %target, error = %e, "could not remove a temporary upload");
            }
            created
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
        let key = self.key(&digest);
        let size = self
            .exists(&key)
            .await?
            .ok_or(BlobError::NotFound(digest))?;
        let range = crate::checked_range(range, size)?;
        if range.start == range.end {
            return Ok(Blob {
                size,
                range,
                stream: futures::stream::empty().boxed(),
            });
        }
        let options = GetOptions {
            range: (range != (0..size)).then(|| GetRange::Bounded(range.clone())),
            ..GetOptions::default()
        };
        let got = match self.store.get_opts(&key, options).await {
            Ok(g) => g,
            // Deleted between the head and the get.
            Err(object_store::Error::NotFound { .. }) => return Err(BlobError::NotFound(digest)),
            Err(e) => return Err(remote(e)),
        };
        let stream = got
            .into_stream()
            .map(|chunk| chunk.map_err(io::Error::other));
        Ok(Blob {
            size,
            range,
            stream: stream.boxed(),
        })
    }

    async fn delete_inner(&self, digest: Digest) -> Result<bool, BlobError> {
        let key = self.key(&digest);
        // S3's delete succeeds whether or not the key exists: ask first.
        if self.exists(&key).await?.is_none() {
            return Ok(false);
        }
        match self.store.delete(&key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(true),
            Err(e) => Err(remote(e)),
        }
    }

    async fn list_inner(&self) -> Result<Vec<BlobMeta>, BlobError> {
        let mut out = Vec::new();
        let mut listing = self.store.list(Some(&self.blobs));
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(remote)?;
            // Anything not named like a blob is not one.
            if let Some(digest) = meta.location.filename().and_then(|n| n.parse().ok()) {
                out.push(BlobMeta {
                    digest,
                    size: meta.size,
                });
            }
        }
        out.sort_by_key(|b| b.digest);
        Ok(out)
    }
}

/// Reads a stream to its end for its digest and size, within the limit.
async fn hash_all(
    data: &mut ByteStream,
    max_size: Option<u64>,
) -> Result<(Digest, u64), BlobError> {
    let mut hasher = sha2::Sha256::new();
    let mut size: u64 = 0;
    while let Some(chunk) = data.next().await {
        let chunk: Bytes = chunk.map_err(BlobError::Source)?;
        size = size.saturating_add(chunk.len() as u64);
        if let Some(limit) = max_size
            && size > limit
        {
            return Err(BlobError::TooLarge { limit });
        }
        hasher.update(&chunk);
    }
    Ok((Digest::from_bytes(hasher.finalize().into()), size))
}

fn check_expected(expected: Option<Digest>, actual: Digest) -> Result<(), BlobError> {
    match expected {
        Some(expected) if expected != actual => Err(BlobError::Mismatch { expected, actual }),
        _ => Ok(()),
    }
}

impl BlobStore for S3Store {
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

    #[test]
    fn s3_urls_split_into_bucket_and_prefix() {
        assert_eq!(
            parse_s3_url("s3://lab-artifacts/testfarm/prod"),
            Ok(("lab-artifacts".into(), "testfarm/prod".into()))
        );
        assert_eq!(
            parse_s3_url("s3://lab-artifacts"),
            Ok(("lab-artifacts".into(), String::new()))
        );
        assert_eq!(
            parse_s3_url("s3://lab-artifacts/x/"),
            Ok(("lab-artifacts".into(), "x".into()))
        );
        for bad in [
            "http://b/x",
            "s3://",
            "s3://UPPER/x",
            "s3://ab",
            "s3://b_c/x",
            "s3://bucket/a//b",
            "s3://bucket/a/../b",
        ] {
            assert!(parse_s3_url(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn settings_never_print_the_secret() {
        let s = S3Settings {
            bucket: "b".into(),
            prefix: String::new(),
            endpoint: None,
            region: "us-east-1".into(),
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI".into(),
            session_token: Some("tok".into()),
            virtual_hosted: false,
        };
        let shown = format!("{s:?}");
        assert!(shown.contains("AKIDEXAMPLE"));
        assert!(!shown.contains("wJalrXUtnFEMI") && !shown.contains("tok"));
    }
}
