//! The artifact repository's running parts: the blob store (a directory under the data
//! dir or an S3 bucket, behind `testfarm_artifacts::BlobStore`), the registry of blobs
//! being downloaded,
//! and the lock that keeps the sweep of unreferenced blobs from racing an upload.
//! Routes are in `routes::artifacts`; retention in `tasks::artifact_retention`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use testfarm_artifacts::{BlobStore, InUse, LocalDir, S3Settings, S3Store};

use crate::config::BlobLocation;
use tokio::sync::RwLock;

pub struct ArtifactRepo {
    pub blobs: Arc<dyn BlobStore>,
    /// Digests with an open download; the sweep leaves them for a later pass.
    pub in_use: InUse,
    /// Held shared by an upload from its first byte until its artifact row commits, and
    /// exclusively by the sweep: a blob just stored but not yet referenced is never
    /// mistaken for garbage.
    pub sweep: RwLock<()>,
}

impl ArtifactRepo {
    /// The local-directory store at `<data_dir>/artifacts`.
    pub fn local(data_dir: &Path) -> std::io::Result<ArtifactRepo> {
        Ok(ArtifactRepo::with(Arc::new(LocalDir::open(
            &data_dir.join("artifacts"),
        )?)))
    }

    fn with(blobs: Arc<dyn BlobStore>) -> ArtifactRepo {
        ArtifactRepo {
            blobs,
            in_use: InUse::default(),
            sweep: RwLock::new(()),
        }
    }

    /// The store `[artifacts]` names; `secrets` holds the values of `[secrets]`. A bucket
    /// that does not answer at start is logged, not fatal: the lab keeps running its
    /// other work, and each upload fails with the cause (503) until the bucket is back.
    pub async fn open(
        location: &BlobLocation,
        data_dir: &Path,
        secrets: &BTreeMap<String, String>,
    ) -> Result<ArtifactRepo, String> {
        let (bucket, prefix, s3) = match location {
            BlobLocation::Local => {
                let dir = data_dir.join("artifacts");
                return ArtifactRepo::local(data_dir)
                    .map_err(|e| format!("artifact directory {}: {e}", dir.display()));
            }
            BlobLocation::S3 { bucket, prefix, s3 } => (bucket, prefix, s3),
        };
        // Config validation made sure each name is in [secrets].
        let secret = |name: &String| secrets.get(name).cloned().unwrap_or_default();
        let store = S3Store::new(&S3Settings {
            bucket: bucket.clone(),
            prefix: prefix.clone(),
            endpoint: s3.endpoint.clone(),
            region: s3.region.clone(),
            access_key_id: secret(&s3.access_key_id),
            secret_access_key: secret(&s3.secret_access_key),
            session_token: s3.session_token.as_ref().map(secret),
            virtual_hosted: s3.virtual_hosted,
        })
        .map_err(|e| format!("artifacts.store: {e}"))?;
        match store.check().await {
            Ok(()) => tracing::info!(store = store.describe(), "artifact blobs in S3"),
            Err(e) => tracing::warn!(
                store = store.describe(),
                error = %e,
                "the artifact bucket does not answer; uploads and downloads fail until it does"
            ),
        }
        Ok(ArtifactRepo::with(Arc::new(store)))
    }
}
