//! `GET /api/v1/jobs/{id}/outputs/{name}`: a file a job stored (an `upload` step's, or one
//! the agent keeps itself: a VM's `console.log`, its `environment.json`). The agent writes
//! them through `PUT` on the same path (routes::agents).

use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use testfarm_api::problem::Problem;
use testfarm_core::Action;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiPath;
use crate::state::AppState;

/// Read one output file of a job.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/outputs/{name}", tag = "jobs",
    params(("id" = String, Path, description = "Job id"), ("name" = String, Path, description = "Output file name")),
    responses((status = 200, description = "the file", content_type = "application/octet-stream", body = Vec<u8>),
              (status = 404, body = Problem)))]
pub async fn get_output(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((id, name)): ApiPath<(String, String)>,
) -> ApiResult<Response> {
    caller.require(Action::Read)?;
    if !testfarm_core::patterns::is_output_name(&name) {
        return Err(ApiError::NotFound(format!(
            "job {id} has no output {name:?}"
        )));
    }
    // 404 for an unknown job before looking at files.
    state.store.get_job(&id).await?;
    let path = crate::logs::job_dir(&state, &id)
        .join("outputs")
        .join(&name);
    let bytes = match tokio::fs::read(&path).await {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ApiError::NotFound(format!(
                "job {id} has no output {name:?}"
            )));
        }
        Err(e) => return Err(ApiError::Internal(format!("reading output {name}: {e}"))),
    };
    let kind = if name.ends_with(".log") || name.ends_with(".txt") {
        "text/plain; charset=utf-8"
    } else if name.ends_with(".json") {
        "application/json"
    } else {
        "application/octet-stream"
    };
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, kind)],
        Body::from(bytes),
    )
        .into_response())
}
