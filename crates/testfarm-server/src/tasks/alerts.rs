//! The alert evaluator: every `alerts.interval` it loads a snapshot of the lab (resources
//! and their newest metrics, boards' status, recently ended jobs), asks
//! `testfarm_core::alert` which conditions hold and what that means for the open alerts,
//! and writes the plan (raise, touch, auto-resolve) in one transaction. Delivery is the
//! notifier's (`crate::alerts`), so a slow receiver never delays an evaluation.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde_json::json;
use testfarm_api::alert::{Rule, Severity};
use testfarm_core::alert::{self, JobFacts, OpenAlert, ResourceFacts, Snapshot};
use testfarm_core::board::health::HealthLevel;
use testfarm_core::job::JobState;
use testfarm_core::resource::{ResourceKind, ResourceState};
use testfarm_store::StoreError;
use testfarm_store::jobs::JobFilter;
use testfarm_store::resources::ResourceFilter;
use tokio::sync::watch;

use crate::state::AppState;

/// How many recently ended jobs the job rules look at.
const RECENT_JOBS: u32 = 500;

pub(crate) async fn run(state: AppState, mut stop: watch::Receiver<bool>) {
    if !state.config.alerts.enabled {
        return;
    }
    let period = state.config.alerts.interval.0;
    while super::tick(period, &mut stop).await {
        if let Err(e) = pass(&state, Utc::now()).await {
            tracing::warn!(error = %e, "alert evaluation failed");
        }
        publish_gauges(&state).await;
    }
}

/// `testfarm_alerts_active{state}` and `testfarm_alerts_active_by_severity{severity}`
/// for Prometheus, after each evaluation.
async fn publish_gauges(state: &AppState) {
    match state.store.count_open_alerts().await {
        Ok(c) => {
            metrics::gauge!("testfarm_alerts_active", "state" => "open").set(c.open as f64);
            metrics::gauge!("testfarm_alerts_active", "state" => "acknowledged")
                .set(c.acknowledged as f64);
            for severity in [Severity::Info, Severity::Warning, Severity::Critical] {
                let n = c.by_severity.get(&severity).copied().unwrap_or(0);
                metrics::gauge!("testfarm_alerts_active_by_severity", "severity" => severity.as_str())
                    .set(n as f64);
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot count the open alerts"),
    }
}

/// What the rules see now.
pub(crate) async fn snapshot(state: &AppState) -> Result<Snapshot, StoreError> {
    let resources = state
        .store
        .list_resources(&ResourceFilter::default())
        .await?;
    let metrics: BTreeMap<_, _> = state
        .store
        .latest_metrics()
        .await?
        .into_iter()
        .map(|(id, _, m)| (id, m))
        .collect();
    let mut facts = Vec::with_capacity(resources.len());
    for r in &resources {
        if r.state == ResourceState::Retired {
            continue;
        }
        let m = metrics.get(&r.id);
        let (board_out, board_critical) = if r.kind == ResourceKind::Board && r.agent.is_some() {
            let s = state.store.board_status(r.id).await?;
            let out = s
                .quarantine_reason
                .clone()
                .filter(|_| r.state == ResourceState::Maintenance);
            let critical = (s.health_level == Some(HealthLevel::Degraded)).then(|| {
                if s.health_findings.is_empty() {
                    "health check degraded".to_string()
                } else {
                    format!("health check degraded: {}", s.health_findings.join("; "))
                }
            });
            (out, critical)
        } else {
            (None, None)
        };
        facts.push(ResourceFacts {
            name: r.name.clone(),
            kind: r.kind.as_str().to_string(),
            has_agent: r.agent.is_some(),
            offline: r.state == ResourceState::Offline,
            offline_reason: r.health.reasons.first().cloned(),
            cleanup_failed: testfarm_core::cleanup::failed_cleanup(r).map(str::to_string),
            // A failed cleanup on a board is the cleanup rule's, not also the board's.
            board_out: board_out.filter(|_| testfarm_core::cleanup::failed_cleanup(r).is_none()),
            board_critical,
            disk_free_gb: m.map(|m| m.disk_free_gb),
            cpu_pct: m.map(|m| m.cpu_pct),
            memory_pct: m.map(|m| m.memory_pct),
        });
    }
    let jobs = state
        .store
        .list_jobs(&JobFilter {
            states: vec![JobState::Passed, JobState::Failed, JobState::Error],
            limit: RECENT_JOBS,
            ..Default::default()
        })
        .await?;
    let jobs = jobs
        .into_iter()
        .filter_map(|j| {
            let ended_at = j.job.ended_at?;
            Some(JobFacts {
                id: j.job.id.clone(),
                name: j.job.name.clone(),
                resource: j.job.resource.clone(),
                state: j.job.state.as_str().to_string(),
                ended_at,
                steps: j
                    .job
                    .steps
                    .iter()
                    .map(|s| {
                        (
                            s.kind.clone(),
                            serde_json::to_value(s.outcome)
                                .ok()
                                .and_then(|v| v.as_str().map(str::to_string))
                                .unwrap_or_default(),
                        )
                    })
                    .collect(),
                reason: j.job.reason.clone(),
            })
        })
        .collect();
    Ok(Snapshot {
        resources: facts,
        jobs,
    })
}

/// One evaluation: snapshot, evaluate, reconcile, write.
pub(crate) async fn pass(state: &AppState, now: DateTime<Utc>) -> Result<(), StoreError> {
    let thresholds = state.config.alerts.thresholds();
    let snap = snapshot(state).await?;
    let conditions = alert::evaluate(&snap, &thresholds);
    // A disabled rule judges nothing: its alerts stay as they are.
    let judged: BTreeSet<Rule> = Rule::ALL
        .into_iter()
        .filter(|r| thresholds.settings(*r).enabled)
        .collect();
    let mut tx = state.store.begin().await?;
    let open = tx.open_alerts().await?;
    let keys: Vec<OpenAlert> = open
        .iter()
        .map(|a| OpenAlert {
            id: a.id.clone(),
            rule: a.rule,
            subject: a.subject.clone(),
        })
        .collect();
    let plan = alert::reconcile(&keys, &conditions, &judged);
    if plan.raise.is_empty() && plan.touch.is_empty() && plan.resolve.is_empty() {
        return Ok(());
    }
    let mut by_id: BTreeMap<String, _> = open.into_iter().map(|a| (a.id.clone(), a)).collect();
    for c in &plan.raise {
        crate::alerts::raise(&mut tx, c, "alerts", json!({}), now).await?;
    }
    for (id, c) in &plan.touch {
        if let Some(a) = by_id.get_mut(id) {
            crate::alerts::touch(&mut tx, a, c, now).await?;
        }
    }
    for id in &plan.resolve {
        if let Some(a) = by_id.get_mut(id) {
            crate::alerts::resolve(&mut tx, a, "auto", Some("the condition cleared"), now).await?;
        }
    }
    tx.commit().await
}
