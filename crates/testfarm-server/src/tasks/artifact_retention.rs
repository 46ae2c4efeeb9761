//! Artifact retention: every `artifacts.interval` (and on `POST /api/v1/artifacts/gc`),
//! deletes the builds `testfarm_core::artifact_retention` lets go, one transaction each
//! (re-checked inside it: a build pinned or tagged since the plan was made stays), then
//! the blobs no artifact refers to any more. A blob with an open download is skipped and
//! goes on a later pass; the sweep holds the repository's `sweep` lock exclusively, so
//! an upload whose row is not yet committed is never taken for garbage.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde_json::json;
use testfarm_api::artifact::{GcBuild, GcReport};
use testfarm_core::artifact_retention::{BuildUsage, plan};
use testfarm_store::{NewEvent, StoreError};
use tokio::sync::watch;

use crate::state::AppState;

#[derive(Debug, thiserror::Error)]
pub(crate) enum GcError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Blob(#[from] testfarm_artifacts::BlobError),
}

pub(crate) async fn run(state: AppState, mut stop: watch::Receiver<bool>) {
    let every = state.config.artifacts.interval.0;
    while super::tick(every, &mut stop).await {
        if let Err(e) = collect(&state, Utc::now(), false, "retention").await {
            tracing::warn!(error = %e, "artifact retention failed");
        }
    }
}

/// One pass; with `dry_run`, what it would do, changing nothing.
pub(crate) async fn collect(
    state: &AppState,
    now: DateTime<Utc>,
    dry_run: bool,
    actor: &str,
) -> Result<GcReport, GcError> {
    let builds = state.store.build_retention().await?;
    let usage: Vec<BuildUsage> = builds.iter().map(|b| b.usage.clone()).collect();
    let p = plan(&usage, &state.config.artifacts.budget(), now);
    let by_id: HashMap<_, _> = builds.iter().map(|b| (b.usage.id, b)).collect();
    let mut report = GcReport {
        dry_run,
        builds: Vec::new(),
        blobs: Vec::new(),
        freed_bytes: 0,
        skipped_in_use: Vec::new(),
        total_before: p.total_before,
        total_after: p.total_after,
    };
    for e in &p.expired {
        let Some(b) = by_id.get(&e.id) else { continue };
        let gone = GcBuild {
            id: e.id,
            commit: b.commit.clone(),
            branch: b.branch.clone(),
            created_at: b.usage.created_at,
            reason: e.reason,
        };
        if dry_run {
            report.builds.push(gone);
            continue;
        }
        let mut tx = state.store.begin().await?;
        let current = match tx.get_build(e.id).await {
            Ok(b) => b,
            Err(StoreError::NotFound { .. }) => continue,
            Err(err) => return Err(err.into()),
        };
        if current.pinned || !current.tags.is_empty() {
            continue;
        }
        tx.delete_build(e.id).await?;
        tx.record(
            NewEvent::new("build.deleted", "build", e.id.to_string(), actor).with_data(json!({
                "commit": current.commit, "branch": current.branch, "reason": e.reason,
                "artifacts": current.artifacts.iter().map(|a| &a.name).collect::<Vec<_>>(),
            })),
        );
        tx.commit().await?;
        report.builds.push(gone);
    }
    let repo = state.artifacts.clone();
    if dry_run {
        let going: HashSet<_> = p.expired.iter().map(|e| e.id).collect();
        let kept: HashSet<&str> = usage
            .iter()
            .filter(|u| !going.contains(&u.id))
            .flat_map(|u| u.blobs.iter().map(|(d, _)| d.as_str()))
            .collect();
        for blob in repo.blobs.list().await? {
            let hex = blob.digest.hex();
            if !kept.contains(hex.as_str()) {
                report.freed_bytes += blob.size;
                report.blobs.push(hex);
            }
        }
    } else {
        let _sweep = repo.sweep.write().await;
        let referenced = state.store.referenced_blobs().await?;
        for blob in repo.blobs.list().await? {
            let hex = blob.digest.hex();
            if referenced.contains(&hex) {
                continue;
            }
            if repo.in_use.is_held(&blob.digest) {
                report.skipped_in_use.push(hex);
                continue;
            }
            if repo.blobs.delete(blob.digest).await? {
                report.freed_bytes += blob.size;
                report.blobs.push(hex);
            }
        }
    }
    if !dry_run && (!report.builds.is_empty() || !report.blobs.is_empty()) {
        tracing::info!(
            builds = ?report.builds.iter().map(|b| b.id.to_string()).collect::<Vec<_>>(),
            blobs = report.blobs.len(),
            freed_bytes = report.freed_bytes,
            skipped_in_use = report.skipped_in_use.len(),
            "artifact retention removed builds and blobs"
        );
        metrics::counter!("testfarm_artifact_retention_removed_total", "what" => "builds")
            .increment(report.builds.len() as u64);
        metrics::counter!("testfarm_artifact_retention_removed_total", "what" => "blobs")
            .increment(report.blobs.len() as u64);
    }
    Ok(report)
}
