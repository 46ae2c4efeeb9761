//! Console throughput: bytes a board prints on a pty, through the serial driver and the
//! line reader into a sink, against `head -c` reading the same kind of pty in the same run
//! (the floor: the kernel's pty path with no line handling). Every line carries its number,
//! so a lost or reordered line is counted, not just slower. `testfarm bench console` prints
//! the figures as JSON.

use std::fs::File;
use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::pty::{OpenptyResult, openpty};
use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
use serde::Serialize;

use crate::config::Parity;
use crate::console::{ConsoleDriver, ConsoleEvent, SerialConsoleDriver};
use crate::error::{BoardError, Result};

#[derive(Debug, Clone)]
pub struct ConsoleBenchOptions {
    /// Bytes to push through (rounded to whole lines).
    pub bytes: u64,
    /// Bytes per line, newline included.
    pub line_len: usize,
    /// Bound on each measured run.
    pub timeout: Duration,
}

impl Default for ConsoleBenchOptions {
    fn default() -> Self {
        ConsoleBenchOptions {
            bytes: 32 * 1000 * 1000,
            line_len: 100,
            timeout: Duration::from_secs(120),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ConsoleBenchReport {
    pub bytes: u64,
    pub lines: u64,
    pub console_seconds: f64,
    pub console_mb_s: f64,
    pub baseline: &'static str,
    pub baseline_seconds: f64,
    pub baseline_mb_s: f64,
    /// console / baseline throughput.
    pub ratio: f64,
    pub lost_lines: u64,
    pub reordered_lines: u64,
    pub target_mb_s: f64,
    pub target_met: bool,
}

fn raw_pty() -> Result<(OpenptyResult, String)> {
    let pair = openpty(None, None).map_err(|e| BoardError::io("openpty", e.into()))?;
    let mut t = tcgetattr(&pair.slave).map_err(|e| BoardError::io("tcgetattr", e.into()))?;
    cfmakeraw(&mut t);
    tcsetattr(&pair.slave, SetArg::TCSANOW, &t)
        .map_err(|e| BoardError::io("tcsetattr", e.into()))?;
    let path = nix::unistd::ttyname(&pair.slave)
        .map_err(|e| BoardError::io("ttyname", e.into()))?
        .to_string_lossy()
        .into_owned();
    Ok((pair, path))
}

/// Writes numbered lines into the pty's master side from a thread, as a board would. The
/// master is handed back rather than closed: closing it hangs up the slave, and the kernel
/// discards what the reader has not read yet.
fn produce(master: File, lines: u64, line_len: usize) -> std::thread::JoinHandle<Option<File>> {
    std::thread::spawn(move || {
        let mut w = std::io::BufWriter::with_capacity(64 * 1024, master);
        let pad = "x".repeat(line_len.saturating_sub(10).max(1));
        for i in 0..lines {
            if writeln!(w, "{i:08} {pad}").is_err() {
                return None;
            }
        }
        w.into_inner().ok()
    })
}

fn mb_s(bytes: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        bytes as f64 / 1e6 / secs
    } else {
        0.0
    }
}

pub async fn console_throughput(opts: &ConsoleBenchOptions) -> Result<ConsoleBenchReport> {
    let line_len = 10 + "x".repeat(opts.line_len.saturating_sub(10).max(1)).len();
    let lines = (opts.bytes / line_len as u64).max(1);
    let bytes = lines * line_len as u64;

    // Baseline: `head -c` of the slave, as `cat` of the device would read it.
    let (pair, path) = raw_pty()?;
    let start = Instant::now();
    let mut head = tokio::process::Command::new("head")
        .arg("-c")
        .arg(bytes.to_string())
        .arg(&path)
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| BoardError::io("starting head", e))?;
    let producer = produce(File::from(pair.master), lines, opts.line_len);
    tokio::time::timeout(opts.timeout, head.wait())
        .await
        .map_err(|_| BoardError::Timeout {
            what: "baseline head -c of the pty".into(),
            after: opts.timeout,
        })?
        .map_err(|e| BoardError::io("waiting for head", e))?;
    let baseline_seconds = start.elapsed().as_secs_f64();
    let _ = producer.join();
    drop(pair.slave);

    // The console: the serial driver on the slave, lines into a counting sink.
    let (pair, path) = raw_pty()?;
    let driver = SerialConsoleDriver {
        device: path.into(),
        baud: 115_200,
        parity: Parity::None,
        data_bits: 8,
        stop_bits: 1,
        max_line: 4096,
    };
    let mut console = driver.open().await?;
    let start = Instant::now();
    let producer = produce(File::from(pair.master), lines, opts.line_len);
    let (mut seen, mut lost, mut reordered, mut next) = (0u64, 0u64, 0u64, 0u64);
    let mut sink = std::io::sink();
    let counted = tokio::time::timeout(opts.timeout, async {
        while seen < lines {
            match console.next().await {
                ConsoleEvent::Line(l) => {
                    let _ = sink.write_all(l.text.as_bytes());
                    seen += 1;
                    match l.text.get(..8).and_then(|n| n.parse::<u64>().ok()) {
                        Some(n) if n == next => next += 1,
                        Some(n) if n > next => {
                            lost += n - next;
                            next = n + 1;
                        }
                        _ => reordered += 1,
                    }
                }
                ConsoleEvent::Closed { .. } => break,
            }
        }
    })
    .await;
    let console_seconds = start.elapsed().as_secs_f64();
    counted.map_err(|_| BoardError::Timeout {
        what: format!("console bench ({seen} of {lines} lines)"),
        after: opts.timeout,
    })?;
    let _ = producer.join();
    lost += lines.saturating_sub(next);
    let console_mb_s = mb_s(bytes, console_seconds);
    let baseline_mb_s = mb_s(bytes, baseline_seconds);
    let target_mb_s = 20.0;
    Ok(ConsoleBenchReport {
        bytes,
        lines,
        console_seconds,
        console_mb_s,
        baseline: "head -c BYTES /dev/pts/N",
        baseline_seconds,
        baseline_mb_s,
        ratio: if baseline_mb_s > 0.0 {
            console_mb_s / baseline_mb_s
        } else {
            0.0
        },
        lost_lines: lost,
        reordered_lines: reordered,
        target_mb_s,
        target_met: console_mb_s >= target_mb_s && lost == 0 && reordered == 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_small_run_loses_nothing() {
        let opts = ConsoleBenchOptions {
            bytes: 200_000,
            line_len: 100,
            timeout: Duration::from_secs(30),
        };
        let r = console_throughput(&opts).await.unwrap();
        assert_eq!((r.lost_lines, r.reordered_lines), (0, 0), "{r:?}");
        assert_eq!(r.lines, 2000);
        assert!(r.console_mb_s > 0.0 && r.baseline_mb_s > 0.0, "{r:?}");
    }

    /// Real figures: `cargo test --release -p testfarm-board --lib bench -- --ignored --nocapture`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "a benchmark, run by hand in release"]
    async fn figures() {
        let r = console_throughput(&ConsoleBenchOptions::default())
            .await
            .unwrap();
        println!("{}", serde_json::to_string(&r).unwrap());
    }
}
