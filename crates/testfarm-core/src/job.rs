//! The job state machine: `queued → assigned → running → passed | failed | error |
//! cancelled | timed_out`.
//!
//! `failed` is the test's fault (a step exited non-zero, a TAP test failed); `error` is the
//! lab's (an agent vanished, a board would not power on, the queue timeout passed). They
//! are separate events with separate reasons so no code path can blur them, and only
//! `error` is retried (`retry_on_error`): retrying a failed test hides a real failure.
//!
//! Terminal states absorb nothing: every event on them is refused, so a late report from
//! a fenced agent cannot resurrect or re-judge a finished job.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use ulid::Ulid;

use crate::resource::UnknownValue;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Assigned,
    Running,
    Passed,
    Failed,
    Error,
    Cancelled,
    TimedOut,
}

impl JobState {
    pub const ALL: [JobState; 8] = [
        JobState::Queued,
        JobState::Assigned,
        JobState::Running,
        JobState::Passed,
        JobState::Failed,
        JobState::Error,
        JobState::Cancelled,
        JobState::TimedOut,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Assigned => "assigned",
            JobState::Running => "running",
            JobState::Passed => "passed",
            JobState::Failed => "failed",
            JobState::Error => "error",
            JobState::Cancelled => "cancelled",
            JobState::TimedOut => "timed_out",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Passed
                | JobState::Failed
                | JobState::Error
                | JobState::Cancelled
                | JobState::TimedOut
        )
    }

    /// Whether a lease is (or should be) held for the job.
    pub fn holds_lease(self) -> bool {
        matches!(self, JobState::Assigned | JobState::Running)
    }

    /// The one transition function. The event carries the reason; the caller records
    /// both in the same transaction as the new state.
    pub fn apply(self, event: &JobEvent) -> Result<JobState, Refused> {
        use JobEvent as E;
        use JobState as S;
        let next = match (self, event) {
            (s, _) if s.is_terminal() => None,
            (S::Queued, E::Assign { .. }) => Some(S::Assigned),
            (S::Assigned, E::Start) => Some(S::Running),
            (S::Running, E::Pass) => Some(S::Passed),
            (S::Running, E::Fail { .. }) => Some(S::Failed),
            (S::Running, E::TimeOut) => Some(S::TimedOut),
            (_, E::Error { .. }) => Some(S::Error),
            (_, E::Cancel { .. }) => Some(S::Cancelled),
            (S::Assigned | S::Running, E::Requeue { .. }) => Some(S::Queued),
            _ => None,
        };
        next.ok_or(Refused {
            state: self,
            event: event.name(),
        })
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = UnknownValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| UnknownValue {
                what: "job state",
                got: s.to_string(),
                expected: JobState::ALL.iter().map(|v| v.as_str()).collect(),
            })
    }
}

/// Why the lab (not the test) ended a job. Stable codes for alerts and filters, with the
/// detail in words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum LabError {
    /// Waited longer than its `queue_timeout`.
    QueueTimeout { waited_s: u64, limit_s: u64 },
    /// Its lease expired (duration over, or the holder stopped heartbeating).
    LeaseExpired { detail: String },
    /// An operator force-released its lease.
    LeaseRevoked { by: String, reason: String },
    /// The agent did not report within the grace period after a server restart.
    AgentLost { grace_s: u64 },
    /// The resource went offline, into maintenance, or was retired under it.
    ResourceLost { resource: String, detail: String },
    /// A pinned resource can no longer serve it.
    Unplaceable { detail: String },
    /// Anything else the agent or server reports as infrastructure failure.
    Infrastructure { detail: String },
}

impl fmt::Display for LabError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LabError::QueueTimeout { waited_s, limit_s } => write!(
                f,
                "waited {waited_s}s in the queue, longer than its queue_timeout of {limit_s}s"
            ),
            LabError::LeaseExpired { detail } => write!(f, "its lease expired: {detail}"),
            LabError::LeaseRevoked { by, reason } => {
                write!(f, "its lease was force-released by {by}: {reason}")
            }
            LabError::AgentLost { grace_s } => write!(
                f,
                "its agent did not report within {grace_s}s after the server restarted"
            ),
            LabError::ResourceLost { resource, detail } => {
                write!(f, "resource {resource} was lost: {detail}")
            }
            LabError::Unplaceable { detail } => write!(f, "cannot be placed: {detail}"),
            LabError::Infrastructure { detail } => write!(f, "lab failure: {detail}"),
        }
    }
}

/// Something that happens to a job. Reasons ride on the event so the event log says why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum JobEvent {
    /// The scheduler placed it under `lease` on `resource`.
    Assign {
        #[cfg_attr(feature = "schema", schema(value_type = String))]
        resource: Ulid,
        #[cfg_attr(feature = "schema", schema(value_type = String))]
        lease: Ulid,
    },
    /// The agent reported that it started.
    Start,
    Pass,
    /// The test's fault.
    Fail {
        reason: String,
    },
    /// The lab's fault.
    Error {
        reason: LabError,
    },
    Cancel {
        by: String,
        reason: String,
    },
    /// Ran longer than its `timeout`.
    TimeOut,
    /// Back to the queue: a lab error with retries left, or an assignment that never
    /// started before a server restart.
    Requeue {
        reason: LabError,
    },
}

