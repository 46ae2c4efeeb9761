//! The web dashboard: server-rendered HTML (maud) under `/ui`, with its CSS and JS
//! embedded in the binary. These routes are deliberately not in the OpenAPI document:
//! they are pages for people, not API.

pub mod alerts;
pub mod buildomat;
pub mod csrf;
pub mod forms;
pub mod jobs;
pub mod layout;
pub mod live;
pub mod overview;
pub mod pipeline_submit;
pub mod pipelines;
pub mod register;
pub mod resources;
pub mod session;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use crate::state::AppState;

/// The dashboard's routes, merged into the application router.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui") }))
        .route("/ui", get(overview::page))
        .route("/ui/login", get(session::login_page).post(session::login))
        .route("/ui/logout", post(session::logout))
        .route("/ui/resources", get(resources::list))
        .route("/ui/resources/{name}", get(resources::detail))
        .route(
            "/ui/resources/{name}/maintenance",
            post(resources::maintenance),
        )
        .route("/ui/resources/{name}/power", post(resources::power))
        .route("/ui/register", get(register::page).post(register::submit))
        .route("/ui/leases/{id}/release", post(resources::release_lease))
        .route("/ui/jobs", get(jobs::list))
        .route("/ui/jobs/{id}", get(jobs::detail))
        .route("/ui/jobs/{id}/log", get(jobs::log))
        .route("/ui/submit", get(jobs::submit_page).post(jobs::submit))
        .route("/ui/builds/{id}/artifacts/{name}", get(jobs::artifact))
        .route("/ui/pipelines", get(pipelines::list))
        .route(
            "/ui/pipelines/submit",
            get(pipeline_submit::page).post(pipeline_submit::submit),
        )
        .route("/ui/pipelines/{id}", get(pipelines::detail))
        .route("/ui/alerts", get(alerts::page))
        .route("/ui/buildomat", get(buildomat::page))
        .route("/ui/alerts/{id}/{action}", post(alerts::act))
        .route("/ui/assets/app.css", get(css))
        .route("/ui/assets/live.js", get(live::js))
        .route("/ui/events", get(live::events))
        .route("/ui/{*rest}", get(not_found))
}

async fn css() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("assets/app.css"),
    )
        .into_response()
}

/// Anything unknown under `/ui` gets a page that says so, not a blank body.
async fn not_found(_session: session::Session) -> Response {
    not_found_page("no such page")
}

/// A 404 page with the shell, for unknown ids and paths.
pub fn not_found_page(what: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        layout::page(
            "Not found",
            None,
            maud::html! { h1 { "Not found" } p { (what) } p { a href="/ui" { "Back to the overview" } } },
        ),
    )
        .into_response()
}

/// A 500 page for store failures (never for bad input).
pub fn error_page(why: &str) -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        layout::page(
            "Error",
            None,
            maud::html! { h1 { "Server error" } p { (why) } },
        ),
    )
        .into_response()
}
