//! Running pipelines: a submitted pipeline is stored with its stages `waiting`; each time
//! one of its stage jobs ends (and on a periodic sweep, which also resumes pipelines after a
//! restart) [`advance`] reads the stages' jobs, lets `core::pipeline::advance` decide, and
//! writes the decision — stage jobs submitted through [`crate::submit`], skipped stages,
//! cancelled jobs, the pipeline's end — in one transaction. A stage that cannot start (a
//! template naming a build its needed stage did not make, a pinned resource that cannot
//! serve it) ends `error` with the reason, and the pipeline halts.

pub mod render;

use std::collections::{BTreeMap, BTreeSet};

use chrono::Utc;
use serde_json::json;
use testfarm_api::job::JobState;
use testfarm_api::pipeline::{Pipeline, PipelineState, Stage, StageState};
use testfarm_core::Role;
use testfarm_core::jobspec::JobSpec;
use testfarm_core::pipeline::{self as rules, PipelineSpec, StageView};
use testfarm_core::priority::Priority;
use testfarm_store::NewEvent;
use testfarm_store::pipelines::PipelineRow;

use crate::error::{ApiError, ApiResult};
use crate::lifecycle::{self, After};
use crate::state::AppState;
use crate::submit::spec_error;
use render::StageValues;

/// A pipeline as submitted.
pub struct Submission<'a> {
    pub text: &'a str,
    pub vars: Vec<(String, String)>,
    pub priority: Option<String>,
    pub submitter: &'a str,
    pub role: Role,
}

/// Checks and stores a pipeline, then starts its first stages.
pub async fn submit(state: &AppState, s: Submission<'_>) -> ApiResult<Pipeline> {
    let mut spec = PipelineSpec::parse(s.text).map_err(spec_error)?;
    spec.apply_vars(&s.vars).map_err(spec_error)?;
    let priority = s
        .priority
        .as_deref()
        .map(str::parse::<Priority>)
        .transpose()
        .map_err(|e| ApiError::unprocessable("priority", e))?;
    let rendered = render::check(&spec).map_err(|(path, message)| {
        spec_error(testfarm_core::jobspec::error_at(s.text, &path, message))
    })?;
    let overrides: BTreeSet<String> = s.vars.iter().map(|(k, _)| k.clone()).collect();
    // Each stage's job, with placeholders for what earlier stages will give, must pass the
    // checks of a job submitted on its own.
    for (i, job) in rendered.into_iter().enumerate() {
        let mut job: JobSpec = serde_json::from_value(job)
            .map_err(|e| ApiError::unprocessable(format!("spec.stages[{i}].job"), e.to_string()))?;
        if let Some(merged) = spec.stage_job(i, &overrides) {
            job.vars = merged.vars;
        }
        if !job.requirements().needs_resource() {
            crate::server_jobs::check_templates(state, &job).map_err(|(path, message)| {
                crate::submit::SubmitError::Spec { path, message }
                    .located_under(s.text, &format!("stages[{i}].job."))
            })?;
        }
    }
    let now = Utc::now();
    let id = crate::ids::next().to_string();
    let stages = spec
        .stages
        .iter()
        .enumerate()
        .map(|(i, st)| Stage {
            name: st.name.clone(),
            needs: spec.needs(i).to_vec(),
            state: StageState::Waiting,
            job: None,
            started_at: None,
            ended_at: None,
            reason: None,
        })
        .collect();
    let row = PipelineRow {
        pipeline: Pipeline {
            id: id.clone(),
            name: spec.name.clone(),
            state: PipelineState::Running,
            submitter: s.submitter.to_string(),
            created_at: now,
            ended_at: None,
            failed_stage: None,
            reason: None,
            vars: serde_json::to_value(&spec.vars)
                .map_err(|e| ApiError::Internal(e.to_string()))?,
            stages,
        },
        overrides: overrides.into_iter().collect(),
        priority: priority.map(|p| p.value()),
        spec,
        submitter_role: s.role,
        cancel_requested: None,
    };
    let mut tx = state.store.begin().await?;
    tx.insert_pipeline(&row).await?;
    tx.record(
        NewEvent::new("pipeline.started", "pipeline", &id, s.submitter).with_data(json!({
            "name": row.pipeline.name,
            "stages": row.pipeline.stages.iter().map(|s| &s.name).collect::<Vec<_>>(),
        })),
    );
    tx.commit().await?;
    advance(state, &id).await?;
    Ok(state.store.get_pipeline(&id).await?.pipeline)
}

