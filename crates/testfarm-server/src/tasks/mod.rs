//! Background tasks. Each loops on a tick (or a wake-up) until the stop signal, and does
//! its work as store transactions, so a crash between ticks loses nothing.

pub mod alerts;
pub mod artifact_retention;
pub mod board_actions;
pub mod buildomat;
pub mod cleanup;
pub mod health;
pub mod maintenance;
pub mod pipelines;
pub mod reaper;
pub mod retention;
pub mod scheduler;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::state::AppState;

pub(crate) fn spawn_all(state: AppState, stop: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
    vec![
        tokio::spawn(maintenance::run(state.clone(), stop.clone())),
        tokio::spawn(board_actions::run(state.clone(), stop.clone())),
        tokio::spawn(scheduler::run(state.clone(), stop.clone())),
        tokio::spawn(pipelines::run(state.clone(), stop.clone())),
        tokio::spawn(reaper::run(state.clone(), stop.clone())),
        tokio::spawn(retention::run(state.clone(), stop.clone())),
        tokio::spawn(artifact_retention::run(state.clone(), stop.clone())),
        tokio::spawn(crate::awake::watchdog(state.awake.clone(), stop.clone())),
        tokio::spawn(alerts::run(state.clone(), stop.clone())),
        tokio::spawn(crate::alerts::run(state.clone(), stop.clone())),
        tokio::spawn(health::run(state, stop)),
    ]
}

/// Waits for `period` or the stop signal; false when stopping.
pub(crate) async fn tick(period: std::time::Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(period) => true,
        _ = stop.wait_for(|s| *s) => false,
    }
}
