//! The built-in agent: `testfarm server` (and `demo`) run the same agent as lab hosts do,
//! in-process, for the machine the server runs on, unless `[agent.local] enabled = false`.

use std::path::Path;

use anyhow::Context;
use testfarm_agent::AgentConfig;
use testfarm_server::Server;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running built-in agent; [`LocalAgent::stop`] ends it.
pub struct LocalAgent {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
    /// Resources this host could have offered but does not, each with why (a person
    /// running the demo on a machine without QEMU is told, not left guessing).
    pub skipped: Vec<String>,
}

/// Why this host is not a QEMU host, or `None` when it can be one.
fn qemu_missing() -> Option<String> {
    const BINARIES: [&str; 2] = ["qemu-system-x86_64", "qemu-system-aarch64"];
    if BINARIES
        .iter()
        .any(|b| testfarm_agent::detect::which(b).is_some())
    {
        return None;
    }
    Some(format!(
        "qemu-host: neither {} is on PATH (Debian: apt-get install qemu-system-x86)",
        BINARIES.join(" nor ")
    ))
}

/// Starts the built-in agent against `url`. `extra` is more `agent.toml` text (the demo
/// adds simulated boards); the host registers as a build server, and as a QEMU host when
/// QEMU is installed.
pub async fn start(
    server: &Server,
    url: &str,
    work_dir: &Path,
    extra: &str,
) -> anyhow::Result<LocalAgent> {
    let name = server.config().agent.local.name.clone();
    let token = server.issue_agent_token(&name).await?;
    let qemu_missing = qemu_missing();
    let mut text = format!(
        "url = {url:?}\nname = {name:?}\nwork_dir = {work:?}\n\n[[resource]]\nkind = \"build-server\"\nlabels = {{ site = \"local\" }}\n",
        work = work_dir.display().to_string()
    );
    if qemu_missing.is_none() {
        text.push_str("\n[[resource]]\nkind = \"qemu-host\"\nlabels = { site = \"local\" }\n");
    }
    text.push_str(extra);
    let mut config = AgentConfig::parse(Path::new("(built-in agent)"), &text)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    config.token = Some(token);
    std::fs::create_dir_all(work_dir)
        .with_context(|| format!("cannot create {}", work_dir.display()))?;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let shutdown = async {
            let _ = stopped.await;
        };
        if let Err(e) = testfarm_agent::run(config, shutdown).await {
            tracing::error!(error = %e, "the built-in agent stopped");
        }
    });
    Ok(LocalAgent {
        stop,
        task,
        skipped: qemu_missing.into_iter().collect(),
    })
}

impl LocalAgent {
    /// Stops the agent (bounded), before the server it talks to stops.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(std::time::Duration::from_secs(15), self.task).await;
    }
}
