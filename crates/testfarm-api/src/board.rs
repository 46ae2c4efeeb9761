//! Boards: what the server asks the agent that manages a board to do, what an agent
//! reports about its boards, and the board views of the API.
//!
//! Agents pull, the server never dials one: a power switch, a health check, a lease-end
//! release or an interactive console session is queued as a [`BoardAction`] and handed to
//! the board's agent in its work long-poll (`GET /api/v1/agents/work` wakes for it). The
//! agent answers each action once with a [`BoardActionResult`], and reports what it does
//! on its own (flashing, deploying, recovering a hung board, health probes) as
//! [`BoardReport`]s. Both feed the board's history (who, when, result).
//!
//! ```text
//! POST /api/v1/boards/{name}/power          PowerRequest      -> BoardActionView (waits for the agent)
//! POST /api/v1/boards/{name}/health-check                     -> BoardActionView
//! POST /api/v1/boards/{name}/restore                          -> 201 job (deploy the known-good build)
//! GET  /api/v1/boards/{name}                                  -> BoardView
//! GET  /api/v1/boards/{name}/history?kind=&limit=             -> Page<BoardHistoryEntry>
//! GET  /api/v1/boards/{name}/console        WebSocket (lease holder or operator)
//! POST /api/v1/agents/board-actions/{id}    BoardActionResult -> 200
//! POST /api/v1/agents/boards/{name}/report  BoardReport       -> 200
//! GET  /api/v1/agents/console/{session}     WebSocket (the agent's side of a console session)
//! ```
//!
//! A console session carries raw console bytes as binary WebSocket frames both ways; the
//! server sends text frames for notices (attached, detached and why).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

pub use testfarm_core::board::health::HealthLevel;

/// What an action asks of the board's agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BoardActionKind {
    PowerOn,
    PowerOff,
    PowerCycle,
    PowerStatus,
    /// Power-cycle, watch for the boot prompt, check the console answers, run the health
    /// probe: the check that returns a quarantined board to the pool when it passes.
    HealthCheck,
    /// A lease on the board ended: leave it safe (its `on_release`, off by default) with
    /// the console detached.
    Release,
    /// Attach the board's console to session `session` (`GET /agents/console/{session}`).
    Console,
}

impl BoardActionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BoardActionKind::PowerOn => "power_on",
            BoardActionKind::PowerOff => "power_off",
            BoardActionKind::PowerCycle => "power_cycle",
            BoardActionKind::PowerStatus => "power_status",
            BoardActionKind::HealthCheck => "health_check",
            BoardActionKind::Release => "release",
            BoardActionKind::Console => "console",
        }
    }
}

/// One queued request for the agent that manages `board`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BoardAction {
    pub id: String,
    pub board: String,
    pub action: BoardActionKind,
    /// The token name that asked (`reaper` for the server's own lease-end cleanup).
    pub requested_by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The lease whose end this action cleans up after (`release`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_id: Option<String>,
    /// The console session to attach to (`console`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
}

/// The board's power as its driver reads it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PowerState {
    On,
    Off,
    /// The driver cannot read it back (a relay without feedback, manual power).
    Unknown,
}

/// `POST /api/v1/agents/board-actions/{id}`: how an action ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BoardActionResult {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power: Option<PowerState>,
    /// What happened, or why it failed (`power command exited 1: …`); for manual power,
    /// the instructions an operator must follow.
    #[serde(default)]
    pub detail: String,
    /// Manual power: a person has to do it (`detail` says what).
    #[serde(default)]
    pub operator_action_needed: bool,
}

/// What a board is doing right now (beside its resource state, which says whether the
/// scheduler may use it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BoardActivity {
    #[default]
    Idle,
    Flashing,
    Booting,
    Testing,
    /// Being power-cycled after a hang.
    Recovering,
    /// Running a health check.
    Checking,
}

/// `POST /api/v1/agents/boards/{name}/report`: something the agent did or found on its
/// own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum BoardReport {
    Activity {
        activity: BoardActivity,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        job_id: Option<String>,
    },
    /// A power operation the agent did itself (a deploy's power cycle, a recovery, a job's
    /// end): for the power history.
    Power {
        /// `on`, `off`, `cycle` or `status`.
        action: String,
        ok: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        state: Option<PowerState>,
        #[serde(default)]
        detail: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        job_id: Option<String>,
    },
    Flash {
        job_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        build_id: Option<String>,
        ok: bool,
        #[serde(default)]
        detail: String,
        duration_ms: u64,
    },
    /// A deploy's outcome: the build is on the board and booted (or did not).
    Deployed {
        job_id: String,
        build_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        commit: Option<String>,
        booted: bool,
        #[serde(default)]
        detail: String,
    },
    /// A health probe or health check.
    Health {
        passed: bool,
        level: HealthLevel,
        #[serde(default)]
        findings: Vec<String>,
        #[serde(default)]
        values: BTreeMap<String, String>,
        /// True for a full health check (`health_check` action), false for an idle probe.
        #[serde(default)]
        check: bool,
    },
    /// The board stopped answering and the agent tried to bring it back.
    Recovery {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        job_id: Option<String>,
        recovered: bool,
        /// What each power-cycle attempt ended with.
        #[serde(default)]
        attempts: Vec<String>,
        #[serde(default)]
        detail: String,
    },
}

