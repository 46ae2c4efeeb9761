//! Registration with verification (seed 004 R8): before a board is offered to anyone, the
//! agent reads its power status and opens its console, each bounded, and registers what it
//! found. A board that cannot be reached is registered `offline` with the reason — never
//! silently dropped, so an operator sees it and why. A powered-off board's console is
//! silent: opening it is the check, not hearing from it.

use std::time::{Duration, Instant};

use testfarm_api::agent::AgentResource;
use testfarm_api::board::QuarantineSettings;
use testfarm_api::resource::{BoardInfo, Capabilities, Labels, ResourceKind};
use testfarm_board::console::ConsoleEvent;
use testfarm_board::power::PowerAction;

use super::{BoardHandle, PowerEnd};

/// How long the console is listened to after it opened (to say what it printed).
const LISTEN: Duration = Duration::from_secs(1);

/// What verification found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub lines: Vec<String>,
    pub offline_reason: Option<String>,
}

struct NoReports;

impl super::BoardReports for NoReports {
    async fn board_report(&self, _: &str, _: testfarm_api::board::BoardReport) {}
}

/// Checks power status and the console of one board, each bounded.
pub async fn verify(board: &BoardHandle) -> Verified {
    let mut lines = Vec::new();
    let mut problems = Vec::new();
    match super::power(board, PowerAction::Status, None, &NoReports).await {
        PowerEnd::Done(s) => lines.push(format!(
            "power ({}): status {}",
            board.power_method(),
            match s {
                testfarm_board::power::PowerState::On => "on",
                testfarm_board::power::PowerState::Off => "off",
                testfarm_board::power::PowerState::Unknown =>
                    "unknown (the driver cannot read it back)",
            }
        )),
        PowerEnd::Operator(i) => {
            lines.push(format!("power (manual): an operator switches it: {i}"))
        }
        PowerEnd::Failed(e) => {
            lines.push(format!("power ({}): {e}", board.power_method()));
            problems.push(format!("power does not answer: {e}"));
        }
    }
    match board.hub.attach().await {
        Ok(mut a) => {
            let start = Instant::now();
            let (mut n, mut bytes) = (0usize, 0usize);
            let mut closed = None;
            while start.elapsed() < LISTEN {
                let left = LISTEN.saturating_sub(start.elapsed());
                match tokio::time::timeout(left, a.console.next()).await {
                    Ok(ConsoleEvent::Line(l)) => {
                        n += 1;
                        bytes += l.text.len();
                    }
                    Ok(ConsoleEvent::Closed { reason }) => {
                        closed = Some(reason);
                        break;
                    }
                    Err(_) => break,
                }
            }
            match closed {
                Some(reason) => {
                    lines.push(format!("console: opened, then closed: {reason}"));
                    problems.push(format!("console closed right after opening: {reason}"));
                }
                None if n == 0 => lines.push(format!(
                    "console: open, silent for {LISTEN:?} (fine for a board that is off)"
                )),
                None => lines.push(format!(
                    "console: open, {n} lines ({bytes} bytes) in {LISTEN:?}"
                )),
            }
            drop(a);
            board.hub.detach();
        }
        Err(e) => {
            lines.push(format!("console: {e}"));
            problems.push(format!("console cannot be opened: {e}"));
        }
    }
    match &board.flash {
        Some(_) => lines.push(format!(
            "flash: configured{}",
            board
                .config
                .flash
                .as_ref()
                .and_then(|f| f.flash_station.as_ref())
                .map(|s| format!(" (flash station {s}, not used yet: this agent flashes)"))
                .unwrap_or_default()
        )),
        None => lines.push("flash: none configured (deploy steps cannot flash it)".into()),
    }
    Verified {
        lines,
        offline_reason: (!problems.is_empty()).then(|| problems.join("; ")),
    }
}

/// The board as registered: its labels plus `board_type` and `arch`, capabilities,
/// board info, what verification found and its quarantine settings.
pub fn resource(board: &BoardHandle, v: &Verified) -> AgentResource {
    let c = &board.config;
    let mut labels = Labels::new();
    for (k, val) in &c.labels {
        labels.insert(k.as_str(), val.clone());
    }
    if labels.get("board_type").is_none() {
        labels.insert("board_type", c.board_type.clone());
    }
    if labels.get("arch").is_none() {
        labels.insert("arch", c.arch.clone());
    }
    AgentResource {
        name: c.name.clone(),
        kind: ResourceKind::Board,
        labels,
        capabilities: Capabilities {
            arch: Some(c.arch.clone()),
            peripherals: c.peripherals.clone(),
            targets: c.targets.clone(),
            ..Capabilities::default()
        },
        board: Some(BoardInfo {
            board_type: Some(c.board_type.clone()),
            serial_number: None,
            power_method: Some(board.power_method().to_string()),
            flash_station: c.flash.as_ref().and_then(|f| f.flash_station.clone()),
        }),
        offline_reason: v.offline_reason.clone(),
        verification: v.lines.clone(),
        quarantine: Some(QuarantineSettings {
            health_failures: c.quarantine.health_failures,
            lab_errors: c.quarantine.lab_errors,
            window_ms: u64::try_from(c.quarantine.window.as_millis()).unwrap_or(u64::MAX),
        }),
    }
}

/// Verifies every board concurrently and logs what was found.
pub async fn verify_all(boards: &[std::sync::Arc<BoardHandle>]) -> Vec<AgentResource> {
    let checks = boards.iter().map(|b| async move {
        let v = verify(b).await;
        match &v.offline_reason {
            None => tracing::info!(board = %b.name(), found = %v.lines.join("; "), "board verified"),
            Some(r) => tracing::error!(board = %b.name(), reason = %r, found = %v.lines.join("; "), "board registered offline"),
        }
        resource(b, &v)
    });
    futures::future::join_all(checks).await
}
