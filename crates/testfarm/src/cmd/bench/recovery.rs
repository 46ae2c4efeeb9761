//! `testfarm bench recovery [--json]`: how long a hung board takes to be back in the pool,
//! beyond the limits its configuration sets (issue 16's target: ≤ 2 s).
//!
//! The whole system: a spawned `testfarm server`, a `testfarm agent` child whose
//! `[[board]]` table drives a simulated board (in this process, console on loopback TCP,
//! power by this binary's own `sim-board power` command, exactly as a lab's relay CLI).
//! Each run submits a job that boots the board and types `hang` into its console. The
//! agent's console step sees no output for `hang_after`, its recovery policy waits
//! `backoff` and power-cycles the board (off, `cycle_delay`, on) until the login prompt;
//! the step ends `error`, the lease ends, the server's release action powers the board off
//! and it is `available` again. The clock starts at the hung board's last console line
//! (its time in the job's `console.log`, the agent's capture) and stops when this process
//! first sees the resource `available` again (polled every 10 ms, same host clock).
//! Configured limits: `hang_after + backoff + cycle_delay`. The baseline, in the same run,
//! is a plain power cycle of the same board to its prompt through the same drivers (what
//! booting takes, which no recovery can avoid), taken before the agent starts.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use serde::Serialize;
use testfarm_board::boot::watch_boot;
use testfarm_board::console::console_driver;
use testfarm_board::power::power_driver;
use testfarm_board::rules::boot::BootRules;
use testfarm_board::sim::{self, Behaviour, ConsoleSpec, SimOptions};

