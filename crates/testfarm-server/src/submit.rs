//! Turning a parsed job spec into a queued job: the checks a submission passes (the
//! templates of a server-side job, a pinned resource that can serve it, the priority cap
//! of the submitter's role) and the row and event that queue it. `POST /api/v1/jobs` and
//! a pipeline starting a stage both go through here, so a stage's job is held to exactly
//! the rules of a job submitted on its own.

use chrono::Utc;
use serde_json::json;
use testfarm_api::job::{Job, JobState};
use testfarm_core::Role;
use testfarm_core::jobspec::JobSpec;
use testfarm_core::pinned::check_pinned;
use testfarm_store::jobs::JobRow;
use testfarm_store::resources::ResourceFilter;
use testfarm_store::{NewEvent, Tx};

use crate::error::ApiError;
use crate::state::AppState;

/// Why a spec cannot be queued.
#[derive(Debug)]
pub enum SubmitError {
    /// A rule of the spec itself: the field path (inside the job spec) and why. Located in
    /// the submitted text by [`SubmitError::located`].
    Spec { path: String, message: String },
    /// Anything else (a pinned resource that cannot serve it, the store).
    Api(ApiError),
}

impl From<ApiError> for SubmitError {
    fn from(e: ApiError) -> Self {
        SubmitError::Api(e)
    }
}

impl From<testfarm_store::StoreError> for SubmitError {
    fn from(e: testfarm_store::StoreError) -> Self {
        SubmitError::Api(e.into())
    }
}

impl SubmitError {
    /// The API error for a job spec submitted as `text`.
    pub fn located(self, text: &str) -> ApiError {
        self.located_under(text, "")
    }

    /// The API error for a job spec found at `prefix` (`stages[1].job.`) inside `text`.
    pub fn located_under(self, text: &str, prefix: &str) -> ApiError {
        match self {
            SubmitError::Spec { path, message } => {
                let full = format!("{prefix}{path}");
                let e = testfarm_core::jobspec::error_at(text, &full, message);
                ApiError::unprocessable(format!("spec.{full}"), e)
            }
            SubmitError::Api(e) => e,
        }
    }

    /// One line for a stage that could not start.
    pub fn describe(&self) -> String {
        match self {
            SubmitError::Spec { path, message } => format!("{path}: {message}"),
            SubmitError::Api(e) => e.to_string(),
        }
    }
}

/// A 422 for a spec that does not parse, naming `spec` or `spec.<field path>`.
pub fn spec_error(e: testfarm_core::jobspec::SpecError) -> ApiError {
    let field = if e.path.is_empty() {
        "spec".to_string()
    } else {
        format!("spec.{}", e.path)
    };
    ApiError::unprocessable(field, e)
}

/// A job ready to insert: its row and the `job.queued` event.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub row: JobRow,
    event: NewEvent,
}

impl Prepared {
    /// Writes the job and its event in `tx`. The caller commits, then wakes the scheduler.
    pub async fn insert(self, tx: &mut Tx) -> Result<(), testfarm_store::StoreError> {
        tx.insert_job(&self.row).await?;
        tx.record(self.event);
        Ok(())
    }
}

/// Checks `spec` (already parsed, overrides applied) as `submitter` with `role` would
/// submit it, and builds its row.
pub async fn prepare(
    state: &AppState,
    spec: JobSpec,
    submitter: &str,
    role: Role,
) -> Result<Prepared, SubmitError> {
    if !spec.requirements().needs_resource() {
        crate::server_jobs::check_templates(state, &spec)
            .map_err(|(path, message)| SubmitError::Spec { path, message })?;
    }
    let policies = state.store.list_policies().await?;
    let capped = testfarm_core::policy::Policies {
        policies,
        ..Default::default()
    }
    .cap_priority(spec.priority, role);
    let requirements = spec.requirements();
    if requirements.resource.is_some() {
        let resources = state
            .store
            .list_resources(&ResourceFilter::default())
            .await?;
        let pinned_by_spec = spec.requires.as_ref().is_some_and(|r| r.resource.is_some());
        if !pinned_by_spec {
            crate::build_server::check_named(&spec, &requirements, &resources)
                .map_err(|(path, message)| SubmitError::Spec { path, message })?;
        }
        check_pinned(&requirements, &resources).map_err(|refused| ApiError::Conflict {
            detail: refused.to_string(),
            field: Some(if pinned_by_spec {
                "spec.requires.resource".into()
            } else {
                crate::build_server::named_field(&spec)
            }),
        })?;
    }
    let now = Utc::now();
    let internal = |e: serde_json::Error| ApiError::Internal(e.to_string());
    let row = JobRow {
        job: Job {
            id: crate::ids::next().to_string(),
            name: spec.name.clone(),
            state: JobState::Queued,
            priority: capped.0.value(),
            submitter: submitter.to_string(),
            resource: None,
            lease_id: None,
            attempt: 1,
            reason: None,
            created_at: now,
            queued_at: now,
            assigned_at: None,
            started_at: None,
            ended_at: None,
            log_bytes: 0,
            spec: serde_json::to_value(&spec).map_err(internal)?,
            vars: serde_json::to_value(&spec.vars).map_err(internal)?,
            steps: Vec::new(),
            estimated_start: None,
        },
        submitter_role: role,
        resource_id: None,
        last_report_at: None,
        log_chunks: 0,
        cancel_requested: None,
        avoid_resource: None,
    };
    let event = NewEvent::new("job.queued", "job", &row.job.id, submitter).with_data(json!({
        "name": row.job.name, "priority": row.job.priority, "requires": requirements,
        "priority_capped": capped.1,
    }));
    Ok(Prepared { row, event })
}
