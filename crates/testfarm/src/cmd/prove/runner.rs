//! Running one script: its own process group (so a timeout kills everything it started),
//! stdout parsed as TAP while it streams, stderr captured, both capped.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use testfarm_tap::report::{RunOutcome, SuiteRun};
use testfarm_tap::{DocumentBuilder, Parser};

/// Captured output kept per stream for reports; the TAP itself is parsed in full.
const CAPTURE: usize = 1024 * 1024;
/// After the script exits (and its group is killed), how long to wait for its pipes.
const DRAIN: Duration = Duration::from_secs(2);

enum Chunk {
    Out(Vec<u8>),
    Err(Vec<u8>),
    OutClosed,
    ErrClosed,
}

/// Runs `path` with `timeout`; never fails: problems become the run's outcome.
pub fn run(path: &Path, timeout: Duration) -> SuiteRun {
    let name = path.to_string_lossy().into_owned();
    let started = Instant::now();
    let mut command = command_for(path);
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = match command.spawn() {
        Ok(c) => c,
        Err(e) => {
            let mut run = SuiteRun::new(name, testfarm_tap::Document::default());
            run.outcome = Some(RunOutcome::Error {
                message: format!("cannot run {}: {e}", path.display()),
            });
            return run;
        }
    };
    let pgid = Pid::from_raw(child.id() as i32);
    let (tx, rx) = mpsc::channel();
    if let Some(out) = child.stdout.take() {
        spawn_reader(out, tx.clone(), Chunk::Out, Chunk::OutClosed);
    }
    if let Some(err) = child.stderr.take() {
        spawn_reader(err, tx.clone(), Chunk::Err, Chunk::ErrClosed);
    }
    drop(tx);

    let mut parser = Parser::new();
    let mut builder = DocumentBuilder::new();
    let mut out = Capture::default();
    let mut err = Capture::default();
    let deadline = started + timeout;
    let mut status = None;
    let mut timed_out = false;
    let mut drain_until: Option<Instant> = None;
    let mut open = 2;
    loop {
        match rx.recv_timeout(Duration::from_millis(10)) {
            Ok(Chunk::Out(bytes)) => {
                out.push(&bytes);
                parser.feed(&bytes, &mut |e| builder.event(e));
            }
            Ok(Chunk::Err(bytes)) => err.push(&bytes),
            Ok(Chunk::OutClosed) | Ok(Chunk::ErrClosed) => open -= 1,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => open = 0,
        }
        if status.is_none() {
            match child.try_wait() {
                Ok(Some(s)) => {
                    status = Some(s);
                    // Whatever it left behind goes too, so its pipes close.
                    let _ = killpg(pgid, Signal::SIGKILL);
                    drain_until = Some(Instant::now() + DRAIN);
                }
                Ok(None) if Instant::now() >= deadline => {
                    timed_out = true;
                    let _ = killpg(pgid, Signal::SIGKILL);
                    status = child.wait().ok();
                    drain_until = Some(Instant::now() + DRAIN);
                }
                Ok(None) => {}
                Err(e) => {
                    let _ = killpg(pgid, Signal::SIGKILL);
                    let _ = child.wait();
                    let mut run = SuiteRun::new(name, builder.finish());
                    run.outcome = Some(RunOutcome::Error {
                        message: format!("waiting for {}: {e}", path.display()),
                    });
                    return run;
                }
            }
        }
        if open == 0 && status.is_some() {
            break;
        }
        if drain_until.is_some_and(|d| Instant::now() >= d) {
            break;
        }
    }
    parser.finish(&mut |e| builder.event(e));
    let duration = started.elapsed();
    let mut run = SuiteRun::new(name, builder.finish());
    run.duration = duration;
    run.system_out = out.text();
    run.system_err = err.text();
    if timed_out {
        run.outcome = Some(RunOutcome::TimedOut { after: timeout });
    } else if let Some(s) = status {
        run.exit_code = s.code().or_else(|| s.signal().map(|sig| 128 + sig));
    }
    run
}

/// Executable files run directly; others (a `_test.sh` without its x bit) through `sh`.
fn command_for(path: &Path) -> Command {
    let executable = std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false);
    // A bare file name would be looked up in PATH; anchor it to the current directory.
    let path = if path.components().count() == 1 {
        Path::new(".").join(path)
    } else {
        path.to_path_buf()
    };
    if executable {
        Command::new(path)
    } else {
        let mut c = Command::new("sh");
        c.arg(path);
        c
    }
}

fn spawn_reader(
    mut pipe: impl Read + Send + 'static,
    tx: mpsc::Sender<Chunk>,
    wrap: fn(Vec<u8>) -> Chunk,
    closed: Chunk,
) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if tx.send(wrap(buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        let _ = tx.send(closed);
    });
}

/// The first [`CAPTURE`] bytes of a stream, and whether more were dropped.
#[derive(Default)]
struct Capture {
    bytes: Vec<u8>,
    dropped: usize,
}

impl Capture {
    fn push(&mut self, data: &[u8]) {
        let room = CAPTURE.saturating_sub(self.bytes.len());
        let take = room.min(data.len());
        self.bytes.extend_from_slice(&data[..take]);
        self.dropped += data.len() - take;
    }

    fn text(&self) -> String {
        let mut s = String::from_utf8_lossy(&self.bytes).into_owned();
        if self.dropped > 0 {
            s.push_str(&format!("\n[… {} more bytes not kept]\n", self.dropped));
        }
        s
    }
}
