//! `/api/v1/resources`: the inventory of build servers, QEMU hosts and boards.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use serde_json::json;
use testfarm_api::Page;
use testfarm_api::problem::Problem;
use testfarm_api::resource::{
    CreateResource, MaintenanceRequest, MetricSample, Resource, ResourceKind, ResourceQuery,
    ResourceState, RetireRequest, UpdateLabels,
};
use testfarm_core::resource::{MaintenanceWindow, validate_name};
use testfarm_core::{Action, Selector};
use testfarm_store::NewEvent;
use testfarm_store::resources::ResourceFilter;
use ulid::Ulid;

use crate::auth::{Caller, Require, perm};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiPath, ApiQuery};
use crate::json::ApiJson;
use crate::state::AppState;

fn event(kind: &str, r: &Resource, caller: &Caller) -> NewEvent {
    NewEvent::new(kind, "resource", &r.name, &caller.name).with_data(json!({
        "id": r.id.to_string(), "kind": r.kind, "state": r.state,
    }))
}

/// Register a resource.
#[utoipa::path(post, path = "/api/v1/resources", tag = "resources",
    request_body = CreateResource,
    responses((status = 403, body = Problem), (status = 201, body = Resource), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create_resource(
    State(state): State<AppState>,
    caller: Require<perm::Operate>,
    ApiJson(req): ApiJson<CreateResource>,
) -> ApiResult<(StatusCode, Json<Resource>)> {
    validate_name(&req.name).map_err(|e| ApiError::unprocessable("name", e))?;
    req.labels
        .validate()
        .map_err(|e| ApiError::unprocessable(format!("labels.{}", e.key()), e))?;
    if req.board.is_some() && req.kind != ResourceKind::Board {
        return Err(ApiError::unprocessable(
            "board",
            format!("board details are only for kind board, not {}", req.kind),
        ));
    }
    let now = Utc::now();
    let mut r = Resource::new(crate::ids::next(), req.name, req.kind, now);
    r.labels = req.labels;
    r.capabilities = req.capabilities;
    if let Some(board) = req.board {
        r.board = Some(board);
    }
    let mut tx = state.store.begin().await?;
    tx.insert_resource(&r).await?;
    tx.record(event("resource.created", &r, &caller));
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(r)))
}

/// List resources, filtered by kind, state and label selector, in pages.
#[utoipa::path(get, path = "/api/v1/resources", tag = "resources", params(ResourceQuery),
    responses((status = 200, body = Page<Resource>), (status = 400, body = Problem)))]
pub async fn list_resources(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ResourceQuery>,
) -> ApiResult<Json<Page<Resource>>> {
    caller.require(Action::Read)?;
    let kind = q
        .kind
        .as_deref()
        .map(str::parse::<ResourceKind>)
        .transpose()
        .map_err(|e| ApiError::bad_request("kind", e))?;
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
        .map(Ulid::from_string)
        .transpose()
        .map_err(|_| {
            ApiError::bad_request(
                "cursor",
                "invalid cursor; use next_cursor from the previous page",
            )
        })?;
    let limit = crate::routes::page_limit(q.limit)?;
    let all = state
        .store
        .list_resources(&ResourceFilter {
            kind,
            state: rstate,
            after,
        })
        .await?;
    let mut items: Vec<Resource> = all
        .into_iter()
        .filter(|r| selector.matches(&r.selector_labels()))
        .take(limit + 1)
        .collect();
    let next_cursor = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|r| r.id.to_string())
    } else {
        None
    };
    Ok(Json(Page { items, next_cursor }))
}

/// Show one resource.
#[utoipa::path(get, path = "/api/v1/resources/{name}", tag = "resources",
    params(("name" = String, Path, description = "Resource name")),
    responses((status = 200, body = Resource), (status = 404, body = Problem)))]
