//! `/api/v1/builds` and `/api/v1/artifacts`: the artifact repository. A build record is
//! created first, then its artifacts are uploaded into it one by one (streamed to the
//! blob store, never held in memory), listed, found by "latest of a branch", downloaded
//! whole or by range, pinned and tagged (both keep a build from retention).

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use chrono::Utc;
use futures::{StreamExt, TryStreamExt};
use serde_json::json;
use testfarm_api::Page;
use testfarm_api::artifact::{
    Artifact, ArtifactKind, ArtifactQuery, Build, CreateBuild, GcQuery, GcReport, LatestQuery,
    UploadQuery,
};
use testfarm_api::problem::Problem;
use testfarm_artifacts::range::{self, Requested};
use testfarm_artifacts::{Digest, PutOptions};
use testfarm_core::Action;
use testfarm_core::artifact::{
    normalize_sha256, validate_artifact_name, validate_build_field, validate_tag,
};
use testfarm_store::NewEvent;
use testfarm_store::artifacts::{ArtifactFilter, NewArtifact};
use ulid::Ulid;

use crate::auth::{Caller, Require, perm};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiPath, ApiQuery};
use crate::json::ApiJson;
use crate::state::AppState;

fn build_id(text: &str) -> Result<Ulid, ApiError> {
    Ulid::from_string(text)
        .map_err(|_| ApiError::bad_request("id", format!("{text:?} is not a build id (a ULID)")))
}

fn kind(field: &str, text: Option<&str>) -> Result<ArtifactKind, ApiError> {
    let text = text.ok_or_else(|| {
        ApiError::bad_request(
            field,
            format!("{field} is required: kernel, dtb, initrd, rootfs, modules, firmware or other"),
        )
    })?;
    text.parse().map_err(|e| ApiError::bad_request(field, e))
}

fn digest(field: &str, text: &str) -> Result<Digest, ApiError> {
    let hex = normalize_sha256(text).map_err(|e| ApiError::bad_request(field, e))?;
    hex.parse().map_err(|e| ApiError::bad_request(field, e))
}

fn build_event(kind: &str, b: &Build, caller: &Caller) -> NewEvent {
    NewEvent::new(kind, "build", b.id.to_string(), &caller.name).with_data(json!({
        "commit": b.commit, "branch": b.branch, "arch": b.arch, "pinned": b.pinned, "tags": b.tags,
    }))
}

/// Record a build, before uploading its artifacts.
#[utoipa::path(post, path = "/api/v1/builds", tag = "artifacts", request_body = CreateBuild,
    responses((status = 201, body = Build), (status = 403, body = Problem, description = "an agent token naming a job it does not run"), (status = 422, body = Problem)))]
pub async fn create_build(
    State(state): State<AppState>,
    caller: Require<perm::SubmitOrAgent>,
    ApiJson(req): ApiJson<CreateBuild>,
) -> ApiResult<(StatusCode, Json<Build>)> {
    for (field, value) in [
        ("commit", &req.commit),
        ("branch", &req.branch),
        ("arch", &req.arch),
    ] {
        validate_build_field(field, value).map_err(|e| ApiError::unprocessable(field, e))?;
    }
    if let Some(job) = &req.source_job {
        validate_build_field("source_job", job)
            .map_err(|e| ApiError::unprocessable("source_job", e))?;
    }
    let mut tags = req.tags.clone();
    for (i, tag) in tags.iter().enumerate() {
        validate_tag(tag).map_err(|e| ApiError::unprocessable(format!("tags[{i}]"), e))?;
    }
    tags.sort();
    tags.dedup();
    let b = Build {
        id: crate::ids::next(),
        commit: req.commit,
        branch: req.branch,
        arch: req.arch,
        created_at: Utc::now(),
        pinned: false,
        source_job: req.source_job,
        tags,
        artifacts: Vec::new(),
    };
    let mut tx = state.store.begin().await?;
    if caller.role == testfarm_core::Role::Agent {
        let job = b.source_job.as_deref().ok_or_else(|| {
            ApiError::Forbidden(
                "an agent records builds only for a job it runs: give source_job".into(),
            )
        })?;
        crate::routes::agents::agent_runs_job(&mut tx, &caller, job).await?;
    }
    tx.insert_build(&b, &caller.name).await?;
    tx.record(build_event("build.created", &b, &caller));
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(b)))
}

/// Show a build with its tags and artifacts.
#[utoipa::path(get, path = "/api/v1/builds/{id}", tag = "artifacts",
    params(("id" = String, Path, description = "Build id")),
    responses((status = 200, body = Build), (status = 404, body = Problem)))]
