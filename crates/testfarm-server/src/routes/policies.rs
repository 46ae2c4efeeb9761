//! `/api/v1/policies`: admin-managed scheduling policies (max concurrent jobs per group,
//! max VMs per host, boards reserved for a team, priority caps per role).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use serde_json::json;
use testfarm_api::problem::Problem;
use testfarm_core::Action;
use testfarm_core::policy::Policy;
use testfarm_core::resource::validate_name;
use testfarm_store::NewEvent;

use crate::auth::{Caller, Require, perm};
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiPath;
use crate::json::ApiJson;
use crate::state::AppState;

/// Add a policy.
#[utoipa::path(post, path = "/api/v1/policies", tag = "policies", request_body = Policy,
    responses((status = 201, body = Policy), (status = 403, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create_policy(
    State(state): State<AppState>,
    caller: Require<perm::Administer>,
    ApiJson(p): ApiJson<Policy>,
) -> ApiResult<(StatusCode, Json<Policy>)> {
    validate_name(&p.name).map_err(|e| ApiError::unprocessable("name", e))?;
    let mut tx = state.store.begin().await?;
    tx.insert_policy(&p, Utc::now()).await?;
    // Conflicts resolve by policy priority; say which ones this policy is part of, so the
    // operator sees it now rather than when a job waits for no visible reason.
    let world = crate::tasks::scheduler::load_world(&state).await?;
    let mut all = world.policies;
    all.policies.retain(|q| q.name != p.name);
    all.policies.push(p.clone());
    let conflicts: Vec<String> = all
        .conflicts(&world.snapshot.resources)
        .into_iter()
        .filter(|c| c.winner == p.name || c.loser == p.name)
        .map(|c| c.to_string())
        .collect();
    for c in &conflicts {
        tracing::warn!(policy = %p.name, conflict = %c, "policy conflict");
    }
    tx.record(
        NewEvent::new("policy.created", "policy", &p.name, &caller.name)
            .with_data(json!({ "policy": p, "conflicts": conflicts })),
    );
    tx.commit().await?;
    state.wake.notify_one();
    Ok((StatusCode::CREATED, Json(p)))
}

/// List policies in evaluation order.
#[utoipa::path(get, path = "/api/v1/policies", tag = "policies", responses((status = 200, body = Vec<Policy>)))]
pub async fn list_policies(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<Policy>>> {
    caller.require(Action::Read)?;
    Ok(Json(state.store.list_policies().await?))
}

/// Delete a policy.
#[utoipa::path(delete, path = "/api/v1/policies/{name}", tag = "policies", params(("name" = String, Path, description = "Policy name")),
    responses((status = 403, body = Problem), (status = 204), (status = 404, body = Problem)))]
pub async fn delete_policy(
    State(state): State<AppState>,
    caller: Require<perm::Administer>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let mut tx = state.store.begin().await?;
    tx.delete_policy(&name).await?;
    tx.record(NewEvent::new(
        "policy.deleted",
        "policy",
        &name,
        &caller.name,
    ));
    tx.commit().await?;
    state.wake.notify_one();
    Ok(StatusCode::NO_CONTENT)
}
