//! Board actions nobody answers: an action its agent took but did not answer within
//! `boards.action_timeout` (or never took within it) fails with "the agent did not
//! answer", so a caller waiting for it, and the board's history, learn it instead of
//! waiting forever on an agent that died.

use chrono::Utc;
use tokio::sync::watch;

use crate::state::AppState;

/// How often overdue actions are looked for.
const EVERY: std::time::Duration = std::time::Duration::from_millis(500);

pub(crate) async fn run(state: AppState, mut stop: watch::Receiver<bool>) {
    while crate::tasks::tick(EVERY, &mut stop).await {
        if let Err(e) = pass(&state).await {
            tracing::warn!(error = %e, "could not fail overdue board actions");
        }
    }
}

async fn pass(state: &AppState) -> Result<(), crate::error::ApiError> {
    let timeout = state.config.boards.action_timeout.0;
    let now = Utc::now();
    let limit = chrono::Duration::from_std(timeout)
        .ok()
        .and_then(|d| now.checked_sub_signed(d))
        .unwrap_or(chrono::DateTime::<Utc>::MIN_UTC);
    let mut tx = state.store.begin().await?;
    let overdue = tx.overdue_board_actions(limit, limit).await?;
    if overdue.is_empty() {
        return Ok(());
    }
    for row in &overdue {
        crate::boards::finish_action(
            &mut tx,
            row,
            &crate::boards::unanswered(timeout),
            "server",
            now,
        )
        .await?;
    }
    tx.commit().await?;
    state.board_action_done();
    Ok(())
}
