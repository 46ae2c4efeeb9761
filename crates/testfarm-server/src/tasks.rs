//! Background tasks. Each loops on a tick until the stop signal, and does its work as
//! store transactions, so a crash between ticks loses nothing.

use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use testfarm_store::NewEvent;
use testfarm_store::resources::ResourceFilter;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::state::AppState;

pub(crate) fn spawn_all(state: AppState, stop: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
    vec![tokio::spawn(maintenance_windows(state, stop))]
}

/// Applies maintenance windows as their start and end pass.
async fn maintenance_windows(state: AppState, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if let Err(e) = apply_windows(&state).await {
            tracing::warn!(error = %e, "maintenance window tick failed");
        }
    }
}

async fn apply_windows(state: &AppState) -> Result<(), testfarm_store::StoreError> {
    let now = Utc::now();
    let with_windows: Vec<_> = state
        .store
        .list_resources(&ResourceFilter::default())
        .await?
        .into_iter()
        .filter(|r| r.maintenance.is_some())
        .collect();
    for r in with_windows {
        let mut tx = state.store.begin().await?;
        let mut r = tx.get_resource(&r.name).await?;
        let active = tx.active_lease_count(r.id).await?;
        if r.tick_maintenance(active, now) {
            tx.update_resource(&r).await?;
            tx.record(
                NewEvent::new("resource.maintenance_window", "resource", &r.name, "scheduler")
                    .with_data(json!({ "state": r.state })),
            );
            tx.commit().await?;
        }
    }
    Ok(())
}
