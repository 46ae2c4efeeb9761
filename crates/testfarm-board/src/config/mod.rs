//! `[[board]]` tables: how to power, read and flash each board wired to an agent's host.
//!
//! Read in two passes so every error points at the mistake: serde with
//! `deny_unknown_fields` into flat per-section tables ([`raw`]), then per-driver checks
//! (which fields a driver uses, templates, patterns) into the typed [`BoardConfig`]. Both
//! passes report a board, a field path and a line and column ([`locate`]), in the style of
//! the agent's own `agent.toml` errors. Other top-level keys of the file are left alone: the
//! boards live inside the agent's configuration.

mod locate;
mod raw;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use regex::Regex;

pub use raw::{Parity, ReleasePower};

use crate::rules::quarantine::QuarantinePolicy;
use crate::rules::recovery::RecoveryPolicy;

/// One board, checked: every template parses and names known variables, every pattern
/// compiles, each driver has the fields it needs and no others.
#[derive(Debug, Clone)]
pub struct BoardConfig {
    pub name: String,
    pub board_type: String,
    pub arch: String,
    pub labels: BTreeMap<String, String>,
    /// Targets this board (testbed) can serve (seed 000: `sp-grapefruit`).
    pub targets: Vec<String>,
    /// Peripherals wired to it; cannot be measured from the host, so declared.
    pub peripherals: Vec<String>,
    pub power: PowerConfig,
    pub console: ConsoleConfig,
    pub flash: Option<FlashConfig>,
    pub boot: BootConfig,
    pub health: Option<HealthConfig>,
    pub recovery: RecoveryPolicy,
    pub quarantine: QuarantinePolicy,
    /// What a lease's end does to the power (default: off, the safe state).
    pub on_release: ReleasePower,
}

#[derive(Debug, Clone)]
pub enum PowerConfig {
    Command(CommandPower),
    Http(HttpPower),
    Qemu(QemuPower),
    Manual(ManualPower),
}

/// Command lines run with `sh -c` (USB hubs, relays, GPIO, any CLI); templates may use
/// `{{ board.name }}` and `{{ action }}`.
#[derive(Debug, Clone)]
pub struct CommandPower {
    pub on: String,
    pub off: String,
    /// Unset: off, `cycle_delay`, on.
    pub cycle: Option<String>,
    /// Unset: status is `unknown` (many relays cannot be read back).
    pub status: Option<String>,
    /// Matched against the status command's stdout; unset: the output is `on`/`off`/`1`/`0`.
    pub status_on: Option<Regex>,
    pub timeout: Duration,
    pub cycle_delay: Duration,
}

/// A network PDU outlet: `url`/`body` templates see `{{ action }}` (`on`, `off`, `status`).
#[derive(Debug, Clone)]
pub struct HttpPower {
    pub url: String,
    pub method: String,
    pub body: Option<String>,
    pub status_url: Option<String>,
    pub status_on: Option<Regex>,
    pub auth: HttpAuth,
    pub timeout: Duration,
    pub cycle_delay: Duration,
}

/// Secrets are named by environment variable, never written into the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpAuth {
    None,
    Basic { user: String, password_env: String },
    Bearer { token_env: String },
}

/// A QEMU machine as the board: on = run, off = paused, cycle = system reset.
#[derive(Debug, Clone)]
pub struct QemuPower {
    pub qmp: PathBuf,
    pub timeout: Duration,
}

/// No remote power: an operator is asked, and the caller shows them `instructions`.
#[derive(Debug, Clone)]
pub struct ManualPower {
    pub instructions: String,
}

#[derive(Debug, Clone)]
pub enum ConsoleConfig {
    Serial {
        device: PathBuf,
        baud: u32,
        parity: Parity,
        data_bits: u8,
        stop_bits: u8,
        max_line: usize,
    },
    /// ser2net-style: raw bytes over a TCP connection.
    Tcp {
        address: String,
        connect_timeout: Duration,
        max_line: usize,
    },
    /// A process's stdout is the console and its stdin the keyboard (`qemu -serial stdio`,
    /// `picocom`, a pty bridge).
    Command { command: String, max_line: usize },
}

impl ConsoleConfig {
    pub fn max_line(&self) -> usize {
        match self {
            ConsoleConfig::Serial { max_line, .. }
            | ConsoleConfig::Tcp { max_line, .. }
            | ConsoleConfig::Command { max_line, .. } => *max_line,
        }
    }
}

