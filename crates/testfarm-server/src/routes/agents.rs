//! The agent protocol (see `testfarm_api::agent`): registration, heartbeats, long-poll
//! work, and the fenced writes an agent makes for a job (start, log chunks, steps,
//! outputs, finish). An agent token acts only for resources registered under its name.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use testfarm_api::agent::{
    AgentResource, Assignment, EPOCH_HEADER, Fenced, FinishRequest, Heartbeat, HeartbeatResponse,
    LogAck, Outcome, RegisterRequest, RegisterResponse, RunningWork, StepReport, WorkResponse,
};
use testfarm_api::job::{JobState, StepRecord};
use testfarm_api::problem::Problem;
use testfarm_api::resource::{Resource, ResourceKind};
use testfarm_core::job::{JobEvent, LabError, on_lab_error};
use testfarm_core::lease::{Lease, LeaseState};
use testfarm_core::resource::{Health, HealthStatus, ResourceState, validate_name};
use testfarm_store::jobs::JobRow;
use testfarm_store::{NewEvent, Tx};
use utoipa::IntoParams;

use crate::auth::{Caller, Require, perm};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiBytes, ApiPath, ApiQuery};
use crate::json::ApiJson;
use crate::lifecycle::{self, retry_on_error};
use crate::state::AppState;

/// A 409 for a fenced writer.
fn stale(detail: impl ToString) -> ApiError {
    ApiError::Conflict {
        detail: detail.to_string(),
        field: Some("epoch".into()),
    }
}

fn owns(caller: &Caller, r: &Resource) -> bool {
    r.agent.as_deref() == Some(caller.name.as_str())
}

fn not_yours(caller: &Caller, r: &Resource) -> ApiError {
    ApiError::Forbidden(format!(
        "resource {} belongs to {}, not to agent {}",
        r.name,
        r.agent
            .as_deref()
            .map_or_else(|| "no agent".to_string(), |a| format!("agent {a}")),
        caller.name
    ))
}

/// For an agent caller: refuses unless `job_id` is a job placed on one of its own
/// resources and still holding its lease (an agent creates builds only for the work it
/// runs). Other callers pass.
pub(crate) async fn agent_runs_job(tx: &mut Tx, caller: &Caller, job_id: &str) -> ApiResult<()> {
    if caller.role != testfarm_core::Role::Agent {
        return Ok(());
    }
    let job = tx.get_job(job_id).await.map_err(|_| {
        ApiError::Forbidden(format!(
            "agent {} may only record builds of jobs it runs; job {job_id} does not exist",
            caller.name
        ))
    })?;
    let Some(resource_id) = job.resource_id.clone() else {
        return Err(ApiError::Forbidden(format!(
            "job {job_id} is not placed on a resource of agent {}",
            caller.name
        )));
    };
    let r = tx.get_resource_by_id(&resource_id).await?;
    if !owns(caller, &r) {
        return Err(not_yours(caller, &r));
    }
    if !job.job.state.holds_lease() {
        return Err(ApiError::Forbidden(format!(
            "job {job_id} already ended ({}); its agent may not add builds to it",
            job.job.state
        )));
    }
    Ok(())
}

/// Register (or re-register) the agent's resources. Idempotent by name.
#[utoipa::path(post, path = "/api/v1/agents/register", tag = "agents", request_body = RegisterRequest,
    responses((status = 200, body = RegisterResponse), (status = 403, body = Problem), (status = 409, body = Problem, description = "a resource of that name exists as another kind or belongs to another agent"), (status = 422, body = Problem)))]