pub async fn get_build(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Build>> {
    caller.require(Action::Read)?;
    Ok(Json(state.store.get_build(build_id(&id)?).await?))
}

/// Upload one artifact into a build: the body is the file (`application/octet-stream`),
/// streamed to the blob store while its sha256 is computed. With `sha256`, a body with
/// another digest is refused (422) and nothing is stored. Uploading the same name again
/// with the same content answers 200; with other content, 409. Its own size limit
/// (`artifacts.max_upload`), not the API's 4 MiB.
#[utoipa::path(put, path = "/api/v1/builds/{id}/artifacts/{name}", tag = "artifacts",
    params(("id" = String, Path, description = "Build id"), ("name" = String, Path, description = "Artifact name"), UploadQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 201, body = Artifact), (status = 200, body = Artifact), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem), (status = 413, body = Problem), (status = 422, body = Problem),
        (status = 503, body = Problem, description = "the S3 bucket is unreachable or refused the upload; nothing was stored")))]
pub async fn upload_artifact(
    State(state): State<AppState>,
    caller: Require<perm::SubmitOrAgent>,
    ApiPath((id, name)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<UploadQuery>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<Artifact>)> {
    let build = build_id(&id)?;
    validate_artifact_name(&name).map_err(|e| ApiError::unprocessable("name", e))?;
    let kind = kind("kind", q.kind.as_deref())?;
    let expected = q
        .sha256
        .as_deref()
        .map(|s| digest("sha256", s))
        .transpose()?;
    let limit = state.config.artifacts.max_upload.0;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::PayloadTooLarge(format!(
            "the artifact is larger than artifacts.max_upload ({limit} bytes); nothing was stored"
        )));
    }
    // Refuse before reading a byte when the build is not there (or, for an agent, is
    // not of a job it runs).
    let record = state.store.get_build(build).await?;
    if caller.role == testfarm_core::Role::Agent {
        let job = record.source_job.as_deref().ok_or_else(|| {
            ApiError::Forbidden(format!(
                "build {build} was not made by a job; agents upload only into their jobs' builds"
            ))
        })?;
        let mut tx = state.store.begin().await?;
        crate::routes::agents::agent_runs_job(&mut tx, &caller, job).await?;
        drop(tx);
    }
    let repo = state.artifacts.clone();
    let _upload = repo.sweep.read().await;
    // `Body` is not subject to the router's `DefaultBodyLimit`; the store counts the
    // bytes against this route's own limit as they stream.
    let stream = body
        .into_data_stream()
        .map_err(std::io::Error::other)
        .boxed();
    let stored = repo
        .blobs
        .put(
            stream,
            PutOptions {
                expected,
                max_size: Some(limit),
            },
        )
        .await?;
    let sha256 = stored.digest.hex();
    let mut tx = state.store.begin().await?;
    if let Some(existing) = tx.get_artifact(build, &name).await? {
        if existing.sha256 == sha256 && existing.kind == kind {
            return Ok((StatusCode::OK, Json(existing)));
        }
        return Err(ApiError::Conflict {
            detail: format!(
                "build {build} already has an artifact {name:?} ({}, sha256 {}); artifacts are immutable",
                existing.kind, existing.sha256
            ),
            field: Some("name".into()),
        });
    }
    let artifact = tx
        .insert_artifact(&NewArtifact {
            build,
            name: &name,
            kind,
            sha256: &sha256,
            size: stored.size,
            created_at: Utc::now(),
        })
        .await?;
    tx.record(
        NewEvent::new("artifact.stored", "build", build.to_string(), &caller.name).with_data(
            json!({
                "name": name, "kind": kind, "sha256": sha256, "size": stored.size,
                "new_blob": stored.created,
            }),
        ),
    );
    tx.commit().await?;
    metrics::counter!("testfarm_artifact_upload_bytes_total").increment(stored.size);
    Ok((StatusCode::CREATED, Json(artifact)))
}

/// List artifacts, filtered by build, commit, branch, kind and tag, newest build first, in pages.
#[utoipa::path(get, path = "/api/v1/artifacts", tag = "artifacts", params(ArtifactQuery),
    responses((status = 200, body = Page<Artifact>), (status = 400, body = Problem)))]
