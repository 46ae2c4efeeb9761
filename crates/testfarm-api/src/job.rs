//! Jobs: submission, listing, cancellation, explanation, results of steps.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

pub use testfarm_core::job::JobState;

use crate::agent::Outcome;

/// `POST /api/v1/jobs`: a YAML job spec as text, so its errors carry line and column.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitJob {
    /// The job spec, YAML (see docs/job-spec.md).
    pub spec: String,
    /// `--var k=v` overrides of the spec's `vars`.
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
    /// Overrides the spec's priority: low, normal, high, urgent or 0-1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
}

/// One step's result as the agent reported it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StepRecord {
    pub index: u32,
    pub kind: String,
    pub always: bool,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    pub duration_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For a build step: its summary (commit, duration, peaks, artifacts, server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<crate::build::BuildSummary>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Job {
    pub id: String,
    pub name: String,
    pub state: JobState,
    pub priority: u16,
    pub submitter: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_id: Option<String>,
    /// 1 for the first run; grows when a lab error re-queues it (`retry_on_error`).
    pub attempt: u32,
    /// Why it ended, or why it was re-queued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub queued_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assigned_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<DateTime<Utc>>,
    pub log_bytes: u64,
    /// The parsed spec.
    #[schema(value_type = Object)]
    pub spec: serde_json::Value,
    #[schema(value_type = Object)]
    pub vars: serde_json::Value,
    /// Step results (in `job show`; empty in lists).
    #[serde(default)]
    pub steps: Vec<StepRecord>,
    /// For a queued job (in the answer to a submit and in `job show`): when it is
    /// expected to start, from the same estimate `job why` explains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_start: Option<DateTime<Utc>>,
}

/// `GET /api/v1/jobs` filters.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobQuery {
    /// queued, assigned, running, passed, failed, error, cancelled, timed_out; or
    /// `active` (queued, assigned, running) / `ended`.
    pub state: Option<String>,
    pub name: Option<String>,
    pub submitter: Option<String>,
    pub limit: Option<u32>,
    /// From `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// `POST /api/v1/jobs/{id}/cancel`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelJob {
    #[serde(default)]
    pub reason: String,
}

/// `GET /api/v1/jobs/{id}/log` query.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogQuery {
    /// Byte offset to start from.
    pub offset: Option<u64>,
    /// Seconds to wait for new bytes when there are none yet (long-poll, max 30).
    pub wait: Option<u64>,
}
