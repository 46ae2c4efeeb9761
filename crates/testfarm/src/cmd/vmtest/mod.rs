//! `testfarm vmtest`: run a tree of TAP test scripts across a pod of QEMU VMs through the
//! in-guest agent. A thin shell over `testfarm_vm`: flags and `vmtest.toml` become a
//! `PodOptions`, results become `testfarm-tap` reports.

mod image;
mod pod;
pub(crate) mod settings;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use testfarm_tap::report::SuiteRun;
use testfarm_vm::discover;
use testfarm_vm::pod::{Pod, PodOptions};
use testfarm_vm::runtime_dir::RuntimeDir;

pub use settings::VmFlags;

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    sub: Option<Sub>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, clap::Subcommand)]
enum Sub {
    /// Build the default guest image (host kernel + busybox-static + testfarm-guest).
    #[command(subcommand)]
    Image(image::ImageCmd),
    /// Warm pods: VMs that stay booted between runs (`up`, `status`, `down`).
    #[command(subcommand)]
    Pod(Box<pod::PodCmd>),
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Test scripts or directories (default: `t`), relative to the project root.
    pub paths: Vec<PathBuf>,
    /// How many VMs run tests at once.
    #[arg(short = 'j', long = "jobs")]
    pub jobs: Option<usize>,
    /// Only tests whose path matches: a glob (`*`, `?`) or a substring. Repeatable.
    #[arg(long)]
    pub filter: Vec<String>,
    /// Per-test timeout (e.g. 60s, 5m); the guest kills the test's process group.
    #[arg(long)]
    pub timeout: Option<String>,
    /// Write a JUnit XML report here.
    #[arg(long)]
    pub junit: Option<PathBuf>,
    /// Write a JSON report here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Run every test even after one failed (default: stop starting new tests).
    #[arg(long)]
    pub keep_going: bool,
    /// `worker`: tests share their VM; `test`: each test starts from a clean state.
    #[arg(long, value_parser = ["worker", "test"])]
    pub isolate: Option<String>,
    /// Rerun a failed test up to N times on another VM; a pass on retry is reported flaky.
    #[arg(long)]
    pub retries: Option<u32>,
    /// Boot fresh VMs even if a warm pod (`vmtest pod up`) matches.
    #[arg(long)]
    pub cold: bool,
    #[command(flatten)]
    pub vm: VmFlags,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = rt.block_on(async move {
        match args.sub {
            Some(Sub::Image(cmd)) => image::run(cmd).await,
            Some(Sub::Pod(cmd)) => pod::run(*cmd).await,
            None => {
                tokio::select! {
                    r = run_tests(args.run) => r,
                    _ = tokio::signal::ctrl_c() => {
                        eprintln!("vmtest: interrupted, stopping VMs");
                        Ok(ExitCode::from(130))
                    }
                }
            }
        }
    });
    // Dropping the runtime drops the pod's tasks: every QEMU is killed, the run dir removed.
    rt.shutdown_timeout(std::time::Duration::from_secs(5));
    result
}

