//! Shared by the integration tests: a real `testfarm server` process on an ephemeral
//! loopback port with a real SQLite file, and the CLI run as a real process.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_testfarm");

/// A base directory set up with `testfarm init`, with the built-in agent switched off.
pub struct Lab {
    pub dir: tempfile::TempDir,
    pub token: String,
}

impl Lab {
    pub fn new() -> Lab {
        let dir = tempfile::Builder::new()
            .prefix("tf-test-")
            .tempdir()
            .unwrap();
        let out = Command::new(BIN)
            .args([
                "init",
                "--non-interactive",
                "--listen",
                "127.0.0.1:0",
                "--base-dir",
            ])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let token = std::fs::read_to_string(dir.path().join("admin.token"))
            .unwrap()
            .trim()
            .to_string();
        let lab = Lab { dir, token };
        // Tests see only the resources they create; `lab.set("agent.local", "enabled",
        // "true")` turns the built-in agent back on.
        lab.set("agent.local", "enabled", "false");
        // Build servers below this much free disk take no builds; the machine running the
        // tests may well be that full (CI once was, and a job waited forever). The rule has
        // its own test, which sets it.
        lab.set("health", "min_disk_gb", "0");
        lab
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    pub fn start(&self) -> Server {
        Server::start(&self.config(), &[])
    }

    /// Replaces `key = …` in `[section]` of config.toml (the key must exist there).
    pub fn set(&self, section: &str, key: &str, value: &str) {
        let text = std::fs::read_to_string(self.config()).unwrap();
        let mut out = Vec::new();
        let mut in_section = false;
        let mut done = false;
        for line in text.lines() {
            if line.starts_with('[') {
                in_section = line.trim() == format!("[{section}]");
            }
            if in_section && !done && line.starts_with(&format!("{key} =")) {
                out.push(format!("{key} = {value}"));
                done = true;
            } else {
                out.push(line.to_string());
            }
        }
        assert!(done, "no {key} in [{section}]");
        std::fs::write(self.config(), out.join("\n") + "\n").unwrap();
    }

    /// Fast clocks for tests: short heartbeat TTL, offline detection, reaping.
    pub fn fast(&self) {
        self.set("leases", "heartbeat_ttl", "\"2s\"");
        self.set("leases", "reap_interval", "\"200ms\"");
        self.set("health", "offline_after", "\"3s\"");
        self.set("health", "heartbeat_interval", "\"1s\"");
        self.set("scheduler", "tick", "\"200ms\"");
        self.set("scheduler", "restart_grace", "\"3s\"");
        self.set("agent.local", "enabled", "false");
    }
}

/// Polls `f` every 100 ms until it returns Some, or panics after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if std::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The states a job ends in.
pub const TERMINAL: &[&str] = &["passed", "failed", "error", "cancelled", "timed_out"];

/// Waits for job `id` to end and returns it. On timeout it panics with what the job was
/// doing: its row, the last events and the tail of its log, so a failure in CI explains
/// itself.
pub fn wait_job(http: &Http, token: &str, id: &str, timeout: Duration) -> serde_json::Value {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let j = http.get(&format!("/api/v1/jobs/{id}"), token);
        if TERMINAL.contains(&j.body["state"].as_str().unwrap_or("")) {
            return j.body;
        }
        if std::time::Instant::now() > deadline {
            let events = http.get("/api/v1/events?limit=1000", token).body;
            let recent: Vec<String> = events
                .as_array()
                .map(|a| {
                    a.iter()
                        .rev()
                        .take(40)
                        .rev()
                        .map(|e| e.to_string())
                        .collect()
                })
                .unwrap_or_default();
            let log = http.get(&format!("/api/v1/jobs/{id}/log"), token).text;
            let why = http.get(&format!("/api/v1/jobs/{id}/why"), token).body;
            let tail: Vec<&str> = log.lines().rev().take(40).collect::<Vec<_>>();
            panic!(
                "timed out after {timeout:?} waiting for job {id} to end\njob: {}\nwhy: {}\n\
                 last events:\n{}\nlog tail (newest first):\n{}",
                j.text,
                why["text"].as_str().unwrap_or("(no why)"),
                recent.join("\n"),
                tail.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A running server process; killed when dropped.
pub struct Server {
    pub child: Child,
    pub url: String,
    stderr: mpsc::Receiver<String>,
}

impl Server {
    pub fn start(config: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(BIN)
            .arg("server")
            .arg("-f")
            .arg(config)
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("listening on ") {
                    let _ = tx.send(url.to_string());
                }
            }
        });
        let stderr = child.stderr.take().unwrap();
        let (etx, erx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = etx.send(line);
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                let err: Vec<String> = erx.try_iter().collect();
                panic!(
                    "server did not start within 30 s; stderr:\n{}",
                    err.join("\n")
                );
            }
        };
        Server {
            child,
            url,
            stderr: erx,
        }
    }

    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.try_iter().collect()
    }

    /// SIGTERM, then wait (bounded) for a clean exit; returns the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        for _ in 0..200 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        panic!("server did not stop within 10 s of SIGTERM");
    }

    /// kill -9: no cleanup at all.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn http(&self) -> Http {
        Http::new(&self.url)
    }
}

