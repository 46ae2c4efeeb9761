//! `/api/v1/jobs`: submit, list, show, cancel, explain (`why`), and read logs.

use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::Serialize;
use testfarm_api::Page;
use testfarm_api::job::{CancelJob, Job, JobQuery, JobState, LogQuery, SubmitJob};
use testfarm_api::problem::Problem;
use testfarm_core::Action;
use testfarm_core::jobspec::JobSpec;
use testfarm_core::priority::Priority;
use testfarm_core::why::WhyReport;
use testfarm_store::jobs::{JobFilter, JobRow};
use ulid::Ulid;
use utoipa::ToSchema;

use crate::auth::{Caller, Require, perm};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiPath, ApiQuery};
use crate::json::ApiJson;
use crate::lifecycle;
use crate::state::AppState;
use crate::tasks::scheduler;

/// Submit a job from its YAML spec.
#[utoipa::path(post, path = "/api/v1/jobs", tag = "jobs", request_body = SubmitJob,
    responses((status = 403, body = Problem), (status = 201, body = Job), (status = 409, body = Problem, description = "pinned resource cannot serve it"),
              (status = 422, body = Problem, description = "invalid spec (field, line, column)")))]
pub async fn submit_job(
    State(state): State<AppState>,
    caller: Require<perm::Submit>,
    ApiJson(req): ApiJson<SubmitJob>,
) -> ApiResult<(StatusCode, Json<Job>)> {
    let job = submit(&state, &caller, req, None).await?;
    Ok((StatusCode::CREATED, Json(job)))
}

/// Queues a job from its spec text (the API route and the dashboard's form); `pin` names
/// a resource the job must run on, as `requires.resource` in the spec would.
pub async fn submit(
    state: &AppState,
    caller: &Require<perm::Submit>,
    req: SubmitJob,
    pin: Option<String>,
) -> ApiResult<Job> {
    let mut spec = JobSpec::parse(&req.spec).map_err(crate::submit::spec_error)?;
    if let Some(pin) = pin {
        spec.requires.get_or_insert_default().resource = Some(pin);
    }
    let priority = req
        .priority
        .as_deref()
        .map(str::parse::<Priority>)
        .transpose()
        .map_err(|e| ApiError::unprocessable("priority", e))?;
    let vars: Vec<(String, String)> = req.vars.into_iter().collect();
    spec.apply_overrides(&vars, priority)
        .map_err(|e| ApiError::unprocessable(format!("spec.{}", e.path), e))?;
    let prepared = crate::submit::prepare(state, spec, &caller.name, caller.role)
        .await
        .map_err(|e| e.located(&req.spec))?;
    let row = prepared.row.clone();
    let mut tx = state.store.begin().await?;
    prepared.insert(&mut tx).await?;
    tx.commit().await?;
    state.wake.notify_one();
    let mut job = row.job.clone();
    job.estimated_start = estimated_start(state, &row).await;
    Ok(job)
}

/// When a queued job is expected to start: the estimate `job why` explains (the jobs
/// ahead, the matching resources, how long such jobs take). `None` when unknown or when
/// the job runs on the server itself.
async fn estimated_start(state: &AppState, row: &JobRow) -> Option<chrono::DateTime<Utc>> {
    let me = scheduler::queued_job(row)?;
    if !me.requirements.needs_resource() {
        return None;
    }
    let world = scheduler::load_world(state).await.ok()?;
    let now = Utc::now();
    testfarm_core::why::why(&me, &world.queue, &world.snapshot, &world.policies, now)
        .estimated_start
        .map(|t| t.max(now))
}

fn parse_states(s: Option<&str>) -> ApiResult<Vec<JobState>> {
    let Some(s) = s else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part {
            "active" => out.extend([JobState::Queued, JobState::Assigned, JobState::Running]),
            "ended" => out.extend(JobState::ALL.into_iter().filter(|s| s.is_terminal())),
            other => out.push(
                other
                    .parse::<JobState>()
                    .map_err(|e| ApiError::bad_request("state", e))?,
            ),
        }
    }
    Ok(out)
}

/// List jobs, newest first.
#[utoipa::path(get, path = "/api/v1/jobs", tag = "jobs", params(JobQuery),
    responses((status = 200, body = Page<Job>), (status = 400, body = Problem)))]
pub async fn list_jobs(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<JobQuery>,
) -> ApiResult<Json<Page<Job>>> {
    caller.require(Action::Read)?;
    let limit = crate::routes::page_limit(q.limit)?;
    let states = parse_states(q.state.as_deref())?;
    if let Some(c) = &q.cursor {
        Ulid::from_string(c)
            .map_err(|_| ApiError::bad_request("cursor", "invalid cursor; use next_cursor"))?;
    }
    let rows = state
        .store
        .list_jobs(&JobFilter {
            states,
            name: q.name,
            submitter: q.submitter,
            before: q.cursor,
            limit: u32::try_from(limit + 1).unwrap_or(u32::MAX),
        })
        .await?;
    let mut items: Vec<Job> = rows.into_iter().map(|r| r.job).collect();
    let next_cursor = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|j| j.id.clone())
    } else {
        None
    };
    Ok(Json(Page { items, next_cursor }))
}

/// Show a job with its step results.
#[utoipa::path(get, path = "/api/v1/jobs/{id}", tag = "jobs", params(("id" = String, Path, description = "Job id")),
    responses((status = 200, body = Job), (status = 404, body = Problem)))]
pub async fn get_job(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Job>> {
    caller.require(Action::Read)?;
    Ok(Json(state.store.get_job(&id).await?.job))
}

/// Cancel a job. Queued and assigned jobs end at once; a running job's agent is told to
/// stop it (its `always` steps still run) and reports `cancelled`.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/cancel", tag = "jobs", params(("id" = String, Path, description = "Job id")),
    request_body = CancelJob, responses((status = 200, body = Job), (status = 403, body = Problem), (status = 409, body = Problem)))]
