//! Resources: a table per kind with state, health, what holds each one and utilization
//! bars; a detail page per resource (capabilities, utilization chart, builds, jobs, board
//! power and flash history, leases, maintenance, how to connect); the maintenance, power
//! cycle and lease release forms. Forms call the API handlers, so the rules stay there.

use std::collections::HashMap;

use axum::Form;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{TimeDelta, Utc};
use maud::{Markup, html};
use serde::Deserialize;
use testfarm_api::agent::ResourceMetrics;
use testfarm_api::board::{PowerRequest, PowerVerb};
use testfarm_api::lease::ReleaseQuery;
use testfarm_api::resource::MaintenanceRequest;
use testfarm_core::Action;
use testfarm_core::resource::{Resource, ResourceKind};
use testfarm_store::build_runs::BuildRunFilter;
use testfarm_store::dashboard::Activity;
use testfarm_store::resources::ResourceFilter;

use super::forms::{ago, bar, form_caller, require, when, word};
use super::session::Session;
use crate::auth::perm;
use crate::extract::{ApiPath, ApiQuery};
use crate::json::ApiJson;
use crate::state::AppState;

fn kind_title(k: ResourceKind) -> &'static str {
    match k {
        ResourceKind::BuildServer => "Build servers",
        ResourceKind::QemuHost => "QEMU hosts",
        ResourceKind::Board => "Boards",
    }
}

/// The "held by" cell: running jobs (linked) and lease holders.
fn holder(a: Option<&Activity>) -> Markup {
    html! {
        @if let Some(a) = a {
            @for (id, name) in &a.jobs { a href={ "/ui/jobs/" (id) } { (name) } " " }
            @for (_, ty, h) in &a.leases { @if ty != "job" { span class="holder" { (ty) ":" (h) } " " } }
        }
    }
}

fn health(r: &Resource) -> Markup {
    let s = word(&r.health.status);
    html! { span class={ "health health-" (s) } title=(r.health.reasons.join("; ")) { (s) }
    @if !r.health.reasons.is_empty() { " " small { (r.health.reasons.join("; ")) } } }
}

pub async fn list(State(state): State<AppState>, session: Session) -> Response {
    let resources = match state.store.list_resources(&ResourceFilter::default()).await {
        Ok(r) => r,
        Err(e) => return super::error_page(&e.to_string()),
    };
    let activity = state.store.resource_activity().await.unwrap_or_default();
    let metrics: HashMap<String, ResourceMetrics> = state
        .store
        .latest_metrics()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|(_, at, _)| Utc::now() - *at < TimeDelta::minutes(10))
        .map(|(id, _, m)| (id.to_string(), m))
        .collect();
    let windows = state.store.maintenance_windows().await.unwrap_or_default();
    super::layout::page(
        "Resources",
        Some(&session),
        html! {
            h1 { "Resources" }
            @if session.caller.role.allows(Action::Operate) {
                p { a class="button" href="/ui/register" { "Register a resource" } }
            }
            @for kind in ResourceKind::ALL {
                @let rows: Vec<&Resource> = resources.iter().filter(|r| r.kind == kind).collect();
                h2 id=(kind) { (kind_title(kind)) " " small { "(" (rows.len()) ")" } }
                @if rows.is_empty() { p class="empty" { "None registered." } }
                @else {
                    div class="scroll" { table class="dense resources" id={ "table-" (kind) } {
                        thead { tr { th { "Name" } th { "State" } th { "Health" } th { "Held by" } th { "CPU" } th { "Memory" } th { "Disk" }
                            @if kind == ResourceKind::QemuHost { th { "VMs" } } th { "Labels" } } }
                        tbody {
                            @for r in rows {
                                @let id = r.id.to_string();
                                @let m = metrics.get(&id);
                                tr id={ "r-" (r.name) } {
                                    td { a href={ "/ui/resources/" (r.name) } { (r.name) } }
                                    td class={ "state state-" (r.state) } { (r.state) }
                                    td { (health(r)) }
                                    td { (holder(activity.get(&id))) }
                                    td { (bar("cpu", m.map(|m| m.cpu_pct))) }
                                    td { (bar("mem", m.map(|m| m.memory_pct))) }
                                    td { (bar("disk", m.map(|m| m.disk_pct))) }
                                    @if kind == ResourceKind::QemuHost { td { (m.map(|m| m.running_jobs.to_string()).unwrap_or_else(|| "–".into())) } }
                                    td { @for (k, v) in &r.labels.0 { span class="label" { (k) "=" (v) } " " } }
                                }
                            }
                        }
                    } }
                }
            }
            h2 { "Maintenance" }
            (super::overview::windows_table(&windows))
        },
    )
    .into_response()
}