#[derive(Debug, Clone)]
pub struct FlashConfig {
    pub driver: FlashDriverConfig,
    pub timeout: Duration,
    /// Another agent's host that does the flashing (seed 004 R8.5). Recorded here; the
    /// hand-over between agents is not implemented yet.
    pub flash_station: Option<String>,
}

#[derive(Debug, Clone)]
pub enum FlashDriverConfig {
    /// `run` sees `{{ artifacts.NAME }}` (local paths) and `{{ config }}`.
    Command { run: String },
    /// Writes artifact `artifact` over the raw disk image `image` of a QEMU board while
    /// it is paused, then resets it.
    Qemu {
        qmp: PathBuf,
        image: PathBuf,
        artifact: String,
    },
}

#[derive(Debug, Clone)]
pub struct BootConfig {
    /// Seen on the console: the board booted.
    pub expect: Regex,
    /// Seen on the console: the boot failed (`Kernel panic`), no need to wait.
    pub fail: Vec<Regex>,
    pub timeout: Duration,
    /// No console output for this long during boot: the board is silent (dead, unpowered,
    /// wrong console).
    pub silence: Option<Duration>,
    /// This many unreadable lines in a row: wrong baud rate or a broken cable.
    pub max_garbage_lines: u32,
    /// Typed at a login prompt (the `expect` pattern) before console steps run commands;
    /// unset: the console is expected to give a shell without logging in.
    pub login: Option<String>,
    /// The shell's prompt (default `[#$] ?$`): a console step types its command once it
    /// sees one.
    pub prompt: Regex,
}

/// Console liveness and an optional probe command printing `key=value` lines
/// (temperature, power draw, link), compared with thresholds.
#[derive(Debug, Clone)]
pub struct HealthConfig {
    pub probe: Option<String>,
    pub interval: Duration,
    pub timeout: Duration,
    /// Poke the console of an idle board that is on and booted each `interval`: silence
    /// for `console_timeout` counts as a failed health probe (`rules::liveness`).
    pub console: bool,
    pub console_timeout: Duration,
    pub thresholds: BTreeMap<String, Threshold>,
}

pub use crate::rules::health::Threshold;

impl From<&BootConfig> for crate::rules::boot::BootRules {
    fn from(c: &BootConfig) -> Self {
        crate::rules::boot::BootRules {
            expect: c.expect.clone(),
            fail: c.fail.clone(),
            timeout: c.timeout,
            silence: c.silence,
            max_garbage_lines: c.max_garbage_lines,
        }
    }
}

/// A mistake in the board configuration, located.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct BoardConfigError {
    /// The board's name when known (the error may be before its `name`).
    pub board: Option<String>,
    /// Dotted path inside the board (`power.on`); empty for the file itself.
    pub field: String,
    /// 1-based; 0 when no position is known.
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for BoardConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "{}:{}: ", self.line, self.column)?;
        }
        if let Some(board) = &self.board {
            write!(f, "board `{board}`: ")?;
        }
        if !self.field.is_empty() {
            write!(f, "`{}`: ", self.field)?;
        }
        write!(f, "{}", self.message)
    }
}

/// Reads every `[[board]]` table of a TOML text (an agent config or a testbed file).
pub fn parse_boards(text: &str) -> Result<Vec<BoardConfig>, BoardConfigError> {
    let doc = locate::Document::parse(text)?;
    let file: raw::RawFile = toml::from_str(text).map_err(|e| {
        let offset = e.span().map(|s| s.start);
        let message = testfarm_core::diagnostic::with_suggestion(e.message());
        doc.error_at(offset, message)
    })?;
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut boards = Vec::with_capacity(file.board.len());
    for (index, raw) in file.board.into_iter().enumerate() {
        if let Some(first) = seen.insert(raw.name.clone(), index) {
            return Err(doc.error_in(
                index,
                "name",
                format!(
                    "a second board named `{}` (the first is board {})",
                    raw.name,
                    first + 1
                ),
            ));
        }
        let board = raw
            .check()
            .map_err(|(field, message)| doc.error_in(index, &field, message))?;
        boards.push(board);
    }
    Ok(boards)
}

#[cfg(test)]
mod tests;
