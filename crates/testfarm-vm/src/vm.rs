//! One VM of a pod: its runtime directory, QEMU process, QMP connection, console log and
//! agent connection. Booting means "the agent said hello" (and upgraded to v2 when it can).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::agent::{self, Agent, ProtocolChoice};
use crate::config::{ResolvedAccel, VmConfig};
use crate::error::{Result, VmError};
use crate::process::QemuProcess;
use crate::qemu_cmd::{VmPaths, qemu_argv};
use crate::qmp::Qmp;

/// How to boot a pod's VMs.
#[derive(Debug, Clone)]
pub struct VmOptions {
    pub config: VmConfig,
    pub accel: ResolvedAccel,
    /// From QEMU start to `HELLO AGENT_v1`.
    pub boot_timeout: Duration,
    /// A v2 guest silent for this long is unresponsive (it heartbeats every second).
    pub heartbeat_timeout: Duration,
    pub protocol: ProtocolChoice,
}

impl VmOptions {
    pub fn new(config: VmConfig, accel: ResolvedAccel) -> VmOptions {
        VmOptions {
            config,
            accel,
            boot_timeout: Duration::from_secs(60),
            heartbeat_timeout: Duration::from_secs(15),
            protocol: ProtocolChoice::Auto,
        }
    }
}

#[derive(Debug)]
pub struct Vm {
    pub name: String,
    pub paths: VmPaths,
    process: QemuProcess,
    pub agent: Agent,
    pub qmp: Option<Qmp>,
    pub boot_time: Duration,
    pub accel: ResolvedAccel,
}

impl Vm {
    /// Boots a VM in `dir` (a fresh private directory) and waits for its agent.
    pub async fn boot(name: &str, opts: &VmOptions, dir: &Path) -> Result<Vm> {
        let start = Instant::now();
        let paths = VmPaths::in_dir(dir);
        if let Some(rootfs) = &opts.config.rootfs {
            crate::overlay::create(rootfs, &paths.overlay).await?;
        }
        let argv = qemu_argv(&opts.config, opts.accel, &paths);
        let mut process = QemuProcess::spawn(&argv, &paths.qemu_log)?;
        let booted = tokio::select! {
            r = connect(opts, &paths) => r,
            status = process.wait() => Err(VmError::Boot {
                vm: name.into(),
                message: format!("QEMU exited during boot ({status:?})"),
            }),
        };
        match booted {
            Ok((agent, qmp)) => Ok(Vm {
                name: name.to_string(),
                paths,
                process,
                agent,
                qmp,
                boot_time: start.elapsed(),
                accel: opts.accel,
            }),
            Err(e) => {
                process.kill().await;
                let message = format!(
                    "{e}\n--- qemu log ---\n{}\n--- console tail ---\n{}",
                    tail(&paths.qemu_log, 20),
                    tail(&paths.console_log, 20)
                );
                Err(VmError::Boot {
                    vm: name.into(),
                    message,
                })
            }
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// True once QEMU has exited (a guest kernel panic ends it: `-no-reboot`, `panic=-1`).
    pub fn has_exited(&mut self) -> bool {
        self.process.try_exited().is_some()
    }

    /// Bytes in the console log so far: mark before a test, read [`Vm::console_since`] after.
    pub fn console_len(&self) -> u64 {
        std::fs::metadata(&self.paths.console_log)
            .map(|m| m.len())
            .unwrap_or(0)
    }

    /// Console output (guest kernel messages) written since `offset`.
    pub fn console_since(&self, offset: u64) -> String {
        use std::io::{Read, Seek, SeekFrom};
        let mut s = Vec::new();
        if let Ok(mut f) = std::fs::File::open(&self.paths.console_log)
            && f.seek(SeekFrom::Start(offset)).is_ok()
        {
            let _ = f.take(256 * 1024).read_to_end(&mut s);
        }
        clean_console(&String::from_utf8_lossy(&s))
    }

    pub fn console_tail(&self, lines: usize) -> String {
        tail(&self.paths.console_log, lines)
    }

    /// Kills QEMU at once.
    pub async fn kill(mut self) {
        self.process.kill().await;
    }

    /// Polite shutdown (agent goodbye, QMP quit), then kill whatever is left.
    pub async fn shutdown(mut self) {
        if let Agent::V2(a) = &self.agent {
            let _ = tokio::time::timeout(Duration::from_millis(500), a.bye()).await;
        }
        if let Some(q) = self.qmp.as_mut() {
            let _ = tokio::time::timeout(Duration::from_secs(1), q.quit()).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), self.process.wait()).await;
        self.process.kill().await;
    }
}

async fn connect(opts: &VmOptions, paths: &VmPaths) -> Result<(Agent, Option<Qmp>)> {
    let stream = agent::connect_socket(&paths.agent_sock, Duration::from_secs(10)).await?;
    // QEMU creates every socket before it starts the guest, so QMP is there by now.
    let qmp = Qmp::connect(&paths.qmp_sock, Duration::from_secs(10))
        .await
        .ok();
    let agent = agent::connect(
        stream,
        opts.boot_timeout,
        opts.protocol,
        opts.heartbeat_timeout,
    )
    .await?;
    Ok((agent, qmp))
}

/// Drops terminal control sequences SeaBIOS writes, keeping the text.
pub(crate) fn clean_console(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                if chars.peek() == Some(&'[') {
                    chars.next();
                    while let Some(&n) = chars.peek() {
                        chars.next();
                        if n.is_ascii_alphabetic() {
                            break;
                        }
                    }
                }
            }
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// The last `lines` lines of a file, cleaned of control sequences.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let start = text.len().saturating_sub(64 * 1024);
    let text = clean_console(&String::from_utf8_lossy(&text[start..]));
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A VM's directory name in a run.
pub fn vm_dir_name(seq: usize) -> PathBuf {
    PathBuf::from(format!("vm-{seq}"))
}
