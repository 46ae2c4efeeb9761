//! `testfarm demo`: a whole lab on this machine in one command. A server with its SQLite
//! database in a temporary base directory, the built-in agent registering this host as a
//! build server (and a QEMU host when QEMU is installed) and two simulated boards with
//! real drivers (command power, TCP console), two
//! example jobs run through it, and pointers to where to look.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use testfarm_api::Page;
use testfarm_api::job::{Job, SubmitJob};
use testfarm_api::resource::Resource;
use testfarm_server::config::{Config, LogFormat};
use testfarm_server::{Paths, Server};

use crate::client::Client;
use crate::cmd::init;

/// The demo's two simulated boards: each a `testfarm sim-board` running in this process
/// (a boot banner, `login:` and a small shell on a loopback TCP console), and a
/// `[[board]]` table that drives it exactly as a real board is driven — power through
/// this binary's `sim-board power` command (as a relay CLI would be), the console over
/// TCP (as ser2net serves one), flashing by a command. Returns the tables for the built-in
/// agent; the boards run as long as the runtime does.
async fn start_sim_boards(base: &std::path::Path) -> anyhow::Result<String> {
    use testfarm_board::sim::{self, Behaviour, ConsoleSpec, SimOptions};
    let exe = std::env::current_exe().context("cannot find the testfarm executable")?;
    let mut tables = String::new();
    for i in 1..=2 {
        let name = format!("sim-board-{i}");
        let dir = base.join("boards").join(&name);
        let (tx, rx) = tokio::sync::oneshot::channel::<String>();
        let opts = SimOptions {
            console: ConsoleSpec::Tcp("127.0.0.1:0".into()),
            state_dir: dir.clone(),
            behaviour: Behaviour {
                line_delay: Duration::from_millis(10),
                ..Behaviour::default()
            },
        };
        tokio::spawn(async move {
            if let Err(e) = sim::run(opts, |addr| {
                let _ = tx.send(addr.to_string());
            })
            .await
            {
                tracing::error!(error = %e, "a simulated board stopped");
            }
        });
        let console = tokio::time::timeout(Duration::from_secs(10), rx)
            .await
            .context("a simulated board did not start")?
            .context("a simulated board did not start")?;
        let power = |a: &str| {
            format!(
                "'{}' sim-board power {a} --state-dir '{}'",
                exe.display(),
                dir.display()
            )
        };
        tables.push_str(&format!(
            r#"
[[board]]
name = "{name}"
board_type = "sim"
arch = "arm64"
peripherals = ["serial", "ethernet"]
labels = {{ site = "local", team = "demo" }}
power = {{ driver = "command", on = "{on}", off = "{off}", status = "{status}", cycle_delay = "200ms" }}
console = {{ driver = "tcp", address = "{console}" }}
flash = {{ driver = "command", run = "cp {{{{ artifacts.firmware }}}} '{flashed}'" }}
boot = {{ expect = "login: $", login = "root", timeout = "30s" }}
"#,
            on = power("on"),
            off = power("off"),
            status = power("status"),
            flashed = dir.join("flashed.bin").display(),
        ));
    }
    Ok(tables)
}

