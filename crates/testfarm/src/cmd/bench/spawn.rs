//! What the server benchmarks share: a `testfarm server` child in a temporary directory
//! (`--spawn`), an HTTP client with the admin token, and latency percentiles.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, bail};

/// A `testfarm server` started by this process in a temporary directory; killed on drop.
pub struct Spawned {
    child: Child,
    pub url: String,
    pub token: String,
    _dir: tempfile::TempDir,
}

impl Spawned {
    /// `testfarm init` in a temporary directory, the built-in agent off, then `testfarm
    /// server` on an ephemeral loopback port; waits for its "listening on" line.
    pub fn start() -> anyhow::Result<Spawned> {
        Spawned::start_configured(str::to_string)
    }

    /// Like [`Spawned::start`], with `edit` applied to config.toml's text first.
    pub fn start_configured(edit: impl FnOnce(&str) -> String) -> anyhow::Result<Spawned> {
        Spawned::start_seeded(edit, |_| Ok(()))
    }

    /// Like [`Spawned::start_configured`], with `seed` given the database path (the
    /// default `data.sqlite3` of `testfarm init`) before the server starts, to fill the
    /// store directly.
    pub fn start_seeded(
        edit: impl FnOnce(&str) -> String,
        seed: impl FnOnce(&std::path::Path) -> anyhow::Result<()>,
    ) -> anyhow::Result<Spawned> {
        let exe = std::env::current_exe().context("cannot find the testfarm executable")?;
        let dir = tempfile::Builder::new()
            .prefix("tf-bench-")
            .tempdir()
            .context("creating a temporary directory")?;
        let out = Command::new(&exe)
            .args([
                "init",
                "--non-interactive",
                "--listen",
                "127.0.0.1:0",
                "--base-dir",
            ])
            .arg(dir.path())
            .stdin(Stdio::null())
            .output()
            .context("running testfarm init")?;
        if !out.status.success() {
            bail!(
                "testfarm init failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let token = std::fs::read_to_string(dir.path().join("admin.token"))
            .context("reading the admin token written by testfarm init")?
            .trim()
            .to_string();
        let config = dir.path().join("config.toml");
        disable_local_agent(&config)?;
        let text = std::fs::read_to_string(&config).context("reading config.toml")?;
        std::fs::write(&config, edit(&text)).context("writing config.toml")?;
        seed(&dir.path().join("data.sqlite3")).context("seeding the store")?;
        let mut child = Command::new(&exe)
            .arg("server")
            .arg("-f")
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting testfarm server")?;
        let Some(stdout) = child.stdout.take() else {
            let _ = child.kill();
            bail!("the server's stdout is not captured");
        };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("listening on ") {
                    let _ = tx.send(url.to_string());
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(url) => Ok(Spawned {
                child,
                url,
                token,
                _dir: dir,
            }),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("the spawned server did not say \"listening on\" within 30 s")
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The benchmarks measure the server, not the built-in agent's resources.
fn disable_local_agent(config: &std::path::Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(config).context("reading config.toml")?;
    let mut in_local = false;
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('[') {
            in_local = line.trim() == "[agent.local]";
        }
        if in_local && line.starts_with("enabled =") {
            out.push("enabled = false".to_string());
        } else {
            out.push(line.to_string());
        }
    }
    std::fs::write(config, out.join("\n") + "\n").context("writing config.toml")?;
    Ok(())
}

/// The server to measure: `--url`/`--token` as given, or one spawned here.
pub struct Target {
    pub url: String,
    pub token: String,
    pub spawned: Option<Spawned>,
}

impl Target {
    pub fn new(url: Option<String>, token: Option<String>, spawn: bool) -> anyhow::Result<Target> {
        match url {
            Some(url) if !spawn => {
                let token = match token {
                    Some(t) => t,
                    None => std::env::var("TESTFARM_TOKEN")
                        .context("--url needs --token (or TESTFARM_TOKEN)")?,
                };
                Ok(Target {
                    url: url.trim_end_matches('/').to_string(),
                    token,
                    spawned: None,
                })
            }
            _ => {
                let s = Spawned::start()?;
                Ok(Target {
                    url: s.url.clone(),
                    token: s.token.clone(),
                    spawned: Some(s),
                })
            }
        }
    }

    /// CPU time the spawned server has used so far, all threads; `None` for a server
    /// given by `--url`. Differences of it over a phase give CPU per request, a figure
    /// that drifts less with the machine's load than latency does.
    pub fn server_cpu(&self) -> Option<Duration> {
        cpu_of(&format!("/proc/{}", self.spawned.as_ref()?.pid()))
    }

    /// The spawned server's (VmHWM, VmRSS) in KiB; `None` for a server given by `--url`.
    pub fn rss_kb(&self) -> Option<(u64, u64)> {
        let pid = self.spawned.as_ref()?.pid();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
        };
        Some((field("VmHWM:")?, field("VmRSS:")?))
    }
}

/// CPU time used so far by this process, all threads.
pub fn own_cpu() -> Option<Duration> {
    cpu_of("/proc/self")
}

/// The sum of the first field (ns on CPU) of every thread's `schedstat` under `proc`.
fn cpu_of(proc: &str) -> Option<Duration> {
    let mut ns = 0u64;
    for task in std::fs::read_dir(format!("{proc}/task")).ok()? {
        let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        ns += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(Duration::from_nanos(ns))
}

/// A client with a connection pool big enough for `concurrency` workers.
pub fn client(concurrency: usize) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency.max(1) * 2)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(60))
        .build()
        .context("building the HTTP client")
}

/// Sends `req`, failing with the server's answer unless it is a success.
pub async fn send(req: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
    let resp = req.send().await?;
    let status = resp.status();
    if !status.is_success() {
        let body = resp.text().await.unwrap_or_default();
        bail!("HTTP {status}: {body}");
    }
    Ok(resp)
}

/// Sends `req` and parses the JSON answer.
pub async fn send_json(req: reqwest::RequestBuilder) -> anyhow::Result<serde_json::Value> {
    Ok(send(req).await?.json().await?)
}

/// Latency summary in milliseconds: p50, p90, p99, max, mean, over `samples` (sorted here).
pub fn latency(samples: &mut [Duration]) -> serde_json::Value {
    samples.sort_unstable();
    let ms = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
    let at = |q: f64| {
        if samples.is_empty() {
            return 0.0;
        }
        let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
        ms(samples[i])
    };
    let mean = if samples.is_empty() {
        0.0
    } else {
        ms(samples.iter().sum::<Duration>() / u32::try_from(samples.len()).unwrap_or(u32::MAX))
    };
    serde_json::json!({
        "n": samples.len(),
        "p50_ms": at(0.50),
        "p90_ms": at(0.90),
        "p99_ms": at(0.99),
        "max_ms": samples.last().map_or(0.0, |d| ms(*d)),
        "mean_ms": mean,
    })
}

/// The 1-minute load average: other work on a shared machine skews every figure.
pub fn load_average() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// Parses "5s", "250ms", "2m", or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map_or((s, "s"), |i| (&s[..i], &s[i..]));
    let v: f64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected e.g. 5s, 250ms, 1m"))?;
    let secs = match unit {
        "ms" => v / 1e3,
        "s" => v,
        "m" => v * 60.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (ms, s, m)")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("{s:?}: not a duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses "200MB", "512KB", "1GB" (powers of 1000) or plain bytes.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let num: f64 = num.parse().ok()?;
    let scale = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1.0,
        "KB" | "K" => 1e3,
        "MB" | "M" => 1e6,
        "GB" | "G" => 1e9,
        _ => return None,
    };
    let bytes = num * scale;
    (bytes >= 1.0 && bytes.is_finite()).then_some(bytes as u64)
}
