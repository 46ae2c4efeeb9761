//! Events: the append-only record of every state change.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Event {
    /// Strictly increasing; resume a stream with `after` or `Last-Event-ID`.
    pub id: i64,
    pub at: DateTime<Utc>,
    /// Dotted kind, e.g. `resource.created`, `resource.maintenance_on`, `token.revoked`.
    pub kind: String,
    /// What the event is about: `resource`, `group`, `token`, `job`, `lease`.
    pub subject_type: String,
    /// The subject's name or id.
    pub subject: String,
    /// Who caused it: a token name, `scheduler`, `reaper`, `health`.
    pub actor: String,
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

/// `GET /api/v1/events` filters.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventQuery {
    /// Only events with an id greater than this.
    pub after: Option<i64>,
    /// Only events of this subject type.
    pub subject_type: Option<String>,
    /// Only events about this subject.
    pub subject: Option<String>,
    pub limit: Option<u32>,
}
