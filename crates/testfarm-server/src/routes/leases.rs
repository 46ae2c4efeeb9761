//! `/api/v1/leases`: manual leases. Take a resource by selector for a while, renew it by
//! heartbeat, release it; a holder that goes silent loses it within its heartbeat TTL.

use std::collections::HashMap;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use serde_json::json;
use testfarm_api::lease::{AcquireLease, LeaseQuery, LeaseView, ReleaseQuery, RenewLease};
use testfarm_api::problem::Problem;
use testfarm_core::lease::{self, Holder, Lease, LeaseRefused, LeaseRequest, LeaseState, Share};
use testfarm_core::resource::ResourceState;
use testfarm_core::{Action, Selector, duration};
use testfarm_store::resources::ResourceFilter;
use testfarm_store::{NewEvent, StoreError};
use ulid::Ulid;

use crate::auth::{Caller, Require, perm};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiPath, ApiQuery};
use crate::json::ApiJson;
use crate::lifecycle;
use crate::state::AppState;

fn parse_duration(field: &str, s: &str) -> ApiResult<Duration> {
    duration::parse(s).map_err(|e| ApiError::unprocessable(field, e))
}

fn refused(e: LeaseRefused) -> ApiError {
    match e {
        LeaseRefused::Stale(_) => ApiError::Conflict {
            detail: e.to_string(),
            field: Some("epoch".into()),
        },
        LeaseRefused::NotHolder { .. } => ApiError::Forbidden(e.to_string()),
        LeaseRefused::ForceWithoutReason => ApiError::unprocessable("reason", e),
        LeaseRefused::ZeroDuration | LeaseRefused::TooLong => {
            ApiError::unprocessable("duration", e)
        }
        _ => ApiError::conflict(e),
    }
}

/// The lease with its resource's name (or id, if the resource has since been deleted).
async fn view(state: &AppState, lease: Lease) -> ApiResult<LeaseView> {
    let resource = state
        .store
        .resource_name(lease.resource_id)
        .await?
        .unwrap_or_else(|| lease.resource_id.to_string());
    Ok(LeaseView { lease, resource })
}

/// Take a lease on a resource matching a selector, waiting up to `wait` for one to be free.
#[utoipa::path(post, path = "/api/v1/leases", tag = "leases", request_body = AcquireLease,
    responses((status = 403, body = Problem), (status = 201, body = LeaseView), (status = 409, body = Problem, description = "every match is busy"),
              (status = 422, body = Problem)))]
pub async fn acquire_lease(
    State(state): State<AppState>,
    caller: Require<perm::Submit>,
    ApiJson(req): ApiJson<AcquireLease>,
) -> ApiResult<(StatusCode, Json<LeaseView>)> {
    let selector =
        Selector::parse(&req.selector).map_err(|e| ApiError::bad_request("selector", e))?;
    let duration = parse_duration("duration", &req.duration)?;
    let wait = req
        .wait
        .as_deref()
        .map(|w| parse_duration("wait", w))
        .transpose()?
        .unwrap_or_default();
    let ttl = req
        .heartbeat_ttl
        .as_deref()
        .map(|t| parse_duration("heartbeat_ttl", t))
        .transpose()?
        .unwrap_or(state.config.leases.heartbeat_ttl.0);
    if duration.is_zero() || ttl.is_zero() {
        return Err(ApiError::unprocessable(
            "duration",
            "durations must be more than zero",
        ));
    }
    let deadline = tokio::time::Instant::now() + wait;
    let mut events = state.store.subscribe_events();
    loop {
        events.borrow_and_update();
        let candidates = state.store.selectable(req.kind).await?;
        let ids: Vec<Ulid> = candidates
            .iter()
            .filter(|r| selector.matches(&r.labels))
            .map(|r| r.id)
            .collect();
        if ids.is_empty() {
            return Err(ApiError::unprocessable(
                "selector",
                format!("no resource matches {:?}", req.selector),
            ));
        }
        if let Some(view) = try_take(&state, &caller, &ids, duration, ttl).await? {
            return Ok((StatusCode::CREATED, Json(view)));
        }
        if tokio::time::Instant::now() >= deadline {
            // The states as they are now, not as the cached candidates last saw them.
            let busy: Vec<String> = state
                .store
                .list_selectable(req.kind)
                .await?
                .iter()
                .filter(|r| ids.contains(&r.id))
                .map(|r| format!("{} ({})", r.name, r.state))
                .collect();
            return Err(ApiError::conflict(format!(
                "no matching resource is free{}: {}",
                if wait.is_zero() {
                    String::new()
                } else {
                    format!(" after waiting {}", duration::format(wait))
                },
                busy.join(", ")
            )));
        }
        let _ = tokio::time::timeout_at(deadline, events.changed()).await;
    }
}