impl Drop for Server {
    /// Kills the server; when the test is failing, prints what the server logged so a
    /// flaky failure in CI carries its own diagnosis.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            // The reader thread ends when the pipe closes; give it a moment to drain.
            std::thread::sleep(Duration::from_millis(100));
            let lines: Vec<String> = self.stderr.try_iter().collect();
            eprintln!("--- server stderr ({} lines) ---", lines.len());
            for l in lines.iter().rev().take(200).rev() {
                eprintln!("{l}");
            }
        }
    }
}

/// A small blocking-style HTTP helper over reqwest.
pub struct Http {
    pub url: String,
    client: reqwest::Client,
    rt: tokio::runtime::Runtime,
}

pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub content_type: String,
    pub body: serde_json::Value,
    pub text: String,
}

impl Http {
    pub fn new(url: &str) -> Http {
        Http {
            url: url.to_string(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap(),
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        }
    }

    pub fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<(&str, &str)>,
    ) -> Resp {
        let mut req = self
            .client
            .request(method.parse().unwrap(), format!("{}{}", self.url, path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some((ct, b)) = body {
            req = req.header("content-type", ct).body(b.to_string());
        }
        self.rt.block_on(async {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let content_type = resp
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default();
            let text = resp.text().await.unwrap();
            let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
            Resp {
                status,
                headers,
                content_type,
                body,
                text,
            }
        })
    }

    pub fn call_with_headers(
        &self,
        method: &str,
        path: &str,
        token: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Resp {
        let mut req = self
            .client
            .request(method.parse().unwrap(), format!("{}{}", self.url, path))
            .bearer_auth(token)
            .body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.rt.block_on(async {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let content_type = resp
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default();
            let text = resp.text().await.unwrap();
            let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
            Resp {
                status,
                headers,
                content_type,
                body,
                text,
            }
        })
    }

    /// Creates a token with `admin` and returns its secret text.
    pub fn create_token(&self, admin: &str, name: &str, role: &str) -> String {
        let r = self.post(
            "/api/v1/tokens",
            admin,
            serde_json::json!({"name": name, "role": role}),
        );
        assert_eq!(r.status, 201, "{}", r.text);
        r.body["token"].as_str().unwrap().to_string()
    }

    pub fn get(&self, path: &str, token: &str) -> Resp {
        self.call("GET", path, Some(token), None)
    }

    pub fn post(&self, path: &str, token: &str, json: serde_json::Value) -> Resp {
        self.call(
            "POST",
            path,
            Some(token),
            Some(("application/json", &json.to_string())),
        )
    }
}

/// Runs the CLI against a server; returns its output.
pub fn cli(url: &str, token: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("TESTFARM_URL", url)
        .env("TESTFARM_TOKEN", token)
        .env_remove("TESTFARM_TOKEN_FILE")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}
