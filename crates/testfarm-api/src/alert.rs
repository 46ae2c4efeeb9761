//! Alerts: what `GET /api/v1/alerts` lists, the detail with its recovery attempts and
//! deliveries, and the acknowledge / resolve requests. The rules themselves are
//! `testfarm_core::alert`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

pub use testfarm_core::alert::{AlertState, Rule, Severity};

/// An alert: one per (rule, subject) while its condition holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Alert {
    pub id: String,
    pub rule: Rule,
    /// What it is about: a resource, board or job name.
    pub subject: String,
    pub severity: Severity,
    pub state: AlertState,
    pub summary: String,
    /// The rule's facts (thresholds, reasons, job ids).
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    /// How many evaluations (or reports) saw the condition.
    pub count: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<DateTime<Utc>>,
    /// `auto` when the condition cleared, else who resolved it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_by: Option<String>,
}

/// Something the lab did about an alert's subject (a power cycle, a retry elsewhere).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RecoveryAttempt {
    pub at: DateTime<Utc>,
    pub action: String,
    pub result: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    Pending,
    Delivered,
    Undelivered,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Undelivered => "undelivered",
        }
    }
}

/// One notification of an alert's change to one channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Delivery {
    pub id: String,
    /// `webhook:NAME` or `email`.
    pub channel: String,
    /// `raised` or `resolved`.
    pub event: String,
    pub state: DeliveryState,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// `GET /api/v1/alerts/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AlertDetail {
    #[serde(flatten)]
    pub alert: Alert,
    pub recovery_attempts: Vec<RecoveryAttempt>,
    pub deliveries: Vec<Delivery>,
}

/// `GET /api/v1/alerts` filters.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AlertQuery {
    /// open, acknowledged, resolved; or `active` (open and acknowledged).
    pub state: Option<String>,
    /// info, warning, critical.
    pub severity: Option<String>,
    /// unreachable, disk_low, host_resources, board_health, build_failed, deploy_failed,
    /// cleanup_failed.
    pub rule: Option<String>,
    pub subject: Option<String>,
    pub limit: Option<u32>,
    /// From `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// `POST /api/v1/alerts/{id}/acknowledge` and `/resolve`: an optional note.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertAction {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The webhook's JSON body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AlertNotification {
    /// `raised` or `resolved`.
    pub event: String,
    pub delivery_id: String,
    pub alert: Alert,
}
