//! `testfarm bench recovery [--json]`: how long a hung board takes to come back, beyond
//! the limits its configuration sets (issue 16's target: ≤ 2 s).
//!
//! A simulated board (in this process, console on loopback TCP, power by this binary's own
//! `sim-board power` command, exactly as a lab's relay CLI) is booted and logged in, then
//! told to `hang`. The clock starts at its last output. The hang is detected when the
//! console stays silent for `hang_after`, then the board's recovery policy runs through the
//! real drivers: wait `backoff`, power-cycle (off, `cycle_delay`, on), watch the console for
//! the login prompt. Configured limits: `hang_after + backoff + cycle_delay`. The baseline,
//! in the same run, is a plain power cycle to the prompt of the same board (what booting
//! takes, which no recovery can avoid); the overhead is what is left after both.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use serde::Serialize;
use testfarm_board::boot::watch_boot;
use testfarm_board::console::{Console, ConsoleEvent, console_driver};
use testfarm_board::power::power_driver;
use testfarm_board::recover::{RecoveryOutcome, recover};
use testfarm_board::rules::boot::BootRules;
use testfarm_board::sim::{self, Behaviour, ConsoleSpec, SimOptions};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Silence that counts as a hang, in ms.
    #[arg(long, default_value_t = 1000)]
    pub hang_after_ms: u64,
    /// Wait before the power cycle, in ms.
    #[arg(long, default_value_t = 200)]
    pub backoff_ms: u64,
    /// Runs to take the median of.
    #[arg(long, default_value_t = 3)]
    pub runs: u32,
    #[arg(long)]
    pub json: bool,
}

const CYCLE_DELAY_MS: u64 = 100;
const TARGET_OVERHEAD_S: f64 = 2.0;