pub async fn detail(
    State(state): State<AppState>,
    session: Session,
    Path(name): Path<String>,
) -> Response {
    render_detail(&state, &session, &name, None).await
}

/// The last hour of heartbeats as an inline SVG line chart (CPU, memory, disk, 0-100 %).
fn chart(history: &[(chrono::DateTime<Utc>, ResourceMetrics)]) -> Markup {
    let now = Utc::now();
    let from = now - TimeDelta::hours(1);
    let (w, h) = (600.0_f64, 120.0_f64);
    let line = |f: &dyn Fn(&ResourceMetrics) -> f64| -> String {
        let mut pts: Vec<String> = history
            .iter()
            .filter(|(t, _)| *t >= from)
            .map(|(t, m)| {
                let x = (*t - from).num_milliseconds() as f64 / 3_600_000.0 * w;
                let y = h - f(m).clamp(0.0, 100.0) / 100.0 * h;
                format!("{x:.1},{y:.1}")
            })
            .collect();
        pts.reverse();
        pts.join(" ")
    };
    let recent = history.iter().filter(|(t, _)| *t >= from).count();
    html! {
        @if recent == 0 { p class="empty" { "No heartbeats in the last hour." } }
        @else {
            svg class="chart" viewBox={ "0 0 " (w) " " (h) } preserveAspectRatio="none" role="img"
                aria-label="CPU, memory and disk use over the last hour" {
                line x1="0" y1=(h / 2.0) x2=(w) y2=(h / 2.0) class="grid" {}
                polyline class="cpu" points=(line(&|m| m.cpu_pct)) {}
                polyline class="mem" points=(line(&|m| m.memory_pct)) {}
                polyline class="disk" points=(line(&|m| m.disk_pct)) {}
            }
            p class="legend" { span class="key cpu" { "CPU" } " " span class="key mem" { "memory" } " " span class="key disk" { "disk" }
                " · last hour, " (recent) " heartbeats, 50 % line" }
        }
    }
}

async fn board_section(state: &AppState, session: &Session, r: &Resource) -> Markup {
    let status = state.store.board_status(r.id).await.unwrap_or_default();
    let history = state
        .store
        .board_history(r.id, None, None, 30)
        .await
        .unwrap_or_default();
    html! {
        h2 { "Board" }
        table class="dense kv" {
            tr { th { "Activity" } td { (word(&status.activity)) @if let Some(j) = &status.activity_job { " " a href={ "/ui/jobs/" (j) } { (j) } } } }
            tr { th { "Power" } td { (status.power.map(|p| word(&p)).unwrap_or_else(|| "unknown".into())) } }
            tr { th { "Firmware now" } td { @if let Some(d) = &status.current {
                "build " (d.build_id) @if let Some(c) = &d.commit { " (" (c) ")" } " by job " a href={ "/ui/jobs/" (d.job_id) } { (d.job_id) } " at " (when(d.at))
                @if !status.current_booted { " — not booted" }
            } @else { "unknown" } } }
            tr { th { "Known good" } td { @if let Some(d) = &status.known_good { "build " (d.build_id) " at " (when(d.at)) } @else { "none" } } }
            @if let Some(q) = &status.quarantine_reason { tr { th { "Quarantine" } td { (q) } } }
        }
        @if session.caller.role.allows(Action::Operate) {
            form method="post" action={ "/ui/resources/" (r.name) "/power" } class="form inline" {
                input type="hidden" name="csrf" value=(session.csrf);
                button type="submit" name="action" value="cycle" { "Power cycle" }
                button type="submit" name="action" value="off" { "Power off" }
                button type="submit" name="action" value="on" { "Power on" }
            }
        }
        h3 { "Power and flash history" }
        @if history.is_empty() { p class="empty" { "No history." } }
        @else {
            div class="scroll" { table class="dense" {
                thead { tr { th { "At" } th { "Kind" } th { "Action" } th { "By" } th { "Result" } th { "Job" } th { "Build" } th { "Detail" } } }
                tbody { @for (_, e) in &history { tr {
                    td { (when(e.at)) } td { (word(&e.kind)) } td { (e.action) } td { (e.actor) }
                    td class={ "state state-" (if e.ok { "passed" } else { "failed" }) } { (if e.ok { "ok" } else { "failed" }) }
                    td { @if let Some(j) = &e.job_id { a href={ "/ui/jobs/" (j) } { (j) } } }
                    td { (e.build_id.clone().unwrap_or_default()) }
                    td { (e.detail) }
                } } }
            } }
        }
    }
}

