//! Login with an API token, kept in a `Secure; HttpOnly; SameSite=Strict` cookie.
//!
//! The cookie holds the token itself, verified on every request through
//! [`crate::auth::authenticate`] — the same path as bearer tokens — so a revoked token
//! ends its browser sessions within the token cache's TTL.

use axum::Form;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;

use crate::auth::{Caller, authenticate};
use crate::state::AppState;

pub const COOKIE: &str = "tf_session";

/// A logged-in dashboard user; missing or bad cookie → redirect to the login page.
pub struct Session {
    pub caller: Caller,
    /// The CSRF token state-changing forms must carry.
    pub csrf: String,
    /// The newest event id when the page was rendered: the live stream starts after it.
    pub last_event: i64,
}

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

impl FromRequestParts<AppState> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let login = || Redirect::to("/ui/login").into_response();
        let token = cookie_token(&parts.headers).ok_or_else(login)?;
        let caller = authenticate(state, &token).await.map_err(|_| login())?;
        let csrf = super::csrf::token_for(&caller.token_id);
        let last_event = state.store.last_event_id().await.unwrap_or(0);
        Ok(Session {
            caller,
            csrf,
            last_event,
        })
    }
}

fn login_form(error: Option<&str>) -> Response {
    super::layout::page(
        "Log in",
        None,
        html! {
            h1 { "Log in" }
            form method="post" action="/ui/login" class="form" {
                label for="token" { "API token" }
                input type="password" id="token" name="token" autocomplete="off" required;
                @if let Some(e) = error { span class="field-error" { (e) } }
                button type="submit" { "Log in" }
            }
            p class="hint" { "Create one with " code { "testfarm token create NAME --role user" } "." }
        },
    )
    .into_response()
}

pub async fn login_page() -> Response {
    login_form(None)
}

#[derive(Deserialize)]
pub struct LoginForm {
    token: String,
}

pub async fn login(State(state): State<AppState>, Form(f): Form<LoginForm>) -> Response {
    let token = f.token.trim();
    match authenticate(&state, token).await {
        Ok(_) => (
            [(
                header::SET_COOKIE,
                format!("{COOKIE}={token}; Path=/ui; Secure; HttpOnly; SameSite=Strict"),
            )],
            Redirect::to("/ui"),
        )
            .into_response(),
        Err(_) => (
            axum::http::StatusCode::UNAUTHORIZED,
            login_form(Some("invalid or revoked token")),
        )
            .into_response(),
    }
}

#[derive(Deserialize)]
pub struct LogoutForm {
    csrf: String,
}

pub async fn logout(session: Session, Form(f): Form<LogoutForm>) -> Response {
    if let Err(r) = super::csrf::check(&session, &f.csrf) {
        return r;
    }
    (
        [(
            header::SET_COOKIE,
            format!("{COOKIE}=; Path=/ui; Secure; HttpOnly; SameSite=Strict; Max-Age=0"),
        )],
        Redirect::to("/ui/login"),
    )
        .into_response()
}
