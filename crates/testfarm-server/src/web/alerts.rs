//! Alerts: open and acknowledged ones (or every one, `?all=1`) with severity, first and
//! last seen, state, what was tried and each channel's delivery (an undelivered one with
//! its reason); acknowledge and resolve forms call the API's own functions.

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;
use testfarm_api::alert::{Alert, AlertState, Delivery, DeliveryState};
use testfarm_store::alerts::AlertFilter;

use super::forms::{form_caller, when};
use super::session::Session;
use crate::auth::perm;
use crate::state::AppState;

/// How many alerts the page lists.
const LIMIT: u32 = 200;

/// The alerts the page shows, newest first: unresolved ones, or every one with `all`.
pub async fn open_alerts(
    state: &AppState,
    all: bool,
) -> Result<Vec<Alert>, testfarm_store::StoreError> {
    let states = if all {
        Vec::new()
    } else {
        vec![AlertState::Open, AlertState::Acknowledged]
    };
    state
        .store
        .list_alerts(&AlertFilter {
            states,
            limit: LIMIT,
            ..AlertFilter::default()
        })
        .await
}

#[derive(Deserialize, Default)]
pub struct AlertsQuery {
    #[serde(default)]
    all: String,
}

fn deliveries(ds: &[Delivery]) -> maud::Markup {
    html! {
        @for d in ds {
            span class={ "delivery delivery-" (d.state.as_str()) } title=[d.last_error.as_deref()] {
                (d.channel) " " (d.event) ": " (d.state.as_str())
                @if d.state == DeliveryState::Undelivered {
                    " (" (d.last_error.clone().unwrap_or_else(|| "no reason recorded".into())) ")"
                } @else if d.state == DeliveryState::Pending && d.attempts > 0 {
                    " (attempt " (d.attempts) ": " (d.last_error.clone().unwrap_or_default()) ")"
                }
            }
            br;
        }
    }
}

pub async fn page(
    State(state): State<AppState>,
    session: Session,
    Query(q): Query<AlertsQuery>,
) -> Response {
    let all = !q.all.is_empty();
    let alerts = match open_alerts(&state, all).await {
        Ok(a) => a,
        Err(e) => return super::error_page(&e.to_string()),
    };
    let mut rows = Vec::with_capacity(alerts.len());
    for a in alerts {
        let ds = state
            .store
            .alert_deliveries(&a.id)
            .await
            .unwrap_or_default();
        let tried = state.store.alert_recovery(&a.id).await.unwrap_or_default();
        rows.push((a, ds, tried));
    }
    super::layout::page(
        "Alerts",
        Some(&session),
        html! {
            h1 { @if all { "All alerts" } @else { "Open alerts" } }
            p class="hint" {
                @if all { a href="/ui/alerts" { "Only open ones" } }
                @else { a href="/ui/alerts?all=1" { "Include resolved ones" } }
            }
            @if rows.is_empty() { p class="empty" { "No open alerts." } }
            @else {
                div class="scroll" { table class="dense" id="alerts" {
                    thead { tr { th { "Severity" } th { "Rule" } th { "Subject" } th { "Summary" } th { "State" }
                        th { "First seen" } th { "Last seen" } th { "Seen" } th { "Delivery" } th { "Tried" } th { "Act" } } }
                    tbody { @for (a, ds, tried) in &rows { tr {
                        td class={ "sev sev-" (a.severity) } { (a.severity) }
                        td { (a.rule) }
                        td { a href={ "/ui/resources/" (a.subject) } { (a.subject) } }
                        td { (a.summary) }
                        td class={ "state state-" (a.state.as_str()) } {
                            (a.state.as_str())
                            @if let Some(by) = &a.acknowledged_by { br; small { "by " (by) } }
                            @if let Some(by) = &a.resolved_by { br; small { "by " (by) } }
                        }
                        td { (when(a.first_seen)) }
                        td { (when(a.last_seen)) }
                        td { (a.count) "×" }
                        td { (deliveries(ds)) }
                        td { @for t in tried { (t.action) ": " (t.result) br; } }
                        td class="actions" {
                            @if a.state == AlertState::Open {
                                form method="post" action={ "/ui/alerts/" (a.id) "/acknowledge" } class="inline" {
                                    input type="hidden" name="csrf" value=(session.csrf);
                                    button type="submit" { "Acknowledge" }
                                }
                            }
                            @if a.state != AlertState::Resolved {
                                form method="post" action={ "/ui/alerts/" (a.id) "/resolve" } class="inline" {
                                    input type="hidden" name="csrf" value=(session.csrf);
                                    button type="submit" { "Resolve" }
                                }
                            }
                        }
                    } } }
                } }
            }
        },
    )
    .into_response()
}

#[derive(Deserialize)]
pub struct AlertForm {
    csrf: String,
    #[serde(default)]
    note: String,
}

/// `POST /ui/alerts/{id}/{acknowledge|resolve}`: operator only, CSRF-checked.
pub async fn act(
    State(state): State<AppState>,
    session: Session,
    Path((id, action)): Path<(String, String)>,
    Form(f): Form<AlertForm>,
) -> Response {
    let caller = match form_caller::<perm::Operate>(&session, &f.csrf) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let note = (!f.note.trim().is_empty()).then_some(f.note.trim());
    let done = match action.as_str() {
        "acknowledge" => crate::routes::alerts::acknowledge(&state, &caller, &id, note).await,
        "resolve" => crate::routes::alerts::resolve(&state, &caller, &id, note).await,
        _ => return super::not_found_page("no such alert action"),
    };
    match done {
        Ok(_) => Redirect::to("/ui/alerts").into_response(),
        Err(e) => super::forms::error_response(e),
    }
}