async fn render_detail(
    state: &AppState,
    session: &Session,
    name: &str,
    error: Option<&str>,
) -> Response {
    let r = match state.store.get_resource(name).await {
        Ok(r) => r,
        Err(testfarm_store::StoreError::NotFound { .. }) => {
            return super::not_found_page(&format!("no resource named {name:?}"));
        }
        Err(e) => return super::error_page(&e.to_string()),
    };
    let id = r.id.to_string();
    let history = state.store.metric_history(r.id).await.unwrap_or_default();
    let activity = state.store.resource_activity().await.unwrap_or_default();
    let act = activity.get(&id).cloned().unwrap_or_default();
    let jobs = state
        .store
        .jobs_on_resource(&id, 20)
        .await
        .unwrap_or_default();
    let builds = if r.kind == ResourceKind::BuildServer {
        state
            .store
            .list_build_runs(&BuildRunFilter {
                server: Some(r.name.clone()),
                job: None,
                limit: 20,
            })
            .await
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let (build_count, build_avg) = state.store.build_average(&r.name).await.unwrap_or_default();
    let board = if r.kind == ResourceKind::Board {
        Some(board_section(state, session, &r).await)
    } else {
        None
    };
    let operator = session.caller.role.allows(Action::Operate);
    let c = &r.capabilities;
    let now = Utc::now();
    super::layout::page(
        &r.name,
        Some(session),
        html! {
            h1 { (r.name) " " span class={ "state state-" (r.state) } id="resource-state" { (r.state) } }
            div class="split" {
                table class="dense kv" {
                    tr { th { "Kind" } td { (r.kind) } }
                    tr { th { "Health" } td { (health(&r)) } }
                    tr { th { "Labels" } td { @for (k, v) in &r.labels.0 { span class="label" { (k) "=" (v) } " " } } }
                    tr { th { "Agent" } td { (r.agent.clone().unwrap_or_else(|| "none (added by hand)".into())) } }
                    tr { th { "Last seen" } td { @if let Some(t) = r.last_seen { (when(t)) " (" (ago(now - t)) " ago)" } @else { "never" } } }
                    tr { th { "Maintenance" } td {
                        @if let Some(m) = &r.maintenance { "on: " (m.reason)
                            @if let Some(s) = m.start { " from " (when(s)) } @if let Some(e) = m.end { " until " (when(e)) } } @else { "off" }
                    } }
                    @if let Some(why) = &r.retired_reason { tr { th { "Retired" } td { (why) } } }
                    tr { th { "Connect" } td { code {
                        @if r.kind == ResourceKind::Board { "testfarm console " (r.name) }
                        @else { "ssh " (r.name) }
                    } } }
                }
                table class="dense kv" {
                    tr { th { "CPUs" } td { (c.cpus.map(|v| v.to_string()).unwrap_or_default()) } }
                    tr { th { "Memory" } td { @if let Some(m) = c.memory_mb { (m) " MiB" } } }
                    tr { th { "Disk" } td { @if let Some(d) = c.disk_gb { (d) " GB" } } }
                    tr { th { "Arch" } td { (c.arch.clone().unwrap_or_default()) } }
                    tr { th { "KVM" } td { (c.kvm.map(|k| if k { "yes" } else { "no" }).unwrap_or("")) } }
                    tr { th { "Toolchains" } td { (c.toolchains.join(", ")) } }
                    tr { th { "Peripherals" } td { (c.peripherals.join(", ")) } }
                    tr { th { "Targets" } td { (c.targets.join(", ")) } }
                    @if let Some(b) = &r.board { tr { th { "Board" } td { code { (serde_json::to_string(b).unwrap_or_default()) } } } }
                }
            }
            h2 { "Utilization" }
            (chart(&history))
            @if let Some((_, m)) = history.first() {
                p { (bar("cpu", Some(m.cpu_pct))) " " (bar("mem", Some(m.memory_pct))) " " (bar("disk", Some(m.disk_pct)))
                    " " (format!("{:.1}", m.disk_free_gb)) " GB free · " (m.running_jobs) " running"
                    @if r.kind == ResourceKind::QemuHost { " VMs" } @else { " jobs" }
                    @if m.active_compilations > 0 { " · " (m.active_compilations) " compilations" } }
            }
            // A QEMU host's jobs are its VMs: each job runs in a VM sized from its lease.
            h2 { @if r.kind == ResourceKind::QemuHost { "Running VMs (their jobs) and leases" } @else { "Now" } }
            @if act.jobs.is_empty() && act.leases.is_empty() { p class="empty" { "Idle." } }
            @else {
                table class="dense" {
                    thead { tr { th { "Lease" } th { "Holder" } th { "" } } }
                    tbody {
                        @for (j, n) in &act.jobs { tr { td { "job" } td { a href={ "/ui/jobs/" (j) } { (n) " " (j) } } td {} } }
                        @for (lid, ty, h) in &act.leases { tr { td { (lid) } td { (ty) ":" (h) } td {
                            @if operator {
                                form method="post" action={ "/ui/leases/" (lid) "/release" } class="inline" {
                                    input type="hidden" name="csrf" value=(session.csrf);
                                    input type="hidden" name="resource" value=(r.name);
                                    input type="text" name="reason" placeholder="reason" required;
                                    button type="submit" { "Release" }
                                }
                            }
                        } } }
                    }
                }
            }
            @if let Some(b) = board { (b) }
            @if r.kind == ResourceKind::BuildServer {
                h2 { "Builds" }
                p { (build_count) " builds"
                    @if let Some(a) = build_avg { ", average " (ago(TimeDelta::milliseconds(a as i64))) } }
                @if !builds.is_empty() {
                    div class="scroll" { table class="dense" {
                        thead { tr { th { "Ended" } th { "Job" } th { "Outcome" } th { "Took" } th { "Ref" } th { "Arch" } th { "Toolchain" } } }
                        tbody { @for b in &builds { tr {
                            td { (when(b.ended_at)) }
                            td { a href={ "/ui/jobs/" (b.job_id) } { (b.job_id) } }
                            td class={ "state state-" (word(&b.outcome)) } { (word(&b.outcome)) }
                            td { (ago(TimeDelta::milliseconds(i64::try_from(b.summary.duration_ms).unwrap_or(i64::MAX)))) }
                            td { (b.summary.git_ref.clone().or(b.summary.commit.clone()).unwrap_or_default()) }
                            td { (b.summary.arch.clone().unwrap_or_default()) }
                            td { (b.summary.toolchain.clone().unwrap_or_default()) }
                        } } }
                    } }
                }
            }
            h2 { "Jobs here" }
            @if jobs.is_empty() { p class="empty" { "No jobs ran here." } }
            @else {
                div class="scroll" { table class="dense" {
                    thead { tr { th { "Job" } th { "Name" } th { "State" } th { "Queued" } th { "Took" } } }
                    tbody { @for j in &jobs { tr {
                        td { a href={ "/ui/jobs/" (j.id) } { (j.id) } }
                        td { (j.name) }
                        td class={ "state state-" (j.state) } { (j.state) }
                        td { (when(j.queued_at)) }
                        td { @if let Some(ms) = j.duration_ms { (ago(TimeDelta::milliseconds(ms))) } }
                    } } }
                } }
            }
            h2 { "Maintenance" }
            form method="post" action={ "/ui/resources/" (r.name) "/maintenance" } class="form" {
                input type="hidden" name="csrf" value=(session.csrf);
                label for="reason" { "Reason" }
                input type="text" id="reason" name="reason" value="";
                @if let Some(e) = error { span class="field-error" { (e) } }
                button type="submit" name="enabled" value="true" { "Maintenance on" }
                button type="submit" name="enabled" value="false" { "Maintenance off" }
            }
        },
    )
    .into_response()
}

#[derive(Deserialize)]
pub struct MaintenanceForm {
    csrf: String,
    enabled: String,
    #[serde(default)]
    reason: String,
}

/// Maintenance on/off through the same code as `POST /api/v1/resources/{name}/maintenance`.
pub async fn maintenance(
    State(state): State<AppState>,
    session: Session,
    Path(name): Path<String>,
    Form(f): Form<MaintenanceForm>,
) -> Response {
    if let Err(r) = super::csrf::check(&session, &f.csrf) {
        return r;
    }
    if let Err(e) = session.caller.require(Action::Operate) {
        return render_detail(&state, &session, &name, Some(&e.to_string())).await;
    }
    let req = MaintenanceRequest {
        enabled: f.enabled == "true",
        start: None,
        end: None,
        reason: f.reason,
    };
    match crate::routes::resources::apply_maintenance(&state, &session.caller, &name, &req).await {
        Ok(r) => Redirect::to(&format!("/ui/resources/{}", r.name)).into_response(),
        Err(crate::error::ApiError::NotFound(_)) => super::not_found_page("no such resource"),
        Err(e) => render_detail(&state, &session, &name, Some(&e.to_string())).await,
    }
}

#[derive(Deserialize)]
pub struct PowerForm {
    csrf: String,
    #[serde(default)]
    action: String,
}

/// `POST /ui/resources/{name}/power`: a board's power on/off/cycle through
/// `POST /api/v1/boards/{name}/power` (operator only here).
pub async fn power(
    State(state): State<AppState>,
    session: Session,
    Path(name): Path<String>,
    Form(f): Form<PowerForm>,
) -> Response {
    if let Err(r) = form_caller::<perm::Operate>(&session, &f.csrf) {
        return r;
    }
    let caller = match require::<perm::Submit>(&session) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let action = match f.action.as_str() {
        "on" => PowerVerb::On,
        "off" => PowerVerb::Off,
        "cycle" => PowerVerb::Cycle,
        _ => {
            return render_detail(
                &state,
                &session,
                &name,
                Some("action: use on, off or cycle"),
            )
            .await;
        }
    };
    let req = PowerRequest {
        action,
        wait_ms: Some(0),
        reason: Some(format!("dashboard, by {}", session.caller.name)),
    };
    match crate::routes::boards::power(
        State(state.clone()),
        caller,
        ApiPath(name.clone()),
        ApiJson(req),
    )
    .await
    {
        Ok(_) => Redirect::to(&format!("/ui/resources/{name}")).into_response(),
        Err(e) => super::forms::error_response(e),
    }
}

#[derive(Deserialize)]
pub struct ReleaseForm {
    csrf: String,
    #[serde(default)]
    resource: String,
    #[serde(default)]
    reason: String,
}

/// `POST /ui/leases/{id}/release`: an operator's forced release through
/// `DELETE /api/v1/leases/{id}?force=true` (the holder is fenced, cleanup runs).
pub async fn release_lease(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    Form(f): Form<ReleaseForm>,
) -> Response {
    if let Err(r) = form_caller::<perm::Operate>(&session, &f.csrf) {
        return r;
    }
    let caller = match require::<perm::Submit>(&session) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let q = ReleaseQuery {
        epoch: None,
        force: Some(true),
        reason: Some(if f.reason.trim().is_empty() {
            format!("released from the dashboard by {}", session.caller.name)
        } else {
            f.reason
        }),
    };
    match crate::routes::leases::release_lease(
        State(state.clone()),
        caller,
        ApiPath(id),
        ApiQuery(q),
    )
    .await
    {
        Ok(_) => super::forms::to_resource(&f.resource),
        Err(e) => super::forms::error_response(e),
    }
}
