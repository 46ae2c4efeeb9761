//! Test results of a job: its log streamed through the TAP parser, split into one suite
//! per `TAP_START`/`TAP_END` marked script (TAP outside markers is one suite named after
//! the job). While a job runs the report is computed from the log so far; when it ends,
//! the report is stored once so reading it never re-reads the log.

use std::time::Duration;

use chrono::Utc;
use testfarm_store::jobs::JobRow;
use testfarm_tap::report::{Collector, SuiteRun};
use testfarm_tap::{Parser, junit};
use tokio::io::AsyncReadExt;

use crate::error::ApiError;
use crate::state::AppState;

/// The suites found in a job's log, read in bounded chunks (memory grows with the results
/// kept, not with the log).
pub async fn from_log(state: &AppState, job: &JobRow) -> Result<Vec<SuiteRun>, ApiError> {
    let mut collector = Collector::new(job.job.name.clone());
    let mut parser = Parser::new();
    let path = crate::logs::job_dir(state, &job.job.id).join("log");
    match tokio::fs::File::open(&path).await {
        Ok(file) => {
            let mut file = file.take(job.job.log_bytes);
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = file
                    .read(&mut buf)
                    .await
                    .map_err(|e| ApiError::Internal(format!("reading the log: {e}")))?;
                if n == 0 {
                    break;
                }
                parser.feed(&buf[..n], &mut |e| collector.event(e));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(ApiError::Internal(format!("reading the log: {e}"))),
    }
    parser.finish(&mut |e| collector.event(e));
    let mut runs = collector.finish();
    let run_time = match (job.job.started_at, job.job.ended_at) {
        (Some(s), Some(e)) => (e - s).to_std().unwrap_or_default(),
        _ => Duration::ZERO,
    };
    // With one suite, the job's run time is the suite's; with several it is unknown
    // per suite (the log carries no timestamps) and left at zero.
    let single = runs.len() == 1;
    for run in &mut runs {
        run.properties.push(("job".into(), job.job.id.clone()));
        if let Some(r) = &job.job.resource {
            run.properties.push(("resource".into(), r.clone()));
        }
        if single {
            run.duration = run_time;
        }
    }
    Ok(runs)
}

/// The report of a job: stored for ended jobs, computed from the log for running ones.
pub async fn report(
    state: &AppState,
    job: &JobRow,
) -> Result<(serde_json::Value, String), ApiError> {
    if let Some(stored) = state.store.get_results(&job.job.id).await? {
        return Ok(stored);
    }
    let runs = from_log(state, job).await?;
    Ok((testfarm_tap::json::render(&runs), junit::render(&runs)))
}

/// Parses and stores an ended job's report (called once the job has ended).
pub async fn store(state: AppState, job_id: String) {
    let result = async {
        let job = state.store.get_job(&job_id).await?;
        if !job.job.state.is_terminal() {
            return Ok(());
        }
        let runs = from_log(&state, &job).await?;
        let (json, xml) = (testfarm_tap::json::render(&runs), junit::render(&runs));
        let mut tx = state.store.begin().await?;
        tx.put_results(&job_id, &json, &xml, Utc::now()).await?;
        tx.commit().await?;
        Ok::<_, ApiError>(())
    }
    .await;
    if let Err(e) = result {
        tracing::warn!(job = %job_id, error = %e, "could not store the job's test results");
    }
}
