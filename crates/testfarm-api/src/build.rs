//! Build jobs: what a build step reports when it ends, the stored build runs, and the
//! per-server history (`GET /api/v1/builds/history`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

pub use testfarm_core::artifact::ArtifactKind;
pub use testfarm_core::build::ServerHistory;

use crate::agent::Outcome;

/// One file a build kept, as stored in the artifact repository.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BuiltArtifact {
    pub name: String,
    pub kind: ArtifactKind,
    pub size: u64,
    /// Lowercase hex, as the agent computed it and the server verified it.
    pub sha256: String,
}

/// What a build step did, reported by the agent with the step (`StepReport::build`) and
/// shown with the job's steps.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BuildSummary {
    /// The artifact repository's build, once created (absent when the build kept nothing
    /// or failed before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_id: Option<String>,
    pub source: String,
    /// The ref as asked (`main`, `v6.12`), if one was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
    /// The commit it resolved to (`git rev-parse HEAD`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
    /// The compiler used for the arch (`gcc`, `aarch64-linux-gnu-gcc`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub toolchain: Option<String>,
    /// The build server (resource name).
    pub server: String,
    /// Of the whole step: fetch, build and upload.
    pub duration_ms: u64,
    /// Peak CPU of the build's processes, in percent of one cpu (400 = four cpus busy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_cpu_pct: Option<f64>,
    /// Peak resident memory of the build's processes together, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_memory_bytes: Option<u64>,
    #[serde(default)]
    pub artifacts: Vec<BuiltArtifact>,
}

/// A stored build run: a build step's summary with its job and outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BuildRun {
    pub job_id: String,
    pub step: u32,
    pub outcome: Outcome,
    pub ended_at: DateTime<Utc>,
    #[serde(flatten)]
    pub summary: BuildSummary,
}

/// `GET /api/v1/builds/history` filters.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BuildHistoryQuery {
    /// Only this build server.
    pub server: Option<String>,
    /// How many recent runs to list besides the per-server summary (default 20, max 500).
    pub limit: Option<u32>,
}

/// Per-server history, and the most recent runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BuildHistory {
    pub servers: Vec<ServerHistory>,
    pub recent: Vec<BuildRun>,
}
