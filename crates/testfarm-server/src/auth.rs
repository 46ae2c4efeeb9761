//! Bearer-token authentication and role checks.
//!
//! Every route but `/healthz` and `/readyz` takes a [`Caller`]; handlers then ask
//! [`Caller::require`] for the [`Action`] they perform, so the permission table lives in
//! one place (`testfarm_core::role`). Verified tokens are cached briefly so a request costs
//! no database read; revocation through this server drops the cache entry at once.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use chrono::Utc;
use testfarm_core::{Action, Role, token};

use crate::error::ApiError;
use crate::state::AppState;

/// How long a verified token is trusted without re-reading it. Bounds how late a
/// revocation made through another server process takes effect.
const CACHE_TTL: Duration = Duration::from_secs(5);

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub token_id: String,
    pub name: String,
    pub role: Role,
}

impl Caller {
    /// Refuses with 403 unless the caller's role allows `action`.
    pub fn require(&self, action: Action) -> Result<(), ApiError> {
        if self.role.allows(action) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "token {:?} has role {}, which may not {}",
                self.name,
                self.role,
                match action {
                    Action::Read => "read",
                    Action::Submit => "submit work or take leases",
                    Action::Operate => "change resources (operator or admin needed)",
                    Action::Administer => "manage tokens and policies (admin needed)",
                    Action::ActAsAgent => "act as an agent (agent token needed)",
                }
            )))
        }
    }
}

struct Cached {
    caller: Caller,
    hash: Vec<u8>,
    at: Instant,
}

#[derive(Default)]
pub struct TokenCache {
    entries: RwLock<HashMap<String, Cached>>,
}

impl TokenCache {
    fn lookup(&self, id: &str, secret: &str) -> Option<Caller> {
        let entries = self.entries.read().ok()?;
        let c = entries.get(id)?;
        (c.at.elapsed() < CACHE_TTL && token::verify(secret, &c.hash)).then(|| c.caller.clone())
    }

    fn insert(&self, caller: Caller, hash: Vec<u8>) {
        if let Ok(mut entries) = self.entries.write() {
            if entries.len() > 10_000 {
                entries.retain(|_, c| c.at.elapsed() < CACHE_TTL);
            }
            entries.insert(
                caller.token_id.clone(),
                Cached {
                    caller,
                    hash,
                    at: Instant::now(),
                },
            );
        }
    }

    /// Forgets a token at once (after revocation).
    pub fn forget(&self, id: &str) {
        if let Ok(mut entries) = self.entries.write() {
            entries.remove(id);
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts.headers.get(header::AUTHORIZATION).ok_or_else(|| {
            ApiError::Unauthorized("missing Authorization: Bearer <token> header".into())
        })?;
        let value = header
            .to_str()
            .map_err(|_| ApiError::Unauthorized("Authorization header is not valid text".into()))?;
        let presented = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or_else(|| {
                ApiError::Unauthorized("Authorization must use the Bearer scheme".into())
            })?;
        let parts = token::parse(presented).map_err(|_| {
            ApiError::Unauthorized("malformed token (expected tf_<id>_<secret>)".into())
        })?;
        if let Some(caller) = state.tokens.lookup(parts.id, parts.secret) {
            return Ok(caller);
        }
        let invalid = || ApiError::Unauthorized("invalid or revoked token".into());
        let stored = state.store.get_token(parts.id).await?.ok_or_else(invalid)?;
        if stored.info.revoked_at.is_some() || !token::verify(parts.secret, &stored.secret_sha256) {
            return Err(invalid());
        }
        let caller = Caller {
            token_id: stored.info.id.clone(),
            name: stored.info.name.clone(),
            role: stored.info.role,
        };
        // Best effort: a failed "last used" update must not fail the request.
        if let Err(e) = state.store.touch_token(&caller.token_id, Utc::now()).await {
            tracing::warn!(error = %e, "could not record token use");
        }
        state.tokens.insert(caller.clone(), stored.secret_sha256);
        Ok(caller)
    }
}

/// Creates a fresh token string and the id it is stored under.
pub fn new_token() -> (String, String) {
    let id = ulid::Ulid::new().to_string().to_lowercase();
    let random: [u8; 32] = rand::random();
    let text = token::format(&id, &random);
    (id, text)
}
