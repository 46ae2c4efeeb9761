//! The buildomat factory's instances (docs/buildomat.md): which board serves which
//! buildomat job and worker, held ones first among the live, then recent history.

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use maud::html;
use serde::Deserialize;

use super::forms::when;
use super::session::Session;
use crate::state::AppState;

#[derive(Deserialize, Default)]
pub struct InstancesQuery {
    /// Any value: include destroyed instances.
    #[serde(default)]
    all: String,
}

pub async fn page(
    State(state): State<AppState>,
    session: Session,
    Query(q): Query<InstancesQuery>,
) -> Response {
    let all = !q.all.is_empty();
    let mut rows = match state.store.buildomat_instances(!all).await {
        Ok(r) => r,
        Err(e) => return super::error_page(&e.to_string()),
    };
    // Held instances keep a board out of the pool until someone releases them: first.
    rows.sort_by_key(|r| !r.hold);
    let configured = state.config.buildomat.is_some();
    super::layout::page(
        "buildomat",
        Some(&session),
        html! {
            h1 { "buildomat instances" }
            @if !configured { p class="hint" { "This server has no [buildomat] section: it is not a buildomat factory (docs/buildomat.md)." } }
            p class="hint" {
                @if all { a href="/ui/buildomat" { "Only live ones" } }
                @else { a href="/ui/buildomat?all=1" { "Include destroyed ones" } }
            }
            @if rows.is_empty() { p class="empty" { "No instances." } }
            @else {
                div class="scroll" { table class="dense" id="instances" {
                    thead { tr { th { "Instance" } th { "State" } th { "Board" } th { "Job" } th { "buildomat job" }
                        th { "Worker" } th { "Target" } th { "Held" } th { "Created" } th { "Last progress" } th { "Reason" } } }
                    tbody { @for r in &rows { tr {
                        td { code { (r.id) } }
                        td class={ "state state-" (r.state) } { (r.state) }
                        td { a href={ "/ui/resources/" (r.board) } { (r.board) } }
                        td { @if let Some(j) = &r.job_id { a href={ "/ui/jobs/" (j) } { code { (j) } } } @else { "—" } }
                        td { code { (r.bmat_job) } }
                        td { code { (r.bmat_worker) } }
                        td { code { (r.target) } }
                        td { @if r.hold { strong { "held" } } @else { "—" } }
                        td { (when(r.created_at)) }
                        td { (when(r.last_progress)) }
                        td { (r.destroy_reason.clone().unwrap_or_default()) }
                    } } }
                } }
            }
        },
    )
    .into_response()
}
