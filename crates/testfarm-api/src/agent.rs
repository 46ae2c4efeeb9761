//! The agent protocol. Agents pull; the server never dials an agent.
//!
//! ```text
//! POST /api/v1/agents/register      RegisterRequest  -> RegisterResponse   (idempotent, by name)
//! POST /api/v1/agents/heartbeat     Heartbeat        -> HeartbeatResponse  (every few seconds)
//! GET  /api/v1/agents/work?wait=30  long-poll        -> 200 WorkResponse (possibly empty)
//! POST /api/v1/jobs/{id}/start      Fenced           -> 200 | 409 stale epoch
//! PUT  /api/v1/jobs/{id}/logs/{seq} raw bytes, header X-Testfarm-Epoch -> 200 | 409
//! POST /api/v1/jobs/{id}/steps      StepReport       -> 200 | 409
//! PUT  /api/v1/jobs/{id}/outputs/{name} raw bytes, header X-Testfarm-Epoch -> 200 | 409
//! POST /api/v1/jobs/{id}/finish     FinishRequest    -> 200 | 409
//! POST /api/v1/leases/{id}/renew    RenewRequest     -> 200 Lease | 409
//! ```
//!
//! Every write that acts for a job carries the epoch of the job's lease; the server
//! answers 409 (`urn:testfarm:problem:stale-epoch`) when the lease has ended or moved on,
//! and the agent must then drop that work. An agent token may act only for resources
//! registered under its own name (the token's name is the agent's name).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::resource::{BoardInfo, Capabilities, Labels, Resource, ResourceKind};

/// Header carrying the fencing epoch on raw-body writes (logs, outputs).
pub const EPOCH_HEADER: &str = "x-testfarm-epoch";

/// A resource the agent manages, as it measured it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentResource {
    pub name: String,
    pub kind: ResourceKind,
    #[serde(default)]
    pub labels: Labels,
    #[serde(default)]
    pub capabilities: Capabilities,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub board: Option<BoardInfo>,
    /// Set when the agent could not reach the resource at start (a board whose console or
    /// power does not answer): it is registered `offline` with this reason, never dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offline_reason: Option<String>,
    /// What the agent checked and found at start (`console: 212 bytes in 1 s`,
    /// `power: status on`), shown with the resource.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verification: Vec<String>,
    /// Boards: the board's own quarantine policy from its `[[board]]` table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantine: Option<crate::board::QuarantineSettings>,
}

/// Work the agent believes it is running (reported at registration and in heartbeats,
/// so a restarted server or agent can reconcile).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RunningWork {
    pub job_id: String,
    pub lease_id: String,
    pub epoch: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// testfarm version of the agent, for compatibility warnings.
    pub version: String,
    pub hostname: String,
    pub resources: Vec<AgentResource>,
    #[serde(default)]
    pub running: Vec<RunningWork>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RegisterResponse {
    /// The agent's name (its token's name).
    pub agent: String,
    pub resources: Vec<Resource>,
    /// Reported work the server no longer recognises: stop it and discard its results.
    pub drop: Vec<String>,
    /// How often to heartbeat.
    pub heartbeat_interval_ms: u64,
    /// Silence after which the server marks the agent's resources offline.
    pub offline_after_ms: u64,
}

/// Measured load of one resource.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ResourceMetrics {
    pub resource: String,
    /// 0-100.
    pub cpu_pct: f64,
    /// 0-100.
    pub memory_pct: f64,
    /// 0-100.
    pub disk_pct: f64,
    pub disk_free_gb: f64,
    /// Running compiler processes (build servers).
    #[serde(default)]
    pub active_compilations: u32,
    #[serde(default)]
    pub running_jobs: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    pub metrics: Vec<ResourceMetrics>,
    #[serde(default)]
    pub running: Vec<RunningWork>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct HeartbeatResponse {
    /// Work to stop at once and forget (lease ended, stale epoch): no `always`, no report.
    pub drop: Vec<String>,
    /// Work to cancel cleanly: kill the step's process group, run `always`, report `cancelled`.
    pub cancel: Vec<String>,
}

/// One job handed to an agent.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Assignment {
    pub job_id: String,
    pub lease_id: String,
    pub epoch: u64,
    /// The resource the job was placed on (one of the agent's).
    pub resource: String,
    /// The job spec, as parsed at submit (`testfarm_core::jobspec::JobSpec`).
    #[schema(value_type = Object)]
    pub spec: serde_json::Value,
    /// Variables after `--var` overrides.
    #[schema(value_type = Object)]
    pub vars: serde_json::Value,
    /// Whole-job timeout in ms (0: none).
    pub timeout_ms: u64,
    /// Renew the lease at least this often while the job runs.
    pub renew_every_ms: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct WorkResponse {
    pub assignments: Vec<Assignment>,
    /// Requests for the agent's boards (power, health check, release, console).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub board_actions: Vec<crate::board::BoardAction>,
}

/// A body carrying only the fencing epoch (`start`, `renew`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Fenced {
    pub epoch: u64,
}

/// How a step or a job ended, from the agent's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Exit 0.
    Passed,
    /// The step ran and exited non-zero: the test's fault.
    Failed,
    /// The agent could not run it (spawn failure, missing interpreter or workdir, lost
    /// host): the lab's fault.
    Error,
    TimedOut,
    Cancelled,
    /// Not run (an earlier step ended the job).
    Skipped,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepReport {
    pub epoch: u64,
    /// Position in `steps` (then `always`, continuing the count).
    pub index: u32,
    /// `shell`, `upload`, …
    pub kind: String,
    /// True for steps of the `always` list.
    #[serde(default)]
    pub always: bool,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    pub duration_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For a build step: what it built, where, how long, at what peak cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<crate::build::BuildSummary>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FinishRequest {
    pub epoch: u64,
    /// passed, failed, error, timed_out or cancelled.
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Number of log chunks sent (the server checks it has them all).
    pub log_chunks: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LogAck {
    /// The next sequence number the server expects.
    pub next_seq: u64,
}
