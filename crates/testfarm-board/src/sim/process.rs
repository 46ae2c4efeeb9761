//! The simulated board as its own process (`testfarm sim-board`, or a crate's test binary
//! that speaks the same words through [`super::cli`]): started on a state directory, its
//! console's address read back from that directory once it listens. Killed when dropped,
//! with the board's console gone as a dead board's is. One harness for every test that
//! needs a board process of its own, whichever binary runs it.

use std::path::Path;
use std::time::Duration;

use crate::error::{BoardError, Result};

/// Longest wait for the board to write its console's address.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A running simulated board process.
pub struct SimProcess {
    _child: tokio::process::Child,
    /// The console's address (`127.0.0.1:PORT`, `/dev/pts/N`).
    pub console: String,
}

impl SimProcess {
    /// Runs `program --console CONSOLE --state-dir DIR EXTRA…` and waits (bounded) for
    /// it to say where its console is.
    pub async fn start(
        program: &Path,
        console: &str,
        state_dir: &Path,
        extra: &[&str],
    ) -> Result<SimProcess> {
        let file = super::console_file(state_dir);
        let _ = std::fs::remove_file(&file);
        let child = tokio::process::Command::new(program)
            .args(["--console", console, "--state-dir"])
            .arg(state_dir)
            .args(extra)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| BoardError::io(format!("starting {}", program.display()), e))?;
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(s) = std::fs::read_to_string(&file)
                && s.ends_with('\n')
            {
                return Ok(SimProcess {
                    _child: child,
                    console: s.trim().to_string(),
                });
            }
            if tokio::time::Instant::now() > deadline {
                return Err(BoardError::Timeout {
                    what: format!("the simulated board {} to start", program.display()),
                    after: START_TIMEOUT,
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
