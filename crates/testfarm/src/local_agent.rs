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
    let qemu = testfarm_agent::detect::which("qemu-system-x86_64").is_some()
        || testfarm_agent::detect::which("qemu-system-aarch64").is_some();
    let mut text = format!(
        "url = {url:?}\nname = {name:?}\nwork_dir = {work:?}\n\n[[resource]]\nkind = \"build-server\"\nlabels = {{ site = \"local\" }}\n",
        work = work_dir.display().to_string()
    );
    if qemu {
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
    Ok(LocalAgent { stop, task })
}

impl LocalAgent {
    /// Stops the agent (bounded), before the server it talks to stops.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(std::time::Duration::from_secs(15), self.task).await;
    }
}