pub async fn register(
    State(state): State<AppState>,
    caller: Require<perm::ActAsAgent>,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> ApiResult<Json<RegisterResponse>> {
    let now = Utc::now();
    for (i, r) in req.resources.iter().enumerate() {
        validate_name(&r.name)
            .map_err(|e| ApiError::unprocessable(format!("resources[{i}].name"), e))?;
        r.labels.validate().map_err(|e| {
            ApiError::unprocessable(format!("resources[{i}].labels.{}", e.key()), e)
        })?;
    }
    let mut tx = state.store.begin().await?;
    tx.upsert_agent(&caller.name, &req.hostname, &req.version, now)
        .await?;
    let mut out = Vec::new();
    for ar in &req.resources {
        out.push(upsert_resource(&mut tx, &caller, ar, now).await?);
    }
    let drop = stale_work(&mut tx, &req.running).await?;
    tx.record(
        NewEvent::new("agent.registered", "agent", &caller.name, &caller.name).with_data(json!({
            "hostname": req.hostname, "version": req.version,
            "resources": out.iter().map(|r| r.name.clone()).collect::<Vec<_>>(),
            "running": req.running, "dropped": drop,
        })),
    );
    tx.commit().await?;
    state.wake.notify_one();
    Ok(Json(RegisterResponse {
        agent: caller.caller.name,
        resources: out,
        drop,
        heartbeat_interval_ms: ms(state.config.health.heartbeat_interval.0),
        offline_after_ms: ms(state.config.health.offline_after.0),
    }))
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

async fn upsert_resource(
    tx: &mut Tx,
    caller: &Caller,
    ar: &AgentResource,
    now: DateTime<Utc>,
) -> ApiResult<Resource> {
    match tx.get_resource(&ar.name).await {
        Ok(mut r) => {
            if r.agent.is_some() && !owns(caller, &r) {
                return Err(not_yours(caller, &r));
            }
            if r.kind != ar.kind {
                return Err(ApiError::conflict(format!(
                    "resource {} exists as a {}, not a {}",
                    r.name, r.kind, ar.kind
                )));
            }
            // Labels set by operators stay; the agent's own labels are refreshed.
            for (k, v) in &ar.labels.0 {
                r.labels.insert(k.clone(), v.clone());
            }
            r.capabilities = ar.capabilities.clone();
            if ar.board.is_some() {
                r.board = ar.board.clone();
            }
            r.agent = Some(caller.name.clone());
            r.last_seen = Some(now);
            let came_back = r.state == ResourceState::Offline && !unreachable(ar);
            if came_back {
                let active = tx.active_lease_count(r.id).await?;
                r.state = if active > 0 {
                    ResourceState::Leased
                } else {
                    ResourceState::Available
                };
                r.health = Health::default();
            }
            r.updated_at = now;
            if r.kind == ResourceKind::Board {
                crate::boards::registered(tx, &mut r, ar, now).await?;
            }
            tx.update_resource(&r).await?;
            tx.record(
                NewEvent::new(
                    if came_back {
                        "resource.online"
                    } else {
                        "resource.registered"
                    },
                    "resource",
                    &r.name,
                    &caller.name,
                )
                .with_data(json!({ "capabilities": r.capabilities, "state": r.state })),
            );
            Ok(r)
        }
        Err(testfarm_store::StoreError::NotFound { .. }) => {
            let mut r = Resource::new(crate::ids::next(), ar.name.clone(), ar.kind, now);
            r.labels = ar.labels.clone();
            r.capabilities = ar.capabilities.clone();
            if ar.kind == ResourceKind::Board {
                r.board = ar.board.clone().or(r.board);
            }
            r.agent = Some(caller.name.clone());
            r.last_seen = Some(now);
            tx.insert_resource(&r).await?;
            if r.kind == ResourceKind::Board {
                // After the insert: the board's status row refers to the resource row.
                crate::boards::registered(tx, &mut r, ar, now).await?;
                tx.update_resource(&r).await?;
            }
            tx.record(
                NewEvent::new("resource.created", "resource", &r.name, &caller.name)
                    .with_data(json!({ "id": r.id.to_string(), "kind": r.kind, "agent": caller.name, "capabilities": r.capabilities })),
            );
            Ok(r)
        }
        Err(e) => Err(e.into()),
    }
}

/// A board the agent reported it could not reach: it stays `offline` with the reason.
fn unreachable(ar: &AgentResource) -> bool {
    ar.kind == ResourceKind::Board && ar.offline_reason.is_some()
}

/// Reported work the server does not recognise as live: the agent must drop it.
async fn stale_work(tx: &mut Tx, running: &[RunningWork]) -> ApiResult<Vec<String>> {
    let mut drop = Vec::new();
    for w in running {
        let live = match tx.get_job(&w.job_id).await {
            Ok(job)
                if job.job.state.holds_lease()
                    && job.job.lease_id.as_deref() == Some(w.lease_id.as_str()) =>
            {
                match tx.get_lease(&w.lease_id).await {
                    Ok(l) => l.state == LeaseState::Active && l.epoch == w.epoch,
                    Err(_) => false,
                }
            }
            _ => false,
        };
        if !live {
            drop.push(w.job_id.clone());
        }
    }
    Ok(drop)
}

/// Heartbeat: liveness, load metrics and the work the agent is running.
#[utoipa::path(post, path = "/api/v1/agents/heartbeat", tag = "agents", request_body = Heartbeat,
    responses((status = 200, body = HeartbeatResponse), (status = 403, body = Problem)))]