/// Asks a pipeline to stop: waiting stages are skipped, running stage jobs cancelled; it
/// ends `cancelled` once they have.
pub async fn cancel(
    state: &AppState,
    id: &str,
    reason: String,
    actor: &str,
) -> ApiResult<Pipeline> {
    let mut tx = state.store.begin().await?;
    let mut row = tx.get_pipeline(id).await?;
    if row.pipeline.state.is_terminal() {
        return Err(ApiError::conflict(format!(
            "pipeline {id} already ended ({})",
            row.pipeline.state.as_str()
        )));
    }
    if row.cancel_requested.is_none() {
        let why = if reason.is_empty() {
            format!("cancelled by {actor}")
        } else {
            reason
        };
        row.cancel_requested = Some(why.clone());
        tx.update_pipeline(&row).await?;
        tx.record(
            NewEvent::new("pipeline.cancel_requested", "pipeline", id, actor)
                .with_data(json!({ "reason": why })),
        );
    }
    tx.commit().await?;
    advance(state, id).await?;
    Ok(state.store.get_pipeline(id).await?.pipeline)
}

/// Called after a job ended: advances its pipeline, if it is a stage of one.
pub async fn job_ended(state: AppState, job_id: String) {
    match state.store.pipeline_of_job(&job_id).await {
        Ok(Some(pipeline)) => {
            if let Err(e) = advance(&state, &pipeline).await {
                tracing::error!(%pipeline, error = %e, "cannot advance the pipeline");
            }
        }
        Ok(None) => {}
        Err(e) => tracing::error!(job = %job_id, error = %e, "cannot look up the job's pipeline"),
    }
}

fn stage_state(job: JobState) -> StageState {
    match job {
        JobState::Queued | JobState::Assigned => StageState::Queued,
        JobState::Running => StageState::Running,
        JobState::Passed => StageState::Passed,
        JobState::Failed => StageState::Failed,
        JobState::Error => StageState::Error,
        JobState::Cancelled => StageState::Cancelled,
        JobState::TimedOut => StageState::TimedOut,
    }
}

fn stage_event(p: &Pipeline, s: &Stage) -> NewEvent {
    NewEvent::new(
        format!("pipeline.stage.{}", s.state.as_str()),
        "pipeline",
        &p.id,
        "server",
    )
    .with_data(json!({
        "pipeline": p.name, "stage": s.name, "job": s.job, "reason": s.reason,
    }))
}

/// Why a pipeline ended without passing, in one line.
fn ending_reason(p: &Pipeline, end: &rules::Ending, cancel: Option<&str>) -> Option<String> {
    let stage = end
        .failed_stage
        .as_deref()
        .and_then(|n| p.stages.iter().find(|s| s.name == n));
    let detail = stage
        .and_then(|s| s.reason.clone())
        .map(|r| format!(": {r}"))
        .unwrap_or_default();
    match end.state {
        PipelineState::Passed | PipelineState::Running => None,
        PipelineState::Cancelled => Some(cancel.map(str::to_string).unwrap_or_else(|| {
            format!(
                "stage `{}` was cancelled{detail}",
                end.failed_stage.as_deref().unwrap_or("?")
            )
        })),
        PipelineState::Error => Some(format!(
            "stage `{}` ended error — the lab failed, not the change under test{detail}",
            end.failed_stage.as_deref().unwrap_or("?")
        )),
        PipelineState::Failed => Some(format!(
            "stage `{}` {} — the change under test failed{detail}",
            end.failed_stage.as_deref().unwrap_or("?"),
            stage.map(|s| s.state.as_str()).unwrap_or("failed")
        )),
    }
}

