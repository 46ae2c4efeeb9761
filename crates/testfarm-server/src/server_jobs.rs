//! Jobs that need no resource (`requires` omitted): the server runs them itself. Only
//! `sleep` steps run here today; `http` and `wait_for` end the job `error` with a clear
//! reason until the HTTP workflow runner lands.

use std::time::Duration;

use chrono::{DateTime, Utc};
use testfarm_api::job::JobState;
use testfarm_core::job::{JobEvent, LabError};
use testfarm_core::jobspec::{JobSpec, Step};
use ulid::Ulid;

use crate::lifecycle::{self, LifecycleError};
use crate::state::AppState;

/// Marks the job running on the server and runs it in a task.
pub(crate) async fn start(
    state: &AppState,
    job: Ulid,
    now: DateTime<Utc>,
) -> Result<(), LifecycleError> {
    let mut tx = state.store.begin().await?;
    let mut row = tx.get_job(&job.to_string()).await?;
    if row.job.state != JobState::Queued {
        return Ok(());
    }
    row.job.resource = Some("server".into());
    let assign = JobEvent::Assign {
        resource: Ulid::nil(),
        lease: Ulid::nil(),
    };
    let mut after =
        lifecycle::apply_job_event(&mut tx, &mut row, assign, "scheduler", now, false).await?;
    after.merge(
        lifecycle::apply_job_event(&mut tx, &mut row, JobEvent::Start, "server", now, false)
            .await?,
    );
    tx.commit().await?;
    state.after_commit(after);
    let spec: Option<JobSpec> = serde_json::from_value(row.job.spec.clone()).ok();
    let state = state.clone();
    tokio::spawn(async move {
        let event = match spec {
            Some(spec) => run_steps(&spec).await,
            None => JobEvent::Error {
                reason: LabError::Infrastructure {
                    detail: "the stored spec could not be read".into(),
                },
            },
        };
        if let Err(e) = finish(&state, job, event).await {
            tracing::error!(error = %e, %job, "could not record a server-side job's end");
        }
    });
    Ok(())
}

async fn run_steps(spec: &JobSpec) -> JobEvent {
    for step in spec.steps.iter().chain(spec.always.iter()) {
        match step {
            Step::Sleep(d) => tokio::time::sleep(d.get().min(Duration::from_secs(24 * 3600))).await,
            other => {
                return JobEvent::Error {
                    reason: LabError::Infrastructure {
                        detail: format!("step `{}` cannot run on the server yet", other.kind()),
                    },
                };
            }
        }
    }
    JobEvent::Pass
}

async fn finish(state: &AppState, job: Ulid, event: JobEvent) -> Result<(), LifecycleError> {
    let now = Utc::now();
    let mut tx = state.store.begin().await?;
    let mut row = tx.get_job(&job.to_string()).await?;
    if row.job.state.is_terminal() {
        return Ok(());
    }
    let after = lifecycle::apply_job_event(&mut tx, &mut row, event, "server", now, false).await?;
    tx.commit().await?;
    state.after_commit(after);
    Ok(())
}