/// Per-board quarantine settings the agent read from the board's `[[board]]` table, sent
/// at registration so the server applies the board's own policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuarantineSettings {
    pub health_failures: u32,
    pub lab_errors: u32,
    pub window_ms: u64,
}

/// `POST /api/v1/boards/{name}/power`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PowerRequest {
    /// `on`, `off`, `cycle` or `status`.
    pub action: PowerVerb,
    /// How long to wait for the agent's answer (default 30 s, at most 120 s); past it the
    /// action stays queued and the answer is `pending`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 120000)]
    pub wait_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PowerVerb {
    On,
    Off,
    Cycle,
    Status,
}

impl PowerVerb {
    pub fn action(self) -> BoardActionKind {
        match self {
            PowerVerb::On => BoardActionKind::PowerOn,
            PowerVerb::Off => BoardActionKind::PowerOff,
            PowerVerb::Cycle => BoardActionKind::PowerCycle,
            PowerVerb::Status => BoardActionKind::PowerStatus,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BoardActionState {
    /// Queued, not yet taken by the agent.
    Pending,
    /// Handed to the agent.
    Sent,
    Done,
    Failed,
}

/// An action and, once the agent answered, its result.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BoardActionView {
    pub id: String,
    pub board: String,
    pub action: BoardActionKind,
    pub state: BoardActionState,
    pub requested_by: String,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<BoardActionResult>,
}

/// A build on a board: the current one, or the last known-good one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Deployment {
    pub build_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    pub job_id: String,
    pub at: DateTime<Utc>,
}

/// `GET /api/v1/boards/{name}`: the board's resource and what it is doing and holds.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BoardView {
    pub resource: crate::resource::Resource,
    pub activity: BoardActivity,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power: Option<PowerState>,
    /// What is deployed now (the last deploy, booted or not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<Deployment>,
    /// The last build that booted and whose job passed on this board: what
    /// `testfarm board restore` deploys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_good: Option<Deployment>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_level: Option<HealthLevel>,
    #[serde(default)]
    pub health_findings: Vec<String>,
    /// Failed health checks in a row (quarantine at the board's `health_failures`).
    pub consecutive_health_failures: u32,
    /// Why it left the pool, while it is out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantine_reason: Option<String>,
    /// Why its agent could not reach it at registration (it stays `offline` until a
    /// registration without a reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offline_reason: Option<String>,
    /// What the agent checked and found at registration.
    #[serde(default)]
    pub verification: Vec<String>,
    /// The board's own quarantine policy, when its agent sent one (else the server's
    /// default: 3 health failures, 3 lab errors in an hour).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantine: Option<QuarantineSettings>,
    /// The job the current activity belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activity_job: Option<String>,
}

/// What a history entry is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BoardHistoryKind {
    Power,
    Flash,
    Deploy,
    Recovery,
    Health,
    Quarantine,
}

/// One line of a board's history.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BoardHistoryEntry {
    pub at: DateTime<Utc>,
    pub kind: BoardHistoryKind,
    /// `on`, `off`, `cycle`, `status`, `release`, `flash`, `deploy`, `health_check`, …
    pub action: String,
    /// Who asked (a token name, `agent:NAME` for the agent's own, `reaper`).
    pub actor: String,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_id: Option<String>,
    #[serde(default)]
    pub detail: String,
}

/// `GET /api/v1/boards` filters (as for resources).
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BoardListQuery {
    /// `available`, `leased`, `maintenance`, `offline` or `retired`.
    pub state: Option<String>,
    /// A label selector, e.g. `board_type=rpi4`.
    pub selector: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// `GET /api/v1/boards/{name}/history` filters.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BoardHistoryQuery {
    /// `power`, `flash`, `deploy`, `recovery`, `health` or `quarantine`.
    pub kind: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// `GET /api/v1/boards/{name}/console` (WebSocket).
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ConsoleQuery {
    /// End the session after this many milliseconds; at most (and by default) the
    /// server's `boards.console_session_limit`.
    pub limit_ms: Option<u64>,
}
