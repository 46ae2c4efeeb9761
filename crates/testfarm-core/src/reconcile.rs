//! What the server does with leases and jobs when it starts again after a crash or a
//! `kill -9`.
//!
//! Every transition was one transaction, so the store is consistent but stale: time passed
//! while nobody watched. The rules:
//!
//! 1. Time the server was down does not count against heartbeats: a holder could not
//!    heartbeat a dead server. Each active lease's heartbeat clock restarts at
//!    `restarted_at` (its duration still counts: a 30-minute lease does not grow).
//! 2. Leases past their duration end (`expired`), and the jobs under them end `error`
//!    (or are re-queued while `retry_on_error` allows).
//! 3. Jobs `assigned` but never started go back to the queue, and their leases end: the
//!    agent never picked them up, nothing ran, so nothing is lost by running them again.
//! 4. `running` jobs wait for their agent's report for `grace` after the restart (or after
//!    their last report, whichever is later), then end `error` (the lab lost them).
//! 5. Active leases of jobs already finished, or of jobs that no longer exist, end.
//!
//! The server calls [`reconcile`] at start and then with each tick until `next_check` is
//! `None`, writing each returned lease and job event in one transaction per item.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use ulid::Ulid;

use crate::job::{JobEvent, JobState, LabError, on_lab_error};
use crate::lease::{Holder, Lease, LeaseState};

/// A job as reconciliation needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: Ulid,
    pub state: JobState,
    /// Runs started so far (1 during the first run).
    pub attempt: u32,
    pub retry_on_error: u32,
    /// When its agent last reported (a log chunk, a step result, a heartbeat).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_report_at: Option<DateTime<Utc>>,
}

/// What to write.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reconciliation {
    /// Leases with a new state or heartbeat clock, to store as they are.
    pub leases: Vec<Lease>,
    /// Job events to apply (each through [`JobState::apply`]).
    pub jobs: Vec<(Ulid, JobEvent)>,
    /// When to call again: the earliest grace deadline still pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_check: Option<DateTime<Utc>>,
}

