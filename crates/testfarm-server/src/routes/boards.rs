//! `/api/v1/boards` and the agent's board routes (see `testfarm_api::board`): the board
//! view and history, power and health-check requests handed to the board's agent,
//! restoring the known-good build, and the agent's answers and reports. The rules live in
//! `crate::boards`; these handlers authenticate, parse and answer.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use testfarm_api::Page;
use testfarm_api::board::{
    BoardActionKind, BoardActionResult, BoardActionView, BoardHistoryEntry, BoardHistoryKind,
    BoardHistoryQuery, BoardListQuery, BoardReport, BoardView, PowerRequest,
};
use testfarm_api::job::Job;
use testfarm_api::problem::Problem;
use testfarm_api::resource::{ResourceKind, ResourceState};
use testfarm_core::jobspec::JobSpec;
use testfarm_core::{Action, Selector};
use testfarm_store::resources::ResourceFilter;

use crate::auth::{Caller, Require, perm};
use crate::boards::{self, Ask};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiPath, ApiQuery};
use crate::json::ApiJson;
use crate::state::AppState;

/// How long a power request waits for the agent by default, and at most.
const DEFAULT_WAIT: Duration = Duration::from_secs(30);
const MAX_WAIT_MS: u64 = 120_000;

/// 200 when the action finished, 202 while the agent has not answered yet.
fn answer(view: BoardActionView) -> (StatusCode, Json<BoardActionView>) {
    let status = if matches!(
        view.state,
        testfarm_api::board::BoardActionState::Done | testfarm_api::board::BoardActionState::Failed
    ) {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    (status, Json(view))
}

/// List the boards with what they are doing, filtered by state and label selector, in
/// pages.
#[utoipa::path(get, path = "/api/v1/boards", tag = "boards", params(BoardListQuery),
    responses((status = 200, body = Page<BoardView>), (status = 400, body = Problem)))]
pub async fn list_boards(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<BoardListQuery>,
) -> ApiResult<Json<Page<BoardView>>> {
    caller.require(Action::Read)?;
    let rstate = q
        .state
        .as_deref()
        .map(str::parse::<ResourceState>)
        .transpose()
        .map_err(|e| ApiError::bad_request("state", e))?;
    let selector = Selector::parse(q.selector.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::bad_request("selector", e))?;
    let after = q
        .cursor
        .as_deref()
        .map(ulid::Ulid::from_string)
        .transpose()
        .map_err(|_| {
            ApiError::bad_request(
                "cursor",
                "invalid cursor; use next_cursor from the previous page",
            )
        })?;
    let limit = super::page_limit(q.limit)?;
    let filter = ResourceFilter {
        kind: Some(ResourceKind::Board),
        state: rstate,
        after,
    };
    let mut found: Vec<_> = state
        .store
        .list_resources(&filter)
        .await?
        .into_iter()
        .filter(|r| selector.matches(&r.selector_labels()))
        .take(limit + 1)
        .collect();
    let next_cursor = if found.len() > limit {
        found.truncate(limit);
        found.last().map(|r| r.id.to_string())
    } else {
        None
    };
    let mut items = Vec::with_capacity(found.len());
    for r in found {
        let status = state.store.board_status(r.id).await?;
        items.push(boards::view(r, status));
    }
    Ok(Json(Page { items, next_cursor }))
}

/// Show a board: its resource, activity, power, deployments, health and quarantine.
#[utoipa::path(get, path = "/api/v1/boards/{name}", tag = "boards",
    params(("name" = String, Path, description = "Board name")),
    responses((status = 200, body = BoardView), (status = 404, body = Problem),
              (status = 422, body = Problem, description = "the resource is not a board")))]
pub async fn get_board(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<BoardView>> {
    caller.require(Action::Read)?;
    let r = boards::read_board(&state, &name).await?;
    let status = state.store.board_status(r.id).await?;
    Ok(Json(boards::view(r, status)))
}

/// A board's power, flash, deploy, recovery, health and quarantine history, newest first.
#[utoipa::path(get, path = "/api/v1/boards/{name}/history", tag = "boards",
    params(("name" = String, Path, description = "Board name"), BoardHistoryQuery),
    responses((status = 200, body = Page<BoardHistoryEntry>), (status = 404, body = Problem),
              (status = 422, body = Problem, description = "the resource is not a board")))]
