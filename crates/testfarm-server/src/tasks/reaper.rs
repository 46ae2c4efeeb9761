//! The lease reaper: ends every lease whose holder stopped heartbeating or whose
//! duration ran out, within `leases.reap_interval` of its end, and what hangs off it.
//! It also reconciles after a restart (expired leases end, assigned-but-never-started
//! jobs go back to the queue, running jobs whose agent stays silent end `error`) and
//! ends running jobs that overran their timeout when their agent did not.

use std::time::Duration;

use chrono::{DateTime, Utc};
use testfarm_api::job::JobState;
use testfarm_core::job::JobEvent;
use testfarm_core::lease::{self, LeaseState};
use testfarm_core::reconcile::{JobRecord, reconcile};
use testfarm_store::StoreError;
use tokio::sync::watch;
use ulid::Ulid;

use crate::lifecycle::{self, LifecycleError, retry_on_error};
use crate::state::AppState;

/// Extra time a running job gets past its timeout before the server ends it (the agent
/// enforces the timeout itself and should report first).
const TIMEOUT_GRACE: chrono::Duration = chrono::Duration::seconds(30);

pub(crate) async fn run(state: AppState, mut stop: watch::Receiver<bool>) {
    let mut reconciling = true;
    loop {
        let now = Utc::now();
        if reconciling {
            match reconcile_once(&state, now).await {
                Ok(more) => reconciling = more,
                Err(e) => tracing::warn!(error = %e, "reconciliation failed; retrying"),
            }
        }
        if let Err(e) = reap_once(&state, now).await {
            tracing::warn!(error = %e, "reaper pass failed");
        }
        if let Err(e) = overdue_jobs(&state, now).await {
            tracing::warn!(error = %e, "timeout pass failed");
        }
        if !super::tick(state.config.leases.reap_interval.0, &mut stop).await {
            return;
        }
    }
}

/// Ends expired leases. The server's own stalls are not held against their holders.
pub(crate) async fn reap_once(state: &AppState, now: DateTime<Utc>) -> Result<(), LifecycleError> {
    let active = state.store.active_leases().await?;
    for expired in lease::reap(&active, now, state.awake.since()) {
        let mut tx = state.store.begin().await?;
        // Re-read: a renewal may have landed since the snapshot.
        let mut current = tx.get_lease(&expired.id.to_string()).await?;
        current.credit(state.awake.since());
        let Some(ended) = current.expire(now) else {
            continue;
        };
        tracing::info!(lease = %ended.id, reason = ?ended.end_reason, "lease expired");
        let after =
            lifecycle::end_lease(&mut tx, &ended, "reaper", state.cleanup_configured(), now)
                .await?
                .after;
        tx.commit().await?;
        state.after_commit(after);
        state.work_changed();
    }
    Ok(())
}

/// One reconciliation pass after a restart; true while some job is still in its grace.
async fn reconcile_once(state: &AppState, now: DateTime<Utc>) -> Result<bool, LifecycleError> {
    let leases = state.store.active_leases().await?;
    let jobs = state
        .store
        .jobs_in(&[JobState::Assigned, JobState::Running])
        .await?;
    let records: Vec<JobRecord> = jobs
        .iter()
        .filter_map(|j| {
            Some(JobRecord {
                id: Ulid::from_string(&j.job.id).ok()?,
                state: j.job.state,
                attempt: j.job.attempt,
                retry_on_error: retry_on_error(j),
                last_report_at: j.last_report_at,
            })
        })
        .collect();
    let grace: Duration = state.config.scheduler.restart_grace.0;
    let plan = reconcile(&leases, &records, state.started_at, now, grace);
    for l in &plan.leases {
        let mut tx = state.store.begin().await?;
        let after = if l.state == LeaseState::Active {
            tx.update_lease(l).await?;
            Default::default()
        } else {
            lifecycle::finish_lease(&mut tx, l, "reconcile", false, now)
                .await?
                .after
        };
        tx.commit().await?;
        state.after_commit(after);
    }
    for (id, event) in plan.jobs {
        let mut tx = state.store.begin().await?;
        let mut job = tx.get_job(&id.to_string()).await?;
        if job.job.state.is_terminal() {
            continue;
        }
        if matches!(event, JobEvent::Requeue { .. }) {
            // Its lease (if any) was handled above; do not release it twice.
            job.job.lease_id = None;
        }
        let after =
            lifecycle::apply_job_event(&mut tx, &mut job, event, "reconcile", now, false).await?;
        tx.commit().await?;
        state.after_commit(after);
        state.work_changed();
    }
    Ok(plan.next_check.is_some())
}

/// Running jobs past their timeout plus a grace end `timed_out`.
async fn overdue_jobs(state: &AppState, now: DateTime<Utc>) -> Result<(), LifecycleError> {
    let running = state.store.jobs_in(&[JobState::Running]).await?;
    for job in running {
        let timeout = job_timeout(state, &job);
        let Some(started) = job.job.started_at else {
            continue;
        };
        if now < started + timeout + TIMEOUT_GRACE {
            continue;
        }
        let mut tx = state.store.begin().await?;
        let mut job = tx.get_job(&job.job.id).await?;
        if job.job.state != JobState::Running {
            continue;
        }
        let after = lifecycle::apply_job_event(
            &mut tx,
            &mut job,
            JobEvent::TimeOut,
            "reaper",
            now,
            state.cleanup_configured(),
        )
        .await?;
        tx.commit().await?;
        state.after_commit(after);
        state.work_changed();
    }
    Ok(())
}

/// The job's `timeout`, or the configured default.
pub(crate) fn job_timeout(
    state: &AppState,
    job: &testfarm_store::jobs::JobRow,
) -> chrono::Duration {
    let d = job.job.spec["timeout"]
        .as_str()
        .and_then(|s| testfarm_core::duration::parse(s).ok())
        .unwrap_or(state.config.scheduler.default_job_timeout.0);
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

impl From<LifecycleError> for StoreError {
    fn from(e: LifecycleError) -> Self {
        match e {
            LifecycleError::Store(s) => s,
            LifecycleError::Refused(r) => StoreError::Corrupt {
                what: "job transition",
                detail: r.to_string(),
            },
        }
    }
}
