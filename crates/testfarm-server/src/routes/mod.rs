//! The router: every route is registered through `utoipa_axum`'s `routes!`, so the
//! OpenAPI document is generated from the same registration the server serves and cannot
//! miss a route.

pub mod agents;
pub mod alerts;
pub mod artifacts;
pub mod boards;
pub mod buildomat;
pub mod builds;
pub mod console;
mod contract;
pub use contract::check_body;
pub mod events;
pub mod groups;
pub mod jobs;
pub mod leases;
pub mod meta;
pub mod outputs;
pub mod pipelines;
pub mod policies;
mod request_metrics;
pub mod resources;
pub mod tokens;

use std::sync::OnceLock;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::middleware::{self, Next};
use axum::response::Response;
use testfarm_api::page::{DEFAULT_LIMIT, MAX_LIMIT};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(title = "testfarm", description = "Test lab scheduler: resources, jobs, leases, events."),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "resources", description = "Build servers, QEMU hosts and boards"),
        (name = "boards", description = "Boards: power, health checks, restore, history, console"),
        (name = "groups", description = "Named label selectors"),
        (name = "tokens", description = "API tokens and roles"),
        (name = "events", description = "The append-only event log"),
        (name = "jobs", description = "Job submission, state, logs and explanations"),
        (name = "leases", description = "Manual leases that always end"),
        (name = "policies", description = "Scheduling policies"),
        (name = "agents", description = "The agent protocol"),
        (name = "pipelines", description = "Pipelines: stages of jobs run in order, with their history"),
        (name = "artifacts", description = "Builds and their artifacts: upload, find, download, pin, retention"),
        (name = "alerts", description = "Alerts: raised by the rules, acknowledged and resolved by people, delivered by webhook and email"),
        (name = "buildomat", description = "testfarm as a buildomat factory: its instances"),
        (name = "meta", description = "Health, metrics and this document"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(meta::healthz))
        .routes(routes!(meta::readyz))
        .routes(routes!(meta::metrics))
        .routes(routes!(meta::openapi))
        .routes(routes!(tokens::whoami))
        .routes(routes!(tokens::create_token, tokens::list_tokens))
        .routes(routes!(tokens::revoke_token))
        .routes(routes!(
            resources::create_resource,
            resources::list_resources
        ))
        .routes(routes!(resources::get_resource, resources::delete_resource))
        .routes(routes!(resources::update_labels))
        .routes(routes!(resources::set_maintenance))
        .routes(routes!(resources::retire_resource))
        .routes(routes!(resources::resource_metrics))
        .routes(routes!(groups::create_group, groups::list_groups))
        .routes(routes!(groups::get_group, groups::delete_group))
        .routes(routes!(events::list_events))
        .routes(routes!(events::stream_events))
        .routes(routes!(jobs::submit_job, jobs::list_jobs))
        .routes(routes!(jobs::get_job))
        .routes(routes!(jobs::cancel_job))
        .routes(routes!(jobs::why_job))
        .routes(routes!(jobs::get_log))
        .routes(routes!(jobs::get_results))
        .routes(routes!(jobs::get_results_xml))
        .routes(routes!(leases::acquire_lease, leases::list_leases))
        .routes(routes!(leases::get_lease, leases::release_lease))
        .routes(routes!(leases::renew_lease))
        .routes(routes!(policies::create_policy, policies::list_policies))
        .routes(routes!(policies::delete_policy))
        .routes(routes!(agents::register))
        .routes(routes!(agents::heartbeat))
        .routes(routes!(agents::work))
        .routes(routes!(agents::start_job))
        .routes(routes!(agents::put_log))
        .routes(routes!(agents::report_step))
        .routes(routes!(agents::put_output, outputs::get_output))
        .routes(routes!(agents::finish_job))
        .routes(routes!(buildomat::list_instances))
        .routes(routes!(boards::list_boards))
        .routes(routes!(boards::get_board))
        .routes(routes!(boards::board_history))
        .routes(routes!(boards::power))
        .routes(routes!(boards::health_check))
        .routes(routes!(boards::restore))
        .routes(routes!(boards::action_result))
        .routes(routes!(boards::report))
        .routes(routes!(console::board_console))
        .routes(routes!(console::agent_console))
        .routes(routes!(
            pipelines::submit_pipeline,
            pipelines::list_pipelines
        ))
        .routes(routes!(pipelines::pipeline_history))
        .routes(routes!(pipelines::get_pipeline))
        .routes(routes!(pipelines::cancel_pipeline))
        .routes(routes!(artifacts::create_build))
        .routes(routes!(builds::build_history))
        .routes(routes!(artifacts::get_build))
        .routes(routes!(
            artifacts::upload_artifact,
            artifacts::download_artifact
        ))
        .routes(routes!(artifacts::pin_build))
        .routes(routes!(artifacts::unpin_build))
        .routes(routes!(artifacts::add_tag, artifacts::remove_tag))
        .routes(routes!(artifacts::list_artifacts))
        .routes(routes!(artifacts::latest_artifact))
        .routes(routes!(artifacts::gc))
        .routes(routes!(artifacts::download_blob))
        .routes(routes!(alerts::list_alerts))
        .routes(routes!(alerts::get_alert))
        .routes(routes!(alerts::acknowledge_alert))
        .routes(routes!(alerts::resolve_alert))
}

/// The OpenAPI document of every route, completed by [`contract::complete`], built once.
pub fn openapi_document() -> &'static serde_json::Value {
    static DOC: OnceLock<serde_json::Value> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc = serde_json::to_value(api_router().split_for_parts().1)
            .unwrap_or(serde_json::Value::Null);
        contract::complete(&mut doc);
        doc
    })
}

/// The full application router.
pub fn router(state: AppState) -> Router {
    let (router, _) = api_router().split_for_parts();
    router
        .merge(crate::web::router())
        .fallback(|| async { ApiError::NotFound("no such route; see /api/v1/openapi.json".into()) })
        .method_not_allowed_fallback(|| async {
            ApiError::MethodNotAllowed(
                "this route does not take that method; see /api/v1/openapi.json".into(),
            )
        })
        .layer(middleware::from_fn(record_request))
        .layer(axum::extract::DefaultBodyLimit::max(crate::json::MAX_BODY))
        .with_state(state)
}

/// Counts and times every request by route template, method and status.
async fn record_request(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let route = req.extensions().get::<MatchedPath>().cloned();
    let resp = next.run(req).await;
    request_metrics::record(
        &method,
        route.as_ref().map_or("unmatched", MatchedPath::as_str),
        resp.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    resp
}

/// A page size from `?limit=`, bounded.
pub fn page_limit(limit: Option<u32>) -> Result<usize, ApiError> {
    match limit {
        None => Ok(DEFAULT_LIMIT as usize),
        Some(0) => Err(ApiError::bad_request("limit", "limit must be at least 1")),
        Some(n) if n > MAX_LIMIT => Err(ApiError::bad_request(
            "limit",
            format!("limit must be at most {MAX_LIMIT}"),
        )),
        Some(n) => Ok(n as usize),
    }
}