impl JobEvent {
    pub fn name(&self) -> &'static str {
        match self {
            JobEvent::Assign { .. } => "assign",
            JobEvent::Start => "start",
            JobEvent::Pass => "pass",
            JobEvent::Fail { .. } => "fail",
            JobEvent::Error { .. } => "error",
            JobEvent::Cancel { .. } => "cancel",
            JobEvent::TimeOut => "time_out",
            JobEvent::Requeue { .. } => "requeue",
        }
    }
}

/// An event that does not apply in the job's state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a {state} job cannot {event}")]
pub struct Refused {
    pub state: JobState,
    pub event: &'static str,
}

/// The event for a lab failure: `Requeue` while retries remain, else `Error`.
/// `attempt` counts from 1 (the first run); `retry_on_error` is the spec's value, so a job
/// runs at most `1 + retry_on_error` times. An assigned job that never started
/// (`attempt` 0) is re-queued without using a retry: nothing ran. A queued job is never
/// re-queued: it ends `error` (e.g. its queue timeout).
pub fn on_lab_error(
    state: JobState,
    attempt: u32,
    retry_on_error: u32,
    reason: LabError,
) -> JobEvent {
    if state.holds_lease() && attempt <= retry_on_error {
        JobEvent::Requeue { reason }
    } else {
        JobEvent::Error { reason }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn assign() -> JobEvent {
        JobEvent::Assign {
            resource: Ulid::nil(),
            lease: Ulid::nil(),
        }
    }

    fn infra() -> LabError {
        LabError::Infrastructure {
            detail: "pdu".into(),
        }
    }

    #[test]
    fn happy_path_and_fault_split() {
        let s = JobState::Queued.apply(&assign()).unwrap();
        let s = s.apply(&JobEvent::Start).unwrap();
        assert_eq!(s.apply(&JobEvent::Pass).unwrap(), JobState::Passed);
        assert_eq!(
            s.apply(&JobEvent::Fail {
                reason: "t3".into()
            })
            .unwrap(),
            JobState::Failed
        );
        assert_eq!(
            s.apply(&JobEvent::Error { reason: infra() }).unwrap(),
            JobState::Error
        );
        assert_eq!(s.apply(&JobEvent::TimeOut).unwrap(), JobState::TimedOut);
        // Results only come from a running job.
        assert!(JobState::Assigned.apply(&JobEvent::Pass).is_err());
        assert!(JobState::Queued.apply(&JobEvent::Start).is_err());
        assert!(JobState::Queued.apply(&JobEvent::TimeOut).is_err());
        // Cancel and lab error from any live state.
        for s in [JobState::Queued, JobState::Assigned, JobState::Running] {
            assert_eq!(
                s.apply(&JobEvent::Cancel {
                    by: "ann".into(),
                    reason: "x".into()
                })
                .unwrap(),
                JobState::Cancelled
            );
        }
        assert!(
            JobState::Queued
                .apply(&JobEvent::Requeue { reason: infra() })
                .is_err()
        );
    }

    #[test]
    fn retry_decision() {
        assert_eq!(
            on_lab_error(JobState::Running, 1, 1, infra()),
            JobEvent::Requeue { reason: infra() }
        );
        assert_eq!(
            on_lab_error(JobState::Running, 2, 1, infra()),
            JobEvent::Error { reason: infra() }
        );
        assert_eq!(
            on_lab_error(JobState::Running, 1, 0, infra()),
            JobEvent::Error { reason: infra() }
        );
        assert_eq!(
            on_lab_error(JobState::Queued, 1, 3, infra()),
            JobEvent::Error { reason: infra() }
        );
        let s = JobState::Running
            .apply(&on_lab_error(JobState::Running, 1, 2, infra()))
            .unwrap();
        assert_eq!(s, JobState::Queued);
    }

    #[test]
    fn strings() {
        assert_eq!("timed_out".parse::<JobState>().unwrap(), JobState::TimedOut);
        assert!("done".parse::<JobState>().is_err());
        assert_eq!(
            serde_json::to_value(JobEvent::Error { reason: infra() }).unwrap(),
            serde_json::json!({"event": "error", "reason": {"code": "infrastructure", "detail": "pdu"}})
        );
    }

    fn any_event() -> impl Strategy<Value = JobEvent> {
        prop_oneof![
            Just(assign()),
            Just(JobEvent::Start),
            Just(JobEvent::Pass),
            Just(JobEvent::Fail { reason: "f".into() }),
            Just(JobEvent::Error { reason: infra() }),
            Just(JobEvent::Cancel {
                by: "x".into(),
                reason: "y".into()
            }),
            Just(JobEvent::TimeOut),
            Just(JobEvent::Requeue { reason: infra() }),
        ]
    }

    proptest! {
        /// Once terminal, always the same terminal state, whatever arrives.
        #[test]
        fn terminal_absorbs_nothing(events in proptest::collection::vec(any_event(), 0..40)) {
            let mut s = JobState::Queued;
            let mut terminal: Option<JobState> = None;
            for e in &events {
                if let Ok(n) = s.apply(e) {
                    prop_assert!(terminal.is_none(), "{s} accepted {e:?}");
                    s = n;
                    if s.is_terminal() { terminal = Some(s); }
                }
                if let Some(t) = terminal { prop_assert_eq!(s, t); }
            }
        }
    }
}