async fn run_tests(args: RunArgs) -> anyhow::Result<ExitCode> {
    let wall = Instant::now();
    let s = settings::resolve(&args).await?;
    let found = discover::discover(&s.root, &s.paths)?;
    let selected = discover::filter(found, &s.filters);
    if selected.is_empty() {
        anyhow::bail!("no tests selected under {}", s.root.display());
    }
    let known = discover::history::load(&s.root);
    let ordered = discover::order_by_history(selected, &known);
    let total = ordered.len();
    let jobs = s.jobs.min(total).max(1);
    eprintln!(
        "vmtest: {total} tests, {jobs} VMs, image {}, accel {} ({}), protocol {}, isolate {}",
        s.image_id,
        s.vm.accel.name(),
        s.accel_reason,
        if s.vm.protocol == testfarm_vm::agent::ProtocolChoice::V1 {
            "v1"
        } else {
            "v2"
        },
        if s.isolate { "test" } else { "worker" }
    );
    let spec = testfarm_vm::warm::WarmSpec::from_options(jobs, &s.image_id, &s.root, &s.vm);
    let sock = testfarm_vm::warm::socket_path(&spec.key())?;
    let warm = match args.cold {
        true => None,
        false => testfarm_vm::warm::status(&sock).await.ok(),
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let width = ordered.iter().map(|p| p.chars().count()).max().unwrap_or(0);
    let printer = tokio::spawn(async move {
        let mut runs: Vec<SuiteRun> = Vec::new();
        let tty = std::io::stderr().is_terminal();
        while let Some(r) = rx.recv().await {
            let run = testfarm_vm::report::suite_run(&r);
            let n = runs.len() + 1;
            let mut line = testfarm_tap::summary::progress_line(&run, width);
            line.push_str(&format!(" ({}, {:.1}s)", r.vm, r.duration.as_secs_f64()));
            if tty {
                eprint!("\r\x1b[K");
            }
            outln!("[{n}/{total}] {line}");
            if tty {
                eprint!("[{n}/{total}] running…");
            }
            let _ = std::io::stdout().flush();
            runs.push(run);
        }
        if tty {
            eprint!("\r\x1b[K");
        }
        runs
    });
    match warm {
        Some(info) => {
            eprintln!(
                "vmtest: using warm pod {} ({} VMs: {}); -j is the pod's size",
                info.key,
                info.vms.len(),
                info.vms.join(",")
            );
            let req = testfarm_vm::warm::RunRequest {
                paths: ordered.clone(),
                timeout_ms: u64::try_from(s.timeout.as_millis()).unwrap_or(u64::MAX),
                isolate: s.isolate,
                retries: s.retries,
                fail_fast: !args.keep_going,
            };
            testfarm_vm::warm::run(&sock, req, tx).await?;
        }
        None => {
            let mut opts = PodOptions::new(jobs, s.vm.clone());
            opts.timeout = s.timeout;
            opts.isolate = s.isolate;
            opts.retries = s.retries;
            opts.fail_fast = !args.keep_going;
            let dir = RuntimeDir::new("vmtest-")?;
            let mut pod = Pod::start(opts, dir).await.context("starting the pod")?;
            pod.run(ordered.clone(), tx).await;
            pod.shutdown().await;
        }
    }
    let runs = printer.await.context("collecting results")?;
    report(&s.root, &args, &runs, &ordered, wall.elapsed())
}

fn report(
    root: &std::path::Path,
    args: &RunArgs,
    runs: &[SuiteRun],
    ordered: &[String],
    wall: std::time::Duration,
) -> anyhow::Result<ExitCode> {
    let mut sorted: Vec<SuiteRun> = runs.to_vec();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    outln!();
    out!(
        "{}",
        testfarm_tap::summary::render_with_wall(&sorted, Some(wall))
    );
    if let Some(p) = &args.junit {
        std::fs::write(p, testfarm_tap::junit::render(&sorted))
            .with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(p) = &args.json {
        let v = testfarm_tap::json::render(&sorted);
        std::fs::write(p, serde_json::to_string_pretty(&v)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    discover::history::save(
        root,
        &runs
            .iter()
            .map(|r| (r.name.clone(), r.duration))
            .collect::<Vec<_>>(),
    );
    let not_run: Vec<&String> = ordered
        .iter()
        .filter(|p| !runs.iter().any(|r| &r.name == *p))
        .collect();
    if !not_run.is_empty() {
        outln!(
            "{} tests not run: stopped after the first failure (use --keep-going to run all)",
            not_run.len()
        );
    }
    let failed: Vec<&str> = sorted
        .iter()
        .filter(|r| !r.ok())
        .map(|r| r.name.as_str())
        .collect();
    if !failed.is_empty() {
        outln!(
            "Rerun the failed tests with:\n  testfarm vmtest {}",
            failed.join(" ")
        );
    }
    Ok(if failed.is_empty() && not_run.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