pub async fn heartbeat(
    State(state): State<AppState>,
    caller: Require<perm::ActAsAgent>,
    ApiJson(hb): ApiJson<Heartbeat>,
) -> ApiResult<Json<HeartbeatResponse>> {
    let now = Utc::now();
    let cfg = &state.config.health;
    let mut tx = state.store.begin().await?;
    let mine = tx.resources_of_agent(&caller.name).await?;
    let mut woke = false;
    for mut r in mine {
        let metrics = hb.metrics.iter().find(|m| m.resource == r.name);
        let mut reasons = Vec::new();
        if let Some(m) = metrics {
            tx.record_metrics(r.id, now, m).await?;
            let max = f64::from(cfg.max_utilization_pct);
            for (what, v) in [
                ("cpu", m.cpu_pct),
                ("memory", m.memory_pct),
                ("disk", m.disk_pct),
            ] {
                // A busy QEMU host takes no new VMs; a busy build server still takes
                // builds (only low disk stops those); a board's metrics are its host's.
                if v > max && r.kind == ResourceKind::QemuHost {
                    reasons.push(format!("{what} {v:.0}% above {max:.0}%"));
                }
            }
            if r.kind == ResourceKind::BuildServer && m.disk_free_gb < cfg.min_disk_gb as f64 {
                reasons.push(format!(
                    "disk {:.1} GB free, below {} GB",
                    m.disk_free_gb, cfg.min_disk_gb
                ));
            }
        }
        // A board its agent reported unreachable at registration stays offline until a
        // registration without the reason: a heartbeat speaks for the host, not the board.
        let came_back = r.state == ResourceState::Offline
            && !(r.kind == ResourceKind::Board
                && tx.board_status(r.id).await?.offline_reason.is_some());
        if r.state == ResourceState::Offline && !came_back {
            // Still unreachable: its offline health (with the reason) stays.
            r.last_seen = Some(now);
            tx.update_resource(&r).await?;
            continue;
        }
        let health = Health {
            status: if reasons.is_empty() {
                HealthStatus::Ok
            } else {
                HealthStatus::Degraded
            },
            reasons,
        };
        if came_back {
            let active = tx.active_lease_count(r.id).await?;
            r.state = if active > 0 {
                ResourceState::Leased
            } else {
                ResourceState::Available
            };
            tx.record(
                NewEvent::new("resource.online", "resource", &r.name, &caller.name)
                    .with_data(json!({ "state": r.state })),
            );
            woke = true;
        }
        if health != r.health {
            if health.status == HealthStatus::Degraded && r.health.status != HealthStatus::Degraded
            {
                // A degraded resource takes no new work; say so where operators look first,
                // not only in the event log and `job why`.
                tracing::warn!(
                    resource = %r.name,
                    reasons = %health.reasons.join("; "),
                    "resource degraded: it takes no new work until this clears"
                );
            }
            tx.record(
                NewEvent::new("resource.health", "resource", &r.name, "health").with_data(json!({
                    "from": r.health.status, "to": health.status, "reasons": health.reasons,
                })),
            );
            r.health = health;
            woke = true;
        }
        r.last_seen = Some(now);
        if came_back || woke {
            r.updated_at = now;
        }
        tx.update_resource(&r).await?;
    }
    let drop = stale_work(&mut tx, &hb.running).await?;
    let mut cancel = Vec::new();
    for w in &hb.running {
        if drop.contains(&w.job_id) {
            continue;
        }
        let mut job = tx.get_job(&w.job_id).await?;
        if job.cancel_requested.is_some() {
            cancel.push(w.job_id.clone());
        }
        job.last_report_at = Some(now);
        tx.update_job(&job).await?;
    }
    tx.commit().await?;
    if woke {
        state.wake.notify_one();
    }
    Ok(Json(HeartbeatResponse { drop, cancel }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WorkQuery {
    /// Seconds to wait for work (long-poll, at most 60).
    pub wait: Option<u64>,
}

/// Long-poll for work: answers at once when a job is assigned to one of the agent's
/// resources. The same assignment is returned until the agent starts it, so an agent
/// ignores assignments it is already running.
#[utoipa::path(get, path = "/api/v1/agents/work", tag = "agents", params(WorkQuery),
    responses((status = 200, body = WorkResponse), (status = 403, body = Problem)))]
pub async fn work(
    State(state): State<AppState>,
    caller: Require<perm::ActAsAgent>,
    ApiQuery(q): ApiQuery<WorkQuery>,
) -> ApiResult<Json<WorkResponse>> {
    let wait = Duration::from_secs(q.wait.unwrap_or(30).min(60));
    let deadline = tokio::time::Instant::now() + wait;
    let mut changes = state.work.subscribe();
    loop {
        changes.borrow_and_update();
        let assignments = assignments_for(&state, &caller).await?;
        let board_actions = board_actions_for(&state, &caller).await?;
        if !assignments.is_empty()
            || !board_actions.is_empty()
            || tokio::time::Instant::now() >= deadline
        {
            return Ok(Json(WorkResponse {
                assignments,
                board_actions,
            }));
        }
        if tokio::time::timeout_at(deadline, changes.changed())
            .await
            .is_err()
        {
            return Ok(Json(WorkResponse::default()));
        }
    }
}

/// The pending actions for the agent's boards, marked `sent` as they are handed over.
async fn board_actions_for(
    state: &AppState,
    caller: &Caller,
) -> ApiResult<Vec<testfarm_api::board::BoardAction>> {
    if !state.store.has_pending_board_actions(&caller.name).await? {
        return Ok(Vec::new());
    }
    let mut tx = state.store.begin().await?;
    let actions = tx.take_board_actions(&caller.name, Utc::now()).await?;
    tx.commit().await?;
    Ok(actions)
}

async fn assignments_for(state: &AppState, caller: &Caller) -> ApiResult<Vec<Assignment>> {
    let mut out = Vec::new();
    for (job, resource) in state.store.assigned_to_agent(&caller.name).await? {
        let Some(lease_id) = job.job.lease_id.clone() else {
            continue;
        };
        let lease = state.store.get_lease(&lease_id).await?;
        let timeout = crate::tasks::reaper::job_timeout(state, &job);
        out.push(Assignment {
            job_id: job.job.id.clone(),
            lease_id,
            epoch: lease.epoch,
            resource,
            spec: job.job.spec.clone(),
            vars: job.job.vars.clone(),
            timeout_ms: u64::try_from(timeout.num_milliseconds()).unwrap_or(0),
            renew_every_ms: (ms(state.config.leases.heartbeat_ttl.0) / 3).max(500),
        });
    }
    Ok(out)
}

/// Loads a job and its lease for a fenced agent write: the caller must own the job's
/// resource, and `epoch` must be the live lease's (judged with the server's silence
/// until `awake_since` credited to the holder).
pub(crate) async fn fenced(
    tx: &mut Tx,
    caller: &Caller,
    job_id: &str,
    epoch: u64,
    now: DateTime<Utc>,
    awake_since: DateTime<Utc>,
) -> ApiResult<(JobRow, Lease)> {
    let job = tx.get_job(job_id).await?;
    let resource_id = job.resource_id.clone().ok_or_else(|| {
        stale(format!(
            "job {job_id} is not placed (it is {})",
            job.job.state
        ))
    })?;
    let r = tx.get_resource_by_id(&resource_id).await?;
    if !owns(caller, &r) {
        return Err(not_yours(caller, &r));
    }
    let lease_id = job.job.lease_id.clone().ok_or_else(|| {
        stale(format!(
            "job {job_id} holds no lease (it is {})",
            job.job.state
        ))
    })?;
    let mut lease = tx.get_lease(&lease_id).await?;
    lease.credit(awake_since);
    lease.check_write(epoch, now).map_err(stale)?;
    if !job.job.state.holds_lease() {
        return Err(stale(format!(
            "job {job_id} already ended ({})",
            job.job.state
        )));
    }
    Ok((job, lease))
}

fn epoch_header(headers: &HeaderMap) -> ApiResult<u64> {
    headers
        .get(EPOCH_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| {
            ApiError::bad_request(
                EPOCH_HEADER,
                format!("the {EPOCH_HEADER} header (the lease epoch) is required"),
            )
        })
}

/// The agent starts an assigned job.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/start", tag = "agents", params(("id" = String, Path, description = "Job id")),
    request_body = Fenced, responses((status = 403, body = Problem), (status = 200), (status = 409, body = Problem)))]
