//! A simulated board for tests and demos: speaks on a TCP socket or a pty like a device's
//! serial console, is switched by a power file that `testfarm sim-board power on|off|status`
//! writes (so the `command` power driver drives it like any relay CLI), and can be told to
//! hang or never boot. Powered off, it is silent and ignores input, as a board is.

pub mod cli;
pub mod power;
pub mod process;
pub mod shell;
mod transport;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use tokio::sync::mpsc;

pub use shell::Behaviour;

use crate::error::{BoardError, Result};

/// Where the console is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsoleSpec {
    /// `tcp:127.0.0.1:0` picks a free port; the chosen address is written to the state dir.
    Tcp(String),
    /// A new pty pair; the slave's path (`/dev/pts/N`) is written to the state dir.
    Pty,
}

impl FromStr for ConsoleSpec {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if s == "pty" {
            return Ok(ConsoleSpec::Pty);
        }
        match s.strip_prefix("tcp:") {
            Some(addr) if addr.rsplit_once(':').is_some() => Ok(ConsoleSpec::Tcp(addr.into())),
            _ => Err(format!("`{s}`: expected tcp:HOST:PORT or pty")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SimOptions {
    pub console: ConsoleSpec,
    pub state_dir: PathBuf,
    pub behaviour: Behaviour,
}

/// The file in the state directory naming the console (`127.0.0.1:4567`, `/dev/pts/3`).
pub fn console_file(state_dir: &Path) -> PathBuf {
    state_dir.join("console")
}

/// How often the board looks at its power file.
const POWER_POLL: Duration = Duration::from_millis(20);

/// Serves the console and runs the board until the process is killed. `ready` gets the
/// console's address once it is listening.
pub async fn run(opts: SimOptions, ready: impl FnOnce(&str)) -> Result<()> {
    std::fs::create_dir_all(&opts.state_dir)
        .map_err(|e| BoardError::io(format!("creating {}", opts.state_dir.display()), e))?;
    let (out_tx, out_rx) = mpsc::channel(256);
    let (in_tx, in_rx) = mpsc::channel(256);
    let (location, _keep) = transport::start(&opts.console, out_rx, in_tx).await?;
    let file = console_file(&opts.state_dir);
    std::fs::write(&file, format!("{location}\n"))
        .map_err(|e| BoardError::io(format!("writing {}", file.display()), e))?;
    ready(&location);
    board_loop(&opts.state_dir, &opts.behaviour, out_tx, in_rx).await;
    Ok(())
}

async fn board_loop(
    dir: &Path,
    behaviour: &Behaviour,
    out: mpsc::Sender<Vec<u8>>,
    mut input: mpsc::Receiver<Vec<u8>>,
) {
    let mut booted_generation = None;
    loop {
        let p = power::read(dir);
        if p.on && booted_generation != Some(p.generation) {
            booted_generation = Some(p.generation);
            let mut io = shell::Io::new(&out, &mut input);
            let hung = tokio::select! {
                _ = shell::powered(&mut io, behaviour) => false,
                _ = power_changes(dir, p.generation) => false,
                _ = hang_asked(dir, p.generation) => true,
            };
            if hung {
                // Told to hang: silent, input ignored, until the power changes.
                tokio::select! {
                    _ = power_changes(dir, p.generation) => {}
                    _ = async { while input.recv().await.is_some() {} } => {}
                }
            }
            continue;
        }
        // Off (or the shell ended): what is typed goes nowhere.
        while input.try_recv().is_ok() {}
        tokio::time::sleep(POWER_POLL).await;
    }
}

async fn hang_asked(dir: &Path, generation: u64) {
    while !power::hang_requested(dir, generation) {
        tokio::time::sleep(POWER_POLL).await;
    }
}

async fn power_changes(dir: &Path, generation: u64) {
    while power::read(dir).generation == generation {
        tokio::time::sleep(POWER_POLL).await;
    }
}
