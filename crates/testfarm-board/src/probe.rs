//! Running a board's health probe (`health.probe`) and grading its output against the
//! thresholds ([`rules::health`](crate::rules::health)). A probe that hangs or fails is an
//! error the caller counts as a failed health check, like a bad reading.

use crate::config::BoardConfig;
use crate::error::Result;
use crate::process::run_shell;
use crate::rules::health::{HealthReport, evaluate};
use crate::template::{Context, render};

/// `None` when the board has no probe command.
pub async fn run_probe(board: &BoardConfig) -> Option<Result<HealthReport>> {
    let health = board.health.as_ref()?;
    let probe = health.probe.as_ref()?;
    let ctx = Context::for_board(&board.name, &board.board_type, &board.arch);
    Some(
        async {
            let line = render(probe, &ctx)?;
            let out = run_shell(
                &format!("health probe {}", board.name),
                &line,
                health.timeout,
            )
            .await?;
            Ok(evaluate(&health.thresholds, &out.stdout))
        }
        .await,
    )
}
