//! Retention: deletes history older than `[retention]` allows (the rule is
//! `testfarm_core::retention`), every `retention.interval`, in transactions of
//! [`BATCH`] rows so the writer is never held for long.

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use crate::state::AppState;

/// Rows deleted per transaction.
const BATCH: usize = 2000;

pub(crate) async fn run(state: AppState, mut stop: watch::Receiver<bool>) {
    let every = state.config.retention.interval.0;
    while super::tick(every, &mut stop).await {
        if let Err(e) = prune(&state, Utc::now(), &stop).await {
            tracing::warn!(error = %e, "pruning old history failed");
        }
    }
}

/// What one pass deleted.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Pruned {
    pub events: usize,
    pub leases: usize,
}

pub(crate) async fn prune(
    state: &AppState,
    now: DateTime<Utc>,
    stop: &watch::Receiver<bool>,
) -> Result<Pruned, testfarm_store::StoreError> {
    let rule = state.config.retention.rule();
    let mut pruned = Pruned::default();
    if let Some(before) = rule.events_cutoff(now) {
        loop {
            let mut tx = state.store.begin().await?;
            let n = tx.prune_events(before, BATCH).await?;
            tx.commit().await?;
            pruned.events += n;
            if n < BATCH || *stop.borrow() {
                break;
            }
        }
    }
    if let Some(before) = rule.leases_cutoff(now) {
        loop {
            let mut tx = state.store.begin().await?;
            let n = tx.prune_ended_leases(before, BATCH).await?;
            tx.commit().await?;
            pruned.leases += n;
            if n < BATCH || *stop.borrow() {
                break;
            }
        }
    }
    if pruned.events + pruned.leases > 0 {
        tracing::info!(
            events = pruned.events,
            leases = pruned.leases,
            "pruned old history"
        );
        metrics::counter!("testfarm_retention_pruned_total", "what" => "events")
            .increment(pruned.events as u64);
        metrics::counter!("testfarm_retention_pruned_total", "what" => "leases")
            .increment(pruned.leases as u64);
    }
    Ok(pruned)
}
