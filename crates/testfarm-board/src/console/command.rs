//! A process as the console: its stdout is what the board prints, its stdin the keyboard
//! (`qemu … -serial stdio`, `picocom -q /dev/ttyACM0`, `socat - UNIX:/run/board.sock`).
//! The process lives in its own group and is killed with the console.

use std::process::Stdio;

use futures::FutureExt;
use futures::future::BoxFuture;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use super::{Console, ConsoleDriver};
use crate::error::{BoardError, Result};
use crate::template::{Context, render};

pub struct CommandConsoleDriver {
    pub command: String,
    pub ctx: Context,
    pub max_line: usize,
}

/// Kills the console process's group when the console is dropped.
struct GroupGuard {
    pid: Option<u32>,
    _child: Child,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.pid.and_then(|p| i32::try_from(p).ok()) {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

impl ConsoleDriver for CommandConsoleDriver {
    fn open(&self) -> BoxFuture<'_, Result<Console>> {
        async move {
            let line = render(&self.command, &self.ctx)?;
            let mut child = Command::new("sh")
                .arg("-c")
                .arg(&line)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .process_group(0)
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| BoardError::io(format!("console: starting `{line}`"), e))?;
            let (Some(stdout), Some(stdin)) = (child.stdout.take(), child.stdin.take()) else {
                return Err(BoardError::Console {
                    what: line,
                    detail: "no pipes to the console process".into(),
                });
            };
            let guard = GroupGuard {
                pid: child.id(),
                _child: child,
            };
            Ok(Console::from_io(
                stdout,
                stdin,
                self.max_line,
                Some(Box::new(guard)),
            ))
        }
        .boxed()
    }
}