pub async fn list_artifacts(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ArtifactQuery>,
) -> ApiResult<Json<Page<Artifact>>> {
    caller.require(Action::Read)?;
    let bad_cursor = || {
        ApiError::bad_request(
            "cursor",
            "invalid cursor; use next_cursor from the previous page",
        )
    };
    let after = match q.cursor.as_deref() {
        None => None,
        Some(c) => {
            let (b, n) = c.split_once('/').ok_or_else(bad_cursor)?;
            Some((
                Ulid::from_string(b).map_err(|_| bad_cursor())?,
                n.to_string(),
            ))
        }
    };
    let limit = crate::routes::page_limit(q.limit)?;
    let kind = match q.kind.as_deref() {
        None => None,
        Some(k) => Some(
            k.parse::<ArtifactKind>()
                .map_err(|e| ApiError::bad_request("kind", e))?,
        ),
    };
    let build = match q.build.as_deref() {
        None => None,
        Some(b) => Some(
            Ulid::from_string(b)
                .map_err(|_| ApiError::bad_request("build", format!("{b:?} is not a build id")))?,
        ),
    };
    let mut items = state
        .store
        .list_artifacts(&ArtifactFilter {
            build,
            commit: q.commit,
            branch: q.branch,
            kind,
            tag: q.tag,
            after,
            limit: u32::try_from(limit + 1).unwrap_or(u32::MAX),
        })
        .await?;
    let next_cursor = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|a| format!("{}/{}", a.build_id, a.name))
    } else {
        None
    };
    Ok(Json(Page { items, next_cursor }))
}

/// The artifact of `kind` in the newest build of `branch` that has one (optionally for
/// one `arch`). When that build has several of the kind, the first by name.
#[utoipa::path(get, path = "/api/v1/artifacts/latest", tag = "artifacts", params(LatestQuery),
    responses((status = 200, body = Artifact), (status = 400, body = Problem), (status = 404, body = Problem)))]
pub async fn latest_artifact(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<LatestQuery>,
) -> ApiResult<Json<Artifact>> {
    caller.require(Action::Read)?;
    let branch = q
        .branch
        .ok_or_else(|| ApiError::bad_request("branch", "branch is required"))?;
    let kind = kind("kind", q.kind.as_deref())?;
    let b = state
        .store
        .latest_build_with(&branch, kind, q.arch.as_deref())
        .await?
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "no build of branch {branch:?} has a {kind} artifact"
            ))
        })?;
    b.artifacts
        .into_iter()
        .find(|a| a.kind == kind)
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no build of branch {branch:?} has a {kind}")))
}

/// Download an artifact by its sha256. Supports `Range: bytes=…` (206, or 416 outside
/// the blob); the checksum of the whole artifact is in `Repr-Digest` and `X-Checksum-Sha256`.
#[utoipa::path(get, path = "/api/v1/artifacts/{sha256}", tag = "artifacts",
    params(("sha256" = String, Path, description = "Hex SHA-256 of the artifact")),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>),
        (status = 206, content_type = "application/octet-stream", body = Vec<u8>),
        (status = 404, body = Problem), (status = 416, body = Problem),
        (status = 503, body = Problem, description = "the S3 bucket is unreachable")))]
pub async fn download_blob(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(sha256): ApiPath<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    caller.require(Action::Read)?;
    let d = digest("sha256", &sha256)?;
    let a = state
        .store
        .artifact_by_sha256(&d.hex())
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no artifact has sha256 {d}")))?;
    serve(&state, d, a.size, &a.name, &headers).await
}

/// Download an artifact by build and name; as `GET /api/v1/artifacts/{sha256}`.
#[utoipa::path(get, path = "/api/v1/builds/{id}/artifacts/{name}", tag = "artifacts",
    params(("id" = String, Path, description = "Build id"), ("name" = String, Path, description = "Artifact name")),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>),
        (status = 206, content_type = "application/octet-stream", body = Vec<u8>),
        (status = 404, body = Problem), (status = 416, body = Problem),
        (status = 503, body = Problem, description = "the S3 bucket is unreachable")))]
pub async fn download_artifact(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((id, name)): ApiPath<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    caller.require(Action::Read)?;
    let build = build_id(&id)?;
    let a = state
        .store
        .get_artifact(build, &name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("build {build} has no artifact {name:?}")))?;
    let d = digest("sha256", &a.sha256)?;
    serve(&state, d, a.size, &a.name, &headers).await
}

