//! Jobs: the list with state and name filters; a detail page per job (steps, why it
//! waits, the live log tail, TAP results failures first, artifacts with checksums, its
//! resource, build and pipeline); the submit form; the cookie-authenticated log and
//! artifact downloads the page links to (the API handlers themselves).

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;
use testfarm_api::job::{JobState, LogQuery, SubmitJob};
use testfarm_store::artifacts::ArtifactFilter;
use testfarm_store::jobs::JobFilter;
use testfarm_store::resources::ResourceFilter;

use super::forms::{field_error, field_of, form_caller, require, when, word};
use super::session::Session;
use crate::auth::perm;
use crate::extract::{ApiPath, ApiQuery};
use crate::state::AppState;

/// How much of the log end the page shows (the live tail appends to it).
const TAIL_BYTES: u64 = 16 * 1024;

#[derive(Deserialize, Default)]
pub struct JobsQuery {
    #[serde(default)]
    state: String,
    #[serde(default)]
    name: String,
}

pub async fn list(
    State(state): State<AppState>,
    session: Session,
    Query(q): Query<JobsQuery>,
) -> Response {
    let (states, error) = match q.state.as_str() {
        "" => (Vec::new(), None),
        s => match s.parse::<JobState>() {
            Ok(s) => (vec![s], None),
            Err(e) => (Vec::new(), Some(e.to_string())),
        },
    };
    let name = (!q.name.is_empty()).then(|| q.name.clone());
    let jobs = match state
        .store
        .list_jobs(&JobFilter {
            states,
            name,
            limit: 200,
            ..JobFilter::default()
        })
        .await
    {
        Ok(j) => j,
        Err(e) => return super::error_page(&e.to_string()),
    };
    super::layout::page(
        "Jobs",
        Some(&session),
        html! {
            h1 { "Jobs" }
            p { a class="button" href="/ui/submit" { "Submit a job" } }
            (super::forms::filters("/ui/jobs", &q.state, &q.name, &error))
            div class="scroll" { table class="dense" {
                thead { tr { th { "Id" } th { "Name" } th { "State" } th { "Resource" } th { "Submitter" } th { "Queued at" } } }
                tbody {
                    @for j in &jobs {
                        tr {
                            td { a href={ "/ui/jobs/" (j.job.id) } { (j.job.id) } }
                            td { (j.job.name) }
                            td class={ "state state-" (j.job.state) } { (j.job.state) }
                            td { @if let Some(r) = &j.job.resource { a href={ "/ui/resources/" (r) } { (r) } } }
                            td { (j.job.submitter) }
                            td { (when(j.job.queued_at)) }
                        }
                    }
                }
            } }
        },
    )
    .into_response()
}

/// One test point of a results document, for the table.
struct TestPoint {
    suite: String,
    ok: bool,
    number: String,
    description: String,
    directive: String,
}