/// Brings a pipeline up to date with its stage jobs and acts on what the rules decide.
/// Serialised per pipeline; safe to call any number of times.
pub async fn advance(state: &AppState, id: &str) -> ApiResult<()> {
    let lock = state.log_locks.get(&format!("pipeline/{id}"));
    let _guard = lock.lock().await;
    // A stage that cannot start changes the picture: decide again (bounded by stages).
    for _ in 0..=rules::MAX_STAGES {
        let again = advance_once(state, id).await?;
        if !again {
            break;
        }
    }
    Ok(())
}

/// One round; `true` when something changed that the rules must look at again.
async fn advance_once(state: &AppState, id: &str) -> ApiResult<bool> {
    let row = state.store.get_pipeline(id).await?;
    if row.pipeline.state.is_terminal() {
        return Ok(false);
    }
    // What finished stages give their dependants, read before the transaction.
    let mut values: BTreeMap<String, StageValues> = BTreeMap::new();
    // (A stage whose job passed since the last round counts: its row catches up below.)
    for s in &row.pipeline.stages {
        let Some(job) = &s.job else { continue };
        if !matches!(
            s.state,
            StageState::Passed | StageState::Queued | StageState::Running
        ) {
            continue;
        }
        let j = state.store.get_job(job).await?;
        if j.job.state != JobState::Passed {
            continue;
        }
        let builds = state.store.builds_of_job(job).await?;
        values.insert(
            s.name.clone(),
            StageValues {
                job: job.clone(),
                status: StageState::Passed.as_str().to_string(),
                resource: j.job.resource,
                build: builds.into_iter().last(),
            },
        );
    }
    let now = Utc::now();
    let mut tx = state.store.begin().await?;
    let mut row = tx.get_pipeline(id).await?;
    if row.pipeline.state.is_terminal() {
        return Ok(false);
    }
    let mut after = After::default();
    let mut changed = false;
    // 1. Stage states from their jobs.
    for i in 0..row.pipeline.stages.len() {
        let Some(job_id) = row.pipeline.stages[i].job.clone() else {
            continue;
        };
        if row.pipeline.stages[i].state.is_terminal() {
            continue;
        }
        let job = tx.get_job(&job_id).await?;
        let st = stage_state(job.job.state);
        let stage = &mut row.pipeline.stages[i];
        if st != stage.state {
            stage.state = st;
            if let Some(at) = job.job.started_at {
                stage.started_at = Some(at);
            }
            if st.is_terminal() {
                stage.ended_at = Some(job.job.ended_at.unwrap_or(now));
                if st != StageState::Passed {
                    stage.reason = job.job.reason.clone();
                }
            }
            let stage = stage.clone();
            tx.update_stage(id, &stage).await?;
            tx.record(stage_event(&row.pipeline, &stage));
        }
    }
    // 2. The rules.
    let decision = {
        let views: Vec<StageView<'_>> = row
            .pipeline
            .stages
            .iter()
            .map(|s| StageView {
                name: &s.name,
                needs: &s.needs,
                state: s.state,
            })
            .collect();
        rules::advance(&views, row.cancel_requested.is_some())
    };
    let halt_reason = row
        .cancel_requested
        .clone()
        .unwrap_or_else(|| "the pipeline halted: a stage did not pass".to_string());
    for name in &decision.skip {
        if let Some(stage) = row.pipeline.stages.iter_mut().find(|s| &s.name == name) {
            stage.state = StageState::Skipped;
            stage.reason = Some(halt_reason.clone());
            let stage = stage.clone();
            tx.update_stage(id, &stage).await?;
            tx.record(stage_event(&row.pipeline, &stage));
        }
    }
    for name in &decision.cancel {
        let Some(job_id) = row
            .pipeline
            .stages
            .iter()
            .find(|s| &s.name == name)
            .and_then(|s| s.job.clone())
        else {
            continue;
        };
        let mut job = tx.get_job(&job_id).await?;
        if job.job.state.is_terminal() || job.cancel_requested.is_some() {
            continue;
        }
        let a =
            lifecycle::cancel_job(&mut tx, &mut job, halt_reason.clone(), "server", now).await?;
        after.merge(a);
        state.work_changed();
    }
    for name in &decision.start {
        let Some(i) = row.pipeline.stages.iter().position(|s| &s.name == name) else {
            continue;
        };
        let started = start_stage(state, &row, i, &values).await;
        let stage = &mut row.pipeline.stages[i];
        stage.started_at = Some(now);
        match started {
            Ok(prepared) => {
                stage.state = StageState::Queued;
                stage.job = Some(prepared.row.job.id.clone());
                prepared.insert(&mut tx).await?;
                after.wake_scheduler = true;
            }
            Err(why) => {
                stage.state = StageState::Error;
                stage.ended_at = Some(now);
                stage.reason = Some(format!("the stage could not start: {why}"));
                changed = true;
            }
        }
        let stage = stage.clone();
        tx.update_stage(id, &stage).await?;
        tx.record(stage_event(&row.pipeline, &stage));
    }
    if let Some(end) = &decision.end {
        row.pipeline.state = end.state;
        row.pipeline.ended_at = Some(now);
        row.pipeline.failed_stage = end.failed_stage.clone();
        row.pipeline.reason = ending_reason(&row.pipeline, end, row.cancel_requested.as_deref());
        tx.update_pipeline(&row).await?;
        tx.record(
            NewEvent::new(
                format!("pipeline.{}", end.state.as_str()),
                "pipeline",
                id,
                "server",
            )
            .with_data(json!({
                "name": row.pipeline.name, "failed_stage": end.failed_stage,
                "reason": row.pipeline.reason,
            })),
        );
        changed = false;
    }
    tx.commit().await?;
    state.after_commit(after);
    Ok(changed)
}