pub async fn start_job(
    State(state): State<AppState>,
    caller: Require<perm::ActAsAgent>,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<Fenced>,
) -> ApiResult<Json<serde_json::Value>> {
    let now = Utc::now();
    let mut tx = state.store.begin().await?;
    let (mut job, _) = fenced(&mut tx, &caller, &id, req.epoch, now, state.awake.since()).await?;
    if job.job.state == JobState::Running {
        return Ok(Json(json!({ "state": "running" })));
    }
    let after =
        lifecycle::apply_job_event(&mut tx, &mut job, JobEvent::Start, &caller.name, now, false)
            .await?;
    tx.commit().await?;
    state.after_commit(after);
    Ok(Json(json!({ "state": job.job.state })))
}

/// One numbered chunk of a job's log. A retried chunk is stored once.
#[utoipa::path(put, path = "/api/v1/jobs/{id}/logs/{seq}", tag = "agents",
    params(("id" = String, Path, description = "Job id"), ("seq" = u64, Path, description = "Chunk number, from 0"),
           ("x-testfarm-epoch" = u64, Header, description = "The lease's fencing epoch")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 403, body = Problem), (status = 200, body = LogAck), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn put_log(
    State(state): State<AppState>,
    caller: Require<perm::ActAsAgent>,
    ApiPath((id, seq)): ApiPath<(String, u64)>,
    headers: HeaderMap,
    ApiBytes(body): ApiBytes,
) -> ApiResult<Json<LogAck>> {
    let epoch = epoch_header(&headers)?;
    if body.len() > crate::logs::MAX_CHUNK {
        return Err(ApiError::unprocessable(
            "body",
            format!("log chunks are at most {} bytes", crate::logs::MAX_CHUNK),
        ));
    }
    let next_seq = crate::logs::append(&state, &caller, &id, epoch, seq, &body).await?;
    Ok(Json(LogAck { next_seq }))
}

