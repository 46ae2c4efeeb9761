//! `/api/v1/builds/history`: what build jobs did, per build server (seed 004 R2.5: build
//! history and average build times of a server). The runs are stored when the agent
//! reports a build step (`routes::agents::report_step`); the summary is
//! `testfarm_core::build::history` over them.

use axum::Json;
use axum::extract::State;
use testfarm_api::build::{BuildHistory, BuildHistoryQuery};
use testfarm_api::problem::Problem;
use testfarm_core::Action;
use testfarm_store::build_runs::BuildRunFilter;

use crate::auth::Caller;
use crate::error::ApiResult;
use crate::extract::ApiQuery;
use crate::state::AppState;

/// Build history: per build server the number of finished builds, their success rate
/// and average duration (cancelled builds do not count), and the most recent runs with
/// their commit, duration, peak CPU and memory, and artifacts.
#[utoipa::path(get, path = "/api/v1/builds/history", tag = "artifacts", params(BuildHistoryQuery),
    responses((status = 200, body = BuildHistory), (status = 400, body = Problem)))]
pub async fn build_history(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<BuildHistoryQuery>,
) -> ApiResult<Json<BuildHistory>> {
    caller.require(Action::Read)?;
    let limit = crate::routes::page_limit(q.limit)?;
    let facts = state.store.build_facts(q.server.as_deref()).await?;
    let recent = state
        .store
        .list_build_runs(&BuildRunFilter {
            server: q.server.clone(),
            job: None,
            limit: u32::try_from(limit).unwrap_or(u32::MAX),
        })
        .await?;
    Ok(Json(BuildHistory {
        servers: testfarm_core::build::history(&facts),
        recent,
    }))
}