pub async fn board_history(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<BoardHistoryQuery>,
) -> ApiResult<Json<Page<BoardHistoryEntry>>> {
    caller.require(Action::Read)?;
    let limit = super::page_limit(q.limit)?;
    let kind = q
        .kind
        .as_deref()
        .map(|k| {
            serde_json::from_value::<BoardHistoryKind>(serde_json::Value::String(k.to_string()))
                .map_err(|_| {
                    ApiError::bad_request(
                        "kind",
                        "kind is one of power, flash, deploy, recovery, health, quarantine",
                    )
                })
        })
        .transpose()?;
    let before = q
        .cursor
        .as_deref()
        .map(|c| {
            c.parse::<i64>().map_err(|_| {
                ApiError::bad_request(
                    "cursor",
                    "invalid cursor; use next_cursor from the previous page",
                )
            })
        })
        .transpose()?;
    let r = boards::read_board(&state, &name).await?;
    let mut rows = state
        .store
        .board_history(r.id, kind, before, limit + 1)
        .await?;
    let next_cursor = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(|(id, _)| id.to_string())
    } else {
        None
    };
    Ok(Json(Page {
        items: rows.into_iter().map(|(_, e)| e).collect(),
        next_cursor,
    }))
}

/// Switch a board on or off, power-cycle it, or read its power; waits (up to `wait_ms`)
/// for the board's agent to answer.
#[utoipa::path(post, path = "/api/v1/boards/{name}/power", tag = "boards",
    params(("name" = String, Path, description = "Board name")), request_body = PowerRequest,
    responses((status = 200, body = BoardActionView, description = "the agent answered (done or failed)"),
              (status = 202, body = BoardActionView, description = "queued or sent; the agent has not answered yet"),
              (status = 403, body = Problem, description = "neither an operator nor the holder of the board's lease"),
              (status = 404, body = Problem),
              (status = 409, body = Problem, description = "no agent manages this board"),
              (status = 422, body = Problem)))]
pub async fn power(
    State(state): State<AppState>,
    caller: Require<perm::Submit>,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<PowerRequest>,
) -> ApiResult<(StatusCode, Json<BoardActionView>)> {
    let wait = match req.wait_ms {
        None => DEFAULT_WAIT,
        Some(ms) if ms > MAX_WAIT_MS => {
            return Err(ApiError::unprocessable(
                "wait_ms",
                format!("wait_ms is at most {MAX_WAIT_MS}"),
            ));
        }
        Some(ms) => Duration::from_millis(ms),
    };
    let now = Utc::now();
    let mut tx = state.store.begin().await?;
    let r = boards::board_named(&mut tx, &name).await?;
    boards::may_drive(&mut tx, &caller, &r).await?;
    let row = boards::enqueue(
        &mut tx,
        &r,
        req.action.action(),
        &caller.name,
        Ask {
            reason: req.reason.clone(),
            ..Ask::default()
        },
        now,
    )
    .await?;
    tx.commit().await?;
    state.work_changed();
    let row = boards::wait_action(&state, &row.action.id, wait).await?;
    Ok(answer(row.view()))
}

/// Queue a full health check (power-cycle, boot prompt, console, probe). A passing check
/// returns a board the server took out of the pool.
#[utoipa::path(post, path = "/api/v1/boards/{name}/health-check", tag = "boards",
    params(("name" = String, Path, description = "Board name")),
    responses((status = 202, body = BoardActionView, description = "queued for the board's agent"),
              (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 409, body = Problem, description = "no agent manages this board"),
              (status = 422, body = Problem, description = "the resource is not a board")))]
pub async fn health_check(
    State(state): State<AppState>,
    caller: Require<perm::Operate>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<(StatusCode, Json<BoardActionView>)> {
    let now = Utc::now();
    let mut tx = state.store.begin().await?;
    let r = boards::board_named(&mut tx, &name).await?;
    let row = boards::enqueue(
        &mut tx,
        &r,
        BoardActionKind::HealthCheck,
        &caller.name,
        Ask::default(),
        now,
    )
    .await?;
    tx.commit().await?;
    state.work_changed();
    Ok((StatusCode::ACCEPTED, Json(row.view())))
}

/// Submit a job that deploys the board's known-good build on exactly this board.
#[utoipa::path(post, path = "/api/v1/boards/{name}/restore", tag = "boards",
    params(("name" = String, Path, description = "Board name")),
    responses((status = 201, body = Job, description = "the restore job, queued"),
              (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 409, body = Problem, description = "the board has no known-good build"),
              (status = 422, body = Problem, description = "the resource is not a board")))]