const JOBS: [(&str, &str); 2] = [
    (
        "examples/demo/hello-board.yaml",
        include_str!("../../../../examples/demo/hello-board.yaml"),
    ),
    (
        "examples/demo/build.yaml",
        include_str!("../../../../examples/demo/build.yaml"),
    ),
];

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Base directory to use (default: a new temporary one, removed on exit).
    #[arg(long)]
    base_dir: Option<PathBuf>,
    /// Address to listen on; falls back to a free port if it is taken.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: std::net::SocketAddr,
    /// Stop after this many seconds (for scripts); default: run until Ctrl-C.
    #[arg(long)]
    exit_after: Option<u64>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    crate::logging::init(LogFormat::Text, "warn");
    let temp = match &args.base_dir {
        Some(_) => None,
        None => Some(
            tempfile::Builder::new()
                .prefix("testfarm-demo-")
                .tempdir()
                .context("cannot create a temporary directory")?,
        ),
    };
    let base = args
        .base_dir
        .clone()
        .or_else(|| temp.as_ref().map(|t| t.path().to_path_buf()))
        .context("no base directory")?;
    let done = init::init(&init::Args {
        base_dir: base.clone(),
        listen: args.listen,
        server_url: None,
        non_interactive: true,
        force: false,
    })?;
    let token = std::fs::read_to_string(&done.token_path)?
        .trim()
        .to_string();
    let mut config = Config::load(&done.config_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    // The demo's jobs are tiny: a laptop with a nearly full disk or busy cores should still
    // see them run, without warnings about this machine's load (a real lab keeps the
    // configured floors, 10 GB free and 85% use by default).
    config.health.min_disk_gb = config.health.min_disk_gb.min(1);
    config.health.max_utilization_pct = 100;
    let rt = tokio::runtime::Runtime::new()?;
    let code = rt.block_on(async move {
        let paths = Paths::resolve(&config, &base, None, None);
        let server = match Server::bind(config.clone(), &paths).await {
            Ok(s) => s,
            Err(testfarm_server::ServerError::Listen { .. }) => {
                config.server.listen.set_port(0);
                Server::bind(config, &paths).await?
            }
            Err(e) => return Err(e.into()),
        };
        let url = format!("http://{}", server.local_addr()?);
        let boards = start_sim_boards(&base).await?;
        let agent =
            crate::local_agent::start(&server, &url, &paths.data_dir.join("work"), &boards).await?;
        let skipped = agent.skipped.clone();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(server.run(async move {
            let _ = stop_rx.await;
            agent.stop().await;
        }));

        let client = Client::new(&url, token.clone())?;
        let code = tour(
            &client,
            &url,
            &base,
            &paths.database,
            &done.token_path,
            &skipped,
        )
        .await;

        match args.exit_after {
            Some(secs) => {
                outln!("(stopping after {secs} s)");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(secs)) => {}
                    _ = crate::cmd::server::shutdown_signal() => {}
                }
            }
            None => {
                outln!("Ctrl-C to stop.");
                crate::cmd::server::shutdown_signal().await;
            }
        }
        let _ = stop_tx.send(());
        serving.await??;
        code
    })?;
    drop(temp);
    Ok(code)
}

