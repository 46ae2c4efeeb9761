//! Boards with drivers (`[[board]]` tables): what the agent does with the power, console
//! and flash drivers of `testfarm-board` — register them with what it found, run board
//! jobs (deploy = flash + power-cycle + boot watch; `via: console` steps), answer the
//! server's board actions, probe idle boards' health, and leave every board safe when a
//! lease ends. The rules (boot verdict, recovery policy, health thresholds) are
//! `testfarm_core::board`; this module only carries them out, each operation bounded.
//!
//! - [`hub`]: one owner per console, fanned out to every user.
//! - [`register`]: verification at start (power status, console open) → `AgentResource`.
//! - [`job`]: a job's hold on its board: capture, `console.log`, release at the end.
//! - [`deploy`]: `deploy` and `boot` steps on a board.
//! - [`console_step`]: `shell`/`test` steps typed into the console, hang recovery.
//! - [`actions`]: power, health check, release and console session actions.
//! - [`session`]: an interactive console session relayed over a WebSocket.
//! - [`health`]: the idle health probe loop.

pub mod actions;
pub mod console_step;
pub mod deploy;
pub mod health;
pub mod hub;
pub mod job;
pub mod register;
pub mod session;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use testfarm_api::board::{BoardReport, PowerState as ApiPowerState};
use testfarm_board::BoardConfig;
use testfarm_board::config::PowerConfig;
use testfarm_board::flash::{FlashDriver, flash_driver};
use testfarm_board::power::{PowerAction, PowerDriver, PowerOutcome, PowerState, power_driver};

use crate::client::Client;

/// Belt and braces around a driver's own timeouts (a cycle is off + delay + on, each
/// bounded by the driver).
const POWER_BOUND: Duration = Duration::from_secs(300);

/// One board with its drivers; shared by the job that holds it, actions and the probe.
pub struct BoardHandle {
    pub config: BoardConfig,
    pub power: Box<dyn PowerDriver>,
    pub flash: Option<Box<dyn FlashDriver>>,
    pub hub: hub::Hub,
    /// The job (and its lease) holding the board now: idle probes and health checks leave
    /// it alone, and a late `release` for another lease does not touch it.
    holder: Mutex<Option<(String, String)>>,
    /// The board booted (its prompt was seen) since its last power change through this
    /// agent: the idle probe then expects its console to answer (`core::board::liveness`).
    booted: std::sync::atomic::AtomicBool,
    /// Held while an idle board is being recovered (`health::recover_idle`); a job that
    /// arrives meanwhile takes the board only once the recovery is over.
    pub(crate) recovering: tokio::sync::Mutex<()>,
}

impl BoardHandle {
    pub fn new(config: BoardConfig) -> BoardHandle {
        let console = testfarm_board::console::console_driver(&config);
        BoardHandle {
            power: power_driver(&config),
            flash: flash_driver(&config),
            hub: hub::Hub::new(&config.name, console, config.console.max_line()),
            holder: Mutex::new(None),
            booted: std::sync::atomic::AtomicBool::new(false),
            recovering: tokio::sync::Mutex::new(()),
            config,
        }
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The job holding the board, if any.
    pub fn holder(&self) -> Option<String> {
        self.holder
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(job, _)| job.clone())
    }

    /// The lease of the job holding the board, if any.
    pub fn holder_lease(&self) -> Option<String> {
        self.holder
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(_, lease)| lease.clone())
    }

    pub(crate) fn set_holder(&self, job_and_lease: Option<(String, String)>) {
        *self.holder.lock().unwrap_or_else(|e| e.into_inner()) = job_and_lease;
    }

    /// Whether the board is known to have booted since its last power change.
    pub fn booted(&self) -> bool {
        self.booted.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// A boot watch saw the prompt (`true`), or the power changed (`false`).
    pub fn set_booted(&self, booted: bool) {
        self.booted
            .store(booted, std::sync::atomic::Ordering::SeqCst);
    }

    /// The power driver's name, as registered (`board.power_method`).
    pub fn power_method(&self) -> &'static str {
        match &self.config.power {
            PowerConfig::Command(_) => "command",
            PowerConfig::Http(_) => "http",
            PowerConfig::Qemu(_) => "qemu",
            PowerConfig::Manual(_) => "manual",
        }
    }
}

/// A board as an executor target: cheap to clone.
#[derive(Clone)]
pub struct BoardTarget(pub Arc<BoardHandle>);

impl std::fmt::Debug for BoardTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BoardTarget({})", self.0.name())
    }
}

/// Where board reports go (`POST /agents/boards/{name}/report`); a recorder in tests.
pub trait BoardReports: Send + Sync {
    fn board_report(&self, board: &str, report: BoardReport) -> impl Future<Output = ()> + Send;
}

impl BoardReports for Client {
    async fn board_report(&self, board: &str, report: BoardReport) {
        if let Err(e) = Client::board_report(self, board, &report).await {
            tracing::warn!(%board, error = %e, "board report not delivered");
        }
    }
}

/// The api's power state for a driver's.
pub fn api_state(s: PowerState) -> ApiPowerState {
    match s {
        PowerState::On => ApiPowerState::On,
        PowerState::Off => ApiPowerState::Off,
        PowerState::Unknown => ApiPowerState::Unknown,
    }
}

/// How a power operation ended, in the words reports and action results use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PowerEnd {
    Done(PowerState),
    /// Manual power: these instructions for a person.
    Operator(String),
    Failed(String),
}

/// Switches the power, bounded, and reports it (for the board's power history).
pub async fn power<B: BoardReports>(
    board: &BoardHandle,
    action: PowerAction,
    job_id: Option<&str>,
    reports: &B,
) -> PowerEnd {
    if action != PowerAction::Status {
        board.set_booted(false);
    }
    let end = match tokio::time::timeout(POWER_BOUND, board.power.act(action)).await {
        Ok(Ok(PowerOutcome::Done(s))) => PowerEnd::Done(s),
        Ok(Ok(PowerOutcome::OperatorActionNeeded { instructions, .. })) => {
            PowerEnd::Operator(instructions)
        }
        Ok(Err(e)) => PowerEnd::Failed(e.to_string()),
        Err(_) => PowerEnd::Failed(format!(
            "power {} {}: no answer within {POWER_BOUND:?}",
            action.as_str(),
            board.name()
        )),
    };
    let (ok, state, detail) = match &end {
        PowerEnd::Done(s) => (true, Some(api_state(*s)), String::new()),
        PowerEnd::Operator(i) => (false, None, format!("operator action needed: {i}")),
        PowerEnd::Failed(e) => (false, None, e.clone()),
    };
    reports
        .board_report(
            board.name(),
            BoardReport::Power {
                action: action.as_str().to_string(),
                ok,
                state,
                detail,
                job_id: job_id.map(str::to_string),
            },
        )
        .await;
    end
}

/// What an operator is told to restore a board a deploy left broken.
pub fn restore_hint(board: &str) -> String {
    format!("restore the last known-good image with `testfarm board restore {board}`")
}
