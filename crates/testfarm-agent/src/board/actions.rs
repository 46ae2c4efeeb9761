//! The server's board actions (from the work poll): power on/off/cycle/status, a health
//! check, a lease-end release, a console session. Each is bounded and answered exactly
//! once with a [`BoardActionResult`]: the caller posts what [`handle`] returns. A manual
//! board answers power actions with `operator_action_needed` and its instructions; a board
//! without drivers (`[[resource]] kind = "board"`) answers them with a clear failure, and
//! `release` with ok (nothing to do).

use std::time::Duration;

use testfarm_api::board::{
    BoardAction, BoardActionKind, BoardActionResult, BoardActivity, BoardReport, PowerState,
};
use testfarm_board::boot::{probe_alive, watch_boot_since};
use testfarm_board::power::PowerAction;

use super::{BoardHandle, BoardReports, PowerEnd, api_state};

/// Longest any action runs (a health check: cycle + boot timeout + probe, a session: the
/// session's own end). Past it the action is answered failed.
pub const ACTION_BOUND: Duration = Duration::from_secs(30 * 60);
/// Typed to see whether the shell answers (`probe_alive`).
const ALIVE_COMMAND: &str = "echo testfarm-alive\n";
const ALIVE_TIMEOUT: Duration = Duration::from_secs(10);

fn failed(detail: impl Into<String>) -> BoardActionResult {
    BoardActionResult {
        ok: false,
        power: None,
        detail: detail.into(),
        operator_action_needed: false,
    }
}

fn ok(detail: impl Into<String>) -> BoardActionResult {
    BoardActionResult {
        ok: true,
        power: None,
        detail: detail.into(),
        operator_action_needed: false,
    }
}

/// The answer for a board this agent registered without drivers.
pub fn without_drivers(action: &BoardAction) -> BoardActionResult {
    match action.action {
        BoardActionKind::Release => ok("no drivers configured: nothing to do"),
        other => failed(format!(
            "board {} has no drivers configured (a [[resource]] kind = \"board\" row): cannot {}",
            action.board,
            other.as_str()
        )),
    }
}

/// Carries out one action, bounded by [`ACTION_BOUND`].
pub async fn handle<B: BoardReports>(
    board: &BoardHandle,
    action: &BoardAction,
    reports: &B,
    client: Option<&crate::client::Client>,
) -> BoardActionResult {
    match tokio::time::timeout(ACTION_BOUND, handle_inner(board, action, reports, client)).await {
        Ok(r) => r,
        Err(_) => failed(format!(
            "{} on {} did not end within {ACTION_BOUND:?}",
            action.action.as_str(),
            board.name()
        )),
    }
}

async fn handle_inner<B: BoardReports>(
    board: &BoardHandle,
    action: &BoardAction,
    reports: &B,
    client: Option<&crate::client::Client>,
) -> BoardActionResult {
    let power_action = match action.action {
        BoardActionKind::PowerOn => Some(PowerAction::On),
        BoardActionKind::PowerOff => Some(PowerAction::Off),
        BoardActionKind::PowerCycle => Some(PowerAction::Cycle),
        BoardActionKind::PowerStatus => Some(PowerAction::Status),
        _ => None,
    };
    if let Some(a) = power_action {
        return match super::power(board, a, board.holder().as_deref(), reports).await {
            PowerEnd::Done(s) => BoardActionResult {
                ok: true,
                power: Some(api_state(s)),
                detail: format!("power {}: done", a.as_str()),
                operator_action_needed: false,
            },
            PowerEnd::Operator(instructions) => BoardActionResult {
                ok: false,
                power: Some(PowerState::Unknown),
                detail: instructions,
                operator_action_needed: true,
            },
            PowerEnd::Failed(e) => failed(e),
        };
    }
    match action.action {
        BoardActionKind::Release => {
            if let (Some(ended), Some(held)) = (&action.lease_id, board.holder_lease())
                && *ended != held
            {
                return ok(format!(
                    "lease {ended} ended, but board {} is held under lease {held} now: left as it is",
                    board.name()
                ));
            }
            let said = super::job::release(board, None, reports).await;
            if super::job::release_failed(&said) {
                failed(said)
            } else {
                ok(said)
            }
        }
        BoardActionKind::HealthCheck => {
            // After an idle recovery under way: both would power-cycle the board, and the
            // check must judge its own boot.
            let _recovering = board.recovering.lock().await;
            if let Some(job) = board.holder() {
                return failed(format!("board {} is held by job {job}", board.name()));
            }
            health_check(board, reports).await
        }
        BoardActionKind::Console => {
            let Some(session) = &action.session else {
                return failed("a console action without a session");
            };
            let Some(client) = client else {
                return failed("this agent has no server connection to dial a session through");
            };
            match super::session::relay(board, client, session).await {
                Ok(said) => ok(said),
                Err(e) => failed(e),
            }
        }
        _ => failed(format!("unexpected action {}", action.action.as_str())),
    }
}