/// Leases the least recently used of `candidates` that is free, whole, in one
/// transaction (so concurrent acquirers never pick the same board and retry); `None`
/// when none is free.
async fn try_take(
    state: &AppState,
    caller: &Caller,
    candidates: &[Ulid],
    duration: Duration,
    ttl: Duration,
) -> ApiResult<Option<LeaseView>> {
    let now = Utc::now();
    let mut tx = state.store.begin().await?;
    let Some(resource) = tx.free_resource_lru(candidates).await? else {
        return Ok(None);
    };
    let lease = lease::acquire(
        LeaseRequest {
            id: crate::ids::next(),
            resource_id: resource.id,
            resource_last_epoch: resource.last_epoch,
            holder: Holder::Person(caller.name.clone()),
            share: Share::Whole,
            duration,
            heartbeat_ttl: ttl,
        },
        now,
    )
    .map_err(refused)?;
    tx.insert_lease(&lease, Some(ResourceState::Leased)).await?;
    tx.record(NewEvent::new("lease.acquired", "lease", lease.id.to_string(), &caller.name).with_data(json!({
        "resource": resource.name, "holder": lease.holder, "epoch": lease.epoch, "expires_at": lease.expires_at,
        "heartbeat_ttl_ms": lease.heartbeat_ttl_ms,
    })));
    tx.commit().await?;
    Ok(Some(LeaseView {
        lease,
        resource: resource.name,
    }))
}

/// List leases (active by default).
#[utoipa::path(get, path = "/api/v1/leases", tag = "leases", params(LeaseQuery),
    responses((status = 200, body = Vec<LeaseView>), (status = 400, body = Problem)))]
pub async fn list_leases(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<LeaseQuery>,
) -> ApiResult<Json<Vec<LeaseView>>> {
    caller.require(Action::Read)?;
    let filter = match q.state.as_deref().unwrap_or("active") {
        "all" => None,
        s => Some(
            s.parse::<LeaseState>()
                .map_err(|e| ApiError::bad_request("state", e))?,
        ),
    };
    let leases = state.store.list_leases(filter, 1000).await?;
    let names: HashMap<Ulid, String> = state
        .store
        .list_resources(&ResourceFilter::default())
        .await?
        .into_iter()
        .map(|r| (r.id, r.name))
        .collect();
    Ok(Json(
        leases
            .into_iter()
            .map(|l| LeaseView {
                resource: names
                    .get(&l.resource_id)
                    .cloned()
                    .unwrap_or_else(|| l.resource_id.to_string()),
                lease: l,
            })
            .collect(),
    ))
}

/// Show a lease.
#[utoipa::path(get, path = "/api/v1/leases/{id}", tag = "leases", params(("id" = String, Path, description = "Lease id")),
    responses((status = 200, body = LeaseView), (status = 404, body = Problem)))]
