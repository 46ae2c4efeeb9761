//! `testfarm agent`: run an agent on a lab host (`--config agent.toml`, or `--url`,
//! `--token-file` and `--name` for this host as a build server), or `--check` what it
//! would register: every configured resource measured, and what failed, precisely.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use testfarm_agent::AgentConfig;
use testfarm_agent::agent::probe_all;
use testfarm_server::config::LogFormat;

#[derive(Debug, clap::Subcommand)]
pub enum Sub {
    /// List serial devices (/dev/serial/by-id) and USB hubs uhubctl can switch, and
    /// propose `[[board]]` tables for them (to paste into agent.toml and complete).
    DetectBoards {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    pub sub: Option<Sub>,
    /// The agent's configuration file (see docs/agent.md).
    #[arg(short = 'c', long, value_name = "FILE", conflicts_with_all = ["url", "name"])]
    pub config: Option<PathBuf>,
    /// Server URL, without a config file (this host registers as a build server).
    #[arg(long, value_name = "URL", requires = "name")]
    pub url: Option<String>,
    /// File holding the agent's token (an agent-role token named like the agent).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// The agent's name (its token's name).
    #[arg(long, requires = "url")]
    pub name: Option<String>,
    /// Where job work directories go (overrides the config file).
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// Measure and validate the configured resources (SSH hosts included), print them,
    /// and exit: non-zero when any cannot be registered.
    #[arg(long)]
    pub check: bool,
    /// Log as JSON lines.
    #[arg(long)]
    pub log_json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if let Some(Sub::DetectBoards { json }) = &args.sub {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let found = rt.block_on(testfarm_agent::detect_boards::detect_boards());
        if *json {
            crate::output::json(&found)?;
        } else {
            out!("{found}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut config = match (&args.config, &args.url, &args.name) {
        (Some(path), _, _) => AgentConfig::load(path).map_err(|e| anyhow::anyhow!("{e}"))?,
        (None, Some(url), Some(name)) => AgentConfig::minimal(url, args.token_file.clone(), name),
        _ => anyhow::bail!("give --config FILE, or --url URL --token-file FILE --name NAME"),
    };
    if let Some(t) = &args.token_file {
        config.token_file = Some(t.clone());
    }
    if let Some(w) = &args.work_dir {
        config.work_dir = w.clone();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if args.check {
        return rt.block_on(check(&config));
    }
    crate::logging::init(
        if args.log_json {
            LogFormat::Json
        } else {
            LogFormat::Text
        },
        "info",
    );
    rt.block_on(async move {
        let shutdown = async {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(_) => return std::future::pending().await,
                };
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            tracing::info!("stopping");
        };
        testfarm_agent::run(config, shutdown)
            .await
            .context("the agent stopped")
    })?;
    Ok(ExitCode::SUCCESS)
}

async fn check(config: &AgentConfig) -> anyhow::Result<ExitCode> {
    let mut failed = 0;
    for p in probe_all(config).await {
        match p.result {
            Ok(m) => {
                let r = &m.resource;
                outln!(
                    "ok    {} ({}): {}",
                    r.name,
                    r.kind.as_str(),
                    serde_json::to_string(&r.capabilities)?
                );
                if !r.labels.0.is_empty() {
                    let labels: Vec<String> =
                        r.labels.0.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    outln!("      labels: {}", labels.join(","));
                }
                for v in &r.verification {
                    outln!("      found: {v}");
                }
                if let Some(why) = &r.offline_reason {
                    // Registered, but offline until it answers: say so, and fail the check.
                    failed += 1;
                    outln!("      OFFLINE: {why}");
                }
            }
            Err(e) => {
                failed += 1;
                outln!("FAIL  {}: {e}", p.name);
            }
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
