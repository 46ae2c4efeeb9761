//! Running one `shell` step: a script in the job's work directory, in its own process
//! group, output into the job's log, ended by its exit, a deadline, or a cancel.
//!
//! The script is written to a file and run by `/bin/sh -e` (or executed directly when it
//! starts with `#!`, so a missing interpreter is a spawn failure, the lab's fault, and not
//! a non-zero exit, the test's). The process group is what gets killed: SIGTERM, then
//! SIGKILL after a grace, so grandchildren go too. Stragglers left in the group when the
//! script exits are killed as well, otherwise they would hold the log pipe open.
//!
//! On an SSH host the same script is copied into the remote work directory and run there
//! by a small wrapper (see [`remote_wrapper`]); the local `ssh` process is the group we
//! kill, and the wrapper kills the remote group when its connection goes.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use bytes::BytesMut;
use nix::sys::signal::{Signal as NixSignal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio::time::Instant;

use crate::control::{JobControl, Signal};
use crate::detect::shell_quote;
use crate::logs::LogWriter;

/// How a process ended.
#[derive(Debug)]
pub enum ProcessEnd {
    Exited(ExitStatus),
    /// It could not be started (missing program or interpreter, bad directory).
    SpawnFailed(std::io::Error),
    TimedOut,
    Cancelled,
    Dropped,
}

/// Exit status the remote wrapper uses for "could not run the script" (missing work
/// directory or interpreter): the lab's fault. ssh itself uses 255.
pub const REMOTE_CANNOT_RUN: i32 = 254;

/// Read size from the child's pipes (a Linux pipe holds 64 KiB).
const READ_BYTES: usize = 64 * 1024;
/// After the group is killed, how long to wait for its pipes to close.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The interpreter a script names on its `#!` line, if any.
pub fn shebang(script: &str) -> Option<&str> {
    let first = script.lines().next()?.strip_prefix("#!")?;
    first.split_whitespace().next()
}

/// The command that runs a local script file.
pub fn local_command(script_path: &Path, script: &str) -> Command {
    if shebang(script).is_some() {
        Command::new(script_path)
    } else {
        let mut c = Command::new("/bin/sh");
        c.arg("-e").arg(script_path);
        c
    }
}

/// The remote command line that runs `script_file` (already in `dir`) with `env`, in its
/// own session, killing its group when the ssh connection's stdin closes or it exits.
/// (The watcher reads the connection through fd 3: an asynchronous list's own stdin is
/// /dev/null in a non-interactive shell.)
pub fn remote_wrapper(
    dir: &str,
    script_file: &str,
    script: &str,
    env: &BTreeMap<String, String>,
    grace: Duration,
) -> String {
    let d = shell_quote(dir);
    let f = shell_quote(script_file);
    let mut w = String::new();
    w.push_str(&format!(
        "cd {d} 2>/dev/null || {{ echo \"testfarm: the work directory {dir} is missing\" >&2; exit {REMOTE_CANNOT_RUN}; }}\n"
    ));
    let run = match shebang(script) {
        Some(interp) => {
            let i = shell_quote(interp);
            w.push_str(&format!(
                "[ -x {i} ] || {{ echo \"testfarm: interpreter {interp} not found\" >&2; exit {REMOTE_CANNOT_RUN}; }}\n"
            ));
            format!("./{f}")
        }
        None => format!("/bin/sh -e {f}"),
    };
    for (k, v) in env {
        w.push_str(&format!("{k}={}; export {k}\n", shell_quote(v)));
    }
    let g = grace.as_secs().max(1);
    w.push_str(&format!(
        "exec 3<&0\n\
         if command -v setsid >/dev/null 2>&1; then setsid {run} </dev/null 3<&- & else {run} </dev/null 3<&- & fi\n\
         p=$!\n\
         ( cat <&3 >/dev/null; kill -TERM -$p 2>/dev/null || kill -TERM $p 2>/dev/null; sleep {g}; kill -KILL -$p 2>/dev/null ) >/dev/null 2>&1 &\n\
         wait $p; rc=$?\n\
         kill -KILL -$p 2>/dev/null\n\
         exit $rc\n"
    ));
    format!("sh -c {}", shell_quote(&w))
}

/// Runs `cmd` in its own process group with output into `log`, until it exits, `deadline`
/// passes, or `control` says cancel/drop. `keep_stdin` holds stdin open (the SSH lifeline);
/// the group id is written to `pgid_file` while it runs.
pub async fn run_process(
    mut cmd: Command,
    log: &LogWriter,
    deadline: Option<Instant>,
    control: &JobControl,
    grace: Duration,
    keep_stdin: bool,
    pgid_file: Option<&Path>,
) -> ProcessEnd {
    cmd.process_group(0)
        .stdin(if keep_stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return ProcessEnd::SpawnFailed(e),
    };
    let pgid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .map(Pid::from_raw);
    if let (Some(f), Some(p)) = (pgid_file, pgid) {
        // A restarted agent kills groups its previous life left running.
        let _ = std::fs::write(f, p.as_raw().to_string());
    }
    let stdin = child.stdin.take();
    let pumps = [
        child
            .stdout
            .take()
            .map(|o| tokio::spawn(pump(o, log.clone()))),
        child
            .stderr
            .take()
            .map(|e| tokio::spawn(pump(e, log.clone()))),
    ];
    let mut signal = control.subscribe();
    let sleep = async {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    let end = tokio::select! {
        status = child.wait() => match status {
            Ok(s) => ProcessEnd::Exited(s),
            Err(e) => ProcessEnd::SpawnFailed(e),
        },
        _ = sleep => {
            terminate(&mut child, pgid, grace).await;
            ProcessEnd::TimedOut
        }
        dropped = async {
            signal.wait_for(|s| *s != Signal::Run).await.map(|s| *s == Signal::Drop).unwrap_or(true)
        } => {
            if dropped {
                kill_group(pgid, NixSignal::SIGKILL);
                let _ = child.wait().await;
                ProcessEnd::Dropped
            } else {
                terminate(&mut child, pgid, grace).await;
                ProcessEnd::Cancelled
            }
        }
    };
    // Anything the script left behind in its group goes now.
    kill_group(pgid, NixSignal::SIGKILL);
    drop(stdin);
    for p in pumps.into_iter().flatten() {
        if tokio::time::timeout(DRAIN_TIMEOUT, p).await.is_err() {
            tracing::warn!("a step's output pipe stayed open after its process group was killed");
        }
    }
    end
}

/// SIGTERM to the group, SIGKILL after `grace` if the leader has not exited.
async fn terminate(child: &mut tokio::process::Child, pgid: Option<Pid>, grace: Duration) {
    kill_group(pgid, NixSignal::SIGTERM);
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        kill_group(pgid, NixSignal::SIGKILL);
        let _ = child.wait().await;
    }
}

fn kill_group(pgid: Option<Pid>, sig: NixSignal) {
    if let Some(pgid) = pgid {
        // ESRCH: the group is already gone, which is what we wanted.
        let _ = killpg(pgid, sig);
    }
}

/// Copies a pipe into the log.
async fn pump<R: AsyncRead + Unpin>(mut r: R, log: LogWriter) {
    let mut buf = BytesMut::with_capacity(READ_BYTES);
    loop {
        if buf.capacity() - buf.len() < READ_BYTES / 4 {
            buf.reserve(READ_BYTES);
        }
        match r.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                if !log.write(buf.split().freeze()).await {
                    // Shipping stopped (job dropped): keep draining so the child is not
                    // blocked on a full pipe before it is killed.
                    buf.clear();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shebangs() {
        assert_eq!(
            shebang("#!/usr/bin/python3 -u\nprint(1)"),
            Some("/usr/bin/python3")
        );
        assert_eq!(shebang("#! /bin/bash\n"), Some("/bin/bash"));
        assert_eq!(shebang("echo hi"), None);
    }

    #[tokio::test]
    async fn remote_wrapper_runs_under_plain_sh() {
        // The wrapper is shell text for the remote login shell: run it through a local sh.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("s.sh"), "echo \"v=$V\"; exit 3\n").unwrap();
        let env = BTreeMap::from([("V".to_string(), "it's".to_string())]);
        let w = remote_wrapper(
            dir.path().to_str().unwrap(),
            "s.sh",
            "echo",
            &env,
            Duration::from_secs(1),
        );
        let mut child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(&w)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        // Held open, like the ssh connection: closing it is the cancel signal.
        let _lifeline = child.stdin.take();
        let out = child.wait_with_output().await.unwrap();
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "v=it's\n");
        let w = remote_wrapper("/no/such/dir", "s.sh", "echo", &env, Duration::from_secs(1));
        let out = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(&w)
            .output()
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(REMOTE_CANNOT_RUN));
    }
}