pub async fn cancel_job(
    State(state): State<AppState>,
    caller: Require<perm::Submit>,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<CancelJob>,
) -> ApiResult<Json<Job>> {
    let now = Utc::now();
    let mut tx = state.store.begin().await?;
    let mut job = tx.get_job(&id).await?;
    if job.job.submitter != caller.name {
        caller.require(Action::Operate).map_err(|_| {
            ApiError::Forbidden(format!(
                "job {id} was submitted by {}; only they or an operator may cancel it",
                job.job.submitter
            ))
        })?;
    }
    if job.job.state.is_terminal() {
        return Err(ApiError::conflict(format!(
            "job {id} already ended ({})",
            job.job.state
        )));
    }
    let after = lifecycle::cancel_job(&mut tx, &mut job, req.reason, &caller.name, now).await?;
    tx.commit().await?;
    state.after_commit(after);
    state.work_changed();
    Ok(Json(job.job))
}

/// Why a job waits: the resources that match, why each is not usable now, and an
/// estimated start.
#[derive(Debug, Serialize, ToSchema)]
pub struct WhyResponse {
    pub state: JobState,
    /// The explanation in words.
    pub text: String,
    /// The same, structured (for queued jobs).
    #[schema(value_type = Object)]
    pub report: Option<WhyReport>,
}

/// Explain a job's wait.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/why", tag = "jobs", params(("id" = String, Path, description = "Job id")),
    responses((status = 200, body = WhyResponse), (status = 404, body = Problem)))]
pub async fn why_job(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<WhyResponse>> {
    caller.require(Action::Read)?;
    let row = state.store.get_job(&id).await?;
    if row.job.state != JobState::Queued {
        let text = match row.job.state {
            JobState::Assigned | JobState::Running => format!(
                "job {} is not waiting: it is {} on {}",
                row.job.id,
                row.job.state,
                row.job.resource.clone().unwrap_or_default()
            ),
            s => format!(
                "job {} is not waiting: it ended {s}{}",
                row.job.id,
                row.job
                    .reason
                    .as_ref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            ),
        };
        return Ok(Json(WhyResponse {
            state: row.job.state,
            text,
            report: None,
        }));
    }
    let world = scheduler::load_world(&state).await?;
    let me = scheduler::queued_job(&row)
        .ok_or_else(|| ApiError::Internal(format!("job {id} has an unreadable spec")))?;
    let report = testfarm_core::why::why(
        &me,
        &world.queue,
        &world.snapshot,
        &world.policies,
        Utc::now(),
    );
    Ok(Json(WhyResponse {
        state: row.job.state,
        text: report.to_string(),
        report: Some(report),
    }))
}

/// A job's log from `offset`. With `wait`, blocks up to that many seconds for new bytes
/// while the job is still active. Headers tell the log size and the job state so a
/// follower knows when to stop.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/log", tag = "jobs", params(("id" = String, Path, description = "Job id"), LogQuery),
    responses((status = 200, description = "log bytes", content_type = "text/plain"), (status = 404, body = Problem)))]
pub async fn get_log(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<LogQuery>,
) -> ApiResult<Response> {
    caller.require(Action::Read)?;
    let offset = q.offset.unwrap_or(0);
    let wait = Duration::from_secs(q.wait.unwrap_or(0).min(30));
    let deadline = tokio::time::Instant::now() + wait;
    let mut written = state.log_written.subscribe();
    loop {
        written.borrow_and_update();
        let row = state.store.get_job(&id).await?;
        let size = row.job.log_bytes;
        if size > offset || row.job.state.is_terminal() || tokio::time::Instant::now() >= deadline {
            let bytes = crate::logs::read(&state, &id, offset, size).await?;
            return Ok((
                StatusCode::OK,
                [
                    (
                        header::CONTENT_TYPE,
                        "text/plain; charset=utf-8".to_string(),
                    ),
                    (
                        header::HeaderName::from_static("x-testfarm-log-size"),
                        size.to_string(),
                    ),
                    (
                        header::HeaderName::from_static("x-testfarm-job-state"),
                        row.job.state.to_string(),
                    ),
                ],
                Body::from(bytes),
            )
                .into_response());
        }
        let _ = tokio::time::timeout_at(deadline, written.changed()).await;
    }
}

/// A job's test results as JSON: one suite per TAP stream in its log (see docs/tap.md).
#[utoipa::path(get, path = "/api/v1/jobs/{id}/results", tag = "jobs", params(("id" = String, Path, description = "Job id")),
    responses((status = 200, description = "JSON test report", body = Object), (status = 404, body = Problem)))]
pub async fn get_results(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<serde_json::Value>> {
    caller.require(Action::Read)?;
    let job = state.store.get_job(&id).await?;
    Ok(Json(crate::results::report(&state, &job).await?.0))
}

/// A job's test results as JUnit XML (validates against Jenkins' junit-10.xsd).
#[utoipa::path(get, path = "/api/v1/jobs/{id}/results.xml", tag = "jobs", params(("id" = String, Path, description = "Job id")),
    responses((status = 200, description = "JUnit XML", content_type = "application/xml"), (status = 404, body = Problem)))]
pub async fn get_results_xml(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    caller.require(Action::Read)?;
    let job = state.store.get_job(&id).await?;
    let xml = crate::results::report(&state, &job).await?.1;
    Ok((
        [(header::CONTENT_TYPE, "application/xml; charset=utf-8")],
        xml,
    )
        .into_response())
}
