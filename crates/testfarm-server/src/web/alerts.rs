//! Alerts: the nav entry, the overview card and the page read through [`open_alerts`] only.

use axum::response::{IntoResponse, Response};
use maud::html;

use super::session::Session;

/// One open alert as the dashboard shows it.
pub struct OpenAlert {
    pub rule: String,
    pub subject: String,
    pub since: String,
}

/// The open alerts, newest first.
// wired to testfarm_store::alerts at merge
pub async fn open_alerts(_state: &crate::state::AppState) -> Vec<OpenAlert> {
    Vec::new()
}

pub async fn page(
    axum::extract::State(state): axum::extract::State<crate::state::AppState>,
    session: Session,
) -> Response {
    let alerts = open_alerts(&state).await;
    super::layout::page(
        "Alerts",
        Some(&session),
        html! {
            h1 { "Open alerts" }
            @if alerts.is_empty() { p class="empty" { "No open alerts." } }
            @else {
                table class="dense" {
                    thead { tr { th { "Rule" } th { "Subject" } th { "Since" } } }
                    tbody { @for a in &alerts { tr { td { (a.rule) } td { (a.subject) } td { (a.since) } } } }
                }
            }
        },
    )
    .into_response()
}
