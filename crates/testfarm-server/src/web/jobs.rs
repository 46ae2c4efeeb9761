//! Jobs: the list with state and name filters, and a detail page per job.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use maud::html;
use serde::Deserialize;
use testfarm_core::job::JobState;
use testfarm_store::jobs::JobFilter;

use super::session::Session;
use crate::state::AppState;

#[derive(Deserialize, Default)]
pub struct JobsQuery {
    #[serde(default)]
    state: String,
    #[serde(default)]
    name: String,
}

pub async fn list(
    State(state): State<AppState>,
    session: Session,
    Query(q): Query<JobsQuery>,
) -> Response {
    let (states, error) = match q.state.as_str() {
        "" => (Vec::new(), None),
        s => match s.parse::<JobState>() {
            Ok(s) => (vec![s], None),
            Err(e) => (Vec::new(), Some(e.to_string())),
        },
    };
    let name = (!q.name.is_empty()).then(|| q.name.clone());
    let jobs = match state
        .store
        .list_jobs(&JobFilter {
            states,
            name,
            limit: 200,
            ..JobFilter::default()
        })
        .await
    {
        Ok(j) => j,
        Err(e) => return super::error_page(&e.to_string()),
    };
    super::layout::page(
        "Jobs",
        Some(&session),
        html! {
            h1 { "Jobs" }
            form method="get" action="/ui/jobs" class="filters" {
                label for="state" { "State" }
                input type="text" id="state" name="state" value=(q.state);
                @if let Some(e) = &error { span class="field-error" { (e) } }
                label for="name" { "Name" }
                input type="text" id="name" name="name" value=(q.name);
                button type="submit" { "Filter" }
            }
            table class="dense" {
                thead { tr { th { "Id" } th { "Name" } th { "State" } th { "Resource" } th { "Submitter" } th { "Queued at" } } }
                tbody {
                    @for j in &jobs {
                        tr {
                            td { a href={ "/ui/jobs/" (j.job.id) } { (j.job.id) } }
                            td { (j.job.name) }
                            td class={ "state state-" (j.job.state) } { (j.job.state) }
                            td { (j.job.resource.clone().unwrap_or_default()) }
                            td { (j.job.submitter) }
                            td { (j.job.queued_at.format("%Y-%m-%d %H:%M:%S")) }
                        }
                    }
                }
            }
        },
    )
    .into_response()
}

pub async fn detail(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
) -> Response {
    let row = match state.store.get_job(&id).await {
        Ok(r) => r,
        Err(testfarm_store::StoreError::NotFound { .. }) => {
            return super::not_found_page(&format!("no job {id:?}"));
        }
        Err(e) => return super::error_page(&e.to_string()),
    };
    let j = &row.job;
    super::layout::page(
        &j.name,
        Some(&session),
        html! {
            h1 { (j.name) " " span class={ "state state-" (j.state) } { (j.state) } }
            table class="dense kv" {
                tr { th { "Id" } td { (j.id) } }
                tr { th { "Submitter" } td { (j.submitter) } }
                tr { th { "Resource" } td {
                    @if let Some(r) = &j.resource { a href={ "/ui/resources/" (r) } { (r) } }
                } }
                tr { th { "Attempt" } td { (j.attempt) } }
                tr { th { "Reason" } td { (j.reason.clone().unwrap_or_default()) } }
                tr { th { "Queued" } td { (j.queued_at.to_rfc3339()) } }
                tr { th { "Started" } td { (j.started_at.map(|t| t.to_rfc3339()).unwrap_or_default()) } }
                tr { th { "Ended" } td { (j.ended_at.map(|t| t.to_rfc3339()).unwrap_or_default()) } }
                tr { th { "Log" } td { (j.log_bytes) " bytes" } }
            }
        },
    )
    .into_response()
}
