//! `testfarm server`: the API server, scheduler and background tasks.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use testfarm_server::config::{Config, LogFormat};
use testfarm_server::{Paths, Server};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Configuration file (written by `testfarm init`).
    #[arg(long = "config", short = 'f')]
    pub config: PathBuf,
    /// Database path, overriding the config (as buildomat factories take `-d`).
    #[arg(short = 'd', long = "database")]
    pub database: Option<PathBuf>,
    /// Log format, overriding the config.
    #[arg(long, value_parser = parse_format)]
    pub log_format: Option<LogFormat>,
    /// Listen address, overriding the config (e.g. 127.0.0.1:0 for an ephemeral port).
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
}

fn parse_format(s: &str) -> Result<LogFormat, String> {
    match s {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err(format!("unknown log format {s:?}: expected text or json")),
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: invalid configuration: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    crate::logging::init(
        args.log_format.unwrap_or(config.log.format),
        &config.log.level,
    );
    let config_dir = args
        .config
        .parent()
        .map(PathBuf::from)
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."));
    let token_env = std::env::var_os("TESTFARM_ADMIN_TOKEN_FILE").map(PathBuf::from);
    let paths = Paths::resolve(&config, &config_dir, args.database.as_deref(), token_env);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.server.workers)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let local_enabled = config.agent.local.enabled;
        let server = Server::bind(config, &paths).await?;
        let addr = server.local_addr()?;
        tracing::info!(%addr, database = %paths.database.display(), "testfarm server listening");
        let url = format!("http://{addr}");
        let agent = if local_enabled {
            Some(crate::local_agent::start(&server, &url, &paths.data_dir.join("work"), "").await?)
        } else {
            None
        };
        // Scripts (and tests) read the bound address from this line on stdout.
        outln!("listening on {url}");
        server
            .run(async move {
                shutdown_signal().await;
                if let Some(agent) = agent {
                    agent.stop().await;
                }
            })
            .await?;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}
