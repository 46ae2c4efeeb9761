//! `/api/v1/buildomat`: the buildomat factory's instances (docs/buildomat.md), for people
//! and `testfarm buildomat instances`.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use testfarm_api::problem::Problem;
use testfarm_core::Action;
use testfarm_store::buildomat::BuildomatInstanceRow;
use utoipa::{IntoParams, ToSchema};

use crate::auth::Caller;
use crate::error::ApiResult;
use crate::extract::ApiQuery;
use crate::state::AppState;

/// One buildomat worker served by one board.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BuildomatInstance {
    /// Our id; the worker's `private` on buildomat-server.
    pub id: String,
    /// `created`, `running`, `destroying` or `destroyed`.
    pub state: String,
    /// The board serving it.
    pub board: String,
    /// The testfarm job holding the board.
    pub job_id: Option<String>,
    /// That job's lease, once placed.
    pub lease_id: Option<String>,
    /// The buildomat job (the lease taken from buildomat-server).
    pub buildomat_job: String,
    /// The buildomat worker.
    pub worker: String,
    /// The buildomat target id.
    pub target: String,
    /// Held by a buildomat operator: kept, board and all, until released.
    pub hold: bool,
    pub destroy_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_progress: DateTime<Utc>,
    pub destroyed_at: Option<DateTime<Utc>>,
}

impl From<BuildomatInstanceRow> for BuildomatInstance {
    fn from(r: BuildomatInstanceRow) -> Self {
        BuildomatInstance {
            id: r.id,
            state: r.state,
            board: r.board,
            job_id: r.job_id,
            lease_id: r.lease_id,
            buildomat_job: r.bmat_job,
            worker: r.bmat_worker,
            target: r.target,
            hold: r.hold,
            destroy_reason: r.destroy_reason,
            created_at: r.created_at,
            last_progress: r.last_progress,
            destroyed_at: r.destroyed_at,
        }
    }
}

/// `GET /api/v1/buildomat/instances` filters.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InstancesQuery {
    /// Include destroyed instances (history), newest first.
    pub all: Option<bool>,
}

/// List the buildomat factory's instances, newest first: live ones, or all with `all=true`.
#[utoipa::path(get, path = "/api/v1/buildomat/instances", tag = "buildomat", params(InstancesQuery),
    responses((status = 200, body = Vec<BuildomatInstance>), (status = 400, body = Problem),
              (status = 401, body = Problem)))]
pub async fn list_instances(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<InstancesQuery>,
) -> ApiResult<Json<Vec<BuildomatInstance>>> {
    caller.require(Action::Read)?;
    let rows = state
        .store
        .buildomat_instances(!q.all.unwrap_or(false))
        .await?;
    Ok(Json(rows.into_iter().map(Into::into).collect()))
}
