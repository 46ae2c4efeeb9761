//! Health checks (the only routes without a token), Prometheus metrics and the OpenAPI
//! document.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Serialize;
use testfarm_api::resource::{ResourceKind, ResourceState};
use testfarm_core::Action;
use testfarm_store::resources::ResourceFilter;
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

#[derive(Serialize, ToSchema)]
pub struct HealthStatusBody {
    pub status: &'static str,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "meta", security(()),
    responses((status = 200, body = HealthStatusBody)))]
pub async fn healthz() -> Json<HealthStatusBody> {
    Json(HealthStatusBody { status: "ok" })
}

/// Readiness: the database answers.
#[utoipa::path(get, path = "/readyz", tag = "meta", security(()),
    responses((status = 200, body = HealthStatusBody), (status = 503, body = testfarm_api::Problem)))]
pub async fn readyz(State(state): State<AppState>) -> ApiResult<Json<HealthStatusBody>> {
    state
        .store
        .ping()
        .await
        .map_err(|e| ApiError::Unavailable(format!("database not ready: {e}")))?;
    Ok(Json(HealthStatusBody { status: "ready" }))
}

/// Prometheus metrics: request counts and latencies, resources by kind and state, the
/// store's commits and transactions.
#[utoipa::path(get, path = "/metrics", tag = "meta",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<impl IntoResponse> {
    caller.require(Action::Read)?;
    let resources = state
        .store
        .list_resources(&ResourceFilter::default())
        .await?;
    for kind in ResourceKind::ALL {
        for rstate in ResourceState::ALL {
            let n = resources
                .iter()
                .filter(|r| r.kind == kind && r.state == rstate)
                .count();
            metrics::gauge!("testfarm_resources", "kind" => kind.as_str(), "state" => rstate.as_str()).set(n as f64);
        }
    }
    // Commits against the transactions they carried: the ratio shows group commit at
    // work under write load.
    let writes = state.store.write_stats();
    metrics::counter!("testfarm_store_commits_total").absolute(writes.commits);
    metrics::counter!("testfarm_store_transactions_total").absolute(writes.transactions);
    let body = state
        .metrics
        .as_ref()
        .map(|h| h.render())
        .unwrap_or_default();
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        body,
    ))
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "meta",
    responses((status = 200, description = "OpenAPI 3.1 document", content_type = "application/json")))]
pub async fn openapi(caller: Caller) -> ApiResult<impl IntoResponse> {
    caller.require(Action::Read)?;
    Ok(Json(crate::routes::openapi_document()))
}