/// Every `tests` array in the results JSON (suites, runs, subtests), whatever nests them.
fn points(v: &serde_json::Value, suite: &str, out: &mut Vec<TestPoint>) {
    match v {
        serde_json::Value::Object(m) => {
            let name = m
                .get("name")
                .and_then(|n| n.as_str())
                .unwrap_or(suite)
                .to_string();
            if let Some(serde_json::Value::Array(tests)) = m.get("tests") {
                for t in tests {
                    let directive = t
                        .get("directive")
                        .and_then(|d| d.get("kind"))
                        .and_then(|k| k.as_str())
                        .unwrap_or_default();
                    out.push(TestPoint {
                        suite: name.clone(),
                        ok: t.get("ok").and_then(|o| o.as_bool()).unwrap_or(false)
                            || !directive.is_empty(),
                        number: t
                            .get("number")
                            .map(|n| n.to_string())
                            .unwrap_or_default()
                            .replace("null", ""),
                        description: t
                            .get("description")
                            .and_then(|d| d.as_str())
                            .unwrap_or_default()
                            .to_string(),
                        directive: directive.to_string(),
                    });
                    if let Some(sub) = t.get("subtest") {
                        points(sub, &name, out);
                    }
                }
            }
            for (k, child) in m {
                if k != "tests" {
                    points(child, &name, out);
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|c| points(c, suite, out)),
        _ => {}
    }
}

async fn artifacts(state: &AppState, job: &str) -> Markup {
    let builds = state.store.builds_of_job(job).await.unwrap_or_default();
    let mut rows = Vec::new();
    for b in &builds {
        let list = state
            .store
            .list_artifacts(&ArtifactFilter {
                build: Some(b.id),
                limit: 200,
                ..ArtifactFilter::default()
            })
            .await
            .unwrap_or_default();
        rows.extend(list);
    }
    html! {
        @if builds.is_empty() { p class="empty" { "No builds." } }
        @else {
            p { @for b in &builds { "build " code { (b.id) } " " (b.commit) " " (b.branch) " " (b.arch) br; } }
            div class="scroll" { table class="dense" id="artifacts" {
                thead { tr { th { "Artifact" } th { "Kind" } th { "Size" } th { "SHA-256" } } }
                tbody { @for a in &rows { tr {
                    td { a href={ "/ui/builds/" (a.build_id) "/artifacts/" (a.name) } download { (a.name) } }
                    td { (word(&a.kind)) } td { (a.size) } td { code class="sha" { (a.sha256) } }
                } } }
            } }
        }
    }
}

pub async fn detail(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
) -> Response {
    let row = match state.store.get_job(&id).await {
        Ok(r) => r,
        Err(testfarm_store::StoreError::NotFound { .. }) => {
            return super::not_found_page(&format!("no job {id:?}"));
        }
        Err(e) => return super::error_page(&e.to_string()),
    };
    let j = &row.job;
    let why = if j.state == JobState::Queued {
        crate::routes::jobs::why_job(
            State(state.clone()),
            session.caller.clone(),
            ApiPath(id.clone()),
        )
        .await
        .map(|w| w.0.text)
        .unwrap_or_else(|e| e.to_string())
    } else {
        String::new()
    };
    let offset = j.log_bytes.saturating_sub(TAIL_BYTES);
    let log = crate::logs::read(&state, &j.id, offset, j.log_bytes)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    // Start the tail at a line boundary unless it is the whole log.
    let log = match (offset > 0, log.find('\n')) {
        (true, Some(i)) => log[i + 1..].to_string(),
        _ => log,
    };
    let mut tests = Vec::new();
    if j.state.is_terminal()
        && let Ok((doc, _)) = crate::results::report(&state, &row).await
    {
        points(&doc, "", &mut tests);
    }
    tests.sort_by_key(|t| t.ok);
    let failed = tests.iter().filter(|t| !t.ok).count();
    let pipeline = state.store.pipeline_of_job(&j.id).await.ok().flatten();
    let builds = artifacts(&state, &j.id).await;
    super::layout::page(
        &j.name,
        Some(&session),
        html! {
            h1 { (j.name) " " span class={ "state state-" (j.state) } id="job-state" { (j.state) } }
            table class="dense kv" {
                tr { th { "Id" } td { (j.id) } }
                tr { th { "Submitter" } td { (j.submitter) } }
                tr { th { "Priority" } td { (j.priority) } }
                tr { th { "Resource" } td {
                    @if let Some(r) = &j.resource { a href={ "/ui/resources/" (r) } { (r) } }
                } }
                @if let Some(p) = &pipeline { tr { th { "Pipeline" } td { a href={ "/ui/pipelines/" (p) } { (p) } } } }
                tr { th { "Attempt" } td { (j.attempt) } }
                tr { th { "Reason" } td { (j.reason.clone().unwrap_or_default()) } }
                tr { th { "Queued" } td { (when(j.queued_at)) } }
                tr { th { "Started" } td { (j.started_at.map(when).unwrap_or_default()) } }
                tr { th { "Ended" } td { (j.ended_at.map(when).unwrap_or_default()) } }
                @if let Some(t) = j.estimated_start { tr { th { "Estimated start" } td { (when(t)) } } }
            }
            @if !why.is_empty() { h2 { "Why pending" } pre class="why" id="why" { (why) } }
            h2 { "Steps" }
            @if j.steps.is_empty() { p class="empty" { "No step reported yet." } }
            @else {
                table class="dense" { thead { tr { th { "#" } th { "Kind" } th { "Outcome" } th { "Exit" } th { "Took" } th { "Reason" } } }
                    tbody { @for s in &j.steps { tr {
                        td { (s.index) @if s.always { " (always)" } } td { (s.kind) }
                        td class={ "state state-" (word(&s.outcome)) } { (word(&s.outcome)) }
                        td { (s.exit_code.map(|c| c.to_string()).unwrap_or_default()) }
                        td { (s.duration_ms) " ms" } td { (s.reason.clone().unwrap_or_default()) }
                    } } } }
            }
            h2 { "Log " small { (j.log_bytes) " bytes · " a href={ "/ui/jobs/" (j.id) "/log" } { "whole log" } } }
            pre class="log" id="log" data-job=(j.id) data-offset=(j.log_bytes)
                data-live=[(!j.state.is_terminal()).then_some("1")] { (log) }
            @if j.state.is_terminal() {
                h2 { "Tests " small { (tests.len()) " points, " (failed) " failed" } }
                @if !tests.is_empty() {
                    div class="scroll" { table class="dense" id="tests" {
                        thead { tr { th { "Result" } th { "Suite" } th { "#" } th { "Description" } } }
                        tbody { @for t in &tests { tr {
                            td class={ "state state-" (if t.ok { "passed" } else { "failed" }) } {
                                (if t.ok { "ok" } else { "not ok" }) @if !t.directive.is_empty() { " # " (t.directive) } }
                            td { (t.suite) } td { (t.number) } td { (t.description) }
                        } } }
                    } }
                }
            }
            h2 { "Artifacts" }
            (builds)
        },
    )
    .into_response()
}

/// `GET /ui/jobs/{id}/log?offset=N&wait=S`: the log bytes, as `GET /api/v1/jobs/{id}/log`
/// (long poll, size and state headers) for the page's live tail.
pub async fn log(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    Query(q): Query<LogQuery>,
) -> Response {
    crate::routes::jobs::get_log(State(state), session.caller, ApiPath(id), ApiQuery(q))
        .await
        .unwrap_or_else(super::forms::error_response)
}

/// `GET /ui/builds/{id}/artifacts/{name}`: the download, as the API's.
pub async fn artifact(
    State(state): State<AppState>,
    session: Session,
    Path((id, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    crate::routes::artifacts::download_artifact(
        State(state),
        session.caller,
        ApiPath((id, name)),
        headers,
    )
    .await
    .unwrap_or_else(super::forms::error_response)
}

#[derive(Deserialize, Default)]
pub struct SubmitForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    spec: String,
    #[serde(default)]
    resource: String,
    #[serde(default)]
    priority: String,
    /// Set by the "Show matching resources" button: list them, submit nothing.
    #[serde(default)]
    check: String,
}

/// The resources a spec's `requires` fits (static rules: kind, labels, capabilities), with
/// their state and size, so the submitter sees where it could run before submitting.
fn matching(
    spec: &str,
    resources: &[testfarm_core::resource::Resource],
) -> Result<Markup, (String, String)> {
    let spec = testfarm_core::jobspec::JobSpec::parse(spec)
        .map_err(|e| field_of(&crate::submit::spec_error(e)))?;
    let req = spec.requirements();
    if !req.needs_resource() {
        return Ok(
            html! { p id="matching" { "This job runs on the server itself; it needs no resource." } },
        );
    }
    let fit: Vec<_> = resources
        .iter()
        .filter(|r| req.fits(r, &r.selector_labels()))
        .collect();
    Ok(html! {
        h2 { "Matching resources " small { (fit.len()) " of " (resources.len()) } }
        @if fit.is_empty() { p class="field-error" id="matching" { "No resource fits this spec's requires." } }
        @else {
            div class="scroll" { table class="dense" id="matching" {
                thead { tr { th { "Name" } th { "Kind" } th { "State" } th { "CPUs" } th { "Memory" } th { "Disk" } } }
                tbody { @for r in &fit { tr {
                    td { a href={ "/ui/resources/" (r.name) } { (r.name) } }
                    td { (r.kind) }
                    td class={ "state state-" (r.state) } { (r.state) }
                    td { (r.capabilities.cpus.map(|c| c.to_string()).unwrap_or_default()) }
                    td { @if let Some(m) = r.capabilities.memory_mb { (m / 1024) " GiB" } }
                    td { @if let Some(d) = r.capabilities.disk_gb { (d) " GB" } }
                } } }
            } }
        }
    })
}

async fn submit_form(
    state: &AppState,
    session: &Session,
    f: &SubmitForm,
    error: Option<(String, String)>,
) -> Markup {
    let resources = state
        .store
        .list_resources(&ResourceFilter::default())
        .await
        .unwrap_or_default();
    let err = |k: &str| field_error(&error, k);
    html! {
        h1 { "Submit a job" }
        form method="post" action="/ui/submit" class="form" id="submit" {
            input type="hidden" name="csrf" value=(session.csrf);
            label for="spec" { "Job spec (YAML)" }
            textarea id="spec" name="spec" rows="16" spellcheck="false" { (f.spec) }
            (err("spec"))
            label for="resource" { "Resource" }
            select id="resource" name="resource" {
                option value="" { "Auto (the scheduler picks)" }
                @for r in &resources {
                    option value=(r.name) selected[f.resource == r.name] { (r.name) " — " (r.kind) ", " (r.state)
                        @if let Some(c) = r.capabilities.cpus { ", " (c) " CPUs" } }
                }
            }
            (err("resource"))
            label for="priority" { "Priority" }
            input type="text" id="priority" name="priority" value=(f.priority) placeholder="normal";
            (err("priority"))
            (err(""))
            div {
                button type="submit" { "Submit" } " "
                button type="submit" name="check" value="1" { "Show matching resources" }
            }
        }
        p class="hint" { "Reference: docs/job-spec.md. Errors name the field with its line and column." }
        @if !f.check.is_empty() && error.is_none() {
            @match matching(&f.spec, &resources) {
                Ok(m) => { (m) }
                Err((_, e)) => { p class="field-error" id="error-spec" { (e) } }
            }
        }
    }
}

pub async fn submit_page(State(state): State<AppState>, session: Session) -> Response {
    if let Err(r) = require::<perm::Submit>(&session) {
        return r;
    }
    let body = submit_form(&state, &session, &SubmitForm::default(), None).await;
    super::layout::page("Submit", Some(&session), body).into_response()
}

pub async fn submit(
    State(state): State<AppState>,
    session: Session,
    Form(f): Form<SubmitForm>,
) -> Response {
    let caller = match form_caller::<perm::Submit>(&session, &f.csrf) {
        Ok(c) => c,
        Err(r) => return r,
    };
    if !f.check.is_empty() {
        let body = submit_form(&state, &session, &f, None).await;
        return super::layout::page("Submit", Some(&session), body).into_response();
    }
    let req = SubmitJob {
        spec: f.spec.clone(),
        vars: Default::default(),
        priority: Some(f.priority.trim().to_string()).filter(|p| !p.is_empty()),
    };
    let pin = Some(f.resource.trim().to_string()).filter(|r| !r.is_empty());
    match crate::routes::jobs::submit(&state, &caller, req, pin).await {
        Ok(job) => Redirect::to(&format!("/ui/jobs/{}", job.id)).into_response(),
        Err(e) => {
            let (field, text) = field_of(&e);
            let field = match field.as_str() {
                "spec" | "priority" => field,
                _ if text.contains("resource") => "resource".into(),
                _ => String::new(),
            };
            let body = submit_form(&state, &session, &f, Some((field, text))).await;
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                super::layout::page("Submit", Some(&session), body),
            )
                .into_response()
        }
    }
}