pub async fn get_lease(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<LeaseView>> {
    caller.require(Action::Read)?;
    let lease = state.store.get_lease(&id).await?;
    Ok(Json(view(&state, lease).await?))
}

/// Checks the caller may act as the lease's holder.
async fn check_holder(state: &AppState, caller: &Caller, lease: &Lease) -> ApiResult<()> {
    match &lease.holder {
        Holder::Person(name) if *name == caller.name => Ok(()),
        Holder::Job(_) if caller.role.allows(Action::ActAsAgent) => {
            let agent = match state.store.get_resource_by_id(lease.resource_id).await {
                Ok(r) => r.agent,
                Err(StoreError::NotFound { .. }) => None,
                Err(e) => return Err(e.into()),
            };
            match agent {
                Some(a) if a == caller.name => Ok(()),
                _ => Err(ApiError::Forbidden(format!(
                    "lease {} is not on one of agent {}'s resources",
                    lease.id, caller.name
                ))),
            }
        }
        holder => Err(ApiError::Forbidden(format!(
            "lease {} is held by {holder}, not by {}",
            lease.id, caller.name
        ))),
    }
}

/// Renew (heartbeat) a lease, optionally extending it.
#[utoipa::path(post, path = "/api/v1/leases/{id}/renew", tag = "leases", params(("id" = String, Path, description = "Lease id")),
    request_body = RenewLease, responses((status = 200, body = LeaseView), (status = 403, body = Problem), (status = 409, body = Problem)))]
pub async fn renew_lease(
    State(state): State<AppState>,
    caller: Require<perm::SubmitOrAgent>,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<RenewLease>,
) -> ApiResult<Json<LeaseView>> {
    let extend = req
        .extend
        .as_deref()
        .map(|e| parse_duration("extend", e))
        .transpose()?;
    let now = Utc::now();
    let mut tx = state.store.begin().await?;
    let mut lease = tx.get_lease(&id).await?;
    check_holder(&state, &caller, &lease).await?;
    lease.credit(state.awake.since());
    let renewed = lease.renew(req.epoch, extend, now).map_err(refused)?;
    tx.update_lease(&renewed).await?;
    tx.commit().await?;
    Ok(Json(view(&state, renewed).await?))
}

/// Release a lease. Holders pass their epoch; operators may `force` with a reason, which
/// fences the holder and sends the resource through cleanup.
#[utoipa::path(delete, path = "/api/v1/leases/{id}", tag = "leases", params(("id" = String, Path, description = "Lease id"), ReleaseQuery),
    responses((status = 200, body = LeaseView), (status = 403, body = Problem), (status = 409, body = Problem)))]
pub async fn release_lease(
    State(state): State<AppState>,
    caller: Require<perm::Submit>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<ReleaseQuery>,
) -> ApiResult<Json<LeaseView>> {
    let now = Utc::now();
    let mut tx = state.store.begin().await?;
    let lease = tx.get_lease(&id).await?;
    let (ended, end) = if q.force.unwrap_or(false) {
        caller.require(Action::Operate)?;
        let ended = lease
            .force_release(&caller.name, q.reason.as_deref().unwrap_or(""), now)
            .map_err(refused)?;
        let end = lifecycle::end_lease(
            &mut tx,
            &ended,
            &caller.name,
            state.cleanup_configured(),
            now,
        )
        .await?;
        (ended, end)
    } else {
        let epoch = q.epoch.ok_or_else(|| {
            ApiError::bad_request(
                "epoch",
                "pass the lease's epoch (or force=true with a reason, as an operator)",
            )
        })?;
        check_holder(&state, &caller, &lease).await?;
        let ended = lease.release(&lease.holder, epoch, now).map_err(refused)?;
        let end = lifecycle::finish_lease(&mut tx, &ended, &caller.name, false, now).await?;
        (ended, end)
    };
    tx.commit().await?;
    state.after_commit(end.after);
    state.work_changed();
    let resource = end.resource;
    Ok(Json(LeaseView {
        lease: ended,
        resource,
    }))
}
