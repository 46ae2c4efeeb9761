//! One VM for an agent job: started from deployed artifacts, then verified by the caller
//! (console text, the guest agent's hello), driven through the guest agent, and killed.
//!
//! Unlike a pod VM ([`crate::vm::Vm`]), starting does not wait for the guest agent: an
//! image may prove its boot on the console only (`login:`) and have no agent at all. The
//! agent socket is connected right after QEMU starts all the same, because the guest says
//! hello once, and bytes written before anyone listens are lost; held, the hello waits in
//! the socket until a step needs the agent.
//!
//! QEMU never outlives the job: the process guard kills it when this value is dropped
//! (whatever path the job took), and its death signal when the agent itself dies.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::UnixStream;

use crate::agent::{self, Agent, ProtocolChoice};
use crate::config::{ResolvedAccel, VmConfig};
use crate::error::{Result, VmError};
use crate::process::QemuProcess;
use crate::qemu_cmd::{VmPaths, qemu_argv};

/// The guest agent's connection, as far as it has got.
#[derive(Debug)]
enum Guest {
    /// Connected to QEMU's socket; the hello (if any) not read yet.
    Pending(UnixStream),
    Ready(Agent),
    /// Connecting or greeting failed; why.
    Failed(String),
}

#[derive(Debug)]
pub struct JobVm {
    pub paths: VmPaths,
    process: QemuProcess,
    guest: Guest,
    /// A v2 guest silent this long is unresponsive.
    heartbeat_timeout: Duration,
}

/// Where a VM's overlay goes when not in its runtime directory (a job's work directory,
/// on disk rather than the tmpfs runtime directories often are).
#[derive(Debug, Clone, Default)]
pub struct Placement {
    pub overlay: Option<PathBuf>,
}

impl JobVm {
    /// Starts QEMU for `cfg` with its sockets and logs in `dir` (a fresh private directory,
    /// short enough for unix socket paths), a qcow2 overlay over `cfg.rootfs` if there is
    /// one, and connects to the guest agent's socket.
    pub async fn start(
        cfg: &VmConfig,
        accel: ResolvedAccel,
        dir: &Path,
        placement: &Placement,
    ) -> Result<JobVm> {
        let mut paths = VmPaths::in_dir(dir);
        if let Some(o) = &placement.overlay {
            paths.overlay = o.clone();
        }
        if let Some(rootfs) = &cfg.rootfs {
            let _ = std::fs::remove_file(&paths.overlay);
            crate::overlay::create(rootfs, &paths.overlay).await?;
        }
        let argv = qemu_argv(cfg, accel, &paths);
        let mut process = QemuProcess::spawn(&argv, &paths.qemu_log)?;
        let connected = tokio::select! {
            s = agent::connect_socket(&paths.agent_sock, Duration::from_secs(10)) => s,
            status = process.wait() => Err(VmError::Boot {
                vm: dir.display().to_string(),
                message: format!(
                    "QEMU exited at start ({status:?}): {}",
                    crate::vm::tail(&paths.qemu_log, 10)
                ),
            }),
        };
        let guest = match connected {
            Ok(s) => Guest::Pending(s),
            Err(e) => {
                process.kill().await;
                return Err(e);
            }
        };
        Ok(JobVm {
            paths,
            process,
            guest,
            heartbeat_timeout: Duration::from_secs(15),
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// How QEMU ended, if it has.
    pub fn exited(&mut self) -> Option<String> {
        self.process.try_exited().map(|s| s.to_string())
    }

    /// The whole console so far (its last 1 MiB), control sequences removed.
    pub fn console(&self) -> String {
        let bytes = std::fs::read(&self.paths.console_log).unwrap_or_default();
        let start = bytes.len().saturating_sub(1024 * 1024);
        crate::vm::clean_console(&String::from_utf8_lossy(&bytes[start..]))
    }

    /// QEMU's own messages (why it refused to start, mostly).
    pub fn qemu_log_tail(&self, lines: usize) -> String {
        crate::vm::tail(&self.paths.qemu_log, lines)
    }

    /// Takes the pending connection, to greet it while also watching the VM (see
    /// [`JobVm::greet`]); `None` if it was taken, greeted, or failed.
    pub fn take_pending(&mut self) -> Option<UnixStream> {
        match std::mem::replace(&mut self.guest, Guest::Failed("being greeted".into())) {
            Guest::Pending(s) => Some(s),
            other => {
                self.guest = other;
                None
            }
        }
    }

    /// Reads the hello on `stream` (within `within`) and negotiates the protocol. A free
    /// function over the stream so the caller can race it against QEMU's exit.
    pub async fn greet(stream: UnixStream, within: Duration) -> Result<Agent> {
        agent::connect(
            stream,
            within,
            ProtocolChoice::Auto,
            Duration::from_secs(15),
        )
        .await
    }

    /// Keeps the result of [`JobVm::greet`].
    pub fn set_guest(&mut self, r: Result<Agent>) {
        self.guest = match r {
            Ok(a) => Guest::Ready(a),
            Err(e) => Guest::Failed(e.to_string()),
        };
    }

    /// The guest agent, greeting it first (within `within`) if nobody has yet.
    pub async fn agent(&mut self, within: Duration) -> Result<&Agent> {
        if let Some(s) = self.take_pending() {
            let r = agent::connect(s, within, ProtocolChoice::Auto, self.heartbeat_timeout).await;
            self.set_guest(r);
        }
        match &self.guest {
            Guest::Ready(a) => Ok(a),
            Guest::Failed(why) => Err(VmError::Closed(format!("no guest agent: {why}"))),
            Guest::Pending(_) => Err(VmError::Closed("the guest agent was not greeted".into())),
        }
    }

    /// Whether the guest agent said hello.
    pub fn has_agent(&self) -> bool {
        matches!(self.guest, Guest::Ready(_))
    }

    /// Kills QEMU at once and waits for it to be gone (the overlay is the caller's to
    /// remove; the runtime directory's owner removes the rest).
    pub async fn kill(mut self) {
        if let Guest::Ready(Agent::V2(a)) = &self.guest {
            let _ = tokio::time::timeout(Duration::from_millis(300), a.bye()).await;
        }
        self.process.kill().await;
        let _ = std::fs::remove_file(&self.paths.overlay);
    }
}

impl Drop for JobVm {
    /// The process guard kills QEMU; the overlay goes with it, whatever path the job took.
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.paths.overlay);
    }
}
