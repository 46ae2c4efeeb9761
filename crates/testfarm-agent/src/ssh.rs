//! Remote hosts over SSH, through the system OpenSSH client.
//!
//! We spawn `ssh` ourselves rather than link an SSH library: the system client is what
//! people debug with, and it honours `~/.ssh/config`, ssh-agent, ProxyJump and known_hosts
//! exactly as it does for them. `BatchMode=yes` makes it fail instead of prompting, and its
//! exit status 255 plus its stderr tell precisely what failed ([`SshError`]): a name that
//! does not resolve, a refused or timed-out connection, a rejected key, a changed host key.
//!
//! Every call is its own `ssh` process (no ControlMaster), so a dead connection never
//! wedges later calls and a killed step takes only its own connection down. On the remote
//! side a step's script runs in its own session (`setsid`), and a watcher kills that
//! process group when the connection's stdin closes, so cancelling the local `ssh` cleans
//! up the remote processes too (see [`crate::shell`]).

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::config::SshHostConfig;
use crate::detect::{self, Detected, shell_quote};
use crate::metrics::{self, CpuTimes, HostLoad};

/// What went wrong reaching or using a remote host, precisely enough to act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SshError {
    #[error("{host}: DNS resolution failed: {detail}")]
    Dns { host: String, detail: String },
    #[error("{host}: connection refused (is sshd running, is the port right?): {detail}")]
    Refused { host: String, detail: String },
    #[error("{host}: connection timed out: {detail}")]
    Timeout { host: String, detail: String },
    #[error("{host}: host unreachable: {detail}")]
    Unreachable { host: String, detail: String },
    #[error("{host}: authentication failed (key not accepted): {detail}")]
    Auth { host: String, detail: String },
    #[error("{host}: host key verification failed: {detail}")]
    HostKey { host: String, detail: String },
    #[error("{host}: cannot run ssh: {detail}")]
    Spawn { host: String, detail: String },
    #[error("{host}: ssh failed: {detail}")]
    Other { host: String, detail: String },
    #[error("{host}: remote command failed with status {status}: {detail}")]
    Remote {
        host: String,
        status: i32,
        detail: String,
    },
    #[error("{host}: missing toolchain for {}: {} not found", .triples.join(", "), .compilers.join(", "))]
    MissingToolchain {
        host: String,
        triples: Vec<String>,
        compilers: Vec<String>,
    },
}

/// A remote host and how to reach it.
#[derive(Debug, Clone)]
pub struct SshHost {
    pub config: SshHostConfig,
}

