//! The health monitor: a resource whose agent has been silent for `health.offline_after`
//! goes `offline` (keeping its last known status and time); the work on it ends as a lab
//! error (re-queued when `retry_on_error` allows) and its leases end. A heartbeat brings
//! it back (see the agents routes). Each change is an event.

use chrono::{DateTime, Utc};
use serde_json::json;
use testfarm_core::job::{JobEvent, LabError};
use testfarm_core::lease::Holder;
use testfarm_core::reconcile::{JobRecord, end_work_on};
use testfarm_core::resource::{HealthStatus, ResourceState};
use testfarm_store::NewEvent;
use testfarm_store::resources::ResourceFilter;
use tokio::sync::watch;

use crate::lifecycle::{self, LifecycleError, retry_on_error};
use crate::state::AppState;

pub(crate) async fn run(state: AppState, mut stop: watch::Receiver<bool>) {
    while super::tick(std::time::Duration::from_secs(1), &mut stop).await {
        if let Err(e) = pass(&state, Utc::now()).await {
            tracing::warn!(error = %e, "health pass failed");
        }
    }
}

async fn pass(state: &AppState, now: DateTime<Utc>) -> Result<(), LifecycleError> {
    let limit = chrono::Duration::from_std(state.config.health.offline_after.0)
        .unwrap_or(chrono::Duration::MAX);
    // A server that was down or stalled did not hear anyone: count silence from when
    // it was last awake.
    let awake_since = state.awake.since();
    let resources = state
        .store
        .list_resources(&ResourceFilter::default())
        .await?;
    for r in resources {
        if r.agent.is_none() || matches!(r.state, ResourceState::Offline | ResourceState::Retired) {
            continue;
        }
        let heard = r.last_seen.unwrap_or(r.created_at).max(awake_since);
        if now - heard < limit {
            continue;
        }
        mark_offline(state, &r.name, now, now - heard).await?;
    }
    Ok(())
}

async fn mark_offline(
    state: &AppState,
    name: &str,
    now: DateTime<Utc>,
    silent: chrono::Duration,
) -> Result<(), LifecycleError> {
    let mut tx = state.store.begin().await?;
    let mut r = tx.get_resource(name).await?;
    if matches!(r.state, ResourceState::Offline | ResourceState::Retired) {
        return Ok(());
    }
    let reason = format!(
        "agent {} silent for {}s (last seen {})",
        r.agent.clone().unwrap_or_default(),
        silent.num_seconds(),
        r.last_seen
            .map_or_else(|| "never".into(), |t| t.to_rfc3339())
    );
    let previous = r.state;
    r.state = ResourceState::Offline;
    r.health.status = HealthStatus::Offline;
    r.health.reasons = vec![reason.clone()];
    r.updated_at = now;
    tx.update_resource(&r).await?;
    tx.record(
        NewEvent::new("resource.offline", "resource", &r.name, "health")
            .with_data(json!({ "reason": reason, "previous_state": previous })),
    );
    // The core decides what losing the resource means for the work on it.
    let leases = tx.active_leases_on(r.id).await?;
    let mut jobs = Vec::new();
    for l in &leases {
        if let Holder::Job(id) = &l.holder {
            let j = tx.get_job(&id.to_string()).await?;
            jobs.push(JobRecord {
                id: *id,
                state: j.job.state,
                attempt: j.job.attempt,
                retry_on_error: retry_on_error(&j),
                last_report_at: j.last_report_at,
            });
        }
    }
    let lost = LabError::ResourceLost {
        resource: r.name.clone(),
        detail: reason.clone(),
    };
    let plan = end_work_on(r.id, &leases, &jobs, &lost, now);
    let mut after = lifecycle::After::default();
    for ended in &plan.leases {
        after.merge(
            lifecycle::finish_lease(&mut tx, ended, "health", false, now)
                .await?
                .after,
        );
    }
    // The unreachable alert, raised at once (the evaluator keeps it and resolves it when
    // the agent is back), with the work that was sent elsewhere as its recovery.
    if let Some(c) = crate::alerts::condition(
        &state.config.alerts,
        testfarm_core::alert::Rule::Unreachable,
        &r.name,
        format!("{} {} is unreachable: {reason}", r.kind.as_str(), r.name),
        json!({ "kind": r.kind.as_str(), "reason": reason }),
    ) {
        crate::alerts::raise(&mut tx, &c, "health", json!({}), now).await?;
    }
    for (id, event) in plan.jobs {
        if matches!(event, JobEvent::Requeue { .. }) {
            crate::alerts::retried_elsewhere(
                &mut tx,
                &r.id.to_string(),
                &id.to_string(),
                "health",
                now,
            )
            .await?;
        }
        let mut job = tx.get_job(&id.to_string()).await?;
        // Its lease was ended above; do not release it twice.
        job.job.lease_id = None;
        if matches!(event, JobEvent::Requeue { .. }) {
            job.job.resource = None;
            job.resource_id = None;
        }
        after.merge(
            lifecycle::apply_job_event(&mut tx, &mut job, event, "health", now, false).await?,
        );
    }
    // The lease release above may have set the resource available again; it is offline.
    let mut r2 = tx.get_resource(name).await?;
    if r2.state != ResourceState::Offline {
        r2.state = ResourceState::Offline;
        tx.update_resource(&r2).await?;
    }
    tx.commit().await?;
    state.after_commit(after);
    state.work_changed();
    Ok(())
}
