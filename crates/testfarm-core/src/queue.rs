//! The queue: what the scheduler knows of a waiting job, the order it serves them in, and
//! the queue timeout.
//!
//! Order: highest [`rank`](crate::priority::rank) first (priority plus aging), then the
//! earliest `queued_at`, then the lowest id (ULIDs grow with time), so equal jobs are
//! served first-in first-out and the order is total: two servers agree on it.

use std::cmp::Ordering;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use ulid::Ulid;

use crate::job::{JobEvent, LabError};
use crate::jobspec::Requirements;
use crate::policy::Policies;
use crate::priority::{Priority, rank};
use crate::role::Role;

/// A queued job as the scheduler sees it (loaded from the jobs table).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedJob {
    pub id: Ulid,
    pub name: String,
    pub requirements: Requirements,
    /// As submitted (after `--priority`); role caps are applied by the scheduler.
    pub priority: Priority,
    /// When it entered the queue (submission, or its last re-queue).
    pub queued_at: DateTime<Utc>,
    pub submitter: String,
    pub role: Role,
    /// The submitter's team, for `reserved_for` policies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_timeout: Option<Duration>,
    /// The resource its last attempt ended with a lab error on: placement prefers any
    /// other that can take it now, and uses this one only when it is the only one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avoid: Option<Ulid>,
}

/// Indices of `jobs` in the order the scheduler serves them, with each one's rank.
pub fn order(jobs: &[QueuedJob], policies: &Policies, now: DateTime<Utc>) -> Vec<(usize, u64)> {
    // Caps per role, resolved once rather than once per job.
    let caps: Vec<(Role, Priority)> = Role::ALL
        .iter()
        .map(|r| (*r, policies.cap_priority(Priority::MAX, *r).0))
        .collect();
    let cap = |role: Role| {
        caps.iter()
            .find(|(r, _)| *r == role)
            .map_or(Priority::MAX, |(_, p)| *p)
    };
    let mut v: Vec<(usize, u64)> = jobs
        .iter()
        .enumerate()
        .map(|(i, j)| {
            let p = j.priority.min(cap(j.role));
            (i, rank(p, j.queued_at, now, policies.aging))
        })
        .collect();
    v.sort_by(|(a, ra), (b, rb)| {
        rb.cmp(ra)
            .then_with(|| jobs[*a].queued_at.cmp(&jobs[*b].queued_at))
            .then_with(|| jobs[*a].id.cmp(&jobs[*b].id))
            .then(Ordering::Equal)
    });
    v
}

/// Queued jobs that waited longer than their `queue_timeout`, each with the event that
/// ends it `error` (the lab could not serve it in time: the lab's fault, not the test's).
pub fn queue_timeouts(jobs: &[QueuedJob], now: DateTime<Utc>) -> Vec<(Ulid, JobEvent)> {
    jobs.iter()
        .filter_map(|j| {
            let limit = j.queue_timeout?;
            let waited = (now - j.queued_at).to_std().ok()?;
            (waited >= limit).then_some({
                (
                    j.id,
                    JobEvent::Error {
                        reason: LabError::QueueTimeout {
                            waited_s: waited.as_secs(),
                            limit_s: limit.as_secs(),
                        },
                    },
                )
            })
        })
        .collect()
}

/// The next moment a queue timeout falls due (for the scheduler's timer), if any.
pub fn next_queue_timeout(jobs: &[QueuedJob]) -> Option<DateTime<Utc>> {
    jobs.iter()
        .filter_map(|j| {
            let d = chrono::Duration::from_std(j.queue_timeout?).ok()?;
            j.queued_at.checked_add_signed(d)
        })
        .min()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::policy::{Policy, PolicyRule};
    use chrono::Duration as CD;

    pub(crate) fn job(n: u64, priority: Priority, queued_at: DateTime<Utc>) -> QueuedJob {
        QueuedJob {
            id: Ulid::from_parts(n, 0),
            name: format!("job-{n}"),
            requirements: Requirements::default(),
            priority,
            queued_at,
            submitter: "ann".into(),
            role: Role::User,
            team: None,
            timeout: None,
            queue_timeout: None,
            avoid: None,
        }
    }

    #[test]
    fn priority_then_age_then_fifo() {
        let now = Utc::now();
        let jobs = vec![
            job(1, Priority::NORMAL, now - CD::seconds(10)),
            job(2, Priority::HIGH, now),
            job(3, Priority::NORMAL, now - CD::seconds(10)),
            job(4, Priority::NORMAL, now - CD::seconds(20)),
            // Waited long enough to pass a fresh high job.
            job(5, Priority::LOW, now - CD::minutes(40)),
        ];
        let o: Vec<usize> = order(&jobs, &Policies::default(), now)
            .into_iter()
            .map(|(i, _)| i)
            .collect();
        assert_eq!(o, vec![4, 1, 3, 0, 2]);
    }

    #[test]
    fn role_cap_applies_to_order() {
        let now = Utc::now();
        let mut a = job(1, Priority::URGENT, now);
        a.role = Role::User;
        let mut b = job(2, Priority::HIGH, now - CD::seconds(1));
        b.role = Role::Operator;
        let policies = Policies {
            policies: vec![Policy {
                name: "users-high".into(),
                priority: 0,
                rule: PolicyRule::PriorityCap {
                    role: Role::User,
                    max: Priority::HIGH,
                },
            }],
            ..Policies::default()
        };
        let o = order(&[a, b], &policies, now);
        assert_eq!(
            o[0].0, 1,
            "the capped urgent job ranks as high, and is younger"
        );
    }

    #[test]
    fn queue_timeout_ends_error_with_reason() {
        let now = Utc::now();
        let mut a = job(1, Priority::NORMAL, now - CD::minutes(10));
        a.queue_timeout = Some(Duration::from_secs(300));
        let mut b = job(2, Priority::NORMAL, now - CD::minutes(1));
        b.queue_timeout = Some(Duration::from_secs(300));
        let c = job(3, Priority::NORMAL, now - CD::days(10));
        let jobs = [a, b, c];
        let t = queue_timeouts(&jobs, now);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].0, Ulid::from_parts(1, 0));
        assert!(matches!(
            &t[0].1,
            JobEvent::Error {
                reason: LabError::QueueTimeout {
                    waited_s: 600,
                    limit_s: 300
                }
            }
        ));
        assert_eq!(
            next_queue_timeout(&jobs),
            Some(now - CD::minutes(10) + CD::seconds(300))
        );
    }
}
