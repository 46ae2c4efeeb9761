//! The artifact repository: builds, the artifacts they hold, tags, retention.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use ulid::Ulid;
use utoipa::{IntoParams, ToSchema};

pub use testfarm_core::artifact::ArtifactKind;
pub use testfarm_core::artifact_retention::ExpiryReason;

/// `POST /api/v1/builds`: a build's record, before its artifacts are uploaded.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBuild {
    /// The commit built (a git hash, or whatever names a source revision).
    pub commit: String,
    pub branch: String,
    /// The architecture built for, e.g. `arm64`.
    pub arch: String,
    /// The job that built it, if a testfarm job did.
    #[serde(default)]
    pub source_job: Option<String>,
    /// Tags to start with (tagged builds are kept by retention).
    #[serde(default)]
    pub tags: Vec<String>,
}

/// A build and what it holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Build {
    pub id: Ulid,
    pub commit: String,
    pub branch: String,
    pub arch: String,
    pub created_at: DateTime<Utc>,
    /// Pinned builds are never deleted by retention.
    pub pinned: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_job: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub artifacts: Vec<Artifact>,
}

/// One stored file of a build.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Artifact {
    pub build_id: Ulid,
    /// Its name within the build (`Image`, `rootfs.ext4`).
    pub name: String,
    pub kind: ArtifactKind,
    /// Lowercase hex SHA-256 of its bytes; also its download address.
    pub sha256: String,
    pub size: u64,
    pub created_at: DateTime<Utc>,
    /// The build's commit, branch and architecture, so a listing needs no second lookup.
    pub commit: String,
    pub branch: String,
    pub arch: String,
}

/// `GET /api/v1/artifacts` filters; all given must match.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ArtifactQuery {
    /// A build id.
    pub build: Option<String>,
    pub commit: Option<String>,
    pub branch: Option<String>,
    /// `kernel`, `dtb`, `initrd`, `rootfs`, `modules`, `firmware` or `other`.
    pub kind: Option<String>,
    /// Only builds carrying this tag.
    pub tag: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// `GET /api/v1/artifacts/latest`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LatestQuery {
    /// Required.
    pub branch: Option<String>,
    /// Required: `kernel`, `dtb`, `initrd`, `rootfs`, `modules`, `firmware` or `other`.
    pub kind: Option<String>,
    /// Only builds for this architecture.
    pub arch: Option<String>,
}

/// `PUT /api/v1/builds/{id}/artifacts/{name}` query.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UploadQuery {
    /// Required: `kernel`, `dtb`, `initrd`, `rootfs`, `modules`, `firmware` or `other`.
    pub kind: Option<String>,
    /// The SHA-256 the body must have (hex); a body with another is refused, nothing stored.
    pub sha256: Option<String>,
}

/// `POST /api/v1/artifacts/gc` query.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GcQuery {
    /// Report what would go without deleting anything.
    pub dry_run: Option<bool>,
}

/// A build retention deleted (or would delete).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GcBuild {
    pub id: Ulid,
    pub commit: String,
    pub branch: String,
    pub created_at: DateTime<Utc>,
    pub reason: ExpiryReason,
}

/// What a retention pass removed, or with `dry_run` would remove.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GcReport {
    pub dry_run: bool,
    pub builds: Vec<GcBuild>,
    /// Blobs no artifact refers to any more (hex sha256).
    pub blobs: Vec<String>,
    /// Bytes those blobs held.
    pub freed_bytes: u64,
    /// Blobs left for a later pass because a download was reading them.
    pub skipped_in_use: Vec<String>,
    /// Bytes stored before and after, as the retention rule counts them.
    pub total_before: u64,
    pub total_after: u64,
}
