//! `/api/v1/alerts`: list (paged, filtered), show with recovery attempts and deliveries,
//! acknowledge and resolve. Alerts are raised and auto-resolved by the evaluator
//! (`tasks::alerts`); people acknowledge them (seen, being handled) or resolve them.

use axum::Json;
use axum::extract::State;
use chrono::Utc;
use testfarm_api::Page;
use testfarm_api::alert::{
    Alert, AlertAction, AlertDetail, AlertQuery, AlertState, Rule, Severity,
};
use testfarm_api::problem::Problem;
use testfarm_core::Action;
use testfarm_store::alerts::AlertFilter;

use crate::auth::{Caller, Require, perm};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiPath, ApiQuery};
use crate::json::ApiJson;
use crate::state::AppState;

fn check_id(id: &str) -> ApiResult<()> {
    ulid::Ulid::from_string(id)
        .map(|_| ())
        .map_err(|_| ApiError::NotFound(format!("alert {id:?} not found")))
}

/// List alerts, newest first, filtered by state, severity, rule and subject, in pages.
#[utoipa::path(get, path = "/api/v1/alerts", tag = "alerts", params(AlertQuery),
    responses((status = 200, body = Page<Alert>), (status = 400, body = Problem)))]
pub async fn list_alerts(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<AlertQuery>,
) -> ApiResult<Json<Page<Alert>>> {
    caller.require(Action::Read)?;
    let states = match q.state.as_deref() {
        None | Some("") => Vec::new(),
        Some("active") => vec![AlertState::Open, AlertState::Acknowledged],
        Some(s) => vec![
            s.parse::<AlertState>()
                .map_err(|e| ApiError::bad_request("state", format!("{e}, or active")))?,
        ],
    };
    let severity = q
        .severity
        .as_deref()
        .map(str::parse::<Severity>)
        .transpose()
        .map_err(|e| ApiError::bad_request("severity", e))?;
    let rule = q
        .rule
        .as_deref()
        .map(str::parse::<Rule>)
        .transpose()
        .map_err(|e| ApiError::bad_request("rule", e))?;
    if let Some(c) = &q.cursor {
        ulid::Ulid::from_string(c).map_err(|_| {
            ApiError::bad_request(
                "cursor",
                "invalid cursor; use next_cursor from the previous page",
            )
        })?;
    }
    let limit = super::page_limit(q.limit)?;
    let mut items = state
        .store
        .list_alerts(&AlertFilter {
            states,
            severity,
            rule: rule.map(|r| r.as_str().to_string()),
            subject: q.subject.clone(),
            before: q.cursor.clone(),
            limit: u32::try_from(limit + 1).unwrap_or(u32::MAX),
        })
        .await?;
    let next_cursor = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|a| a.id.clone())
    } else {
        None
    };
    Ok(Json(Page { items, next_cursor }))
}

async fn detail(state: &AppState, alert: Alert) -> ApiResult<AlertDetail> {
    let recovery_attempts = state.store.alert_recovery(&alert.id).await?;
    let deliveries = state.store.alert_deliveries(&alert.id).await?;
    Ok(AlertDetail {
        alert,
        recovery_attempts,
        deliveries,
    })
}

/// Show an alert with what was tried about it and its deliveries per channel.
#[utoipa::path(get, path = "/api/v1/alerts/{id}", tag = "alerts",
    params(("id" = String, Path, description = "Alert id")),
    responses((status = 200, body = AlertDetail), (status = 404, body = Problem)))]
pub async fn get_alert(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<AlertDetail>> {
    caller.require(Action::Read)?;
    check_id(&id)?;
    let a = state.store.get_alert(&id).await?;
    Ok(Json(detail(&state, a).await?))
}

/// Acknowledge an open alert: a person has seen it. It stays open until its condition
/// clears or it is resolved.
#[utoipa::path(post, path = "/api/v1/alerts/{id}/acknowledge", tag = "alerts",
    params(("id" = String, Path, description = "Alert id")), request_body = AlertAction,
    responses((status = 200, body = AlertDetail), (status = 403, body = Problem),
              (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn acknowledge_alert(
    State(state): State<AppState>,
    caller: Require<perm::Operate>,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<AlertAction>,
) -> ApiResult<Json<AlertDetail>> {
    let a = acknowledge(&state, &caller, &id, req.note.as_deref()).await?;
    Ok(Json(detail(&state, a).await?))
}

/// Acknowledges an alert for `caller` (the API route and the dashboard's form).
pub async fn acknowledge(
    state: &AppState,
    caller: &Require<perm::Operate>,
    id: &str,
    note: Option<&str>,
) -> ApiResult<Alert> {
    check_id(id)?;
    let now = Utc::now();
    let mut tx = state.store.begin().await?;
    let mut a = tx.get_alert(id).await?;
    if a.state == AlertState::Resolved {
        return Err(ApiError::conflict(format!(
            "alert {id} is already resolved"
        )));
    }
    if a.state == AlertState::Open {
        crate::alerts::acknowledge(&mut tx, &mut a, &caller.name, note, now).await?;
        tx.commit().await?;
    }
    Ok(a)
}

/// Resolve an alert by hand. If its condition still holds, the next evaluation raises a
/// new one.
#[utoipa::path(post, path = "/api/v1/alerts/{id}/resolve", tag = "alerts",
    params(("id" = String, Path, description = "Alert id")), request_body = AlertAction,
    responses((status = 200, body = AlertDetail), (status = 403, body = Problem),
              (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn resolve_alert(
    State(state): State<AppState>,
    caller: Require<perm::Operate>,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<AlertAction>,
) -> ApiResult<Json<AlertDetail>> {
    let a = resolve(&state, &caller, &id, req.note.as_deref()).await?;
    Ok(Json(detail(&state, a).await?))
}

/// Resolves an alert for `caller` (the API route and the dashboard's form).
pub async fn resolve(
    state: &AppState,
    caller: &Require<perm::Operate>,
    id: &str,
    note: Option<&str>,
) -> ApiResult<Alert> {
    check_id(id)?;
    let now = Utc::now();
    let mut tx = state.store.begin().await?;
    let mut a = tx.get_alert(id).await?;
    if a.state == AlertState::Resolved {
        return Err(ApiError::conflict(format!(
            "alert {id} is already resolved"
        )));
    }
    crate::alerts::resolve(&mut tx, &mut a, &caller.name, note, now).await?;
    tx.commit().await?;
    Ok(a)
}
