//! `testfarm buildomat …`: testfarm as a buildomat factory (docs/buildomat.md). `setup`
//! checks a buildomat-server answers the factory token, then writes the `[buildomat]`
//! section and a 0600 token file; `instances` lists what the factory runs.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::Subcommand;
use testfarm_buildomat::client::{Client as Bmat, ClientError};
use testfarm_core::selector::Selector;
use testfarm_server::config::Config;
use testfarm_server::routes::buildomat::BuildomatInstance;

use crate::client::Connection;
use crate::output::{self, Format};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// List the factory's instances: board, testfarm lease, buildomat job and worker.
    Instances {
        /// Include destroyed ones.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        conn: Connection,
        #[command(flatten)]
        format: Format,
    },
    /// Check a buildomat-server and write the `[buildomat]` section and token file.
    Setup(SetupArgs),
}

#[derive(Debug, clap::Args)]
pub struct SetupArgs {
    /// The server configuration file to add the section to (written by `testfarm init`).
    #[arg(long = "config", short = 'f')]
    config: PathBuf,
    /// buildomat-server's URL, e.g. http://buildomat:8000.
    #[arg(long)]
    url: String,
    /// The factory token (prefer --token-file: command lines are visible to others).
    #[arg(long, conflicts_with = "token_file")]
    token: Option<String>,
    /// A file holding the factory token.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// TARGET=SELECTOR: a buildomat target (name or id) and the boards that serve it,
    /// e.g. sp-grapefruit=board_type=grapefruit. Repeat for more targets.
    #[arg(long = "target", required = true)]
    targets: Vec<String>,
    /// A buildomat user token file with target.read, for resolving target names.
    #[arg(long)]
    admin_token_file: Option<PathBuf>,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.cmd {
        Cmd::Instances { all, conn, format } => instances(all, conn, format).await,
        Cmd::Setup(a) => setup(a).await,
    }
}

async fn instances(all: bool, conn: Connection, format: Format) -> anyhow::Result<ExitCode> {
    let client = conn.client()?;
    let list: Vec<BuildomatInstance> = client
        .get(&format!("/api/v1/buildomat/instances?all={all}"))
        .await?;
    if format.json {
        output::json(&list)?;
        return Ok(ExitCode::SUCCESS);
    }
    let opt = |s: Option<String>| s.unwrap_or_else(|| "-".into());
    let rows = list
        .into_iter()
        .map(|i| {
            vec![
                i.id,
                i.state,
                i.board,
                opt(i.lease_id),
                i.buildomat_job,
                i.worker,
                if i.hold { "held".into() } else { "-".into() },
                opt(i.destroy_reason),
            ]
        })
        .collect();
    output::table(
        &[
            "instance",
            "state",
            "board",
            "lease",
            "buildomat job",
            "worker",
            "hold",
            "reason",
        ],
        rows,
    );
    Ok(ExitCode::SUCCESS)
}

/// `NAME=SELECTOR`, the selector checked.
fn parse_target(s: &str) -> anyhow::Result<(String, String)> {
    let (name, selector) = s
        .split_once('=')
        .ok_or_else(|| anyhow!("--target {s:?}: write TARGET=SELECTOR"))?;
    let name = name.trim();
    if name.is_empty() {
        bail!("--target {s:?}: the target name is empty");
    }
    Selector::parse(selector).map_err(|e| anyhow!("--target {s:?}: {e}"))?;
    Ok((name.to_string(), selector.trim().to_string()))
}

/// What a failed ping means to the person running setup.
fn explain(url: &str, e: &ClientError) -> String {
    match e {
        ClientError::Unauthorized { status, .. } => format!(
            "buildomat-server at {url} refused the factory token ({status}): check the token (buildomat-server creates it with `bmat admin factory create`)"
        ),
        ClientError::Unreachable { source, .. } => {
            format!("cannot reach buildomat-server at {url}: {source} (check the URL)")
        }
        ClientError::Refused { status: 404, .. } => format!(
            "{url} answered 404 for /0/factory/ping: this is not a buildomat-server (check the URL)"
        ),
        e => format!("buildomat-server at {url}: {e}"),
    }
}

