//! The transitions that touch several records at once, each written inside the
//! caller's transaction: a job moving through its states, a lease ending and what hangs
//! off it (the resource going back to the pool or to cleanup, the job that held it).
//! Routes and background tasks all go through here, so the rules of `testfarm-core` are
//! applied the same way whoever triggers them.

use chrono::{DateTime, Utc};
use serde_json::json;
use testfarm_api::job::JobState;
use testfarm_core::job::{JobEvent, LabError, on_lab_error};
use testfarm_core::lease::{EndReason, Holder, Lease, LeaseState};
use testfarm_core::resource::ResourceState;
use testfarm_store::jobs::JobRow;
use testfarm_store::{NewEvent, StoreError, Tx};

use crate::error::ApiError;

/// Work to do after the transaction commits.
#[derive(Debug, Default)]
pub struct After {
    /// Resources whose cleanup must run (their names).
    pub cleanup: Vec<(String, String)>,
    /// Something changed that may let queued jobs run.
    pub wake_scheduler: bool,
    /// Jobs that ended (their test results are parsed and stored).
    pub ended_jobs: Vec<String>,
}

/// What ending a lease left to do, and its resource's name (for the answer).
#[derive(Debug)]
pub struct LeaseEnd {
    pub after: After,
    pub resource: String,
}

