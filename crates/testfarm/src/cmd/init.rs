//! `testfarm init`: the one-time setup of a lab's base directory.

use std::io::{BufRead, IsTerminal, Write};
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use testfarm_server::config::{Config, DEFAULT_TOML};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory to set up (created if missing).
    #[arg(long)]
    pub base_dir: PathBuf,
    /// Address the server will listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// URL people and agents will use to reach the server (default: from --listen).
    #[arg(long)]
    pub server_url: Option<String>,
    /// Do not ask questions, even on a terminal.
    #[arg(long)]
    pub non_interactive: bool,
    /// Overwrite an existing config.toml and admin.token.
    #[arg(long)]
    pub force: bool,
}

/// What `init` made, for callers such as `demo`.
pub struct Initialised {
    pub config_path: PathBuf,
    pub token_path: PathBuf,
    pub token: Option<String>,
}

pub fn run(mut args: Args) -> anyhow::Result<ExitCode> {
    if !args.non_interactive && std::io::stdin().is_terminal() {
        ask(&mut args)?;
    }
    let done = init(&args)?;
    outln!("config: {}", done.config_path.display());
    match &done.token {
        Some(token) => {
            outln!(
                "admin token (shown once; also in {} with mode 0600):",
                done.token_path.display()
            );
            outln!("{token}");
        }
        None => outln!(
            "admin token: kept the existing {}",
            done.token_path.display()
        ),
    }
    outln!(
        "start the server with: testfarm server -f {}",
        done.config_path.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn ask(args: &mut Args) -> anyhow::Result<()> {
    let stdin = std::io::stdin();
    let prompt = |question: &str, default: &str| -> anyhow::Result<String> {
        out!("{question} [{default}]: ");
        std::io::stdout().flush()?;
        let mut line = String::new();
        stdin.lock().read_line(&mut line)?;
        let line = line.trim();
        Ok(if line.is_empty() {
            default.to_string()
        } else {
            line.to_string()
        })
    };
    loop {
        let answer = prompt("Listen address", &args.listen.to_string())?;
        match answer.parse() {
            Ok(addr) => {
                args.listen = addr;
                break;
            }
            Err(e) => outln!("  not an address:port ({e}); try again"),
        }
    }
    let default_url = args
        .server_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", args.listen));
    args.server_url = Some(prompt("Server URL", &default_url)?);
    Ok(())
}

/// Creates the base directory, its config and work dir, and an admin token, never
/// overwriting an existing config or token without `force`.
pub fn init(args: &Args) -> anyhow::Result<Initialised> {
    let base = &args.base_dir;
    std::fs::create_dir_all(base.join("work"))
        .with_context(|| format!("cannot create {}", base.display()))?;
    let config_path = base.join("config.toml");
    let token_path = base.join("admin.token");

    let mut text = DEFAULT_TOML.replacen(
        "listen = \"127.0.0.1:8080\"",
        &format!("listen = \"{}\"", args.listen),
        1,
    );
    if let Some(url) = &args.server_url {
        text = text.replacen("url = \"\"", &format!("url = {}", toml_string(url)), 1);
    }
    // Refuse to write a file the server would refuse to read.
    Config::parse(&config_path, &text).map_err(|e| anyhow::anyhow!("{e}"))?;
    if config_path.exists() && !args.force {
        eprintln!(
            "{} exists; keeping it (use --force to overwrite)",
            config_path.display()
        );
    } else {
        std::fs::write(&config_path, text)
            .with_context(|| format!("cannot write {}", config_path.display()))?;
    }

    let token = if token_path.exists() && !args.force {
        None
    } else {
        let (_, token) = testfarm_server::auth::new_token();
        write_secret(&token_path, &token)?;
        Some(token)
    };
    Ok(Initialised {
        config_path,
        token_path,
        token,
    })
}

fn toml_string(s: &str) -> String {
    let escaped = s.replace('\\', "\\\\").replace('"', "\\\"");
    format!("\"{escaped}\"")
}

/// Writes a secret readable by its owner only (0600 from creation, not chmod after).
pub(crate) fn write_secret(path: &Path, secret: &str) -> anyhow::Result<()> {
    if path.exists() {
        std::fs::remove_file(path).with_context(|| format!("cannot replace {}", path.display()))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    writeln!(f, "{secret}")?;
    if secret.is_empty() {
        bail!("empty token");
    }
    Ok(())
}