async fn setup(a: SetupArgs) -> anyhow::Result<ExitCode> {
    let token = match (&a.token, &a.token_file) {
        (Some(t), _) => t.trim().to_string(),
        (None, Some(f)) => std::fs::read_to_string(f)
            .with_context(|| format!("cannot read the token file {}", f.display()))?
            .trim()
            .to_string(),
        (None, None) => bail!("give the factory token with --token-file FILE (or --token)"),
    };
    if token.is_empty() {
        bail!("the factory token is empty");
    }
    let targets = a
        .targets
        .iter()
        .map(|t| parse_target(t))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let url = a.url.trim_end_matches('/').to_string();
    let bmat = Bmat::new(&url, &token, Duration::from_secs(15)).map_err(|e| anyhow!("{e}"))?;
    if let Err(e) = bmat.ping().await {
        eprintln!("error: {}", explain(&url, &e));
        return Ok(ExitCode::from(1));
    }

    let config_dir = a
        .config
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let old = std::fs::read_to_string(&a.config)
        .with_context(|| format!("cannot read {}", a.config.display()))?;
    let mut section =
        testfarm_server::buildomat::config::section_toml(&url, "buildomat.token", &targets);
    if let Some(f) = &a.admin_token_file {
        let abs =
            std::fs::canonicalize(f).with_context(|| format!("cannot find {}", f.display()))?;
        section = section.replacen(
            "token_file = \"buildomat.token\"\n",
            &format!(
                "token_file = \"buildomat.token\"\nadmin_token_file = {:?}\n",
                abs.display().to_string()
            ),
            1,
        );
    }
    let text = format!("{}\n{section}", without_buildomat(&old).trim_end());
    // Refuse to write a file the server would refuse to read, or whose target names it
    // could not resolve.
    let parsed = Config::parse(&a.config, &text).map_err(|e| anyhow!("{e}"))?;
    if let Some(section) = &parsed.buildomat {
        let admin = match &a.admin_token_file {
            Some(f) => Some(
                std::fs::read_to_string(f)
                    .with_context(|| format!("cannot read {}", f.display()))?
                    .trim()
                    .to_string(),
            ),
            None => None,
        };
        if let Err(e) =
            testfarm_server::buildomat::targets::resolve(section, admin.as_deref()).await
        {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(1));
        }
    }
    let token_path = config_dir.join("buildomat.token");
    super::init::write_secret(&token_path, &token)?;
    std::fs::write(&a.config, text)
        .with_context(|| format!("cannot write {}", a.config.display()))?;
    outln!("buildomat-server at {url} answered the factory token");
    outln!("wrote [buildomat] to {}", a.config.display());
    outln!("token: {} (mode 0600)", token_path.display());
    outln!("restart the testfarm server to start the factory");
    Ok(ExitCode::SUCCESS)
}

/// The config text with any `[buildomat]` section (and its `[[buildomat.target]]` and
/// `[buildomat.*]` tables) removed, so setup can be run again.
fn without_buildomat(text: &str) -> String {
    let mut out = String::new();
    let mut skipping = false;
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with('[') {
            let name = t
                .trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or("")
                .trim();
            skipping = name == "buildomat" || name.starts_with("buildomat.");
        }
        if !skipping {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_old_section_is_replaced_not_repeated() {
        let text = "[server]\nlisten = \"x\"\n\n[buildomat]\nurl = \"u\"\n[[buildomat.target]]\nname = \"a\"\n\n[agent.local]\nenabled = true\n";
        let t = without_buildomat(text);
        assert!(!t.contains("buildomat"), "{t}");
        assert!(t.contains("[agent.local]\nenabled = true"), "{t}");
    }

    #[test]
    fn targets_need_a_name_and_a_selector() {
        assert_eq!(
            parse_target("sp=board_type=sim").ok(),
            Some(("sp".into(), "board_type=sim".into()))
        );
        assert!(parse_target("sp").is_err());
        assert!(parse_target("sp=board_type in (").is_err());
    }
}