#[derive(Debug, Serialize)]
struct Report {
    bench: &'static str,
    runs: u32,
    hang_after_s: f64,
    backoff_s: f64,
    cycle_delay_s: f64,
    configured_limits_s: f64,
    /// Median: last output of the hung board → login prompt after the recovery.
    recovery_s: f64,
    /// Median: power cycle → login prompt, no hang (the board's own boot).
    baseline: &'static str,
    baseline_s: f64,
    /// recovery − limits: the target figure (the board's own boot included).
    beyond_limits_s: f64,
    /// recovery − limits − baseline boot: what the machinery adds.
    overhead_s: f64,
    /// recovery / (limits + baseline).
    ratio: f64,
    target_overhead_s: f64,
    target_met: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let r = rt.block_on(measure(&args))?;
    if args.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "recovery: {:.2}s from the hang to the prompt, {:.2}s beyond the limits ({:.2}s; the board's boot takes {:.2}s, the rest is {:.2}s), ratio {:.2}; target ≤ {:.1}s beyond {}",
            r.recovery_s,
            r.beyond_limits_s,
            r.configured_limits_s,
            r.baseline_s,
            r.overhead_s,
            r.ratio,
            r.target_overhead_s,
            if r.target_met { "met" } else { "NOT met" }
        );
    }
    Ok(if r.target_met {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn board_toml(exe: &str, dir: &str, console: &str, hang_after_ms: u64, backoff_ms: u64) -> String {
    let power = |a: &str| format!("'{exe}' sim-board power {a} --state-dir '{dir}'");
    format!(
        r#"[[board]]
name = "bench-sim"
board_type = "sim"
arch = "arm"
power = {{ driver = "command", on = "{on}", off = "{off}", status = "{status}", cycle_delay = "{CYCLE_DELAY_MS}ms", timeout = "10s" }}
console = {{ driver = "tcp", address = "{console}" }}
boot = {{ expect = "login: $", timeout = "20s" }}
recovery = {{ tries = 2, backoff = "{backoff_ms}ms", backoff_max = "5s", hang_after = "{hang_after_ms}ms" }}
"#,
        on = power("on"),
        off = power("off"),
        status = power("status"),
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Reads lines until one ends with `pattern`, for at most `secs`.
async fn until(console: &mut Console, pattern: &str, secs: u64) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        tokio::select! {
            ev = console.next() => match ev {
                ConsoleEvent::Line(l) if l.text.ends_with(pattern) => return Ok(()),
                ConsoleEvent::Line(_) => {}
                ConsoleEvent::Closed { reason } => return Err(anyhow!("console closed: {reason}")),
            },
            _ = tokio::time::sleep_until(deadline) => {
                return Err(anyhow!("`{pattern}` not seen within {secs}s"));
            }
        }
    }
}

async fn measure(args: &Args) -> anyhow::Result<Report> {
    let exe = std::env::current_exe().context("finding this binary")?;
    let dir = tempfile::tempdir()?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let opts = SimOptions {
        console: ConsoleSpec::Tcp("127.0.0.1:0".into()),
        state_dir: dir.path().to_path_buf(),
        behaviour: Behaviour::default(),
    };
    let sim = tokio::spawn(async move {
        let _ = sim::run(opts, |addr| {
            let _ = tx.send(addr.to_string());
        })
        .await;
    });
    let addr = tokio::time::timeout(Duration::from_secs(10), rx)
        .await
        .context("the simulated board did not start")??;
    let text = board_toml(
        &exe.display().to_string(),
        &dir.path().display().to_string(),
        &addr,
        args.hang_after_ms,
        args.backoff_ms,
    );
    let boards = testfarm_board::parse_boards(&text).map_err(|e| anyhow!("{e}"))?;
    let board = boards
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("no board"))?;
    let power = power_driver(&board);
    let mut console = console_driver(&board).open().await?;
    let rules = BootRules::from(&board.boot);
    let mut sink = |_: &testfarm_board::console::ConsoleLine| {};

    let mut baseline = Vec::new();
    let mut recovery = Vec::new();
    for _ in 0..args.runs.max(1) {
        // Baseline: a power cycle of a healthy board, to its prompt.
        let t = Instant::now();
        power.cycle().await?;
        let boot = watch_boot(&mut console, rules.clone(), 5, &mut sink).await;
        if !boot.verdict.booted() {
            return Err(anyhow!(
                "the board did not boot: {}",
                boot.verdict.describe()
            ));
        }
        baseline.push(t.elapsed().as_secs_f64());

        // Log in, hang it, and time from its last output to the prompt after recovery.
        console.write(b"root\r\n").await?;
        until(&mut console, "root@sim-board:~# ", 5).await?;
        console.write(b"hang\r\n").await?;
        let mut last = Instant::now();
        loop {
            let quiet = board.recovery.hang_after.saturating_sub(last.elapsed());
            tokio::select! {
                ev = console.next() => match ev {
                    ConsoleEvent::Line(_) => last = Instant::now(),
                    ConsoleEvent::Closed { reason } => return Err(anyhow!("console closed: {reason}")),
                },
                _ = tokio::time::sleep(quiet) => {
                    if board.recovery.hung(Duration::ZERO, last.elapsed()) {
                        break;
                    }
                }
            }
        }
        match recover(&*power, &mut console, &rules, &board.recovery, &mut sink).await {
            RecoveryOutcome::Recovered { .. } => recovery.push(last.elapsed().as_secs_f64()),
            other => return Err(anyhow!("the board was not recovered: {other:?}")),
        }
    }
    sim.abort();
    let limits = (args.hang_after_ms + args.backoff_ms + CYCLE_DELAY_MS) as f64 / 1000.0;
    let recovery_s = median(recovery);
    let baseline_s = median(baseline);
    // The baseline cycle includes the cycle delay too; count it once.
    let overhead_s = recovery_s - limits - (baseline_s - CYCLE_DELAY_MS as f64 / 1000.0);
    Ok(Report {
        bench: "recovery",
        runs: args.runs.max(1),
        hang_after_s: args.hang_after_ms as f64 / 1000.0,
        backoff_s: args.backoff_ms as f64 / 1000.0,
        cycle_delay_s: CYCLE_DELAY_MS as f64 / 1000.0,
        configured_limits_s: limits,
        recovery_s,
        baseline: "power cycle to the login prompt of the same board, no hang",
        baseline_s,
        beyond_limits_s: recovery_s - limits,
        overhead_s,
        ratio: recovery_s / (limits + baseline_s - CYCLE_DELAY_MS as f64 / 1000.0),
        target_overhead_s: TARGET_OVERHEAD_S,
        target_met: recovery_s - limits <= TARGET_OVERHEAD_S,
    })
}
