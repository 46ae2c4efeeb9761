//! Shared by the board tests: a simulated board as its own `testfarm sim-board` process
//! (console on a fixed loopback port, so it can be restarted with other behaviour and the
//! agent's config stays true), the `[[board]]` table that drives it with the same drivers a
//! real board uses (command power, TCP console, command flash), builds with a firmware
//! artifact, and the board API's views.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::support::{BIN, Http, wait_for};

/// A `testfarm sim-board` process; killed when dropped.
pub struct Sim {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

impl Sim {
    /// Starts a sim board with `flags` (`--no-boot`, `--hang-after N`), powered off.
    pub fn start(flags: &[&str]) -> Sim {
        let dir = tempfile::Builder::new()
            .prefix("tf-sim-")
            .tempdir()
            .unwrap();
        let mut s = Sim {
            dir,
            port: free_port(),
            child: None,
        };
        s.spawn(flags);
        s
    }

    fn spawn(&mut self, flags: &[&str]) {
        let console = self.dir.path().join("console");
        let _ = std::fs::remove_file(&console);
        let child = Command::new(BIN)
            .args(["sim-board", "--console"])
            .arg(format!("tcp:127.0.0.1:{}", self.port))
            .arg("--state-dir")
            .arg(self.dir.path())
            .args(["--line-delay", "5"])
            .args(flags)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        wait_for("the sim board's console", Duration::from_secs(20), || {
            console.exists().then_some(())
        });
    }

    /// Stops the board (its console goes away, as a dead board's does).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port and state (power) with other behaviour.
    pub fn restart(&mut self, flags: &[&str]) {
        self.kill();
        self.spawn(flags);
    }

    pub fn state_dir(&self) -> &Path {
        self.dir.path()
    }

    /// What the command flash driver wrote.
    pub fn flashed(&self) -> PathBuf {
        self.dir.path().join("flashed.bin")
    }

    /// `on` or `off`, as the power driver's status command reads it.
    pub fn power(&self) -> String {
        let out = Command::new(BIN)
            .args(["sim-board", "power", "status", "--state-dir"])
            .arg(self.dir.path())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The `[[board]]` table of this board, named `name`, plus `extra` lines.
    pub fn board_toml(&self, name: &str, extra: &str) -> String {
        let dir = self.dir.path().display();
        let power = |a: &str| format!("'{BIN}' sim-board power {a} --state-dir '{dir}'");
        format!(
            r#"
[[board]]
name = "{name}"
board_type = "sim"
arch = "arm"
labels = {{ team = "bsp" }}
power = {{ driver = "command", on = "{on}", off = "{off}", status = "{status}", cycle_delay = "100ms", timeout = "10s" }}
console = {{ driver = "tcp", address = "127.0.0.1:{port}", connect_timeout = "2s" }}
flash = {{ driver = "command", run = "cp {{{{ artifacts.firmware }}}} '{dir}/flashed.bin'", timeout = "20s" }}
boot = {{ expect = "login: $", login = "root", timeout = "15s", silence = "10s" }}
{extra}
"#,
            on = power("on"),
            off = power("off"),
            status = power("status"),
            port = self.port,
        )
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Records a build with one firmware artifact holding `content`; returns its id.
pub fn firmware_build(http: &Http, token: &str, content: &str) -> String {
    let r = http.post(
        "/api/v1/builds",
        token,
        json!({"commit": "5eed", "branch": "main", "arch": "arm"}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let build = r.body["id"].as_str().unwrap().to_string();
    let r = http.call_with_headers(
        "PUT",
        &format!("/api/v1/builds/{build}/artifacts/firmware.bin?kind=firmware"),
        token,
        &[("content-type", "application/octet-stream")],
        content.as_bytes().to_vec(),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    build
}

/// `GET /api/v1/boards/{name}`.
pub fn board(http: &Http, token: &str, name: &str) -> serde_json::Value {
    let r = http.get(&format!("/api/v1/boards/{name}"), token);
    assert_eq!(r.status, 200, "{}", r.text);
    r.body
}

/// The board's history entries of `kind`, newest first.
pub fn history(http: &Http, token: &str, name: &str, kind: &str) -> Vec<serde_json::Value> {
    let r = http.get(
        &format!("/api/v1/boards/{name}/history?kind={kind}&limit=100"),
        token,
    );
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["items"].as_array().cloned().unwrap_or_default()
}

/// Waits until the board's resource is in `state`.
pub fn wait_board_state(http: &Http, token: &str, name: &str, state: &str, within: Duration) {
    wait_for(&format!("board {name} to be {state}"), within, || {
        let r = http.get(&format!("/api/v1/resources/{name}"), token);
        (r.status == 200 && r.body["state"] == state).then_some(())
    });
}

/// A deploy-and-test job for board `name`.
pub fn deploy_spec(name: &str, build: &str, test: &str, extra: &str) -> String {
    format!(
        "name: board-{name}\nrequires: {{ kind: board, resource: {name} }}\ntimeout: 2m\n{extra}steps:\n  - deploy: {{ artifacts: {{ build: {build}, kinds: [firmware] }} }}\n  - test: {{ run: {test:?}, via: console, timeout: 30s }}\n"
    )
}
