//! `testfarm demo`: a whole lab on this machine in one command. A server with its
//! SQLite database in a temporary base directory, this host registered as a build server
//! (and a QEMU host when QEMU is installed), two simulated boards, and pointers to look.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use testfarm_agent::detect;
use testfarm_api::resource::{BoardInfo, Capabilities, CreateResource, Labels, Resource, ResourceKind};
use testfarm_server::config::{Config, LogFormat};
use testfarm_server::{Paths, Server};

use crate::client::Client;
use crate::cmd::init;

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
    let token = std::fs::read_to_string(&done.token_path)?.trim().to_string();
    let mut config = Config::load(&done.config_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
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
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(server.run(async move {
            let _ = stop_rx.await;
        }));

        let client = Client::new(&url, token.clone())?;
        let registered = register_lab(&client, &paths.data_dir).await?;

        println!("testfarm demo is running");
        println!();
        println!("  server    {url}");
        println!("  base dir  {}", base.display());
        println!("  database  {}", paths.database.display());
        println!("  token     {}", done.token_path.display());
        println!();
        println!("resources:");
        for r in &registered {
            println!("  {:<14} {:<13} {}", r.name, r.kind, r.labels);
        }
        println!();
        println!("try, in another terminal:");
        println!("  export TESTFARM_URL={url} TESTFARM_TOKEN_FILE={}", done.token_path.display());
        println!("  testfarm resource list");
        println!("  testfarm resource maintenance sim-board-2 on --reason 'reflash'");
        println!("  testfarm events --follow");
        println!("  curl -H \"Authorization: Bearer $(cat {})\" {url}/api/v1/openapi.json", done.token_path.display());

        match args.exit_after {
            Some(secs) => {
                println!();
                println!("(stopping after {secs} s)");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(secs)) => {}
                    _ = crate::cmd::server::shutdown_signal() => {}
                }
            }
            None => {
                println!();
                println!("Ctrl-C to stop.");
                crate::cmd::server::shutdown_signal().await;
            }
        }
        let _ = stop_tx.send(());
        serving.await??;
        Ok::<_, anyhow::Error>(())
    })?;
    drop(temp);
    Ok(ExitCode::SUCCESS)
}

/// Registers this host and two simulated boards through the API, as an operator would.
async fn register_lab(client: &Client, data_dir: &std::path::Path) -> anyhow::Result<Vec<Resource>> {
    let caps = detect::detect_local(data_dir, &[]).await.capabilities();
    let arch = caps.arch.clone().unwrap_or_default();
    let labels = |pairs: &[(&str, &str)]| -> Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    };
    let mut wanted = vec![CreateResource {
        name: "local-build".into(),
        kind: ResourceKind::BuildServer,
        labels: labels(&[("site", "local"), ("arch", &arch)]),
        capabilities: caps.clone(),
        board: None,
    }];
    if detect::which("qemu-system-x86_64").is_some() || detect::which("qemu-system-aarch64").is_some() {
        wanted.push(CreateResource {
            name: "local-qemu".into(),
            kind: ResourceKind::QemuHost,
            labels: labels(&[("site", "local"), ("arch", &arch)]),
            capabilities: caps.clone(),
            board: None,
        });
    }
    for i in 1..=2 {
        wanted.push(CreateResource {
            name: format!("sim-board-{i}"),
            kind: ResourceKind::Board,
            labels: labels(&[("site", "local"), ("board_type", "sim"), ("team", "demo")]),
            capabilities: Capabilities {
                arch: Some("arm64".into()),
                peripherals: vec!["serial".into(), "ethernet".into()],
                ..Default::default()
            },
            board: Some(BoardInfo {
                board_type: Some("sim".into()),
                serial_number: Some(format!("SIM-000{i}")),
                power_method: Some("process".into()),
                flash_station: Some("local-build".into()),
            }),
        });
    }
    let mut out = Vec::new();
    for req in wanted {
        let existing: anyhow::Result<Resource> = client.get(&format!("/api/v1/resources/{}", req.name)).await;
        let r = match existing {
            Ok(r) => r,
            Err(_) => client.post("/api/v1/resources", &req).await?,
        };
        out.push(r);
    }
    Ok(out)
}
