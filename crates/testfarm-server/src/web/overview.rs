//! The overview: resources by kind and state, the queue (depth, oldest wait), active
//! leases, open alerts, utilization per kind, jobs and pipelines of the last 24 h with
//! their success rate, and maintenance windows with the capacity they remove. Every
//! figure is an SQL aggregate ([`testfarm_store::dashboard`]), never a load of all rows.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use chrono::{TimeDelta, Utc};
use maud::{Markup, html};
use testfarm_store::dashboard::Window;

use super::forms::{ago, bar, when};
use super::session::Session;
use crate::state::AppState;

/// (finished, passed) → "87% of 23", or "–" with nothing finished.
fn success(counts: &[(String, u64)], ok: &str, running: &[&str]) -> (u64, String) {
    let total: u64 = counts.iter().map(|(_, n)| n).sum();
    let done: u64 = counts
        .iter()
        .filter(|(s, _)| !running.contains(&s.as_str()) && s != "queued")
        .map(|(_, n)| n)
        .sum();
    let passed: u64 = counts.iter().filter(|(s, _)| s == ok).map(|(_, n)| n).sum();
    let rate = (passed * 100)
        .checked_div(done)
        .map_or_else(|| "–".to_string(), |pct| format!("{pct}% of {done}"));
    (total, rate)
}

/// The maintenance windows table (current and ahead), shared with the resources page.
pub fn windows_table(windows: &[Window]) -> Markup {
    let now = Utc::now();
    let (mut cpus, mut mem) = (0u64, 0u64);
    for w in windows {
        cpus += u64::from(w.capabilities.cpus.unwrap_or(0));
        mem += w.capabilities.memory_mb.unwrap_or(0);
    }
    html! {
        @if windows.is_empty() { p class="empty" { "No maintenance windows." } }
        @else {
            p { (windows.len()) " resources, " (cpus) " CPUs and " (mem / 1024) " GiB of memory out of the pool." }
            div class="scroll" { table class="dense" {
                thead { tr { th { "Resource" } th { "Kind" } th { "When" } th { "Removes" } th { "Reason" } } }
                tbody { @for w in windows { tr {
                    td { a href={ "/ui/resources/" (w.name) } { (w.name) } }
                    td { (w.kind) }
                    td {
                        @match (w.window.start, w.window.end) {
                            (Some(s), _) if s > now => { "from " (when(s)) " (in " (ago(s - now)) ")" }
                            (_, Some(e)) => { "now, until " (when(e)) }
                            _ => { "now, open-ended" }
                        }
                    }
                    td { (w.capabilities.cpus.unwrap_or(0)) " CPUs, " (w.capabilities.memory_mb.unwrap_or(0) / 1024) " GiB" }
                    td { (w.window.reason) }
                } } }
            } }
        }
    }
}

pub async fn page(State(state): State<AppState>, session: Session) -> Response {
    let now = Utc::now();
    let o = match state
        .store
        .dashboard_overview(now - TimeDelta::hours(24))
        .await
    {
        Ok(o) => o,
        Err(e) => return super::error_page(&e.to_string()),
    };
    let alerts = state.store.count_open_alerts().await.unwrap_or_default();
    let windows = state.store.maintenance_windows().await.unwrap_or_default();
    let total: u64 = o.resources.iter().map(|(_, _, n)| n).sum();
    let mut by_kind: BTreeMap<&str, Vec<(&str, u64)>> = BTreeMap::new();
    for (k, s, n) in &o.resources {
        by_kind.entry(k).or_default().push((s, *n));
    }
    let (jobs, job_rate) = success(&o.jobs_recent, "passed", &["assigned", "running"]);
    let (pipes, pipe_rate) = success(&o.pipelines_recent, "passed", &["running"]);
    super::layout::page(
        "Overview",
        Some(&session),
        html! {
            h1 { "Overview" }
            div class="cards" {
                div class="card" { h2 { "Resources" } p class="big" id="resource-count" { (total) } }
                div class="card" { h2 { "Queued jobs" } p class="big" id="queued" { (o.queued) }
                    p class="sub" { @if let Some(t) = o.oldest_queued { "oldest waits " (ago(now - t)) } @else { "nothing waits" } } }
                div class="card" { h2 { "Active leases" } p class="big" { (o.active_leases) } }
                div class={ "card" @if alerts.open > 0 { " alerting" } } { h2 { a href="/ui/alerts" { "Open alerts" } }
                    p class="big" id="open-alerts" { (alerts.open) }
                    p class="sub" { (alerts.acknowledged) " acknowledged"
                        @for (sev, n) in &alerts.by_severity { " · " (n) " " (sev) } } }
                div class="card" { h2 { a href="/ui/jobs" { "Jobs, 24 h" } } p class="big" { (jobs) } p class="sub" { "passed " (job_rate) } }
                div class="card" { h2 { a href="/ui/pipelines" { "Pipelines, 24 h" } } p class="big" { (pipes) } p class="sub" { "passed " (pipe_rate) } }
            }
            h2 { "Resources by kind and state" }
            div class="scroll" { table class="dense" id="by-kind" {
                thead { tr { th { "Kind" } th { "States" } th { "Busy" } th { "CPU" } th { "Memory" } th { "Disk" } } }
                tbody {
                    @for u in &o.utilization {
                        tr {
                            td { a href={ "/ui/resources#" (u.kind) } { (u.kind) } }
                            td { @for (s, n) in by_kind.get(u.kind.as_str()).cloned().unwrap_or_default() {
                                span class={ "state state-" (s) } { (s) " " (n) } " "
                            } }
                            td { (u.busy) " / " (u.total) }
                            td { (bar("cpu", u.cpu_pct)) }
                            td { (bar("mem", u.memory_pct)) }
                            td { (bar("disk", u.disk_pct)) }
                        }
                    }
                }
            } }
            h2 { "Jobs and pipelines, last 24 h" }
            div class="split" {
                table class="dense" { thead { tr { th { "Job state" } th { "Count" } } }
                    tbody { @for (s, n) in &o.jobs_recent { tr { td class={ "state state-" (s) } { a href={ "/ui/jobs?state=" (s) } { (s) } } td { (n) } } } } }
                table class="dense" { thead { tr { th { "Pipeline state" } th { "Count" } } }
                    tbody { @for (s, n) in &o.pipelines_recent { tr { td class={ "state state-" (s) } { (s) } td { (n) } } } } }
            }
            h2 { "Maintenance" }
            (windows_table(&windows))
        },
    )
    .into_response()
}
