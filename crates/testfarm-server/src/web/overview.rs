//! The overview: resource counts by kind and state, queue depth, open alerts.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use maud::html;
use testfarm_core::job::JobState;
use testfarm_store::jobs::JobFilter;
use testfarm_store::resources::ResourceFilter;

use super::session::Session;
use crate::state::AppState;

pub async fn page(State(state): State<AppState>, session: Session) -> Response {
    let resources = match state.store.list_resources(&ResourceFilter::default()).await {
        Ok(r) => r,
        Err(e) => return super::error_page(&e.to_string()),
    };
    let mut counts: BTreeMap<(String, String), usize> = BTreeMap::new();
    for r in &resources {
        *counts
            .entry((r.kind.to_string(), r.state.to_string()))
            .or_default() += 1;
    }
    let queued = state
        .store
        .list_jobs(&JobFilter {
            states: vec![JobState::Queued],
            limit: 10_000,
            ..JobFilter::default()
        })
        .await
        .unwrap_or_default();
    let alerts = super::alerts::open_alerts(&state).await;
    super::layout::page(
        "Overview",
        Some(&session),
        html! {
            h1 { "Overview" }
            div class="cards" {
                div class="card" { h2 { "Resources" } p class="big" { (resources.len()) } }
                div class="card" { h2 { "Queued jobs" } p class="big" { (queued.len()) } }
                div class="card" { h2 { "Open alerts" } p class="big" { (alerts.len()) } }
            }
            h2 { "Resources by kind and state" }
            table class="dense" {
                thead { tr { th { "Kind" } th { "State" } th { "Count" } } }
                tbody {
                    @for ((kind, st), n) in &counts {
                        tr { td { (kind) } td class={ "state state-" (st) } { (st) } td { (n) } }
                    }
                }
            }
        },
    )
    .into_response()
}