/// Power-cycle, watch the boot, check the shell answers, run the probe: the check that
/// brings a quarantined board back. Reports `Health { check: true }`.
pub async fn health_check<B: BoardReports>(board: &BoardHandle, reports: &B) -> BoardActionResult {
    let name = board.name().to_string();
    reports
        .board_report(
            &name,
            BoardReport::Activity {
                activity: BoardActivity::Checking,
                job_id: None,
            },
        )
        .await;
    let mut findings = Vec::new();
    let mut values = std::collections::BTreeMap::new();
    let mut level = testfarm_api::board::HealthLevel::Ok;
    let passed = async {
        let mut attached = match board.hub.attach().await {
            Ok(a) => a,
            Err(e) => {
                findings.push(e);
                return false;
            }
        };
        // What the board said before the cycle (a prompt still in flight) is not its boot.
        let cycled_at = std::time::SystemTime::now();
        match super::power(board, PowerAction::Cycle, None, reports).await {
            PowerEnd::Done(_) => {}
            PowerEnd::Operator(i) => {
                findings.push(format!("manual power: an operator must cycle it: {i}"));
                return false;
            }
            PowerEnd::Failed(e) => {
                findings.push(format!("power cycle failed: {e}"));
                return false;
            }
        }
        let rules = testfarm_core::board::boot::BootRules::from(&board.config.boot);
        let boot = watch_boot_since(&mut attached.console, rules, 10, &mut |_| {}, cycled_at).await;
        if !boot.verdict.booted() {
            findings.push(boot.verdict.describe());
            return false;
        }
        findings.push(boot.verdict.describe());
        board.set_booted(true);
        if let Some(user) = &board.config.boot.login {
            let _ = attached.console.write(format!("{user}\n").as_bytes()).await;
        }
        let expect = regex::Regex::new("^testfarm-alive").ok();
        let alive = match &expect {
            Some(e) => probe_alive(&mut attached.console, ALIVE_COMMAND, e, ALIVE_TIMEOUT).await,
            None => false,
        };
        if !alive {
            findings.push(format!("the shell did not answer within {ALIVE_TIMEOUT:?}"));
            return false;
        }
        findings.push("the shell answers".into());
        match testfarm_board::probe::run_probe(&board.config).await {
            None => true,
            Some(Ok(h)) => {
                level = h.level;
                values = h.values;
                findings.extend(h.findings);
                h.level != testfarm_api::board::HealthLevel::Degraded
            }
            Some(Err(e)) => {
                findings.push(format!("health probe: {e}"));
                false
            }
        }
    }
    .await;
    if !passed {
        level = testfarm_api::board::HealthLevel::Degraded;
    }
    board.hub.detach();
    reports
        .board_report(
            &name,
            BoardReport::Health {
                passed,
                level,
                findings: findings.clone(),
                values,
                check: true,
            },
        )
        .await;
    reports
        .board_report(
            &name,
            BoardReport::Activity {
                activity: BoardActivity::Idle,
                job_id: None,
            },
        )
        .await;
    BoardActionResult {
        ok: passed,
        power: None,
        detail: findings.join("; "),
        operator_action_needed: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Quiet;
    impl BoardReports for Quiet {
        async fn board_report(&self, _: &str, _: BoardReport) {}
    }

    #[tokio::test]
    async fn a_late_release_leaves_a_board_held_under_a_newer_lease_alone() {
        let toml = "[[board]]\nname = \"b1\"\nboard_type = \"t\"\narch = \"arm\"\npower = { driver = \"command\", on = \"exit 1\", off = \"exit 1\" }\nconsole = { driver = \"tcp\", address = \"127.0.0.1:1\" }\n";
        let b = BoardHandle::new(testfarm_board::parse_boards(toml).unwrap().remove(0));
        b.set_holder(Some(("job-2".into(), "lease-2".into())));
        let action = BoardAction {
            id: "a1".into(),
            board: "b1".into(),
            action: BoardActionKind::Release,
            requested_by: "reaper".into(),
            reason: None,
            lease_id: Some("lease-1".into()),
            session: None,
        };
        let r = handle(&b, &action, &Quiet, None).await;
        assert!(
            r.ok && r.detail.contains("held under lease lease-2"),
            "{r:?}"
        );
        // For the lease that holds it (or none named), release runs: here the power fails.
        let r = handle(
            &b,
            &BoardAction {
                lease_id: Some("lease-2".into()),
                ..action
            },
            &Quiet,
            None,
        )
        .await;
        assert!(!r.ok && r.detail.contains("power off failed"), "{r:?}");
    }
}
