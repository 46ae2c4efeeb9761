//! `/api/v1/tokens` (admins) and `/api/v1/whoami` (anyone with a token).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use serde_json::json;
use testfarm_api::problem::Problem;
use testfarm_api::token::{CreateToken, CreatedToken, TokenInfo, WhoAmI};
use testfarm_core::resource::validate_name;
use testfarm_core::token;
use testfarm_store::NewEvent;

use crate::auth::{Caller, Require, new_token, perm};
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiPath;
use crate::json::ApiJson;
use crate::state::AppState;

/// Create a token. The secret is in this response only.
#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens", request_body = CreateToken,
    responses((status = 201, body = CreatedToken), (status = 403, body = Problem), (status = 409, body = Problem)))]
pub async fn create_token(
    State(state): State<AppState>,
    caller: Require<perm::Administer>,
    ApiJson(req): ApiJson<CreateToken>,
) -> ApiResult<(StatusCode, Json<CreatedToken>)> {
    validate_name(&req.name).map_err(|e| ApiError::unprocessable("name", e))?;
    let (id, text) = new_token();
    let secret = token::parse(&text)
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .secret;
    let info = TokenInfo {
        id,
        name: req.name,
        role: req.role,
        created_at: Utc::now(),
        last_used_at: None,
        revoked_at: None,
    };
    let mut tx = state.store.begin().await?;
    tx.insert_token(&info, &token::hash_secret(secret)).await?;
    tx.record(
        NewEvent::new("token.created", "token", &info.name, &caller.name)
            .with_data(json!({ "role": info.role, "id": info.id })),
    );
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken { info, token: text }),
    ))
}

/// List tokens (never their secrets).
#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens",
    responses((status = 200, body = Vec<TokenInfo>), (status = 403, body = Problem)))]
pub async fn list_tokens(
    State(state): State<AppState>,
    _caller: Require<perm::Administer>,
) -> ApiResult<Json<Vec<TokenInfo>>> {
    Ok(Json(state.store.list_tokens().await?))
}

/// Revoke a token by name or id. Takes effect at once. The last active admin token cannot
/// be revoked (409): create another admin token first.
#[utoipa::path(delete, path = "/api/v1/tokens/{name}", tag = "tokens",
    params(("name" = String, Path, description = "Token name or id")),
    responses((status = 200, body = TokenInfo), (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 409, body = Problem, description = "the last active admin token")))]
pub async fn revoke_token(
    State(state): State<AppState>,
    caller: Require<perm::Administer>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<TokenInfo>> {
    let mut tx = state.store.begin().await?;
    let target = tx.find_token(&name).await?;
    let admins = tx.count_active_admins().await?;
    token::check_revoke(
        &target.name,
        target.role,
        target.revoked_at.is_some(),
        admins,
    )
    .map_err(ApiError::conflict)?;
    let info = tx.revoke_token(&name, Utc::now()).await?;
    tx.record(
        NewEvent::new("token.revoked", "token", &info.name, &caller.name)
            .with_data(json!({ "id": info.id })),
    );
    tx.commit().await?;
    state.tokens.forget(&info.id);
    Ok(Json(info))
}

/// Who the presented token belongs to.
#[utoipa::path(get, path = "/api/v1/whoami", tag = "tokens", responses((status = 200, body = WhoAmI)))]
pub async fn whoami(caller: Caller) -> Json<WhoAmI> {
    Json(WhoAmI {
        name: caller.name,
        role: caller.role,
    })
}
