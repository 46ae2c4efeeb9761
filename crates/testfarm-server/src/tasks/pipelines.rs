//! The pipeline sweep: advances every running pipeline on a tick. A stage job's end
//! advances its pipeline at once ([`crate::pipelines::job_ended`]); the sweep is for what
//! that cannot see — a server restarted between a job's end and its pipeline's advance,
//! or an advance that failed on a busy store.

use std::time::Duration;

use tokio::sync::watch;

use crate::state::AppState;

const PERIOD: Duration = Duration::from_secs(5);

pub async fn run(state: AppState, mut stop: watch::Receiver<bool>) {
    loop {
        match state.store.running_pipelines().await {
            Ok(ids) => {
                for id in ids {
                    if let Err(e) = crate::pipelines::advance(&state, &id).await {
                        tracing::warn!(pipeline = %id, error = %e, "pipeline sweep: cannot advance");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "pipeline sweep: cannot list pipelines"),
        }
        if !super::tick(PERIOD, &mut stop).await {
            return;
        }
    }
}
