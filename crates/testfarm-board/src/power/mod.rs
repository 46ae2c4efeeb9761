//! Switching a board's power: one trait, one implementation per way labs do it (a
//! command line, a network PDU, QEMU's monitor, a person). Every action is bounded by the
//! driver's timeout; a failure is a named [`BoardError`], and a board with no remote power
//! answers [`PowerOutcome::OperatorActionNeeded`] instead of pretending.

mod command;
mod http;
mod manual;
mod qemu;

use futures::future::BoxFuture;

pub use command::CommandPowerDriver;
pub use http::HttpPowerDriver;
pub use manual::ManualPowerDriver;
pub use qemu::QemuPowerDriver;

use crate::config::{BoardConfig, PowerConfig};
use crate::error::Result;
use crate::template::Context;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerAction {
    On,
    Off,
    Cycle,
    Status,
}

impl PowerAction {
    pub fn as_str(self) -> &'static str {
        match self {
            PowerAction::On => "on",
            PowerAction::Off => "off",
            PowerAction::Cycle => "cycle",
            PowerAction::Status => "status",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerState {
    On,
    Off,
    /// The driver cannot read the state back (a relay without feedback).
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PowerOutcome {
    /// Done; the state after the action (as far as the driver knows).
    Done(PowerState),
    /// A person has to do it; callers show `instructions` and wait for a confirmation.
    OperatorActionNeeded {
        board: String,
        action: PowerAction,
        instructions: String,
    },
}

pub trait PowerDriver: Send + Sync {
    /// Performs `action` within the driver's timeout.
    fn act(&self, action: PowerAction) -> BoxFuture<'_, Result<PowerOutcome>>;

    fn on(&self) -> BoxFuture<'_, Result<PowerOutcome>> {
        self.act(PowerAction::On)
    }
    fn off(&self) -> BoxFuture<'_, Result<PowerOutcome>> {
        self.act(PowerAction::Off)
    }
    fn cycle(&self) -> BoxFuture<'_, Result<PowerOutcome>> {
        self.act(PowerAction::Cycle)
    }
    fn status(&self) -> BoxFuture<'_, Result<PowerOutcome>> {
        self.act(PowerAction::Status)
    }
}

/// The driver a board's `power` table asks for.
pub fn power_driver(board: &BoardConfig) -> Box<dyn PowerDriver> {
    let ctx = Context::for_board(&board.name, &board.board_type, &board.arch);
    match &board.power {
        PowerConfig::Command(c) => Box::new(CommandPowerDriver::new(&board.name, c.clone(), ctx)),
        PowerConfig::Http(c) => Box::new(HttpPowerDriver::new(&board.name, c.clone(), ctx)),
        PowerConfig::Qemu(c) => Box::new(QemuPowerDriver::new(&board.name, c.clone())),
        PowerConfig::Manual(c) => Box::new(ManualPowerDriver::new(&board.name, c.clone())),
    }
}

/// Reads a status answer when the board says nothing about its format: `on`/`off`,
/// `1`/`0`, `true`/`false` (what most relay CLIs and PDU APIs print).
pub(crate) fn parse_status(output: &str, on: Option<&regex::Regex>) -> PowerState {
    if let Some(on) = on {
        return if on.is_match(output) {
            PowerState::On
        } else {
            PowerState::Off
        };
    }
    match output.trim().to_ascii_lowercase().as_str() {
        "on" | "1" | "true" => PowerState::On,
        "off" | "0" | "false" => PowerState::Off,
        _ => PowerState::Unknown,
    }
}
