//! What the dashboard's forms share: the role check with a 403 page, and an API error
//! turned into the field it names and the words to show next to it. Forms call the API
//! handlers themselves, so a rule lives in one place.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::html;

use super::session::Session;
use crate::auth::{Permission, Require};
use crate::error::ApiError;

/// A 403 page: the session's role may not do this.
pub fn forbidden_page(why: &str) -> Response {
    (
        StatusCode::FORBIDDEN,
        super::layout::page(
            "Forbidden",
            None,
            html! { h1 { "Forbidden" } p { (why) } p { a href="/ui" { "Back to the overview" } } },
        ),
    )
        .into_response()
}

/// The session's caller if its role passes `P`, else the 403 page.
#[allow(clippy::result_large_err)]
pub fn require<P: Permission>(session: &Session) -> Result<Require<P>, Response> {
    Require::<P>::check(session.caller.clone()).map_err(|e| forbidden_page(&e.to_string()))
}

/// The caller of a state-changing form: its CSRF token checked first, then the role `P`
/// needs (a 403 page otherwise).
#[allow(clippy::result_large_err)]
pub fn form_caller<P: Permission>(session: &Session, csrf: &str) -> Result<Require<P>, Response> {
    super::csrf::check(session, csrf)?;
    require::<P>(session)
}

/// The state and name filters of a list page (`/ui/jobs`, `/ui/pipelines`), with the
/// state's error next to it.
pub fn filters(action: &str, state: &str, name: &str, error: &Option<String>) -> maud::Markup {
    maud::html! {
        form method="get" action=(action) class="filters" {
            label for="state" { "State" }
            input type="text" id="state" name="state" value=(state);
            @if let Some(e) = error { span class="field-error" { (e) } }
            label for="name" { "Name" }
            input type="text" id="name" name="name" value=(name);
            button type="submit" { "Filter" }
        }
    }
}

/// A field's error next to it (`id="error-FIELD"`, so a test or a screen reader finds it),
/// or nothing when the form's one error is about another field.
pub fn field_error(error: &Option<(String, String)>, field: &str) -> maud::Markup {
    maud::html! {
        @if let Some((f, e)) = error { @if f == field { span class="field-error" id={ "error-" (field) } { (e) } } }
    }
}

/// The field an API error names (`spec.requires.kind` → `spec`), and its text.
pub fn field_of(e: &ApiError) -> (String, String) {
    let field = match e {
        ApiError::BadRequest { field, .. }
        | ApiError::Unprocessable { field, .. }
        | ApiError::Conflict { field, .. } => field.clone().unwrap_or_default(),
        _ => String::new(),
    };
    let top = field
        .split(['.', '['])
        .next()
        .unwrap_or_default()
        .to_string();
    (top, e.to_string())
}

/// The response for an API error a form cannot show next to a field.
pub fn error_response(e: ApiError) -> Response {
    match e {
        ApiError::NotFound(what) => super::not_found_page(&what),
        ApiError::Forbidden(why) | ApiError::Unauthorized(why) => forbidden_page(&why),
        e => (
            StatusCode::UNPROCESSABLE_ENTITY,
            super::layout::page(
                "Refused",
                None,
                html! { h1 { "Refused" } p class="field-error" { (e.to_string()) } p { a href="/ui" { "Back to the overview" } } },
            ),
        )
            .into_response(),
    }
}

/// `12.3` → a bar `width: 12%` (clamped, rounded) with the figure as its label.
pub fn bar(label: &str, pct: Option<f64>) -> maud::Markup {
    match pct {
        Some(p) => {
            let w = p.clamp(0.0, 100.0).round();
            let level = if w >= 90.0 {
                "hi"
            } else if w >= 70.0 {
                "mid"
            } else {
                "lo"
            };
            html! {
                span class="bar" title={ (label) " " (format!("{p:.0}")) "%" } {
                    span class={ "fill " (level) } style={ "width:" (w) "%" } {}
                    span class="bar-text" { (label) " " (format!("{p:.0}")) "%" }
                }
            }
        }
        None => html! { span class="bar empty" { span class="bar-text" { (label) " –" } } },
    }
}

/// A duration in words an operator reads at a glance: `45s`, `12m`, `3h 5m`, `2d 4h`.
pub fn ago(d: chrono::TimeDelta) -> String {
    let s = d.num_seconds().max(0);
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h", s / 86400, (s % 86400) / 3600),
    }
}

/// A timestamp as the dashboard shows it (UTC, seconds).
pub fn when(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// An enum's wire word (`"flashing"`), for the types that have no `Display`.
pub fn word<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

/// A redirect to a resource's page, or to the list when the name is not a plain one (it
/// came from a form field, and a header must not carry whatever was typed).
pub fn to_resource(name: &str) -> Response {
    let plain = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if plain {
        axum::response::Redirect::to(&format!("/ui/resources/{name}")).into_response()
    } else {
        axum::response::Redirect::to("/ui/resources").into_response()
    }
}
