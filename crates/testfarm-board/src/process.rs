//! Running an operator's command line (`uhubctl …`, `sp-runner … flash …`) so that it can
//! never hang the agent: `sh -c` in its own process group, stdin closed, output captured up
//! to a bound, and on timeout the whole group killed (a relay script's children too).

use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use crate::error::{BoardError, Result};

/// Output kept per stream; a chatty flash tool's megabytes are not needed to say why it
/// failed.
const MAX_CAPTURE: usize = 64 * 1024;

#[derive(Debug, Clone, Default)]
pub struct CommandOutput {
    pub stdout: String,
    pub stderr: String,
}

async fn capture<R: AsyncRead + Unpin>(mut r: R) -> String {
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = MAX_CAPTURE.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    String::from_utf8_lossy(&kept).into_owned()
}

/// Runs `command` with `sh -c`; non-zero exit and timeout are named errors. `what` says
/// what it was for ("power on rpi4-1") in the error.
pub async fn run_shell(what: &str, command: &str, timeout: Duration) -> Result<CommandOutput> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| BoardError::io(format!("{what}: starting `{command}`"), e))?;
    let pid = child.id();
    let out = child.stdout.take().map(|s| tokio::spawn(capture(s)));
    let err = child.stderr.take().map(|s| tokio::spawn(capture(s)));
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(status) => status.map_err(|e| BoardError::io(format!("{what}: waiting"), e))?,
        Err(_) => {
            kill_group(pid);
            let _ = child.wait().await;
            return Err(BoardError::CommandTimeout {
                what: what.to_string(),
                command: command.to_string(),
                after: timeout,
            });
        }
    };
    // A grandchild that left the group could hold the pipes open: do not wait for it long.
    let grace = Duration::from_secs(1);
    let join = |h: Option<tokio::task::JoinHandle<String>>| async move {
        match h {
            Some(h) => tokio::time::timeout(grace, h)
                .await
                .ok()
                .and_then(|r| r.ok())
                .unwrap_or_default(),
            None => String::new(),
        }
    };
    let output = CommandOutput {
        stdout: join(out).await,
        stderr: join(err).await,
    };
    // Whatever the shell left behind in its group goes with it.
    kill_group(pid);
    if status.success() {
        Ok(output)
    } else {
        Err(BoardError::CommandFailed {
            what: what.to_string(),
            command: command.to_string(),
            status: status.to_string(),
            stderr: output.stderr,
        })
    }
}

fn kill_group(pid: Option<u32>) {
    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    }
}
