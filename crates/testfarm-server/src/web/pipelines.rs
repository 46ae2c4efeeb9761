//! Pipelines: the newest 200 (filter by name and state) and a detail page with the stage
//! timeline: one bar per stage from its start to its end (or now), on the pipeline's span.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use maud::html;
use serde::Deserialize;
use testfarm_store::pipelines::PipelineFilter;

use super::forms::{ago, when, word};
use super::session::Session;
use crate::state::AppState;

#[derive(Deserialize, Default)]
pub struct PipelinesQuery {
    #[serde(default)]
    state: String,
    #[serde(default)]
    name: String,
}

pub async fn list(
    State(state): State<AppState>,
    session: Session,
    Query(q): Query<PipelinesQuery>,
) -> Response {
    let (pstate, error) = match q.state.as_str() {
        "" => (None, None),
        s => match serde_json::from_value(serde_json::Value::String(s.to_string())) {
            Ok(s) => (Some(s), None),
            Err(_) => (
                None,
                Some(format!(
                    "state: {s:?} is not one of running, passed, failed, error, cancelled"
                )),
            ),
        },
    };
    let rows = match state
        .store
        .list_pipelines(&PipelineFilter {
            name: (!q.name.is_empty()).then(|| q.name.clone()),
            state: pstate,
            before: None,
            limit: 200,
        })
        .await
    {
        Ok(r) => r,
        Err(e) => return super::error_page(&e.to_string()),
    };
    super::layout::page(
        "Pipelines",
        Some(&session),
        html! {
            h1 { "Pipelines" }
            p { a class="button" href="/ui/pipelines/submit" { "Run a pipeline" } }
            (super::forms::filters("/ui/pipelines", &q.state, &q.name, &error))
            div class="scroll" { table class="dense" {
                thead { tr { th { "Id" } th { "Name" } th { "State" } th { "Stages" } th { "Submitter" } th { "Created" } th { "Took" } } }
                tbody { @for p in &rows { tr {
                    td { a href={ "/ui/pipelines/" (p.id) } { (p.id) } }
                    td { (p.name) }
                    td class={ "state state-" (word(&p.state)) } { (word(&p.state)) }
                    td { @for s in &p.stages { span class={ "state state-" (word(&s.state)) } title=(s.name) { (s.name) } " " } }
                    td { (p.submitter) }
                    td { (when(p.created_at)) }
                    td { @if let Some(e) = p.ended_at { (ago(e - p.created_at)) } }
                } } }
            } }
        },
    )
    .into_response()
}

pub async fn detail(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
) -> Response {
    let row = match state.store.get_pipeline(&id).await {
        Ok(r) => r,
        Err(testfarm_store::StoreError::NotFound { .. }) => {
            return super::not_found_page(&format!("no pipeline {id:?}"));
        }
        Err(e) => return super::error_page(&e.to_string()),
    };
    let p = &row.pipeline;
    let start = p.created_at;
    let end = p.ended_at.unwrap_or_else(Utc::now);
    let span = (end - start).num_milliseconds().max(1) as f64;
    let pct = |t: chrono::DateTime<Utc>| {
        ((t - start).num_milliseconds() as f64 / span * 100.0).clamp(0.0, 100.0)
    };
    super::layout::page(
        &p.name,
        Some(&session),
        html! {
            h1 { (p.name) " " span class={ "state state-" (word(&p.state)) } { (word(&p.state)) } }
            table class="dense kv" {
                tr { th { "Id" } td { (p.id) } }
                tr { th { "Submitter" } td { (p.submitter) } }
                tr { th { "Created" } td { (when(p.created_at)) } }
                tr { th { "Ended" } td { (p.ended_at.map(when).unwrap_or_default()) } }
                @if let Some(f) = &p.failed_stage { tr { th { "Failed stage" } td { (f) } } }
                @if let Some(r) = &p.reason { tr { th { "Reason" } td { (r) } } }
            }
            h2 { "Stages " small { (ago(end - start)) } }
            div class="timeline" {
                @for s in &p.stages {
                    @let (l, w) = match s.started_at {
                        Some(st) => { let l = pct(st); (l, (pct(s.ended_at.unwrap_or(end)) - l).max(0.5)) }
                        None => (0.0, 0.0),
                    };
                    div class="lane" {
                        span class="lane-name" {
                            @if let Some(j) = &s.job { a href={ "/ui/jobs/" (j) } { (s.name) } } @else { (s.name) }
                        }
                        span class="lane-track" {
                            span class={ "lane-bar state-" (word(&s.state)) } style={ "left:" (format!("{l:.1}")) "%;width:" (format!("{w:.1}")) "%" }
                                title={ (s.name) ": " (word(&s.state)) } {}
                        }
                        span class={ "state state-" (word(&s.state)) } { (word(&s.state)) }
                    }
                }
            }
            table class="dense" {
                thead { tr { th { "Stage" } th { "Needs" } th { "State" } th { "Job" } th { "Started" } th { "Took" } th { "Reason" } } }
                tbody { @for s in &p.stages { tr {
                    td { (s.name) } td { (s.needs.join(", ")) }
                    td class={ "state state-" (word(&s.state)) } { (word(&s.state)) }
                    td { @if let Some(j) = &s.job { a href={ "/ui/jobs/" (j) } { (j) } } }
                    td { (s.started_at.map(when).unwrap_or_default()) }
                    td { @if let (Some(a), Some(b)) = (s.started_at, s.ended_at) { (ago(b - a)) } }
                    td { (s.reason.clone().unwrap_or_default()) }
                } } }
            }
        },
    )
    .into_response()
}