/// Output of a remote command that ran (whatever its status).
#[derive(Debug, Clone)]
pub struct RemoteOutput {
    pub status: i32,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl SshHost {
    pub fn new(config: SshHostConfig) -> SshHost {
        SshHost { config }
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// `ssh` with our options, ready for a remote command string.
    pub fn command(&self, remote: &str) -> Command {
        let c = &self.config;
        let mut cmd = Command::new("ssh");
        cmd.arg("-T")
            .args(["-o", "BatchMode=yes"])
            .args(["-o", "LogLevel=ERROR"])
            .args(["-o", "ServerAliveInterval=5"])
            .args(["-o", "ServerAliveCountMax=3"])
            .arg("-o")
            .arg(format!(
                "ConnectTimeout={}",
                c.connect_timeout.0.as_secs().max(1)
            ));
        if let Some(port) = c.port {
            cmd.arg("-p").arg(port.to_string());
        }
        if let Some(id) = &c.identity_file {
            cmd.arg("-i").arg(expand_home(id));
            cmd.args(["-o", "IdentitiesOnly=yes"]);
        }
        for o in &c.options {
            cmd.arg("-o").arg(o);
        }
        cmd.arg("--").arg(&c.destination).arg(remote);
        cmd
    }

    /// Runs `remote` (a POSIX sh command line) with `stdin`, bounded by `timeout`. An ssh
    /// failure (status 255) becomes the matching [`SshError`]; any other status is returned.
    pub async fn run(
        &self,
        remote: &str,
        stdin: &[u8],
        timeout: Duration,
    ) -> Result<RemoteOutput, SshError> {
        let mut cmd = self.command(remote);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| SshError::Spawn {
            host: self.name().to_string(),
            detail: e.to_string(),
        })?;
        let input = stdin.to_vec();
        let mut child_stdin = child.stdin.take();
        let feed = async move {
            if let Some(s) = &mut child_stdin {
                // A remote command that does not read its input closes the pipe: fine.
                let _ = s.write_all(&input).await;
                let _ = s.shutdown().await;
            }
            drop(child_stdin);
        };
        let run = async {
            let (_, out) = tokio::join!(feed, child.wait_with_output());
            out
        };
        let out = match tokio::time::timeout(timeout, run).await {
            Ok(Ok(out)) => out,
            Ok(Err(e)) => {
                return Err(SshError::Spawn {
                    host: self.name().to_string(),
                    detail: e.to_string(),
                });
            }
            Err(_) => {
                return Err(SshError::Timeout {
                    host: self.name().to_string(),
                    detail: format!("no answer within {}s", timeout.as_secs()),
                });
            }
        };
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let status = out.status.code().unwrap_or(-1);
        if status == 255 {
            return Err(classify(self.name(), &stderr));
        }
        Ok(RemoteOutput {
            status,
            stdout: out.stdout,
            stderr,
        })
    }

    /// Like [`SshHost::run`], but a non-zero status is an error too.
    pub async fn run_ok(
        &self,
        remote: &str,
        stdin: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, SshError> {
        let out = self.run(remote, stdin, timeout).await?;
        if out.status != 0 {
            return Err(SshError::Remote {
                host: self.name().to_string(),
                status: out.status,
                detail: last_line(&out.stderr),
            });
        }
        Ok(out.stdout)
    }

    /// Validates connectivity and measures the host. A configured target triple without a
    /// compiler there is an error: the host cannot serve what it was declared for.
    pub async fn probe(&self) -> Result<Detected, SshError> {
        let script = detect::probe_script(&self.config.work_dir, &self.config.targets);
        let out = self
            .run_ok("sh -s", script.as_bytes(), self.budget())
            .await?;
        let text = String::from_utf8_lossy(&out);
        if !text.lines().any(|l| l == "probe=1") {
            return Err(SshError::Other {
                host: self.name().to_string(),
                detail: "the remote shell did not run the probe (is the login shell POSIX sh?)"
                    .into(),
            });
        }
        let d = detect::parse_probe(&text, &self.config.targets);
        if !d.missing_targets.is_empty() {
            return Err(SshError::MissingToolchain {
                host: self.name().to_string(),
                compilers: d
                    .missing_targets
                    .iter()
                    .map(|t| format!("{t}-gcc"))
                    .collect(),
                triples: d.missing_targets.clone(),
            });
        }
        Ok(d)
    }

    /// Measures the host's load; `last` keeps the CPU sample for the next delta.
    pub async fn load(&self, last: &mut Option<CpuTimes>) -> Result<HostLoad, SshError> {
        let out = self
            .run_ok(
                "sh -s",
                metrics::remote_script(&self.config.work_dir).as_bytes(),
                self.budget(),
            )
            .await?;
        let (cpu, mut load) = metrics::parse_remote(&String::from_utf8_lossy(&out));
        if let (Some(a), Some(b)) = (*last, cpu) {
            load.cpu_pct = metrics::cpu_pct(a, b);
        }
        if cpu.is_some() {
            *last = cpu;
        }
        Ok(load)
    }

    /// A job's remote work directory.
    pub fn job_dir(&self, job_id: &str) -> String {
        format!("{}/{}", self.config.work_dir.trim_end_matches('/'), job_id)
    }

    /// Creates a fresh, empty directory for a job.
    pub async fn fresh_dir(&self, dir: &str) -> Result<(), SshError> {
        let q = shell_quote(dir);
        self.run_ok(&format!("rm -rf {q} && mkdir -p {q}"), b"", self.budget())
            .await
            .map(|_| ())
    }

    pub async fn remove_dir(&self, dir: &str) -> Result<(), SshError> {
        self.run_ok(&format!("rm -rf {}", shell_quote(dir)), b"", self.budget())
            .await
            .map(|_| ())
    }

    /// Time for a short remote command: the connect timeout plus a margin for the command.
    fn budget(&self) -> Duration {
        self.config.connect_timeout.0 + Duration::from_secs(60)
    }
}

/// `~/x` → `$HOME/x` (ssh does this for its config, not for our `-i` argument).
fn expand_home(p: &std::path::Path) -> std::path::PathBuf {
    match (p.strip_prefix("~"), std::env::var_os("HOME")) {
        (Ok(rest), Some(home)) => std::path::Path::new(&home).join(rest),
        _ => p.to_path_buf(),
    }
}

fn last_line(s: &str) -> String {
    s.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string()
}

/// Names the failure from ssh's stderr (exit status 255).
pub fn classify(host: &str, stderr: &str) -> SshError {
    let detail = last_line(stderr);
    let host = host.to_string();
    let has = |s: &str| stderr.contains(s);
    if has("Could not resolve hostname") || has("Name or service not known") {
        SshError::Dns { host, detail }
    } else if has("Connection refused") {
        SshError::Refused { host, detail }
    } else if has("timed out") || has("Connection timed out") {
        SshError::Timeout { host, detail }
    } else if has("No route to host") || has("Network is unreachable") {
        SshError::Unreachable { host, detail }
    } else if has("Permission denied") || has("Too many authentication failures") {
        SshError::Auth { host, detail }
    } else if has("Host key verification failed") || has("REMOTE HOST IDENTIFICATION HAS CHANGED") {
        SshError::HostKey { host, detail }
    } else if detail.is_empty() {
        SshError::Other {
            host,
            detail: "ssh exited with status 255 and said nothing".into(),
        }
    } else {
        SshError::Other { host, detail }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_messages_are_classified() {
        let c = |s: &str| classify("h", s);
        assert!(matches!(
            c("ssh: Could not resolve hostname nowhere.invalid: Name or service not known\n"),
            SshError::Dns { .. }
        ));
        assert!(matches!(
            c("ssh: connect to host 127.0.0.1 port 1: Connection refused\n"),
            SshError::Refused { .. }
        ));
        assert!(matches!(
            c("ssh: connect to host 10.0.0.1 port 22: Connection timed out\n"),
            SshError::Timeout { .. }
        ));
        assert!(matches!(
            c("root@127.0.0.1: Permission denied (publickey).\n"),
            SshError::Auth { .. }
        ));
        assert!(matches!(
            c("Host key verification failed.\n"),
            SshError::HostKey { .. }
        ));
        let e = c("root@127.0.0.1: Permission denied (publickey).\n");
        assert!(e.to_string().contains("authentication failed"), "{e}");
    }

    #[tokio::test]
    async fn unresolvable_and_refused_are_told_apart() {
        let host = |dest: &str, port: Option<u16>| {
            SshHost::new(SshHostConfig {
                name: "r".into(),
                destination: dest.into(),
                identity_file: None,
                port,
                kind: testfarm_api::resource::ResourceKind::BuildServer,
                labels: Default::default(),
                targets: vec![],
                options: vec!["StrictHostKeyChecking=no".into()],
                work_dir: "w".into(),
                connect_timeout: crate::config::HumanDuration(Duration::from_secs(5)),
            })
        };
        let e = host("root@no-such-host.invalid", None)
            .probe()
            .await
            .unwrap_err();
        assert!(matches!(e, SshError::Dns { .. }), "{e}");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = host("root@127.0.0.1", Some(port))
            .probe()
            .await
            .unwrap_err();
        assert!(matches!(e, SshError::Refused { .. }), "{e}");
    }
}
