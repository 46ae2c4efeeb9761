//! Shared by the agent tests: a lab whose config is tuned for the test, a real
//! `testfarm agent` process with its own token and work directory, and job helpers over
//! the API.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{BIN, Http, Lab};
#[allow(unused_imports)] // not every test binary waits for jobs
pub use crate::support::{wait_for, wait_job};

/// A lab without the built-in agent (tests bring their own), with faster health checks
/// and load thresholds out of the way.
pub fn lab(offline_after: &str, heartbeat_ttl: &str) -> Lab {
    let lab = Lab::new();
    lab.set("agent.local", "enabled", "false");
    lab.set("health", "offline_after", &format!("{offline_after:?}"));
    lab.set("health", "heartbeat_interval", "\"500ms\"");
    lab.set("leases", "heartbeat_ttl", &format!("{heartbeat_ttl:?}"));
    lab.set("leases", "reap_interval", "\"200ms\"");
    lab.set("scheduler", "tick", "\"500ms\"");
    // The test machine is shared and often at 100% CPU: keep load-based health from
    // holding jobs back (the health rules have their own tests).
    lab.set("health", "max_utilization_pct", "100");
    lab.set("health", "min_disk_gb", "0");
    lab
}

/// Creates an agent-role token named `name`; returns its text.
pub fn agent_token(http: &Http, admin: &str, name: &str) -> String {
    let r = http.post(
        "/api/v1/tokens",
        admin,
        serde_json::json!({ "name": name, "role": "agent" }),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    r.body["token"].as_str().unwrap().to_string()
}

/// A `testfarm agent` process; killed when dropped.
pub struct Agent {
    pub name: String,
    pub dir: PathBuf,
    pub child: Option<Child>,
}

impl Agent {
    /// Writes `<dir>/agent.toml` (the host as build server `<name>-build`, plus `extra`)
    /// and starts the agent against `url`.
    pub fn start(url: &str, token: &str, name: &str, extra: &str) -> Agent {
        Agent::start_with(url, token, name, "", extra)
    }

    /// Like [`Agent::start`], with more top-level keys (`top`) before the tables.
    pub fn start_with(url: &str, token: &str, name: &str, top: &str, extra: &str) -> Agent {
        Agent::start_tables(
            url,
            token,
            name,
            &format!("{top}\n[[resource]]\nkind = \"build-server\"\n{extra}"),
        )
    }

    /// An agent with exactly `body` after the connection keys (no build server of its
    /// own): a board host's `[[board]]` tables, say.
    pub fn start_tables(url: &str, token: &str, name: &str, body: &str) -> Agent {
        let dir = tempfile::Builder::new()
            .prefix("tf-agent-")
            .tempdir()
            .unwrap()
            .keep();
        std::fs::write(dir.join("agent.token"), token).unwrap();
        let toml = format!(
            "url = {url:?}\nname = {name:?}\ntoken_file = \"agent.token\"\nwork_dir = \"work\"\n\
             kill_grace = \"1s\"\n{body}"
        );
        std::fs::write(dir.join("agent.toml"), toml).unwrap();
        let mut a = Agent {
            name: name.to_string(),
            dir,
            child: None,
        };
        a.spawn();
        a
    }

    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("agent.log"))
            .unwrap();
        let child = Command::new(BIN)
            .args(["agent", "--config"])
            .arg(self.dir.join("agent.toml"))
            .env("RUST_LOG", "info,testfarm_agent=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    pub fn resource(&self) -> String {
        format!("{}-build", self.name)
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(st.success());
    }

    /// SIGTERM, bounded wait.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        if self.child.is_some() {
            self.signal("TERM");
        }
        let mut c = self.child.take()?;
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(40) {
            if let Some(s) = c.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            // A stopped agent does not die of SIGKILL until continued? It does; be sure.
            let _ = Command::new("kill")
                .args(["-CONT", &c.id().to_string()])
                .status();
        }
        self.kill9();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Waits until the agent's resource is registered and available.
pub fn wait_registered(http: &Http, token: &str, resource: &str) -> serde_json::Value {
    wait_for("the agent's resource", Duration::from_secs(60), || {
        let r = http.get(&format!("/api/v1/resources/{resource}"), token);
        (r.status == 200 && r.body["state"] == "available").then_some(r.body)
    })
}

/// Submits a job spec; returns its id.
pub fn submit(http: &Http, token: &str, spec: &str) -> String {
    let r = http.post("/api/v1/jobs", token, serde_json::json!({ "spec": spec }));
    assert_eq!(r.status, 201, "{}", r.text);
    r.body["id"].as_str().unwrap().to_string()
}

pub fn job(http: &Http, token: &str, id: &str) -> serde_json::Value {
    let r = http.get(&format!("/api/v1/jobs/{id}"), token);
    assert_eq!(r.status, 200, "{}", r.text);
    r.body
}

/// Waits for a job to reach `state`.
pub fn wait_state(http: &Http, token: &str, id: &str, state: &str, timeout: Duration) {
    wait_for(&format!("job {id} to be {state}"), timeout, || {
        (job(http, token, id)["state"] == state).then_some(())
    });
}

/// The job's whole log.
pub fn log(http: &Http, token: &str, id: &str) -> String {
    http.get(&format!("/api/v1/jobs/{id}/log"), token).text
}

/// A spec pinned to `resource`.
pub fn spec(resource: &str, body: &str) -> String {
    format!("name: t\nrequires: {{ kind: build-server, resource: {resource} }}\n{body}")
}

/// Whether a process is alive (and not a zombie).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            s.rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next())
                != Some("Z")
        }
        Err(_) => false,
    }
}

pub fn read_pid(path: &Path) -> i32 {
    wait_for("a pid file", Duration::from_secs(30), || {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
    })
}
