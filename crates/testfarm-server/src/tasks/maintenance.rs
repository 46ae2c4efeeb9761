//! Applies maintenance windows as their start and end pass.

use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use testfarm_store::NewEvent;
use testfarm_store::resources::ResourceFilter;
use tokio::sync::watch;

use crate::state::AppState;

pub(crate) async fn run(state: AppState, mut stop: watch::Receiver<bool>) {
    while super::tick(Duration::from_secs(5), &mut stop).await {
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
        .filter(|r| {
            r.maintenance
                .as_ref()
                .is_some_and(|m| m.start.is_some() || m.end.is_some())
        })
        .collect();
    for r in with_windows {
        let mut tx = state.store.begin().await?;
        let mut r = tx.get_resource(&r.name).await?;
        let active = tx.active_lease_count(r.id).await?;
        if r.tick_maintenance(active, now) {
            tx.update_resource(&r).await?;
            tx.record(
                NewEvent::new(
                    "resource.maintenance_window",
                    "resource",
                    &r.name,
                    "scheduler",
                )
                .with_data(json!({ "state": r.state })),
            );
            tx.commit().await?;
            state.wake.notify_one();
        }
    }
    Ok(())
}
