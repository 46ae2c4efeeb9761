//! The idle health probe: every `health.interval`, when no job holds the board, poke its
//! console if it should be alive (on and booted: `core::board::liveness`) and run its
//! probe command (bounded by `health.timeout`), and report one `Health { check: false }`
//! with both. A console that stays silent counts like a failed probe; the server counts
//! failures for quarantine (`core::board::quarantine`, with its hysteresis). The agent
//! only measures.

use std::sync::Arc;
use std::time::Duration;

use testfarm_api::board::{BoardActivity, BoardReport, HealthLevel};
use testfarm_board::console::ConsoleEvent;
use testfarm_board::power::{PowerOutcome, PowerState};
use testfarm_board::recover::{RecoveryOutcome, recover};
use testfarm_core::board::liveness::{Liveness, LivenessContext, combine, expected};

use super::{BoardHandle, BoardReports};

/// Typed to poke the console: a shell or a login prompt answers Enter (a carriage
/// return, what a terminal sends) with a new prompt.
const POKE: &[u8] = b"\r";
/// Bound on reading the power status before a poke.
const STATUS_BOUND: Duration = Duration::from_secs(30);

/// Runs forever (the agent aborts it on shutdown). Boards without a `health` table
/// return at once.
pub async fn idle_probe_loop<B: BoardReports>(board: Arc<BoardHandle>, reports: B) {
    let Some(h) = board.config.health.clone() else {
        return;
    };
    if h.probe.is_none() && !h.console {
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

/// Whether the console should answer now, reading the power status when the driver can.
async fn should_answer(board: &BoardHandle) -> Result<(), &'static str> {
    let powered = if board.booted() && board.holder().is_none() {
        match tokio::time::timeout(STATUS_BOUND, board.power.status()).await {
            Ok(Ok(PowerOutcome::Done(PowerState::On))) => Some(true),
            Ok(Ok(PowerOutcome::Done(PowerState::Off))) => Some(false),
            _ => None,
        }
    } else {
        None
    };
    expected(&LivenessContext {
        powered,
        booted: board.booted(),
        held: board.holder().is_some(),
    })
}

/// Pokes the console and waits up to `limit` for any output back.
pub async fn poke_console(board: &BoardHandle, limit: Duration) -> Liveness {
    let mut attached = match board.hub.attach().await {
        Ok(a) => a,
        Err(why) => return Liveness::Unreachable { why },
    };
    let start = tokio::time::Instant::now();
    if let Err(e) = attached.console.write(POKE).await {
        return Liveness::Unreachable { why: e.to_string() };
    }
    let answered = tokio::time::timeout(limit, async {
        loop {
            match attached.console.next().await {
                ConsoleEvent::Line(l) if !l.text.trim().is_empty() => return Some(start.elapsed()),
                ConsoleEvent::Line(_) => {}
                ConsoleEvent::Closed { .. } => return None,
            }
        }
    })
    .await
    .ok()
    .flatten();
    Liveness::judge(answered, limit)
}

/// One idle probe and its report; `None` when nothing was checked (no probe, and the
/// console is not expected to answer).
pub async fn probe_once<B: BoardReports>(board: &BoardHandle, reports: &B) -> Option<BoardReport> {
    let h = board.config.health.as_ref()?;
    // A console already open (an operator's session, a health check) is someone else's
    // to type into; the idle poke waits for the next round.
    let console = if h.console && !board.hub.is_open() && should_answer(board).await.is_ok() {
        Some(poke_console(board, h.console_timeout).await)
    } else {
        None
    };
    let (mut level, mut findings, mut values, probe_passed) =
        match testfarm_board::probe::run_probe(&board.config).await {
            None => (HealthLevel::Ok, Vec::new(), Default::default(), None),
            Some(Ok(r)) => {
                let passed = r.level != HealthLevel::Degraded;
                (r.level, r.findings, r.values, Some(passed))
            }
            Some(Err(e)) => (
                HealthLevel::Degraded,
                vec![format!("health probe: {e}")],
                Default::default(),
                Some(false),
            ),
        };
    let passed = combine(probe_passed, console.as_ref())?;
    if let Some(c) = &console {
        findings.insert(0, c.finding());
        values.insert("console".to_string(), c.value().to_string());
        if !c.alive() {
            level = HealthLevel::Degraded;
        }
    }
    let report = BoardReport::Health {
        passed,
        level,
        findings,
        values,
        check: false,
    };
    reports.board_report(board.name(), report.clone()).await;
    if let Some(Liveness::Silent { limit }) = &console {
        recover_idle(board, reports, *limit).await;
    }
    Some(report)
}

/// An idle board whose console went silent while it should answer hangs: it is brought
/// back per its recovery policy (`[board] recovery`: power cycles with backoff, then
/// "needs manual intervention", which takes it out of the pool with an alert), exactly as
/// a board that hangs during a job, before a job finds it hung. A job that arrives
/// meanwhile waits for the recovery ([`BoardHandle::recovering`]). `tries = 0` turns
/// automatic cycles off: the silence then only counts toward quarantine.
pub async fn recover_idle<B: BoardReports>(board: &BoardHandle, reports: &B, silent: Duration) {
    let policy = board.config.recovery;
    if policy.tries == 0 {
        return;
    }
    let _recovering = board.recovering.lock().await;
    if board.holder().is_some() {
        return; // a job took the board since the poke: it is the job's now
    }
    let name = board.name();
    let what = format!(
        "the idle board hung (its console did not answer within {})",
        testfarm_core::duration::format(silent)
    );
    reports
        .board_report(
            name,
            BoardReport::Activity {
                activity: BoardActivity::Recovering,
                job_id: None,
            },
        )
        .await;
    let outcome = match board.hub.attach().await {
        Ok(mut attached) => {
            let rules = testfarm_core::board::boot::BootRules::from(&board.config.boot);
            recover(
                board.power.as_ref(),
                &mut attached.console,
                &rules,
                &policy,
                &mut |_| {},
            )
            .await
        }
        Err(why) => RecoveryOutcome::NeedsManualIntervention {
            reason: format!("its console cannot be opened: {why}"),
            attempts: Vec::new(),
        },
    };
    board.set_booted(matches!(outcome, RecoveryOutcome::Recovered { .. }));
    let (recovered, attempts, detail) = outcome.describe(&what);
    tracing::info!(board = name, recovered, %detail, "idle recovery");
    reports
        .board_report(
            name,
            BoardReport::Recovery {
                job_id: None,
                recovered,
                attempts,
                detail,
            },
        )
        .await;
    reports
        .board_report(
            name,
            BoardReport::Activity {
                activity: BoardActivity::Idle,
                job_id: None,
            },
        )
        .await;
}
