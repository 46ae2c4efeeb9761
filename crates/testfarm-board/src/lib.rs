//! The board driver layer of testfarm: how an agent switches a board's power, reads and
//! types into its console, flashes it, decides whether it booted, and when to cycle or
//! quarantine it — plus a simulated board that behaves like one on a TCP socket or a pty.
//!
//! - [`config`]: the `[[board]]` tables, checked at start with located errors.
//! - [`power`], [`console`], [`flash`]: one trait each, one implementation per wiring.
//! - [`rules`]: boot verdicts, recovery and quarantine as pure functions (`testfarm_core::board`).
//! - [`boot`]: the boot watcher that feeds console lines to the rules; [`recover`] carries
//!   out the recovery policy with the drivers.
//! - [`sim`]: the simulated board (`testfarm sim-board`).
//! - [`bench`]: console throughput against `cat` of the same pty.
//!
//! The agent drives boards through it (`testfarm_agent::board`, docs/agent.md).

pub mod bench;
pub mod boot;
pub mod config;
pub mod console;
pub mod error;
pub mod flash;
pub mod power;
pub mod probe;
pub mod process;
pub mod recover;
/// The board rules live in `testfarm-core` (pure, shared with the server).
pub use testfarm_core::board as rules;
pub mod sim;
pub mod template;

pub use config::{BoardConfig, BoardConfigError, parse_boards};
pub use error::BoardError;
