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
        authenticate(state, presented).await
    }
}

/// Verifies a presented token string (`tf_<id>_<secret>`): the bearer header and the web
/// UI's session cookie both come through here, so revocation ends both at once.
pub async fn authenticate(state: &AppState, presented: &str) -> Result<Caller, ApiError> {
    {
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

/// What a route needs of its caller's role, checked by [`Require`] before anything else of
/// the request (its body above all) is read: a caller without the role gets 403 whatever
/// it sends.
pub trait Permission {
    /// Whether `role` may call the route.
    fn allows(role: Role) -> bool;
    /// The action named in the 403's detail.
    const ACTION: Action;
}

macro_rules! permission {
    ($(#[$doc:meta])* $name:ident, $action:ident) => {
        $(#[$doc])*
        pub struct $name;
        impl Permission for $name {
            fn allows(role: Role) -> bool {
                role.allows(Action::$action)
            }
            const ACTION: Action = Action::$action;
        }
    };
}

/// Route permissions, one per [`Action`].
pub mod perm {
    use super::{Action, Permission, Role};
    permission!(
        /// Submit jobs, take leases.
        Submit,
        Submit
    );
    permission!(
        /// Change resources and groups.
        Operate,
        Operate
    );
    permission!(
        /// Tokens and policies.
        Administer,
        Administer
    );
    permission!(
        /// The agent protocol.
        ActAsAgent,
        ActAsAgent
    );
    /// Lease renewal: the holder is a person (submit) or an agent acting for a job.
    pub struct SubmitOrAgent;
    impl Permission for SubmitOrAgent {
        fn allows(role: Role) -> bool {
            role.allows(Action::Submit) || role.allows(Action::ActAsAgent)
        }
        const ACTION: Action = Action::Submit;
    }
}

/// An authenticated caller whose role passed `P`; derefs to the [`Caller`].
pub struct Require<P> {
    pub caller: Caller,
    _permission: std::marker::PhantomData<P>,
}

impl<P> std::ops::Deref for Require<P> {
    type Target = Caller;
    fn deref(&self) -> &Caller {
        &self.caller
    }
}

impl<P: Permission + Send + Sync> FromRequestParts<AppState> for Require<P> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, state).await?;
        Require::check(caller)
    }
}

impl<P: Permission> Require<P> {
    /// The permission check of the extractor, for callers authenticated another way (the
    /// dashboard's cookie session calls the API handlers through this).
    pub fn check(caller: Caller) -> Result<Self, ApiError> {
        if !P::allows(caller.role) {
            return Err(caller.require(P::ACTION).err().unwrap_or_else(|| {
                ApiError::Forbidden(format!("token {:?} may not call this", caller.name))
            }));
        }
        Ok(Require {
            caller,
            _permission: std::marker::PhantomData,
        })
    }
}