/// Waits for the lab to come up, runs the example jobs, and prints where to look.
async fn tour(
    client: &Client,
    url: &str,
    base: &std::path::Path,
    database: &std::path::Path,
    token_path: &std::path::Path,
    skipped: &[String],
) -> anyhow::Result<ExitCode> {
    // The built-in agent registers its resources within a moment of starting.
    let mut resources: Vec<Resource> = Vec::new();
    for _ in 0..100 {
        let page: Page<Resource> = client.get("/api/v1/resources").await?;
        resources = page.items;
        if resources
            .iter()
            .filter(|r| r.name.starts_with("sim-board"))
            .count()
            == 2
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    outln!("testfarm demo is running");
    outln!();
    outln!("  server    {url}");
    outln!("  base dir  {}", base.display());
    outln!("  database  {}", database.display());
    outln!("  token     {}", token_path.display());
    outln!();
    outln!("resources (registered by the built-in agent):");
    for r in &resources {
        outln!(
            "  {:<14} {:<13} {:<10} {}",
            r.name,
            r.kind,
            r.state,
            r.labels
        );
    }
    for why in skipped {
        outln!("  skipped: {why}");
    }
    outln!();
    let mut all_passed = true;
    for (path, spec) in JOBS {
        let job: Job = client
            .post(
                "/api/v1/jobs",
                &SubmitJob {
                    spec: spec.to_string(),
                    vars: Default::default(),
                    priority: None,
                },
            )
            .await?;
        let end = wait(client, &job.id, Duration::from_secs(120)).await?;
        all_passed &= end.state == testfarm_api::job::JobState::Passed;
        if !end.state.is_terminal() {
            // Say why instead of leaving the user with a job that never ended.
            let why: serde_json::Value =
                client.get(&format!("/api/v1/jobs/{}/why", end.id)).await?;
            outln!("job {} did not end in time:", end.name);
            outln!("{}", why["text"].as_str().unwrap_or_default());
        }
        outln!(
            "job {:<18} {:<7} on {:<12} ({path}, id {})",
            end.name,
            end.state.to_string(),
            end.resource.clone().unwrap_or_default(),
            end.id
        );
    }
    outln!();
    let qemu = resources
        .iter()
        .any(|r| r.kind == testfarm_core::resource::ResourceKind::QemuHost);
    all_passed &= pipeline(client, url, base, token_path, qemu).await?;
    outln!();
    outln!("try, in another terminal:");
    outln!(
        "  export TESTFARM_URL={url} TESTFARM_TOKEN_FILE={}",
        token_path.display()
    );
    outln!("  testfarm resource list");
    outln!("  testfarm jobs");
    outln!("  testfarm logs <job id>");
    outln!("  testfarm submit examples/demo/hello-board.yaml --wait");
    outln!("  testfarm board list; testfarm board history sim-board-1");
    outln!("  testfarm board power sim-board-1 on; testfarm console sim-board-1   (Ctrl-] leaves)");
    outln!("  testfarm logs <demo-hello-board id> --console");
    outln!("  testfarm pipeline list; testfarm pipeline show <pipeline id>");
    outln!(
        "  testfarm pipeline run {} --follow",
        base.join("demo-pipeline.yaml").display()
    );
    outln!("  testfarm lease exec -s board_type=sim -- sh -c 'echo holding $TESTFARM_RESOURCE'");
    outln!("  testfarm events --follow");
    outln!();
    Ok(if all_passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Runs the demo pipeline (build → test in a VM, or on the host without QEMU) and prints
/// each stage and where to see it. True when it passed.
async fn pipeline(
    client: &Client,
    url: &str,
    base: &std::path::Path,
    token_path: &std::path::Path,
    qemu: bool,
) -> anyhow::Result<bool> {
    use crate::cmd::demo_pipeline;
    let repo = demo_pipeline::write_source(base)?;
    let exe = std::env::current_exe().context("cannot find the testfarm executable")?;
    let spec = demo_pipeline::spec(&repo, &exe, url, token_path, qemu);
    let file = base.join("demo-pipeline.yaml");
    std::fs::write(&file, &spec).with_context(|| format!("writing {}", file.display()))?;
    if qemu {
        outln!(
            "pipeline demo-pipeline: build (program + guest image) on local-build, then deploy, boot and a TAP test in a QEMU VM on local-qemu"
        );
    } else {
        outln!(
            "pipeline demo-pipeline: build on local-build, then the TAP test on local-build itself (no QEMU here, so no VM stage)"
        );
    }
    let end = demo_pipeline::run(client, spec, Duration::from_secs(900)).await?;
    for s in &end.stages {
        outln!(
            "  stage {:<6} {:<9} job {}{}",
            s.name,
            s.state.as_str(),
            s.job.as_deref().unwrap_or("-"),
            s.reason
                .as_ref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        );
    }
    outln!(
        "pipeline {} {} ({}); spec: {}",
        end.id,
        end.state.as_str(),
        end.reason.as_deref().unwrap_or("every stage passed"),
        file.display()
    );
    if let Some(test) = end
        .stages
        .iter()
        .find(|s| s.name == "test")
        .and_then(|s| s.job.as_ref())
    {
        outln!("  results: testfarm results {test}");
        if qemu {
            outln!("  console: testfarm logs {test} --console");
        }
    }
    Ok(end.state == testfarm_api::pipeline::PipelineState::Passed)
}

async fn wait(client: &Client, id: &str, limit: Duration) -> anyhow::Result<Job> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let job: Job = client.get(&format!("/api/v1/jobs/{id}")).await?;
        if job.state.is_terminal() || tokio::time::Instant::now() > deadline {
            return Ok(job);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
