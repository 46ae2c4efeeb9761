//! Resource requests and responses.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

pub use testfarm_core::Labels;
pub use testfarm_core::resource::{
    BoardInfo, Capabilities, Health, HealthStatus, MaintenanceWindow, Resource, ResourceKind,
    ResourceState,
};

/// `POST /api/v1/resources`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateResource {
    pub name: String,
    pub kind: ResourceKind,
    #[serde(default)]
    pub labels: Labels,
    #[serde(default)]
    pub capabilities: Capabilities,
    /// Only for `kind: board`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub board: Option<BoardInfo>,
}

/// `GET /api/v1/resources` filters.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ResourceQuery {
    /// `build-server`, `qemu-host` or `board`.
    pub kind: Option<String>,
    /// `available`, `leased`, `maintenance`, `offline` or `retired`.
    pub state: Option<String>,
    /// A label selector, e.g. `arch=arm64,team in (a,b)`.
    pub selector: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// `PATCH /api/v1/resources/{name}/labels`: set some labels, remove others.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateLabels {
    #[serde(default)]
    pub set: Labels,
    #[serde(default)]
    pub remove: Vec<String>,
}

/// `POST /api/v1/resources/{name}/maintenance`: on with an optional window, or off.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceRequest {
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<DateTime<Utc>>,
    #[serde(default)]
    pub reason: String,
}

/// `POST /api/v1/resources/{name}/retire`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetireRequest {
    #[serde(default)]
    pub force: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One heartbeat's measurements of a resource (`GET /api/v1/resources/{name}/metrics`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MetricSample {
    pub at: DateTime<Utc>,
    pub metrics: crate::agent::ResourceMetrics,
}