pub async fn restore(
    State(state): State<AppState>,
    caller: Require<perm::Submit>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<(StatusCode, Json<Job>)> {
    let mut tx = state.store.begin().await?;
    let r = boards::board_named(&mut tx, &name).await?;
    boards::may_drive(&mut tx, &caller, &r).await?;
    let status = tx.board_status(r.id).await?;
    drop(tx);
    let Some(good) = status.known_good else {
        return Err(ApiError::conflict(format!(
            "board {name} has no known-good build: no deployed build has booted and passed a job on it yet"
        )));
    };
    let text = format!(
        "name: restore-{name}\nrequires: {{ kind: board, resource: {name} }}\nsteps:\n  - deploy: {{ artifacts: {{ build: {} }} }}\n",
        good.build_id
    );
    let spec = JobSpec::parse(&text).map_err(crate::submit::spec_error)?;
    let prepared = crate::submit::prepare(&state, spec, &caller.name, caller.role)
        .await
        .map_err(|e| e.located(&text))?;
    let job = prepared.row.job.clone();
    let mut tx = state.store.begin().await?;
    prepared.insert(&mut tx).await?;
    tx.commit().await?;
    state.wake.notify_one();
    Ok((StatusCode::CREATED, Json(job)))
}

/// The agent's answer to a board action it was handed.
#[utoipa::path(post, path = "/api/v1/agents/board-actions/{id}", tag = "agents",
    params(("id" = String, Path, description = "Board action id")), request_body = BoardActionResult,
    responses((status = 200, body = BoardActionView),
              (status = 403, body = Problem, description = "the action is for another agent's board"),
              (status = 404, body = Problem),
              (status = 409, body = Problem, description = "the action already finished")))]
pub async fn action_result(
    State(state): State<AppState>,
    caller: Require<perm::ActAsAgent>,
    ApiPath(id): ApiPath<String>,
    ApiJson(result): ApiJson<BoardActionResult>,
) -> ApiResult<Json<BoardActionView>> {
    let now = Utc::now();
    let mut tx = state.store.begin().await?;
    let row = tx.get_board_action(&id).await?;
    if row.agent != caller.name {
        return Err(ApiError::Forbidden(format!(
            "board action {id} is for agent {}, not {}",
            row.agent, caller.name
        )));
    }
    if row.is_finished() {
        return Err(ApiError::conflict(format!(
            "board action {id} already finished ({})",
            row.result
                .as_ref()
                .map_or("no result", |r| r.detail.as_str())
        )));
    }
    boards::finish_action(&mut tx, &row, &result, &caller.name, now).await?;
    let row = tx.get_board_action(&id).await?;
    tx.commit().await?;
    state.board_action_done();
    Ok(Json(row.view()))
}

/// Something the agent did or found on one of its boards.
#[utoipa::path(post, path = "/api/v1/agents/boards/{name}/report", tag = "agents",
    params(("name" = String, Path, description = "Board name")), request_body = BoardReport,
    responses((status = 200, body = BoardView, description = "the board after the report"),
              (status = 403, body = Problem, description = "the board belongs to another agent"),
              (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn report(
    State(state): State<AppState>,
    caller: Require<perm::ActAsAgent>,
    ApiPath(name): ApiPath<String>,
    ApiJson(report): ApiJson<BoardReport>,
) -> ApiResult<Json<BoardView>> {
    let now = Utc::now();
    let mut tx = state.store.begin().await?;
    let mut r = boards::board_named(&mut tx, &name).await?;
    if r.agent.as_deref() != Some(caller.name.as_str()) {
        return Err(ApiError::Forbidden(format!(
            "board {name} is not registered by agent {}",
            caller.name
        )));
    }
    let applied = boards::apply_report(
        &mut tx,
        &mut r,
        &report,
        &caller.name,
        &state.config.alerts,
        now,
    )
    .await?;
    let status = tx.board_status(r.id).await?;
    tx.commit().await?;
    if applied.pool_changed {
        state.wake.notify_one();
    }
    Ok(Json(boards::view(r, status)))
}