use super::spawn::{Spawned, client, load_average, send, send_json};

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
    /// Median: last output of the hung board → the board `available` on the server.
    recovery_s: f64,
    /// Median: last output → the agent's recovery report (the prompt seen again).
    to_recovered_s: f64,
    /// Median: the recovery report → `available` (the step's and job's end, the lease-end
    /// release powering it off, the board back in the pool).
    to_available_after_recovery_s: f64,
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
    load_average_1m: Option<f64>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let r = rt.block_on(measure(&args))?;
    if args.json {
        outln!("{}", serde_json::to_string(&r)?);
    } else {
        outln!(
            "recovery: {:.2}s from the hang to the board available again ({:.2}s to the prompt, {:.2}s more to the pool), {:.2}s beyond the limits ({:.2}s; the board's boot takes {:.2}s, the rest is {:.2}s), ratio {:.2}; target ≤ {:.1}s beyond {}",
            r.recovery_s,
            r.to_recovered_s,
            r.to_available_after_recovery_s,
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
boot = {{ expect = "login: $", login = "root", timeout = "20s" }}
recovery = {{ tries = 2, backoff = "{backoff_ms}ms", backoff_max = "5s", hang_after = "{hang_after_ms}ms" }}
# Every run ends in a lab error on purpose; the failure-rate quarantine must not count them.
quarantine = {{ lab_errors = 1000 }}
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

/// The agent child; killed on drop.
struct AgentChild(std::process::Child);

impl Drop for AgentChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Seconds since the epoch of an RFC 3339 time.
fn epoch_s(t: &str) -> Option<f64> {
    let t = chrono::DateTime::parse_from_rfc3339(t).ok()?;
    Some(t.timestamp() as f64 + f64::from(t.timestamp_subsec_nanos()) / 1e9)
}

fn now_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The hang in a job's `console.log` (`TIME text` lines): the time of the last line before
/// the longest silence, which is the hang (`hang_after`, the backoff and the power-off).
fn hang_start(console_log: &str) -> Option<f64> {
    let times: Vec<f64> = console_log
        .lines()
        .filter_map(|l| l.split_once(' ').and_then(|(t, _)| epoch_s(t)))
        .collect();
    times
        .windows(2)
        .max_by(|a, b| (a[1] - a[0]).total_cmp(&(b[1] - b[0])))
        .map(|w| w[0])
}

const BOARD: &str = "bench-sim";
const JOB: &str = "name: bench-recovery\nrequires: { kind: board, resource: bench-sim }\ntimeout: 2m\nsteps:\n  - boot: { timeout: 20s }\n  - shell: { run: 'hang', via: console, timeout: 1m }\n";

/// One run's times, seconds since the epoch.
struct Run {
    hang: f64,
    recovery_reported: f64,
    available: f64,
}

async fn one_run(http: &reqwest::Client, url: &str, token: &str) -> anyhow::Result<Run> {
    let auth = format!("Bearer {token}");
    let get = |path: String| {
        http.get(format!("{url}{path}"))
            .header("authorization", &auth)
    };
    let job = send_json(
        http.post(format!("{url}/api/v1/jobs"))
            .header("authorization", &auth)
            .json(&serde_json::json!({ "spec": JOB })),
    )
    .await?;
    let id = job["id"]
        .as_str()
        .ok_or_else(|| anyhow!("submitting the job: {job}"))?
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut ended = false;
    let available = loop {
        if Instant::now() > deadline {
            let r = send_json(get(format!("/api/v1/resources/{BOARD}"))).await?;
            return Err(anyhow!("job {id}: the board not back within 120 s: {r}"));
        }
        if !ended {
            let j = send_json(get(format!("/api/v1/jobs/{id}"))).await?;
            let state = j["state"].as_str().unwrap_or_default();
            ended = ["passed", "failed", "error", "cancelled", "timed_out"].contains(&state);
            if ended && state != "error" {
                return Err(anyhow!("job {id} ended {state}, not error: {j}"));
            }
        }
        if ended {
            let r = send_json(get(format!("/api/v1/resources/{BOARD}"))).await?;
            if r["state"] == "available" {
                break now_s();
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let console = send(get(format!("/api/v1/jobs/{id}/outputs/console.log")))
        .await?
        .text()
        .await?;
    let hang = hang_start(&console).ok_or_else(|| anyhow!("job {id}: no console lines"))?;
    let log = send(get(format!("/api/v1/jobs/{id}/log")))
        .await?
        .text()
        .await?;
    if log.contains("while waiting for a shell prompt") {
        // Its prompt came later than `hang_after` (a partial line is flushed after 150 ms
        // by the console reader, and again by the hub's subscriber): not the hang measured.
        return Err(anyhow!(
            "job {id}: the board was taken for hung before its prompt; use a longer --hang-after-ms\n{log}"
        ));
    }
    let h = send_json(get(format!(
        "/api/v1/boards/{BOARD}/history?kind=recovery&limit=1"
    )))
    .await?;
    let rec = &h["items"][0];
    if rec["ok"] != true {
        return Err(anyhow!(
            "job {id}: the board was not recovered: {h}\n{log}\n{console}"
        ));
    }
    let recovery_reported = rec["at"]
        .as_str()
        .and_then(epoch_s)
        .ok_or_else(|| anyhow!("job {id}: no recovery in the board's history: {h}"))?;
    Ok(Run {
        hang,
        recovery_reported,
        available,
    })
}

async fn measure(args: &Args) -> anyhow::Result<Report> {
    let exe = std::env::current_exe().context("finding this binary")?;
    let dir = tempfile::tempdir()?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let opts = SimOptions {
        console: ConsoleSpec::Tcp("127.0.0.1:0".into()),
        state_dir: dir.path().join("sim"),
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
    let table = board_toml(
        &exe.display().to_string(),
        &dir.path().join("sim").display().to_string(),
        &addr,
        args.hang_after_ms,
        args.backoff_ms,
    );
    let boards = testfarm_board::parse_boards(&table).map_err(|e| anyhow!("{e}"))?;
    let board = boards
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("no board"))?;
    let runs = args.runs.max(1);

    // Baseline first, while nothing else holds the console: a power cycle of the healthy
    // board to its prompt, through the same drivers the agent uses.
    let mut baseline = Vec::new();
    {
        let power = power_driver(&board);
        let mut console = console_driver(&board).open().await?;
        let rules = BootRules::from(&board.boot);
        let mut sink = |_: &testfarm_board::console::ConsoleLine| {};
        for _ in 0..runs {
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
        }
        power.off().await?;
    }

    // The server, and an agent driving the board.
    let server = tokio::task::block_in_place(Spawned::start)?;
    let http = client(2)?;
    let token = send_json(
        http.post(format!("{}/api/v1/tokens", server.url))
            .header("authorization", format!("Bearer {}", server.token))
            .json(&serde_json::json!({ "name": "bench-recovery", "role": "agent" })),
    )
    .await?;
    let token = token["token"]
        .as_str()
        .ok_or_else(|| anyhow!("creating the agent's token: {token}"))?;
    let agent_dir = dir.path().join("agent");
    std::fs::create_dir_all(&agent_dir)?;
    std::fs::write(agent_dir.join("agent.token"), token)?;
    std::fs::write(
        agent_dir.join("agent.toml"),
        format!(
            "url = {:?}\nname = \"bench-recovery\"\ntoken_file = \"agent.token\"\nwork_dir = \"work\"\n{table}",
            server.url
        ),
    )?;
    let _agent = AgentChild(
        std::process::Command::new(&exe)
            .args(["agent", "--config"])
            .arg(agent_dir.join("agent.toml"))
            .env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .context("starting the agent")?,
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = send_json(
            http.get(format!("{}/api/v1/resources/{BOARD}", server.url))
                .header("authorization", format!("Bearer {}", server.token)),
        )
        .await;
        if r.as_ref().is_ok_and(|r| r["state"] == "available") {
            break;
        }
        if Instant::now() > deadline {
            return Err(anyhow!("the agent did not register {BOARD} within 60 s"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut total = Vec::new();
    let mut to_recovered = Vec::new();
    let mut server_part = Vec::new();
    for _ in 0..runs {
        let r = one_run(&http, &server.url, &server.token).await?;
        total.push(r.available - r.hang);
        to_recovered.push(r.recovery_reported - r.hang);
        server_part.push(r.available - r.recovery_reported);
    }
    sim.abort();
    let cycle_delay_s = CYCLE_DELAY_MS as f64 / 1000.0;
    let limits = (args.hang_after_ms + args.backoff_ms + CYCLE_DELAY_MS) as f64 / 1000.0;
    let recovery_s = median(total);
    let baseline_s = median(baseline);
    // The baseline cycle includes the cycle delay too; count it once.
    let boot_s = baseline_s - cycle_delay_s;
    Ok(Report {
        bench: "recovery",
        runs,
        hang_after_s: args.hang_after_ms as f64 / 1000.0,
        backoff_s: args.backoff_ms as f64 / 1000.0,
        cycle_delay_s,
        configured_limits_s: limits,
        recovery_s,
        to_recovered_s: median(to_recovered),
        to_available_after_recovery_s: median(server_part),
        baseline: "power cycle to the login prompt of the same board, no hang, no server",
        baseline_s,
        beyond_limits_s: recovery_s - limits,
        overhead_s: recovery_s - limits - boot_s,
        ratio: recovery_s / (limits + boot_s),
        target_overhead_s: TARGET_OVERHEAD_S,
        target_met: recovery_s - limits <= TARGET_OVERHEAD_S,
        load_average_1m: load_average(),
    })
}
