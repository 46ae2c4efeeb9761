//! The idle health probe: every `health.interval`, when no job holds the board, run its
//! probe command (bounded by `health.timeout`) and report `Health { check: false }` with
//! the graded values. The server counts failures for quarantine (`core::board`); the
//! agent only measures.

use std::sync::Arc;

use testfarm_api::board::{BoardReport, HealthLevel};

use super::{BoardHandle, BoardReports};

/// Runs forever (the agent aborts it on shutdown). Boards without a probe return at once.
pub async fn idle_probe_loop<B: BoardReports>(board: Arc<BoardHandle>, reports: B) {
    let Some(h) = board.config.health.clone() else {
        return;
    };
    if h.probe.is_none() {
        return;
    }
    let mut tick = tokio::time::interval(h.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        if board.holder().is_some() {
            continue;
        }
        probe_once(&board, &reports).await;
    }
}

/// One idle probe and its report; `None` when the board has no probe.
pub async fn probe_once<B: BoardReports>(board: &BoardHandle, reports: &B) -> Option<BoardReport> {
    let result = testfarm_board::probe::run_probe(&board.config).await?;
    let report = match result {
        Ok(h) => BoardReport::Health {
            passed: h.level != HealthLevel::Degraded,
            level: h.level,
            findings: h.findings,
            values: h.values,
            check: false,
        },
        Err(e) => BoardReport::Health {
            passed: false,
            level: HealthLevel::Degraded,
            findings: vec![format!("health probe: {e}")],
            values: Default::default(),
            check: false,
        },
    };
    reports.board_report(board.name(), report.clone()).await;
    Some(report)
}
