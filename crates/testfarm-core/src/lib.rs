//! testfarm-core: the lab's domain types and every rule about them, with no I/O.
//!
//! Rules are functions over values (a selector matches labels, a state change is refused
//! or applied, a duration parses), so they are unit- and property-tested without a server,
//! and the server, agent and CLI all agree because they call the same code.
//!
//! Map of the crate:
//! - [`labels`]: free key/value tags and their syntax.
//! - [`selector`]: label selectors (`arch=arm64,team in (a,b),!retired`).
//! - [`resource`]: resource kinds, states, health, capabilities, and their transitions.
//! - [`role`]: API roles and what each may do.
//! - [`diagnostic`]: line/column and did-you-mean for configuration file errors.
//! - [`duration`]: human durations (`30s`, `5m`, `2h`) as users type them.
//! - [`size`]: byte sizes (`512M`, `4G`) as users type them.
//! - [`priority`]: job priorities and aging (why low priority is never starved).
//! - [`jobspec`]: the YAML job spec and the normalised [`Requirements`].
//! - [`job`]: the job state machine; `error` (lab's fault) vs `failed` (test's).
//! - [`lease`]: leases, their two clocks (duration, heartbeat), fencing epochs, the reaper.
//! - [`queue`]: what the scheduler knows of a queued job, serving order, queue timeout.
//! - [`policy`]: admin allocation policies (group limits, VM limits, reservations, caps).
//! - [`placement`]: the scheduler pass, `place(&Snapshot, &[QueuedJob], &Policies, now)`.
//! - [`pinned`]: submit-time refusal of a pinned resource that cannot serve the job.
//! - [`estimate`]: job durations from history (median of the last N similar runs).
//! - [`why`]: a waiting job explained in words, from the same rules as placement.
//! - [`reconcile`]: what a restarted server does with leases and jobs.
//! - [`liveness`]: when the server was last awake, so its own stalls are not blamed on holders.
//! - [`retention`]: what history (events, ended leases) is kept, and for how long.
//! - [`artifact`]: artifact kinds, and what names, tags and checksums may look like.
//! - [`artifact_retention`]: which builds the artifact repository deletes (age, size, pins).
//! - [`cleanup`]: what an ended lease's resource needs, and a failed cleanup's consequence.
//! - [`deploy`]: which build's artifacts a deploy step takes, from a listing.
//! - [`alert`]: alert rules over a lab snapshot, raise/touch/resolve, delivery backoff.
//! - [`boot`]: when a VM boot counts or has failed, retries, and the final reason.
//! - [`factory`]: what the buildomat factory does with an instance on each pass.

pub mod alert;
pub mod artifact;
pub mod artifact_retention;
pub mod board;
pub mod boot;
pub mod build;
pub mod cleanup;
pub mod deploy;
pub mod diagnostic;
pub mod duration;
pub mod estimate;
pub mod expr;
pub mod factory;
pub mod job;
pub mod jobspec;
pub mod labels;
pub mod lease;
pub mod liveness;
pub mod patterns;
pub mod pinned;
pub mod pipeline;
pub mod placement;
pub mod policy;
pub mod priority;
pub mod queue;
pub mod reconcile;
pub mod resource;
pub mod retention;
pub mod role;
pub mod selector;
pub mod size;
pub mod test_step;
pub mod timestamp;
pub mod token;
pub mod why;
pub mod wildcard;

pub use job::{JobEvent, JobState, LabError};
pub use jobspec::{JobSpec, Requirements, SpecError};
pub use labels::Labels;
pub use lease::{Holder, Lease, LeaseState, Share};
pub use placement::{BlockReason, Blocker, Decision, Snapshot, place};
pub use policy::{Policies, Policy, PolicyRule};
pub use priority::Priority;
pub use queue::QueuedJob;
pub use resource::{Capabilities, Health, HealthStatus, Resource, ResourceKind, ResourceState};
pub use role::{Action, Role};
pub use selector::Selector;
pub use why::{WhyReport, why};
