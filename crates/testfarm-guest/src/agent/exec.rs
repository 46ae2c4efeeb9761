//! Running one v2 `Exec`: its own process group, stdout and stderr streamed as separate
//! frames, a timeout and a cancel that kill the whole group, and an `Exit` frame last.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use super::session_v2::Writer;
use crate::protocol::v2::{Exec, ExitStatus, GuestMsg, OUTPUT_CHUNK};

/// Script in the default image that runs its arguments in a private mount namespace over a
/// throw-away tmpfs overlay and a fresh cgroup (`--isolate test`).
pub const ISOLATE_HELPER: &str = "/sbin/testfarm-isolate";

/// How long output pipes may stay open after the command's group was killed (something that
/// left the group still holds them): then the exit is reported anyway.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// A running request: its process group and whether it was cancelled.
type Entry = (u32, Arc<AtomicBool>);

/// Process groups of running requests, so `Cancel` and the end of a session can kill them.
#[derive(Default, Clone)]
pub(crate) struct Running {
    inner: Arc<Mutex<HashMap<u32, Entry>>>,
}

impl Running {
    fn insert(&self, id: u32, pgid: u32, cancelled: Arc<AtomicBool>) {
        if let Ok(mut m) = self.inner.lock() {
            m.insert(id, (pgid, cancelled));
        }
    }

    fn remove(&self, id: u32) {
        if let Ok(mut m) = self.inner.lock() {
            m.remove(&id);
        }
    }

    /// Kills request `id`'s group; false if no such request runs.
    pub(crate) fn cancel(&self, id: u32) -> bool {
        let Ok(m) = self.inner.lock() else {
            return false;
        };
        match m.get(&id) {
            Some((pgid, flag)) => {
                flag.store(true, Ordering::SeqCst);
                kill_group(*pgid);
                true
            }
            None => false,
        }
    }

    pub(crate) fn cancel_all(&self) {
        if let Ok(m) = self.inner.lock() {
            for (pgid, flag) in m.values() {
                flag.store(true, Ordering::SeqCst);
                kill_group(*pgid);
            }
        }
    }
}

/// SIGKILL to a process group; a group that is already gone is fine.
pub(crate) fn kill_group(pgid: u32) {
    if let Ok(pgid) = i32::try_from(pgid) {
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    }
}

/// Runs `exec` to completion, sending frames for request `id`. Runs on its own thread.
pub(crate) fn run(id: u32, exec: Exec, writer: Writer, running: Running) {
    let start = Instant::now();
    let mut argv = exec.argv;
    if exec.isolate {
        argv.insert(0, ISOLATE_HELPER.to_string());
    }
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .envs(exec.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    if let Some(cwd) = &exec.cwd {
        cmd.current_dir(cwd);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            writer.send(
                id,
                &GuestMsg::Error(format!("cannot start {:?}: {e}", argv[0])),
            );
            return;
        }
    };
    let pid = child.id();
    let cancelled = Arc::new(AtomicBool::new(false));
    running.insert(id, pid, cancelled.clone());
    writer.send(id, &GuestMsg::Started { pid });

    let (drained_tx, drained_rx) = mpsc::channel::<()>();
    let mut pipes = 0;
    if let Some(out) = child.stdout.take() {
        pipes += 1;
        spawn_pump(out, id, writer.clone(), false, drained_tx.clone());
    }
    if let Some(err) = child.stderr.take() {
        pipes += 1;
        spawn_pump(err, id, writer.clone(), true, drained_tx.clone());
    }
    drop(drained_tx);

    let (status_tx, status_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = status_tx.send(child.wait());
    });
    let mut timed_out = false;
    let status = if exec.timeout_ms == 0 {
        status_rx.recv().ok()
    } else {
        match status_rx.recv_timeout(Duration::from_millis(exec.timeout_ms)) {
            Ok(s) => Some(s),
            Err(_) => {
                timed_out = true;
                kill_group(pid);
                status_rx.recv().ok()
            }
        }
    };
    // Whatever the command left running in its group goes with it.
    kill_group(pid);
    let deadline = Instant::now() + DRAIN_GRACE;
    for _ in 0..pipes {
        let left = deadline.saturating_duration_since(Instant::now());
        if drained_rx.recv_timeout(left).is_err() {
            break;
        }
    }
    running.remove(id);
    let status = match status {
        Some(Ok(s)) => s,
        Some(Err(e)) => {
            writer.send(
                id,
                &GuestMsg::Error(format!("waiting for the command failed: {e}")),
            );
            return;
        }
        None => {
            writer.send(id, &GuestMsg::Error("lost the command's status".into()));
            return;
        }
    };
    writer.send(
        id,
        &GuestMsg::Exit(ExitStatus {
            code: status.code(),
            signal: status.signal(),
            timed_out,
            cancelled: cancelled.load(Ordering::SeqCst),
            duration_us: u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX),
        }),
    );
}

fn spawn_pump(
    mut pipe: impl Read + Send + 'static,
    id: u32,
    writer: Writer,
    stderr: bool,
    done: mpsc::Sender<()>,
) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; OUTPUT_CHUNK];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let data = buf[..n].to_vec();
                    let msg = if stderr {
                        GuestMsg::Stderr(data)
                    } else {
                        GuestMsg::Stdout(data)
                    };
                    if !writer.send(id, &msg) {
                        break;
                    }
                }
            }
        }
        let _ = done.send(());
    });
}