/// A step's result.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/steps", tag = "agents", params(("id" = String, Path, description = "Job id")),
    request_body = StepReport, responses((status = 403, body = Problem), (status = 200), (status = 409, body = Problem)))]
pub async fn report_step(
    State(state): State<AppState>,
    caller: Require<perm::ActAsAgent>,
    ApiPath(id): ApiPath<String>,
    ApiJson(s): ApiJson<StepReport>,
) -> ApiResult<Json<serde_json::Value>> {
    let now = Utc::now();
    let mut tx = state.store.begin().await?;
    let (mut job, _) = fenced(&mut tx, &caller, &id, s.epoch, now, state.awake.since()).await?;
    let mut rec = StepRecord {
        index: s.index,
        kind: s.kind.clone(),
        always: s.always,
        outcome: s.outcome,
        exit_code: s.exit_code,
        duration_ms: s.duration_ms,
        reason: s.reason.clone(),
        build: None,
    };
    tx.upsert_step(&id, &rec).await?;
    if let (Some(summary), "build") = (&s.build, s.kind.as_str()) {
        // Where it ran is the server's fact, not the agent's word.
        let mut summary = summary.clone();
        if let Some(r) = &job.job.resource {
            summary.server = r.clone();
        }
        tx.upsert_build_run(&id, job.job.attempt, s.index, s.outcome, &summary, now)
            .await?;
        // The event carries the summary too, so a live view shows it as the step ends.
        rec.build = Some(summary);
    }
    job.last_report_at = Some(now);
    tx.update_job(&job).await?;
    tx.record(
        NewEvent::new("job.step", "job", &id, &caller.name)
            .with_data(serde_json::to_value(&rec).unwrap_or_default()),
    );
    tx.commit().await?;
    Ok(Json(json!({ "stored": s.index })))
}

