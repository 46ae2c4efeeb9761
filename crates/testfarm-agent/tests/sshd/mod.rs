//! A private `sshd` on a loopback port, with keys generated for the test: `id` is
//! authorized, `wrong` is not. Shared by the agent's SSH tests and the end-to-end agent
//! test of the `testfarm` crate (which includes this file by path).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use testfarm_agent::config::{HumanDuration, SshHostConfig};
use testfarm_agent::ssh::SshHost;
use testfarm_api::resource::ResourceKind;

/// A private sshd for one test; killed when dropped.
pub struct Sshd {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Child,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port free right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn keygen(path: &Path) {
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()
        .unwrap();
    assert!(st.success());
}

impl Sshd {
    pub fn start() -> Sshd {
        Sshd::start_on(free_port())
    }

    /// On a given port (to start a host that was configured before it came up).
    pub fn start_on(port: u16) -> Sshd {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        keygen(&d.join("host_key"));
        keygen(&d.join("id"));
        keygen(&d.join("wrong"));
        std::fs::copy(d.join("id.pub"), d.join("authorized_keys")).unwrap();
        // sshd refuses to start without its privilege separation directory.
        let _ = std::fs::create_dir_all("/run/sshd");
        let cfg = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n\
             AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nPermitRootLogin prohibit-password\n\
             PubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             UsePAM no\nMaxSessions 50\nMaxStartups 50\n",
            d = d.display()
        );
        std::fs::write(d.join("sshd_config"), cfg).unwrap();
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("sshd.log")).unwrap())
            .spawn()
            .unwrap();
        let s = Sshd { dir, port, child };
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "sshd did not listen: {}",
                std::fs::read_to_string(s.dir.path().join("sshd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    /// The agent's `SshHost` for this sshd, logging in with key `key`.
    pub fn host(&self, key: &str, targets: &[&str]) -> SshHost {
        let d = self.dir.path();
        SshHost::new(SshHostConfig {
            name: "remote1".into(),
            destination: "root@127.0.0.1".into(),
            identity_file: Some(d.join(key)),
            port: Some(self.port),
            kind: ResourceKind::BuildServer,
            labels: Default::default(),
            targets: targets.iter().map(|s| s.to_string()).collect(),
            options: self.options(),
            work_dir: self.remote_work().display().to_string(),
            connect_timeout: HumanDuration(Duration::from_secs(5)),
        })
    }

    /// An `[[ssh_host]]` entry for this sshd with key `key`.
    pub fn entry(&self, name: &str, key: &str) -> String {
        let d = self.dir.path().display();
        format!(
            "\n[[ssh_host]]\nname = {name:?}\ndestination = \"root@127.0.0.1\"\nport = {}\n\
             identity_file = \"{d}/{key}\"\nwork_dir = \"{d}/remote-work\"\n\
             options = [\"StrictHostKeyChecking=no\", \"UserKnownHostsFile={d}/known_hosts\"]\n\
             labels = {{ os = \"linux\" }}\n",
            self.port
        )
    }

    /// Where jobs run on this host.
    pub fn remote_work(&self) -> PathBuf {
        self.dir.path().join("remote-work")
    }

    /// The ssh options every client of this sshd uses (no host key prompt, a private
    /// known_hosts).
    pub fn options(&self) -> Vec<String> {
        vec![
            "StrictHostKeyChecking=no".into(),
            format!(
                "UserKnownHostsFile={}",
                self.dir.path().join("known_hosts").display()
            ),
        ]
    }
}
