//! The artifact repository's running parts: the blob store (a directory under the data
//! dir, behind `testfarm_artifacts::BlobStore`), the registry of blobs being downloaded,
//! and the lock that keeps the sweep of unreferenced blobs from racing an upload.
//! Routes are in `routes::artifacts`; retention in `tasks::artifact_retention`.

use std::path::Path;
use std::sync::Arc;

use testfarm_artifacts::{BlobStore, InUse, LocalDir};
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
        Ok(ArtifactRepo {
            blobs: Arc::new(LocalDir::open(&data_dir.join("artifacts"))?),
            in_use: InUse::default(),
            sweep: RwLock::new(()),
        })
    }
}
