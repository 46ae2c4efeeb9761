//! `testfarm prove [PATHS…] [-j N] [--filter PATTERN] [--timeout 60s] [--junit FILE]
//! [--json FILE]`: a local harness like Perl's `prove` for the seed's test layout
//! (`t/**/*_test.sh`). Scripts run N at a time, each in its own process group under a
//! timeout; their TAP is parsed as it streams; progress prints as each one finishes, then
//! prove's summary. Exit status: 0 all passed, 1 something failed, 2 usage (no tests, bad
//! path).

mod discover;
mod runner;

use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::Context;
use testfarm_tap::report::SuiteRun;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Test scripts or directories to search for `*_test.sh` (default: `t`).
    pub paths: Vec<PathBuf>,
    /// How many scripts run at once.
    #[arg(short = 'j', long = "jobs", default_value_t = 1)]
    pub jobs: usize,
    /// Only scripts whose path contains PATTERN (or matches it, with `*`/`?`).
    #[arg(long, value_name = "PATTERN")]
    pub filter: Option<String>,
    /// Per-script time limit (`500ms`, `60s`, `5m`, `1h`; a bare number is seconds).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Write a JUnit XML report here.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Write a JSON report here.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let paths = if args.paths.is_empty() {
        vec![PathBuf::from("t")]
    } else {
        args.paths.clone()
    };
    let scripts = match discover::discover(&paths, args.filter.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(ExitCode::from(2));
        }
    };
    if scripts.is_empty() {
        eprintln!("error: no tests found (looked for *_test.sh under the given paths)");
        return Ok(ExitCode::from(2));
    }
    let started = Instant::now();
    let runs = run_all(&scripts, args.jobs.max(1), args.timeout)?;
    let wall = started.elapsed();

    let mut stdout = std::io::stdout().lock();
    write!(stdout, "{}", testfarm_tap::summary::tail(&runs, Some(wall)))?;
    stdout.flush()?;
    if let Some(path) = &args.junit {
        std::fs::write(path, testfarm_tap::junit::render(&runs))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.json {
        let v = testfarm_tap::json::render(&runs);
        std::fs::write(path, serde_json::to_string_pretty(&v)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(if runs.iter().all(SuiteRun::ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Runs every script on `jobs` worker threads, printing each result as it arrives;
/// returns the runs in discovery order.
fn run_all(scripts: &[PathBuf], jobs: usize, timeout: Duration) -> anyhow::Result<Vec<SuiteRun>> {
    let queue: Arc<Mutex<VecDeque<(usize, PathBuf)>>> =
        Arc::new(Mutex::new(scripts.iter().cloned().enumerate().collect()));
    let (tx, rx) = mpsc::channel::<(usize, SuiteRun)>();
    let mut workers = Vec::new();
    for _ in 0..jobs.min(scripts.len()) {
        let queue = Arc::clone(&queue);
        let tx = tx.clone();
        workers.push(std::thread::spawn(move || {
            loop {
                let next = match queue.lock() {
                    Ok(mut q) => q.pop_front(),
                    Err(_) => None,
                };
                let Some((i, path)) = next else {
                    return;
                };
                let run = runner::run(&path, timeout);
                if tx.send((i, run)).is_err() {
                    return;
                }
            }
        }));
    }
    drop(tx);
    let width = scripts
        .iter()
        .map(|p| p.to_string_lossy().chars().count())
        .max()
        .unwrap_or(0);
    let mut slots: Vec<Option<SuiteRun>> = scripts.iter().map(|_| None).collect();
    let stdout = std::io::stdout();
    for (i, run) in rx {
        let line = testfarm_tap::summary::progress_line(&run, width);
        writeln!(stdout.lock(), "{line}")?;
        if let Some(slot) = slots.get_mut(i) {
            *slot = Some(run);
        }
    }
    for w in workers {
        let _ = w.join();
    }
    Ok(slots
        .into_iter()
        .zip(scripts)
        .map(|(slot, path)| {
            slot.unwrap_or_else(|| {
                let mut run = SuiteRun::new(
                    path.to_string_lossy().into_owned(),
                    testfarm_tap::Document::default(),
                );
                run.outcome = Some(testfarm_tap::report::RunOutcome::Error {
                    message: "the worker running it stopped".into(),
                });
                run
            })
        })
        .collect())
}

/// `500ms`, `60s`, `5m`, `1h`, `1.5s`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a duration like 500ms, 60s, 5m or 1h"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m or h)")),
    };
    if !secs.is_finite() || secs <= 0.0 || secs > 1e9 {
        return Err(format!("{s:?}: must be a positive duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }
}
