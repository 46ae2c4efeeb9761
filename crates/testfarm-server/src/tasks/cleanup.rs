//! Resource cleanup after a lease ended abnormally (expired, forced, holder lost): runs
//! `leases.cleanup_command` (power a board off, stop a VM). Success returns the resource
//! to the pool; failure leaves it in maintenance with the reason, never silently back.

use std::process::Stdio;

use chrono::Utc;
use serde_json::json;
use testfarm_core::resource::ResourceState;
use testfarm_store::NewEvent;

use crate::state::AppState;

pub(crate) async fn run(state: AppState, resource: String, lease: String) {
    let outcome = execute(&state, &resource, &lease).await;
    if let Err(e) = record(&state, &resource, &lease, outcome).await {
        tracing::error!(error = %e, %resource, "could not record the cleanup outcome");
    }
}

async fn execute(state: &AppState, resource: &str, lease: &str) -> Result<(), String> {
    let command = state.config.leases.cleanup_command.clone();
    let kind = state
        .store
        .get_resource(resource)
        .await
        .map(|r| r.kind.to_string())
        .unwrap_or_default();
    let child = tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(&command)
        .env("TESTFARM_RESOURCE", resource)
        .env("TESTFARM_RESOURCE_KIND", kind)
        .env("TESTFARM_LEASE_ID", lease)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start the cleanup command: {e}"))?;
    let timeout = state.config.leases.cleanup_timeout.0;
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Err(_) => Err(format!(
            "the cleanup command ran longer than {}",
            testfarm_core::duration::format(timeout)
        )),
        Ok(Err(e)) => Err(format!("the cleanup command failed to run: {e}")),
        Ok(Ok(out)) if out.status.success() => Ok(()),
        Ok(Ok(out)) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let tail: String = stderr
                .trim()
                .chars()
                .rev()
                .take(300)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            Err(format!(
                "the cleanup command exited with {}: {tail}",
                out.status
            ))
        }
    }
}

async fn record(
    state: &AppState,
    resource: &str,
    lease: &str,
    outcome: Result<(), String>,
) -> Result<(), testfarm_store::StoreError> {
    let now = Utc::now();
    let mut tx = state.store.begin().await?;
    let mut r = tx.get_resource(resource).await?;
    match outcome {
        Ok(()) => {
            if r.state == ResourceState::Maintenance {
                let active = tx.active_lease_count(r.id).await?;
                r.maintenance = None;
                r.state = if active > 0 {
                    ResourceState::Leased
                } else {
                    ResourceState::Available
                };
                r.updated_at = now;
                tx.update_resource(&r).await?;
            }
            tx.record(
                NewEvent::new("resource.cleaned", "resource", resource, "reaper")
                    .with_data(json!({ "lease": lease })),
            );
        }
        Err(why) => {
            tracing::warn!(%resource, %why, "cleanup failed; resource stays in maintenance");
            if let Some(m) = r.maintenance.as_mut() {
                m.reason = format!("cleanup after lease {lease} failed: {why}");
            }
            r.updated_at = now;
            tx.update_resource(&r).await?;
            tx.record(
                NewEvent::new("resource.cleanup_failed", "resource", resource, "reaper")
                    .with_data(json!({ "lease": lease, "reason": why })),
            );
        }
    }
    tx.commit().await?;
    state.wake.notify_one();
    Ok(())
}
