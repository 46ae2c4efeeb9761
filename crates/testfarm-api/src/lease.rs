//! Manual leases, as Jumpstarter users know them: take a resource by selector for a
//! while, renew it by heartbeat, release it (or lose it when the heartbeat stops).

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

pub use testfarm_core::lease::{EndReason, Holder, Lease, LeaseState, Share};

use crate::resource::ResourceKind;

/// `POST /api/v1/leases`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AcquireLease {
    /// Label selector the resource must match, e.g. `board_type=rpi4,team=bsp`.
    #[serde(default)]
    pub selector: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ResourceKind>,
    /// How long at most, e.g. `30m`.
    pub duration: String,
    /// How long to wait for a matching resource to be free (default: do not wait).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<String>,
    /// Silence after which the lease ends (default `30s`); renew more often than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_ttl: Option<String>,
}

/// `POST /api/v1/leases/{id}/renew`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenewLease {
    pub epoch: u64,
    /// Also push the end out to at least now + this (e.g. `30m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extend: Option<String>,
}

/// `DELETE /api/v1/leases/{id}` query.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReleaseQuery {
    /// The holder's epoch (required unless `force`).
    pub epoch: Option<u64>,
    /// Operators: end someone else's lease; the holder is fenced.
    pub force: Option<bool>,
    pub reason: Option<String>,
}

/// `GET /api/v1/leases` query.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LeaseQuery {
    /// active (default), released, expired or all.
    pub state: Option<String>,
}

/// A lease with its resource's name.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LeaseView {
    #[serde(flatten)]
    pub lease: Lease,
    pub resource: String,
}
