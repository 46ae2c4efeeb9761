//! Resource groups: named label selectors with aggregate capacity.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::resource::Resource;

/// `POST /api/v1/groups`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateGroup {
    pub name: String,
    /// Label selector defining membership, e.g. `kind=board,team=kernel`.
    pub selector: String,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Group {
    pub name: String,
    pub selector: String,
    pub description: String,
    pub created_at: DateTime<Utc>,
}

/// Totals for one resource kind within a group.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct KindCapacity {
    pub kind: String,
    pub total: u32,
    pub available: u32,
    pub leased: u32,
    pub maintenance: u32,
    pub offline: u32,
    pub retired: u32,
    pub cpus: u64,
    pub memory_mb: u64,
    pub disk_gb: u64,
    /// Leased share of the non-retired members, 0.0 to 1.0.
    pub utilization: f64,
}

/// `GET /api/v1/groups/{name}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GroupDetail {
    #[serde(flatten)]
    pub group: Group,
    pub members: Vec<Resource>,
    pub capacity: Vec<KindCapacity>,
}