/// Stage `i`'s job, rendered and checked, ready to insert; or why it cannot start.
async fn start_stage(
    state: &AppState,
    row: &PipelineRow,
    i: usize,
    values: &BTreeMap<String, StageValues>,
) -> Result<crate::submit::Prepared, String> {
    let overrides: BTreeSet<String> = row.overrides.iter().cloned().collect();
    let job = row
        .spec
        .stage_job(i, &overrides)
        .ok_or_else(|| format!("stage {i} is not in the spec"))?;
    let needed = row.spec.ancestors(i);
    let scope: BTreeMap<String, StageValues> = values
        .iter()
        .filter(|(k, _)| needed.contains(k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let ctx = render::context(&row.pipeline.id, &row.pipeline.name, &scope);
    let value = serde_json::to_value(&job).map_err(|e| e.to_string())?;
    let rendered = render::render_job(&value, &ctx).map_err(|(path, m)| {
        format!(
            "{path}: {m} (what a stage offers: {})",
            rules::STAGE_KEYS.join(", ")
        )
    })?;
    let mut job: JobSpec = serde_json::from_value(rendered).map_err(|e| e.to_string())?;
    job.validate().map_err(|(path, m)| format!("{path}: {m}"))?;
    if let Some(p) = row.priority {
        job.priority = Priority::new(u64::from(p)).unwrap_or(job.priority);
    }
    let prepared = crate::submit::prepare(state, job, &row.pipeline.submitter, row.submitter_role)
        .await
        .map_err(|e| e.describe())?;
    Ok(prepared)
}