/// Streams a blob (or the requested range of it), holding it in the in-use registry
/// until the response body is dropped.
async fn serve(
    state: &AppState,
    d: Digest,
    size: u64,
    name: &str,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    let requested = range::parse(
        headers.get(header::RANGE).and_then(|v| v.to_str().ok()),
        size,
    );
    let (status, wanted) = match requested {
        Requested::Full => (StatusCode::OK, None),
        Requested::Partial(r) => (StatusCode::PARTIAL_CONTENT, Some(r)),
        Requested::Unsatisfiable => return Err(ApiError::RangeNotSatisfiable { size }),
    };
    let guard = state.artifacts.in_use.hold(d);
    let blob = state.artifacts.blobs.get_range(d, wanted).await?;
    let sent = blob.range.clone();
    let stream = blob.stream.map(move |chunk| {
        let _reading = &guard;
        chunk
    });
    let mut resp = Response::new(Body::from_stream(stream));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    let mut set = |name: header::HeaderName, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    };
    set(header::CONTENT_TYPE, "application/octet-stream".into());
    set(header::CONTENT_LENGTH, (sent.end - sent.start).to_string());
    set(header::ACCEPT_RANGES, "bytes".into());
    set(header::ETAG, format!("\"{d}\""));
    set(
        header::HeaderName::from_static("repr-digest"),
        format!("sha-256=:{}:", d.base64()),
    );
    set(
        header::HeaderName::from_static("digest"),
        format!("sha-256={}", d.base64()),
    );
    set(
        header::HeaderName::from_static("x-checksum-sha256"),
        d.hex(),
    );
    if status == StatusCode::PARTIAL_CONTENT {
        set(
            header::CONTENT_RANGE,
            format!(
                "bytes {}-{}/{}",
                sent.start,
                sent.end.saturating_sub(1),
                blob.size
            ),
        );
    }
    set(
        header::CONTENT_DISPOSITION,
        format!("attachment; filename=\"{name}\""),
    );
    Ok(resp)
}

async fn set_pin(state: &AppState, caller: &Caller, id: &str, pinned: bool) -> ApiResult<Build> {
    caller.require(Action::Submit)?;
    let id = build_id(id)?;
    let mut tx = state.store.begin().await?;
    let changed = tx.set_pinned(id, pinned).await?;
    let b = tx.get_build(id).await?;
    if changed {
        let kind = if pinned {
            "build.pinned"
        } else {
            "build.unpinned"
        };
        tx.record(build_event(kind, &b, caller));
    }
    tx.commit().await?;
    Ok(b)
}

/// Pin a build: retention never deletes it.
#[utoipa::path(post, path = "/api/v1/builds/{id}/pin", tag = "artifacts",
    params(("id" = String, Path, description = "Build id")),
    responses((status = 200, body = Build), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn pin_build(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Build>> {
    set_pin(&state, &caller, &id, true).await.map(Json)
}

/// Unpin a build: retention may delete it again.
#[utoipa::path(post, path = "/api/v1/builds/{id}/unpin", tag = "artifacts",
    params(("id" = String, Path, description = "Build id")),
    responses((status = 200, body = Build), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn unpin_build(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Build>> {
    set_pin(&state, &caller, &id, false).await.map(Json)
}

/// Tag a build (`release`, `known-good`): tagged builds are kept by retention.
#[utoipa::path(put, path = "/api/v1/builds/{id}/tags/{tag}", tag = "artifacts",
    params(("id" = String, Path, description = "Build id"), ("tag" = String, Path, description = "Tag")),
    responses((status = 200, body = Build), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn add_tag(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((id, tag)): ApiPath<(String, String)>,
) -> ApiResult<Json<Build>> {
    caller.require(Action::Submit)?;
    let id = build_id(&id)?;
    validate_tag(&tag).map_err(|e| ApiError::unprocessable("tag", e))?;
    let mut tx = state.store.begin().await?;
    let added = tx.add_tag(id, &tag).await?;
    let b = tx.get_build(id).await?;
    if added {
        tx.record(build_event("build.tagged", &b, &caller).with_data(json!({ "tag": tag })));
    }
    tx.commit().await?;
    Ok(Json(b))
}

/// Remove a tag from a build.
#[utoipa::path(delete, path = "/api/v1/builds/{id}/tags/{tag}", tag = "artifacts",
    params(("id" = String, Path, description = "Build id"), ("tag" = String, Path, description = "Tag")),
    responses((status = 200, body = Build), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn remove_tag(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((id, tag)): ApiPath<(String, String)>,
) -> ApiResult<Json<Build>> {
    caller.require(Action::Submit)?;
    let id = build_id(&id)?;
    let mut tx = state.store.begin().await?;
    let removed = tx.remove_tag(id, &tag).await?;
    let b = tx.get_build(id).await?;
    if removed {
        tx.record(build_event("build.untagged", &b, &caller).with_data(json!({ "tag": tag })));
    }
    tx.commit().await?;
    Ok(Json(b))
}

/// Run artifact retention now (operators): delete the builds `[artifacts]` lets go, then
/// the blobs nothing refers to. With `dry_run=true`, only report what would go.
#[utoipa::path(post, path = "/api/v1/artifacts/gc", tag = "artifacts", params(GcQuery),
    responses((status = 200, body = GcReport), (status = 403, body = Problem)))]
pub async fn gc(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<GcQuery>,
) -> ApiResult<Json<GcReport>> {
    caller.require(Action::Operate)?;
    let dry_run = q.dry_run.unwrap_or(false);
    let report =
        crate::tasks::artifact_retention::collect(&state, Utc::now(), dry_run, &caller.name)
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Json(report))
}
