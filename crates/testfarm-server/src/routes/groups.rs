//! `/api/v1/groups`: named label selectors with aggregate capacity by kind.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use serde_json::json;
use testfarm_api::group::{CreateGroup, Group, GroupDetail, KindCapacity};
use testfarm_api::problem::Problem;
use testfarm_api::resource::{Resource, ResourceKind, ResourceState};
use testfarm_core::resource::validate_name;
use testfarm_core::{Action, Selector};
use testfarm_store::NewEvent;
use testfarm_store::resources::ResourceFilter;

use crate::auth::{Caller, Require, perm};
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiPath;
use crate::json::ApiJson;
use crate::state::AppState;

/// Create a group.
#[utoipa::path(post, path = "/api/v1/groups", tag = "groups", request_body = CreateGroup,
    responses((status = 403, body = Problem), (status = 201, body = Group), (status = 400, body = Problem), (status = 409, body = Problem)))]
pub async fn create_group(
    State(state): State<AppState>,
    caller: Require<perm::Operate>,
    ApiJson(req): ApiJson<CreateGroup>,
) -> ApiResult<(StatusCode, Json<Group>)> {
    validate_name(&req.name).map_err(|e| ApiError::unprocessable("name", e))?;
    let selector =
        Selector::parse(&req.selector).map_err(|e| ApiError::bad_request("selector", e))?;
    let group = Group {
        name: req.name,
        selector: selector.to_string(),
        description: req.description,
        created_at: Utc::now(),
    };
    let mut tx = state.store.begin().await?;
    tx.insert_group(&group).await?;
    tx.record(
        NewEvent::new("group.created", "group", &group.name, &caller.name)
            .with_data(json!({ "selector": group.selector })),
    );
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(group)))
}

/// List groups.
#[utoipa::path(get, path = "/api/v1/groups", tag = "groups", responses((status = 200, body = Vec<Group>)))]
pub async fn list_groups(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<Group>>> {
    caller.require(Action::Read)?;
    Ok(Json(state.store.list_groups().await?))
}

/// Show a group: its members and capacity/utilisation by kind.
#[utoipa::path(get, path = "/api/v1/groups/{name}", tag = "groups",
    params(("name" = String, Path, description = "Group name")),
    responses((status = 200, body = GroupDetail), (status = 404, body = Problem)))]
pub async fn get_group(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<GroupDetail>> {
    caller.require(Action::Read)?;
    let group = state.store.get_group(&name).await?;
    let selector = Selector::parse(&group.selector).map_err(|e| {
        ApiError::Internal(format!("stored selector of group {name} is invalid: {e}"))
    })?;
    let members: Vec<Resource> = state
        .store
        .list_resources(&ResourceFilter::default())
        .await?
        .into_iter()
        .filter(|r| selector.matches(&r.selector_labels()))
        .collect();
    let capacity = capacity_by_kind(&members);
    Ok(Json(GroupDetail {
        group,
        members,
        capacity,
    }))
}

/// Delete a group (its resources are untouched).
#[utoipa::path(delete, path = "/api/v1/groups/{name}", tag = "groups",
    params(("name" = String, Path, description = "Group name")),
    responses((status = 403, body = Problem), (status = 204), (status = 404, body = Problem)))]
pub async fn delete_group(
    State(state): State<AppState>,
    caller: Require<perm::Operate>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let mut tx = state.store.begin().await?;
    tx.delete_group(&name).await?;
    tx.record(NewEvent::new("group.deleted", "group", &name, &caller.name));
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Totals per kind; utilisation is the leased share of members not retired.
pub fn capacity_by_kind(members: &[Resource]) -> Vec<KindCapacity> {
    ResourceKind::ALL
        .iter()
        .filter_map(|kind| {
            let of_kind: Vec<&Resource> = members.iter().filter(|r| r.kind == *kind).collect();
            if of_kind.is_empty() {
                return None;
            }
            let mut c = KindCapacity {
                kind: kind.as_str().to_string(),
                ..Default::default()
            };
            for r in of_kind {
                c.total += 1;
                match r.state {
                    ResourceState::Available => c.available += 1,
                    ResourceState::Leased => c.leased += 1,
                    ResourceState::Maintenance => c.maintenance += 1,
                    ResourceState::Offline => c.offline += 1,
                    ResourceState::Retired => c.retired += 1,
                }
                // Saturating: capabilities are reported by agents and typed by people, and
                // a few huge ones must not overflow the totals (it panicked a debug build).
                if r.state != ResourceState::Retired {
                    let caps = &r.capabilities;
                    c.cpus = c.cpus.saturating_add(u64::from(caps.cpus.unwrap_or(0)));
                    c.memory_mb = c.memory_mb.saturating_add(caps.memory_mb.unwrap_or(0));
                    c.disk_gb = c.disk_gb.saturating_add(caps.disk_gb.unwrap_or(0));
                }
            }
            let in_service = c.total - c.retired;
            c.utilization = if in_service == 0 {
                0.0
            } else {
                f64::from(c.leased) / f64::from(in_service)
            };
            Some(c)
        })
        .collect()
}