pub async fn get_resource(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<Resource>> {
    caller.require(Action::Read)?;
    Ok(Json(state.store.get_resource(&name).await?))
}

/// Delete a retired resource.
#[utoipa::path(delete, path = "/api/v1/resources/{name}", tag = "resources",
    params(("name" = String, Path, description = "Resource name")),
    responses((status = 403, body = Problem), (status = 204), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn delete_resource(
    State(state): State<AppState>,
    caller: Require<perm::Operate>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let mut tx = state.store.begin().await?;
    let r = tx.get_resource(&name).await?;
    r.check_deletable()?;
    tx.delete_resource(&name).await?;
    tx.record(event("resource.deleted", &r, &caller));
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Set and remove labels.
#[utoipa::path(patch, path = "/api/v1/resources/{name}/labels", tag = "resources",
    params(("name" = String, Path, description = "Resource name")), request_body = UpdateLabels,
    responses((status = 403, body = Problem), (status = 200, body = Resource), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn update_labels(
    State(state): State<AppState>,
    caller: Require<perm::Operate>,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<UpdateLabels>,
) -> ApiResult<Json<Resource>> {
    req.set
        .validate()
        .map_err(|e| ApiError::unprocessable(format!("set.{}", e.key()), e))?;
    let mut tx = state.store.begin().await?;
    let mut r = tx.get_resource(&name).await?;
    r.labels.apply(&req.set, &req.remove);
    r.updated_at = Utc::now();
    tx.update_resource(&r).await?;
    tx.record(
        NewEvent::new("resource.labels_changed", "resource", &r.name, &caller.name)
            .with_data(json!({ "labels": r.labels, "set": req.set, "removed": req.remove })),
    );
    tx.commit().await?;
    Ok(Json(r))
}

/// Switch maintenance on (with an optional window) or off.
#[utoipa::path(post, path = "/api/v1/resources/{name}/maintenance", tag = "resources",
    params(("name" = String, Path, description = "Resource name")), request_body = MaintenanceRequest,
    responses((status = 403, body = Problem), (status = 200, body = Resource), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn set_maintenance(
    State(state): State<AppState>,
    caller: Require<perm::Operate>,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<MaintenanceRequest>,
) -> ApiResult<Json<Resource>> {
    Ok(Json(apply_maintenance(&state, &caller, &name, &req).await?))
}

/// Switches maintenance on or off in one transaction with its event; the API and the
/// dashboard's form both call this.
pub async fn apply_maintenance(
    state: &AppState,
    caller: &Caller,
    name: &str,
    req: &MaintenanceRequest,
) -> Result<Resource, ApiError> {
    let now = Utc::now();
    let mut tx = state.store.begin().await?;
    let mut r = tx.get_resource(name).await?;
    let kind = if req.enabled {
        r.maintenance_on(
            MaintenanceWindow {
                start: req.start,
                end: req.end,
                reason: req.reason.clone(),
            },
            now,
        )?;
        "resource.maintenance_on"
    } else {
        let active = tx.active_lease_count(r.id).await?;
        r.maintenance_off(active, now)?;
        "resource.maintenance_off"
    };
    tx.update_resource(&r).await?;
    tx.record(event(kind, &r, caller).with_data(json!({
        "state": r.state, "reason": req.reason, "start": req.start, "end": req.end,
    })));
    tx.commit().await?;
    Ok(r)
}

/// Retire a resource: refused while work runs on it unless forced with a reason.
#[utoipa::path(post, path = "/api/v1/resources/{name}/retire", tag = "resources",
    params(("name" = String, Path, description = "Resource name")), request_body = RetireRequest,
    responses((status = 403, body = Problem), (status = 200, body = Resource), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn retire_resource(
    State(state): State<AppState>,
    caller: Require<perm::Operate>,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<RetireRequest>,
) -> ApiResult<Json<Resource>> {
    let now = Utc::now();
    let mut tx = state.store.begin().await?;
    let mut r = tx.get_resource(&name).await?;
    let active = tx.active_lease_count(r.id).await?;
    r.retire(active, req.force, req.reason.clone(), now)?;
    tx.update_resource(&r).await?;
    tx.record(event("resource.retired", &r, &caller).with_data(json!({
        "reason": req.reason, "forced": req.force, "active_workloads": active,
    })));
    tx.commit().await?;
    Ok(Json(r))
}

/// The resource's recent load as its agent reported it, newest first (the server keeps
/// the last 60 heartbeats).
#[utoipa::path(get, path = "/api/v1/resources/{name}/metrics", tag = "resources",
    params(("name" = String, Path, description = "Resource name")),
    responses((status = 200, body = Vec<MetricSample>), (status = 404, body = Problem)))]
pub async fn resource_metrics(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<Vec<MetricSample>>> {
    caller.require(Action::Read)?;
    let r = state.store.get_resource(&name).await?;
    let samples = state
        .store
        .metric_history(r.id)
        .await?
        .into_iter()
        .map(|(at, metrics)| MetricSample { at, metrics })
        .collect();
    Ok(Json(samples))
}
