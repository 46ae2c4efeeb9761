//! Pipelines: submission, listing, cancellation, the stages and their jobs, history.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

pub use testfarm_core::pipeline::{PipelineState, StageState};

/// `POST /api/v1/pipelines`: a YAML pipeline spec as text (errors carry line and column).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitPipeline {
    /// The pipeline spec, YAML (see docs/pipelines.md).
    pub spec: String,
    /// `--var k=v`: override the pipeline's vars (and every stage's).
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
    /// Priority of every stage's job: low, normal, high, urgent or 0-1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
}

/// One stage of a pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Stage {
    pub name: String,
    /// The stages it waits for.
    pub needs: Vec<String>,
    pub state: StageState,
    /// Its job, once submitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<DateTime<Utc>>,
    /// Why it did not pass (its job's reason, or why it could not start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Pipeline {
    pub id: String,
    pub name: String,
    pub state: PipelineState,
    pub submitter: String,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<DateTime<Utc>>,
    /// The stage that halted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_stage: Option<String>,
    /// Why it ended without passing: which stage, and whether the lab (`error`) or the
    /// change under test (`failed`) was at fault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The pipeline's vars after `--var`.
    #[schema(value_type = Object)]
    pub vars: serde_json::Value,
    pub stages: Vec<Stage>,
}

/// `GET /api/v1/pipelines` filters.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PipelineQuery {
    pub name: Option<String>,
    /// running, passed, failed, error or cancelled.
    pub state: Option<String>,
    pub limit: Option<u32>,
    /// From `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// `GET /api/v1/pipelines/history` query.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Required: the pipeline's name.
    pub name: Option<String>,
}

/// `POST /api/v1/pipelines/{id}/cancel`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelPipeline {
    #[serde(default)]
    pub reason: String,
}

/// How one stage of a named pipeline has done.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StageHistory {
    pub name: String,
    /// Runs that ended (passed or not; skipped stages are not runs).
    pub runs: u64,
    pub passed: u64,
    /// passed / runs, 0 to 1; 0 without runs.
    pub success_rate: f64,
    /// Mean duration of its ended runs, milliseconds.
    pub avg_duration_ms: u64,
}

/// How a named pipeline has done: its ended runs and each stage's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PipelineHistory {
    pub name: String,
    pub runs: u64,
    pub passed: u64,
    pub failed: u64,
    pub error: u64,
    pub cancelled: u64,
    pub success_rate: f64,
    pub stages: Vec<StageHistory>,
}