impl After {
    pub fn merge(&mut self, other: After) {
        self.cleanup.extend(other.cleanup);
        self.wake_scheduler |= other.wake_scheduler;
        self.ended_jobs.extend(other.ended_jobs);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Refused(#[from] testfarm_core::job::Refused),
}

impl From<LifecycleError> for ApiError {
    fn from(e: LifecycleError) -> Self {
        match e {
            LifecycleError::Store(s) => s.into(),
            LifecycleError::Refused(r) => ApiError::conflict(r),
        }
    }
}

type Result<T> = std::result::Result<T, LifecycleError>;

fn event_kind(state: JobState) -> String {
    format!("job.{}", state.as_str())
}

/// Cancels a job that has not ended: a queued or assigned job ends at once; a running
/// job's agent is told in its next heartbeat (the caller bumps `work`), runs its `always`
/// steps and reports `cancelled`. An empty `reason` becomes "cancelled by ACTOR".
pub async fn cancel_job(
    tx: &mut Tx,
    job: &mut JobRow,
    reason: String,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<After> {
    if job.job.state == JobState::Running {
        job.cancel_requested = Some(if reason.is_empty() {
            format!("cancelled by {actor}")
        } else {
            reason.clone()
        });
        tx.update_job(job).await?;
        tx.record(
            NewEvent::new("job.cancel_requested", "job", &job.job.id, actor)
                .with_data(json!({ "reason": reason })),
        );
        return Ok(After::default());
    }
    let event = JobEvent::Cancel {
        by: actor.to_string(),
        reason,
    };
    apply_job_event(tx, job, event, actor, now, false).await
}

/// Applies a job event through the state machine and records it. Ending states release
/// the job's lease (if it still holds one) in the same transaction.
pub async fn apply_job_event(
    tx: &mut Tx,
    job: &mut JobRow,
    event: JobEvent,
    actor: &str,
    now: DateTime<Utc>,
    cleanup_configured: bool,
) -> Result<After> {
    let from = job.job.state;
    let to = from.apply(&event)?;
    let mut after = After::default();
    job.job.state = to;
    let reason = match &event {
        JobEvent::Fail { reason } => Some(reason.clone()),
        JobEvent::Error { reason } | JobEvent::Requeue { reason } => Some(reason.to_string()),
        JobEvent::Cancel { by, reason } => Some(if reason.is_empty() {
            format!("cancelled by {by}")
        } else {
            format!("cancelled by {by}: {reason}")
        }),
        JobEvent::TimeOut => Some("the job ran longer than its timeout".into()),
        _ => None,
    };
    if reason.is_some() {
        job.job.reason = reason;
    }
    match &event {
        JobEvent::Assign { .. } => job.job.assigned_at = Some(now),
        JobEvent::Start => {
            job.job.started_at = Some(now);
            job.last_report_at = Some(now);
        }
        JobEvent::Requeue { .. } => {
            // The retry prefers another resource than the one the lab failed on.
            if let Some(r) = job.resource_id.clone() {
                job.avoid_resource = Some(r);
            }
            job.job.attempt += 1;
            job.job.queued_at = now;
            job.job.assigned_at = None;
            job.job.started_at = None;
        }
        _ => {}
    }
    if to == JobState::Passed {
        crate::boards::job_passed(tx, job, now).await?;
    }
    if to.is_terminal() {
        job.job.ended_at = Some(now);
        job.cancel_requested = None;
        after.ended_jobs.push(job.job.id.clone());
    }
    // A job that no longer runs gives its lease back.
    if !to.holds_lease()
        && let Some(lease_id) = job.job.lease_id.clone()
    {
        let lease = tx.get_lease(&lease_id).await?;
        if lease.state == LeaseState::Active {
            let mut ended = lease.clone();
            ended.state = LeaseState::Released;
            ended.ended_at = Some(now);
            ended.end_reason = Some(EndReason::Released);
            let abnormal = !matches!(to, JobState::Passed | JobState::Failed);
            after.merge(
                finish_lease(tx, &ended, actor, abnormal && cleanup_configured, now)
                    .await?
                    .after,
            );
        }
        if to == JobState::Queued {
            job.job.lease_id = None;
            job.job.resource = None;
            job.resource_id = None;
        }
    }
    tx.update_job(job).await?;
    tx.record(
        NewEvent::new(event_kind(to), "job", &job.job.id, actor).with_data(json!({
            "from": from, "to": to, "event": event, "name": job.job.name,
            "resource": job.job.resource, "attempt": job.job.attempt, "reason": job.job.reason,
        })),
    );
    after.wake_scheduler = true;
    Ok(after)
}

/// Writes an ended lease (`ended` already carries its end state and reason) and puts its
/// resource back: to the pool, or out of it for cleanup when `cleanup` is set. Does not
/// touch the holding job; see [`end_lease`].
pub async fn finish_lease(
    tx: &mut Tx,
    ended: &Lease,
    actor: &str,
    cleanup: bool,
    now: DateTime<Utc>,
) -> Result<LeaseEnd> {
    let mut after = After {
        wake_scheduler: true,
        ..After::default()
    };
    let on = tx.write_ended_lease(ended, now).await?;
    // A board an agent manages is left safe after every lease (its agent's `release`),
    // however the lease ended.
    let cleanup = cleanup || on.agent_board;
    let state = if cleanup && on.state != ResourceState::Retired {
        let mut resource = tx
            .get_resource_by_id(&ended.resource_id.to_string())
            .await?;
        testfarm_core::cleanup::hold_for_cleanup(
            &mut resource,
            &ended.id.to_string(),
            &describe(ended),
            now,
        );
        tx.update_resource(&resource).await?;
        after.cleanup.push((on.name.clone(), ended.id.to_string()));
        resource.state
    } else {
        on.state
    };
    let kind = match ended.state {
        LeaseState::Expired => "lease.expired",
        _ => "lease.released",
    };
    tx.record(
        NewEvent::new(kind, "lease", ended.id.to_string(), actor).with_data(json!({
            "resource": on.name, "holder": ended.holder, "epoch": ended.epoch,
            "reason": ended.end_reason.as_ref().map(|r| r.to_string()),
            "resource_state": state, "cleanup": cleanup,
        })),
    );
    Ok(LeaseEnd {
        after,
        resource: on.name,
    })
}

fn describe(l: &Lease) -> String {
    l.end_reason
        .as_ref()
        .map_or_else(|| l.state.as_str().to_string(), |r| r.to_string())
}

/// Ends a lease that ended without its holder's say (expired, forced, resource lost):
/// writes it, and ends or re-queues the job that held it as a lab error.
pub async fn end_lease(
    tx: &mut Tx,
    ended: &Lease,
    actor: &str,
    cleanup: bool,
    now: DateTime<Utc>,
) -> Result<LeaseEnd> {
    let mut end = finish_lease(tx, ended, actor, cleanup, now).await?;
    if let Holder::Job(job_id) = &ended.holder {
        let mut job = tx.get_job(&job_id.to_string()).await?;
        if job.job.lease_id.as_deref() == Some(&ended.id.to_string()) && job.job.state.holds_lease()
        {
            let reason = match &ended.end_reason {
                Some(EndReason::Forced { by, reason }) => LabError::LeaseRevoked {
                    by: by.clone(),
                    reason: reason.clone(),
                },
                other => LabError::LeaseExpired {
                    detail: other
                        .as_ref()
                        .map_or_else(|| "expired".to_string(), |r| r.to_string()),
                },
            };
            // A job whose lease expired under it is the lab's failure: it counts
            // against its board (quarantine by failure rate). A revoked one does not.
            if ended.state == LeaseState::Expired {
                end.after.wake_scheduler |=
                    crate::boards::lab_error(tx, &ended.resource_id.to_string(), now).await?;
            }
            let retry = retry_on_error(&job);
            let event = on_lab_error(job.job.state, job.job.attempt, retry, reason);
            // The lease is already written as ended; detach it so the job event does not
            // try to release it again.
            job.job.lease_id = None;
            let requeued = matches!(event, JobEvent::Requeue { .. });
            if requeued {
                job.avoid_resource = job.resource_id.take();
                job.job.resource = None;
            }
            end.after
                .merge(apply_job_event(tx, &mut job, event, actor, now, false).await?);
            if requeued {
                crate::alerts::retried_elsewhere(
                    tx,
                    &ended.resource_id.to_string(),
                    &job.job.id,
                    actor,
                    now,
                )
                .await?;
            }
        }
    }
    Ok(end)
}

/// The spec's `retry_on_error`.
pub fn retry_on_error(job: &JobRow) -> u32 {
    job.job.spec["retry_on_error"]
        .as_u64()
        .and_then(|v| u32::try_from(v).ok())
        .unwrap_or(0)
}
