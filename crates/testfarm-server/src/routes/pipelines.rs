//! `/api/v1/pipelines`: submit, list, show, cancel, and history per pipeline name.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use testfarm_api::Page;
use testfarm_api::pipeline::{
    CancelPipeline, HistoryQuery, Pipeline, PipelineHistory, PipelineQuery, PipelineState,
    SubmitPipeline,
};
use testfarm_api::problem::Problem;
use testfarm_core::Action;
use testfarm_store::pipelines::PipelineFilter;
use ulid::Ulid;

use crate::auth::{Caller, Require, perm};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiPath, ApiQuery};
use crate::json::ApiJson;
use crate::pipelines::{self, Submission};
use crate::state::AppState;

/// Submit a pipeline from its YAML spec; its first stages' jobs are queued at once.
#[utoipa::path(post, path = "/api/v1/pipelines", tag = "pipelines", request_body = SubmitPipeline,
    responses((status = 201, body = Pipeline), (status = 403, body = Problem),
              (status = 422, body = Problem, description = "invalid spec (field, line, column)")))]
pub async fn submit_pipeline(
    State(state): State<AppState>,
    caller: Require<perm::Submit>,
    ApiJson(req): ApiJson<SubmitPipeline>,
) -> ApiResult<(StatusCode, Json<Pipeline>)> {
    let p = pipelines::submit(
        &state,
        Submission {
            text: &req.spec,
            vars: req.vars.into_iter().collect(),
            priority: req.priority,
            submitter: &caller.name,
            role: caller.role,
        },
    )
    .await?;
    Ok((StatusCode::CREATED, Json(p)))
}

/// List pipelines with their stages, newest first.
#[utoipa::path(get, path = "/api/v1/pipelines", tag = "pipelines", params(PipelineQuery),
    responses((status = 200, body = Page<Pipeline>)))]
pub async fn list_pipelines(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<PipelineQuery>,
) -> ApiResult<Json<Page<Pipeline>>> {
    caller.require(Action::Read)?;
    let limit = crate::routes::page_limit(q.limit)?;
    let state_filter = q
        .state
        .as_deref()
        .map(str::parse::<PipelineState>)
        .transpose()
        .map_err(|e| ApiError::bad_request("state", e))?;
    if let Some(c) = &q.cursor {
        Ulid::from_string(c)
            .map_err(|_| ApiError::bad_request("cursor", "invalid cursor; use next_cursor"))?;
    }
    let mut items = state
        .store
        .list_pipelines(&PipelineFilter {
            name: q.name,
            state: state_filter,
            before: q.cursor,
            limit: u32::try_from(limit + 1).unwrap_or(u32::MAX),
        })
        .await?;
    let next_cursor = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|p| p.id.clone())
    } else {
        None
    };
    Ok(Json(Page { items, next_cursor }))
}

/// Show a pipeline: its state, why it ended, and each stage with its job.
#[utoipa::path(get, path = "/api/v1/pipelines/{id}", tag = "pipelines",
    params(("id" = String, Path, description = "Pipeline id")),
    responses((status = 200, body = Pipeline), (status = 404, body = Problem)))]
pub async fn get_pipeline(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Pipeline>> {
    caller.require(Action::Read)?;
    Ok(Json(state.store.get_pipeline(&id).await?.pipeline))
}

/// Cancel a pipeline: waiting stages are skipped, running stage jobs are cancelled (their
/// `always` steps still run); it ends `cancelled` once they have.
#[utoipa::path(post, path = "/api/v1/pipelines/{id}/cancel", tag = "pipelines",
    params(("id" = String, Path, description = "Pipeline id")), request_body = CancelPipeline,
    responses((status = 200, body = Pipeline), (status = 403, body = Problem), (status = 409, body = Problem)))]
pub async fn cancel_pipeline(
    State(state): State<AppState>,
    caller: Require<perm::Submit>,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<CancelPipeline>,
) -> ApiResult<Json<Pipeline>> {
    let row = state.store.get_pipeline(&id).await?;
    if row.pipeline.submitter != caller.name {
        caller.require(Action::Operate).map_err(|_| {
            ApiError::Forbidden(format!(
                "pipeline {id} was submitted by {}; only they or an operator may cancel it",
                row.pipeline.submitter
            ))
        })?;
    }
    Ok(Json(
        pipelines::cancel(&state, &id, req.reason, &caller.name).await?,
    ))
}

/// How a named pipeline has done: runs by outcome, and per stage its success rate and
/// mean duration.
#[utoipa::path(get, path = "/api/v1/pipelines/history", tag = "pipelines", params(HistoryQuery),
    responses((status = 200, body = PipelineHistory)))]
pub async fn pipeline_history(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> ApiResult<Json<PipelineHistory>> {
    caller.require(Action::Read)?;
    let name = q
        .name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::bad_request("name", "give the pipeline's name: ?name=NAME"))?;
    Ok(Json(state.store.pipeline_history(&name).await?))
}
