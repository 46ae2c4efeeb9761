//! Resource cleanup after a lease ended: for a board an agent manages, after every lease
//! end, a `release` action to its agent (leave it safe: powered off, console detached),
//! retried once; for anything else, after an abnormal end (expired, forced, holder
//! lost), `leases.cleanup_command` (power a board off, stop a VM). Success returns the
//! resource to the pool; failure leaves it in maintenance with the reason, never
//! silently back.

use std::process::Stdio;

use chrono::Utc;
use serde_json::json;
use testfarm_core::cleanup::{after_cleanup, cleanup_for};
use testfarm_store::NewEvent;

use crate::state::AppState;

pub(crate) async fn run(state: AppState, resource: String, lease: String) {
    let agent_board = match state.store.get_resource(&resource).await {
        Ok(r) if r.kind == testfarm_api::resource::ResourceKind::Board && r.agent.is_some() => {
            state.store.board_status(r.id).await.is_ok_and(|s| s.driven)
        }
        _ => false,
    };
    let outcome = if agent_board {
        release(&state, &resource, &lease).await
    } else {
        execute(&state, &resource, &lease).await
    };
    if let Err(e) = record(&state, &resource, &lease, outcome).await {
        tracing::error!(error = %e, %resource, "could not record the cleanup outcome");
    }
}

/// How many times a board's `release` is asked for before the board is given up on.
const RELEASE_TRIES: u32 = 2;

/// Asks the board's agent to leave it safe, and waits for the answer (bounded by
/// `boards.action_timeout`); a failure or silence is retried once.
async fn release(state: &AppState, resource: &str, lease: &str) -> Result<(), String> {
    let timeout = state.config.boards.action_timeout.0;
    let mut last = String::new();
    for attempt in 1..=RELEASE_TRIES {
        let id = {
            let mut tx = state.store.begin().await.map_err(|e| e.to_string())?;
            let r = tx.get_resource(resource).await.map_err(|e| e.to_string())?;
            let row = crate::boards::enqueue(
                &mut tx,
                &r,
                testfarm_api::board::BoardActionKind::Release,
                crate::boards::REAPER,
                crate::boards::Ask {
                    reason: Some(format!("lease {lease} ended (attempt {attempt})")),
                    lease_id: Some(lease.to_string()),
                    session: None,
                },
                Utc::now(),
            )
            .await
            .map_err(|e| e.to_string())?;
            tx.commit().await.map_err(|e| e.to_string())?;
            row.action.id
        };
        state.work_changed();
        // The overdue-action task fails it at the timeout; a little slack for its tick.
        let wait = timeout + std::time::Duration::from_secs(2);
        let row = crate::boards::wait_action(state, &id, wait)
            .await
            .map_err(|e| e.to_string())?;
        match &row.result {
            Some(r) if r.ok => return Ok(()),
            Some(r) => last = r.detail.clone(),
            None => last = crate::boards::unanswered(timeout).detail,
        }
        tracing::warn!(%resource, attempt, why = %last, "board release failed");
    }
    Err(format!(
        "release failed {RELEASE_TRIES} times, last: {last}"
    ))
}

async fn execute(state: &AppState, resource: &str, lease: &str) -> Result<(), String> {
    let command = state.config.leases.cleanup_command.clone();
    let r = state
        .store
        .get_resource(resource)
        .await
        .map_err(|e| e.to_string())?;
    let l = state
        .store
        .get_lease(lease)
        .await
        .map_err(|e| e.to_string())?;
    // What the core says this resource needs (power a board off, stop a VM, ...), so the
    // operator's script can dispatch on it.
    let action = serde_json::to_value(cleanup_for(&r, &l))
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let child = tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(&command)
        .env("TESTFARM_RESOURCE", resource)
        .env("TESTFARM_RESOURCE_KIND", r.kind.as_str())
        .env("TESTFARM_LEASE_ID", lease)
        .env("TESTFARM_CLEANUP", action)
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
            let stderr = stderr.trim();
            let tail = &stderr[stderr.len().saturating_sub(300)..];
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
    let l = tx.get_lease(lease).await?;
    let failure = outcome.as_ref().err().cloned();
    // The resource sat in maintenance while its cleanup ran; the core decides what the
    // outcome means (a failure keeps it there, with the reason).
    let failed = after_cleanup(&mut r, &l, outcome, now).unwrap_or(true);
    if failed {
        // A board the server took out: a passing health check may bring it back.
        if let Some(m) = &r.maintenance
            && r.kind == testfarm_api::resource::ResourceKind::Board
            && r.agent.is_some()
        {
            let mut status = tx.board_status(r.id).await?;
            status.quarantine_reason = Some(m.reason.clone());
            tx.put_board_status(r.id, &status, now).await?;
        }
        tracing::warn!(%resource, why = ?failure, "cleanup failed; resource stays in maintenance");
        r.updated_at = now;
        tx.update_resource(&r).await?;
        tx.record(
            NewEvent::new("resource.cleanup_failed", "resource", resource, "reaper")
                .with_data(json!({ "lease": lease, "reason": failure })),
        );
    } else {
        // Ends the cleanup's own hold only: an operator's maintenance or a quarantine
        // set while the cleanup ran stays.
        if testfarm_core::cleanup::held_for_cleanup(&r) {
            let active = tx.active_lease_count(r.id).await?;
            // Ends the cleanup's own maintenance; refused only for retired resources.
            let _ = r.maintenance_off(active, now);
            tx.update_resource(&r).await?;
        }
        tx.record(
            NewEvent::new("resource.cleaned", "resource", resource, "reaper")
                .with_data(json!({ "lease": lease })),
        );
    }
    tx.commit().await?;
    state.wake.notify_one();
    Ok(())
}