fn add(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| t.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Reconciles after a restart at `restarted_at`; `now` ≥ `restarted_at`.
pub fn reconcile(
    leases: &[Lease],
    jobs: &[JobRecord],
    restarted_at: DateTime<Utc>,
    now: DateTime<Utc>,
    grace: Duration,
) -> Reconciliation {
    let mut out = Reconciliation::default();
    let by_id: HashMap<Ulid, &JobRecord> = jobs.iter().map(|j| (j.id, j)).collect();
    let mut job_lease: HashMap<Ulid, &Lease> = HashMap::new();
    let mut decided: HashSet<Ulid> = HashSet::new();

    for l in leases.iter().filter(|l| l.state == LeaseState::Active) {
        // Rule 1: the downtime does not count against the heartbeat.
        let mut live = l.clone();
        let rebased = live.credit(restarted_at);
        let job = match &l.holder {
            Holder::Job(id) => Some(*id),
            Holder::Person(_) => None,
        };
        let record = job.and_then(|id| by_id.get(&id).copied());
        // Rule 5: a job lease whose job is gone or finished.
        if job.is_some() && record.is_none_or(|j| !j.state.holds_lease()) {
            if let Some(ended) = live.end_reconciled("its job is no longer running", now) {
                out.leases.push(ended);
            }
            continue;
        }
        // Rule 2: past its duration (or silent since the restart for longer than the bound).
        if let Some(expired) = live.expire(now) {
            if let Some(j) = record {
                let detail = expired
                    .end_reason
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default();
                out.jobs.push((
                    j.id,
                    on_lab_error(
                        j.state,
                        j.attempt,
                        j.retry_on_error,
                        LabError::LeaseExpired { detail },
                    ),
                ));
                decided.insert(j.id);
            }
            out.leases.push(expired);
            continue;
        }
        if let Some(j) = record {
            job_lease.insert(j.id, l);
        }
        if rebased {
            out.leases.push(live);
        }
    }

    for j in jobs {
        if decided.contains(&j.id) {
            continue;
        }
        match j.state {
            // Rule 3.
            JobState::Assigned => {
                out.jobs.push((
                    j.id,
                    JobEvent::Requeue {
                        reason: LabError::Infrastructure {
                            detail: "assigned but not started when the server restarted".into(),
                        },
                    },
                ));
                if let Some(l) = job_lease.get(&j.id)
                    && let Some(ended) = l.end_reconciled(
                        "its job went back to the queue after a server restart",
                        now,
                    )
                {
                    replace_or_push(&mut out.leases, ended);
                }
            }
            // Rule 4.
            JobState::Running => {
                let since = j
                    .last_report_at
                    .map_or(restarted_at, |r| r.max(restarted_at));
                let deadline = add(since, grace);
                if now >= deadline {
                    let event = on_lab_error(
                        j.state,
                        j.attempt,
                        j.retry_on_error,
                        LabError::AgentLost {
                            grace_s: grace.as_secs(),
                        },
                    );
                    out.jobs.push((j.id, event));
                    if let Some(l) = job_lease.get(&j.id)
                        && let Some(ended) =
                            l.end_reconciled("its agent did not report after a server restart", now)
                    {
                        replace_or_push(&mut out.leases, ended);
                    }
                } else {
                    out.next_check = Some(out.next_check.map_or(deadline, |n| n.min(deadline)));
                }
            }
            _ => {}
        }
    }
    out
}

/// A lease may already be in the output with a rebased heartbeat; the ended one wins.
fn replace_or_push(leases: &mut Vec<Lease>, lease: Lease) {
    match leases.iter_mut().find(|l| l.id == lease.id) {
        Some(slot) => *slot = lease,
        None => leases.push(lease),
    }
}

/// Ends the work on a resource that was lost under it (retired by force, declared dead
/// by an operator): its active leases end, and each job under them ends `error` with
/// `reason` (or is re-queued while `retry_on_error` allows). Manual leases just end.
pub fn end_work_on(
    resource_id: Ulid,
    leases: &[Lease],
    jobs: &[JobRecord],
    reason: &LabError,
    now: DateTime<Utc>,
) -> Reconciliation {
    let mut out = Reconciliation::default();
    let by_id: HashMap<Ulid, &JobRecord> = jobs.iter().map(|j| (j.id, j)).collect();
    for l in leases
        .iter()
        .filter(|l| l.resource_id == resource_id && l.state == LeaseState::Active)
    {
        let Some(ended) = l.end_reconciled(&reason.to_string(), now) else {
            continue;
        };
        out.leases.push(ended);
        if let Holder::Job(id) = &l.holder
            && let Some(j) = by_id.get(id)
            && j.state.holds_lease()
        {
            out.jobs.push((
                j.id,
                on_lab_error(j.state, j.attempt, j.retry_on_error, reason.clone()),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::{LeaseRequest, Share, acquire};
    use chrono::Duration as CD;

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-23T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn job(n: u64, state: JobState) -> JobRecord {
        JobRecord {
            id: Ulid::from_parts(n, 0),
            state,
            attempt: u32::from(state == JobState::Running),
            retry_on_error: 0,
            last_report_at: None,
        }
    }

    fn lease(n: u64, holder: Holder, secs: u64) -> Lease {
        acquire(
            LeaseRequest {
                id: Ulid::from_parts(n, 1),
                resource_id: Ulid::from_parts(n, 2),
                resource_last_epoch: 0,
                holder,
                share: Share::Whole,
                duration: Duration::from_secs(secs),
                heartbeat_ttl: Duration::from_secs(30),
            },
            t0(),
        )
        .unwrap()
    }

    #[test]
    fn all_rules() {
        // Server down from t0+10s to t0+5m.
        let restarted = t0() + CD::minutes(5);
        let grace = Duration::from_secs(60);
        let mut jobs = vec![
            job(1, JobState::Assigned),
            job(2, JobState::Running),
            job(3, JobState::Running),
            job(4, JobState::Passed),
            job(5, JobState::Running),
        ];
        jobs[2].last_report_at = Some(restarted + CD::seconds(30));
        let leases = vec![
            lease(1, Holder::Job(jobs[0].id), 3600),
            lease(2, Holder::Job(jobs[1].id), 3600),
            lease(3, Holder::Job(jobs[2].id), 3600),
            lease(4, Holder::Job(jobs[3].id), 3600),
            lease(5, Holder::Job(jobs[4].id), 120), // duration over during the downtime
            lease(6, Holder::Person("ann".into()), 3600),
        ];
        // Right at restart: nothing times out on heartbeats; duration-over leases end.
        let r = reconcile(&leases, &jobs, restarted, restarted, grace);
        let ev = |id: Ulid| {
            r.jobs
                .iter()
                .find(|(j, _)| *j == id)
                .map(|(_, e)| e.clone())
        };
        assert!(matches!(ev(jobs[0].id), Some(JobEvent::Requeue { .. })));
        assert_eq!(ev(jobs[1].id), None, "waits for its agent");
        assert!(matches!(
            ev(jobs[4].id),
            Some(JobEvent::Error {
                reason: LabError::LeaseExpired { .. }
            })
        ));
        let l = |n: u64| {
            r.leases
                .iter()
                .find(|l| l.id == Ulid::from_parts(n, 1))
                .cloned()
        };
        assert_eq!(l(1).unwrap().state, LeaseState::Released);
        assert_eq!(
            l(2).unwrap().heartbeat_at,
            restarted,
            "heartbeat clock restarted"
        );
        assert_eq!(
            l(4).unwrap().state,
            LeaseState::Released,
            "finished job's lease"
        );
        assert_eq!(l(5).unwrap().state, LeaseState::Expired);
        assert_eq!(l(6).unwrap().state, LeaseState::Active);
        assert_eq!(r.next_check, Some(restarted + CD::seconds(60)));

        // After the grace: job 2 never reported → error; job 3 reported → still waiting.
        let later = restarted + CD::seconds(61);
        let mut leases2 = leases.clone();
        for x in &mut leases2 {
            x.heartbeat_at = later - CD::seconds(1);
        }
        let r = reconcile(&leases2, &jobs, restarted, later, grace);
        let ev = |id: Ulid| {
            r.jobs
                .iter()
                .find(|(j, _)| *j == id)
                .map(|(_, e)| e.clone())
        };
        assert!(matches!(
            ev(jobs[1].id),
            Some(JobEvent::Error {
                reason: LabError::AgentLost { grace_s: 60 }
            })
        ));
        assert_eq!(ev(jobs[2].id), None);
        assert_eq!(r.next_check, Some(restarted + CD::seconds(90)));
    }

    #[test]
    fn lost_resource_ends_its_work() {
        let j = job(1, JobState::Running);
        let jl = lease(1, Holder::Job(j.id), 600);
        let mut other = lease(2, Holder::Person("bob".into()), 600);
        other.resource_id = jl.resource_id;
        let elsewhere = lease(3, Holder::Person("eve".into()), 600);
        let reason = LabError::ResourceLost {
            resource: "rpi-1".into(),
            detail: "retired: burnt".into(),
        };
        let r = end_work_on(jl.resource_id, &[jl, other, elsewhere], &[j], &reason, t0());
        assert_eq!(r.leases.len(), 2);
        assert!(r.leases.iter().all(|l| l.state == LeaseState::Released));
        assert_eq!(
            r.jobs,
            vec![(Ulid::from_parts(1, 0), JobEvent::Error { reason })]
        );
    }

    #[test]
    fn retry_on_error_requeues_lost_running_job() {
        let mut j = job(1, JobState::Running);
        j.retry_on_error = 1;
        let r = reconcile(
            &[],
            &[j.clone()],
            t0(),
            t0() + CD::minutes(2),
            Duration::from_secs(60),
        );
        assert!(matches!(r.jobs[0].1, JobEvent::Requeue { .. }));
        assert_eq!(j.state.apply(&r.jobs[0].1).unwrap(), JobState::Queued);
    }
}
