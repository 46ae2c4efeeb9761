//! The testfarm side of the factory, as a trait.
//!
//! The loop in [`crate::factory`] only needs a few things from the lab: its live instance
//! records (they outlive a restart, so the loop picks them up again), a free board for a
//! target, a way to start the buildomat agent on a board under a lease, how an instance is
//! doing, and a way to end it that always ends the lease (the board is then cleaned and
//! powered off by the lab's ordinary lease-end rules). The testfarm server implements it
//! over its store and job submission; tests implement it in memory.

use std::future::Future;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// An instance's place in its life. Only ever moves forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceState {
    /// Recorded, the board is being leased and the agent started.
    Created,
    /// The agent was started on the board.
    Running,
    /// Being torn down: the lease is ending and the worker is being deleted.
    Destroying,
    /// Gone: lease ended, worker deleted. Kept as history.
    Destroyed,
}

impl InstanceState {
    /// A stable word for the store and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Created => "created",
            InstanceState::Running => "running",
            InstanceState::Destroying => "destroying",
            InstanceState::Destroyed => "destroyed",
        }
    }
}

/// One buildomat worker served by one board.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Instance {
    /// Our id; associated with the worker as its `private`.
    pub id: String,
    pub state: InstanceState,
    /// buildomat job id (the lease we took).
    pub job: String,
    /// buildomat worker id.
    pub worker: String,
    /// buildomat target id.
    pub target: String,
    /// The board serving it.
    pub board: String,
    pub created_at: DateTime<Utc>,
    /// Last sign of life (agent output, state change); stuck detection measures from it.
    pub last_progress: DateTime<Utc>,
    /// Held by the buildomat operator when last seen.
    pub hold: bool,
    /// Why it is being or was destroyed.
    pub destroy_reason: Option<String>,
}

/// What the loop asks the lab to record when it starts an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewInstance {
    pub job: String,
    pub worker: String,
    pub target: String,
    pub board: String,
}

/// How the lab side of an instance is doing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LabStatus {
    /// The lease holding the board ended on its own (board failure, expiry, cancel).
    pub ended: bool,
    /// Console and agent output since the last call, as (stream, time, line).
    pub output: Vec<(String, DateTime<Utc>, String)>,
}

/// A lab failure, with its cause in words.
#[derive(Debug, Clone, thiserror::Error)]
#[error("lab: {0}")]
pub struct LabError(pub String);

/// The testfarm side of the factory. Every method is idempotent: the loop calls it again
/// after a crash or a failed pass.
pub trait Lab: Send + Sync {
    /// Every instance not yet destroyed.
    fn live_instances(&self) -> impl Future<Output = Result<Vec<Instance>, LabError>> + Send;

    /// A board that could serve `target` now (free, healthy, matching its selector).
    fn free_board(
        &self,
        target: &str,
    ) -> impl Future<Output = Result<Option<String>, LabError>> + Send;

    /// Records a new instance in state `created`. Written before anything else happens on
    /// the board, so a crash leaves a record the next pass can clean up.
    fn record(&self, new: NewInstance) -> impl Future<Output = Result<Instance, LabError>> + Send;

    /// Leases the instance's board and starts the buildomat agent on its host with the
    /// server's URL and the worker's bootstrap string; moves the instance to `running`.
    fn start(
        &self,
        instance: &Instance,
        bootstrap: &str,
    ) -> impl Future<Output = Result<(), LabError>> + Send;

    /// How the lab side is doing.
    fn status(
        &self,
        instance: &Instance,
    ) -> impl Future<Output = Result<LabStatus, LabError>> + Send;

    /// Notes the server's hold flag and the last progress on the record.
    fn note(
        &self,
        instance: &Instance,
        hold: bool,
        progress: Option<DateTime<Utc>>,
    ) -> impl Future<Output = Result<(), LabError>> + Send;

    /// Moves the instance to `destroying` with `reason`, and ends its lease (the lab cleans
    /// and powers off the board). Called again until [`Lab::finish`] is reached.
    fn destroy(
        &self,
        instance: &Instance,
        reason: &str,
    ) -> impl Future<Output = Result<(), LabError>> + Send;

    /// Moves the instance to `destroyed` once its worker is deleted on the server.
    fn finish(&self, instance: &Instance) -> impl Future<Output = Result<(), LabError>> + Send;
}