/// A file the job uploads into its outputs.
#[utoipa::path(put, path = "/api/v1/jobs/{id}/outputs/{name}", tag = "agents",
    params(("id" = String, Path, description = "Job id"), ("name" = String, Path, description = "Output file name"),
           ("x-testfarm-epoch" = u64, Header, description = "The lease's fencing epoch")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 403, body = Problem), (status = 200), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn put_output(
    State(state): State<AppState>,
    caller: Require<perm::ActAsAgent>,
    ApiPath((id, name)): ApiPath<(String, String)>,
    headers: HeaderMap,
    ApiBytes(body): ApiBytes,
) -> ApiResult<Json<serde_json::Value>> {
    let epoch = epoch_header(&headers)?;
    if !testfarm_core::patterns::is_output_name(&name) {
        return Err(ApiError::unprocessable(
            "name",
            "output names use letters, digits, . _ - and do not start with a dot",
        ));
    }
    let now = Utc::now();
    let mut tx = state.store.begin().await?;
    fenced(&mut tx, &caller, &id, epoch, now, state.awake.since()).await?;
    let dir = crate::logs::job_dir(&state, &id).join("outputs");
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    tokio::fs::write(dir.join(&name), &body)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let sha = format!("{:x}", Sha256::digest(&body));
    tx.insert_output(&id, &name, body.len() as u64, &sha, now)
        .await?;
    tx.record(
        NewEvent::new("job.output", "job", &id, &caller.name)
            .with_data(json!({ "name": name, "size": body.len(), "sha256": sha })),
    );
    tx.commit().await?;
    Ok(Json(json!({ "name": name, "sha256": sha })))
}

/// The agent's verdict on a job; ends it and releases its lease.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/finish", tag = "agents", params(("id" = String, Path, description = "Job id")),
    request_body = FinishRequest, responses((status = 403, body = Problem), (status = 200), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn finish_job(
    State(state): State<AppState>,
    caller: Require<perm::ActAsAgent>,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<FinishRequest>,
) -> ApiResult<Json<serde_json::Value>> {
    let now = Utc::now();
    let mut tx = state.store.begin().await?;
    let (mut job, _) = fenced(&mut tx, &caller, &id, req.epoch, now, state.awake.since()).await?;
    if job.log_chunks < req.log_chunks {
        return Err(ApiError::unprocessable(
            "log_chunks",
            format!(
                "the server has {} of the {} log chunks; send chunk {} and on first",
                job.log_chunks, req.log_chunks, job.log_chunks
            ),
        ));
    }
    let reason = req.reason.clone().unwrap_or_default();
    let event = match req.outcome {
        Outcome::Passed => JobEvent::Pass,
        Outcome::Failed => JobEvent::Fail {
            reason: if reason.is_empty() {
                "a step failed".into()
            } else {
                reason
            },
        },
        Outcome::Error => {
            let lab = LabError::Infrastructure {
                detail: if reason.is_empty() {
                    "the agent could not run the job".into()
                } else {
                    reason
                },
            };
            on_lab_error(job.job.state, job.job.attempt, retry_on_error(&job), lab)
        }
        Outcome::TimedOut => JobEvent::TimeOut,
        Outcome::Cancelled => JobEvent::Cancel {
            by: caller.name.clone(),
            reason: job.cancel_requested.clone().unwrap_or(reason),
        },
        Outcome::Skipped => {
            return Err(ApiError::unprocessable(
                "outcome",
                "a job cannot end `skipped`",
            ));
        }
    };
    let board = (req.outcome == Outcome::Error)
        .then(|| job.resource_id.clone())
        .flatten();
    let requeued = matches!(event, JobEvent::Requeue { .. });
    // A job that ends `error` or is cancelled mid-way gets the resource cleaned up.
    let mut after = lifecycle::apply_job_event(
        &mut tx,
        &mut job,
        event,
        &caller.name,
        now,
        state.cleanup_configured(),
    )
    .await?;
    // A lab error counts against its board (quarantine by failure rate).
    if let Some(resource_id) = board {
        after.wake_scheduler |= crate::boards::lab_error(&mut tx, &resource_id, now).await?;
        // After lab_error, which may have just raised the board's alert.
        if requeued {
            crate::alerts::retried_elsewhere(&mut tx, &resource_id, &job.job.id, &caller.name, now)
                .await?;
        }
    }
    tx.commit().await?;
    state.after_commit(after);
    Ok(Json(json!({ "state": job.job.state })))
}
