//! `testfarm bench alerts [--runs 3] [--offline-after 5s] [--interval 1s] [--json]`: how
//! long an alert takes from an agent's last heartbeat to the webhook receiving it.
//!
//! A server is spawned with a webhook pointing at a receiver in this process. Each run
//! registers an agent with one build server, heartbeats every second for a few seconds,
//! stops, and waits for the `unreachable` alert at the receiver. The target is
//! `offline_after + 5 s` (the health monitor's bound plus the alert path's budget); the
//! figure is each latency and the worst as a ratio of the target (≤ 1 meets it).

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use testfarm_api::agent::{AgentResource, Heartbeat, RegisterRequest, ResourceMetrics};
use testfarm_api::resource::ResourceKind;

use super::spawn::{Spawned, client, latency, parse_duration, send, send_json};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Agents to stop, one after another.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// The server's `health.offline_after`.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub offline_after: Duration,
    /// The server's `alerts.interval`.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Print one JSON object instead of lines for people.
    #[arg(long)]
    pub json: bool,
}

/// What the receiver saw: (subject, event, when).
type Seen = Arc<Mutex<Vec<(String, String, Instant)>>>;

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.runs == 0 || args.offline_after.is_zero() || args.interval.is_zero() {
        eprintln!("error: --runs, --offline-after and --interval must be more than zero");
        return Ok(ExitCode::from(2));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let report = rt.block_on(bench(&args))?;
    if args.json {
        outln!("{report}");
    } else {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(ExitCode::SUCCESS)
}

async fn receiver(seen: Seen) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the webhook receiver")?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::Json<Value>| {
            let seen = seen.clone();
            async move {
                let at = Instant::now();
                let subject = body["alert"]["subject"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let event = body["event"].as_str().unwrap_or_default().to_string();
                if body["alert"]["rule"] == "unreachable" {
                    seen.lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push((subject, event, at));
                }
                axum::http::StatusCode::OK
            }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(format!("http://{addr}/hook"))
}

fn secs(d: Duration) -> String {
    format!("\"{}ms\"", d.as_millis())
}

async fn bench(args: &Args) -> anyhow::Result<Value> {
    let seen: Seen = Arc::default();
    let hook = receiver(seen.clone()).await?;
    let (offline, interval) = (args.offline_after, args.interval);
    let server = Spawned::start_configured(|text| {
        let mut out = String::new();
        let mut section = String::new();
        for line in text.lines() {
            if line.starts_with('[') {
                section = line.trim().to_string();
            }
            let replaced = match (section.as_str(), line.split(" =").next()) {
                ("[health]", Some("offline_after")) => {
                    Some(format!("offline_after = {}", secs(offline)))
                }
                ("[health]", Some("heartbeat_interval")) => {
                    Some("heartbeat_interval = \"1s\"".into())
                }
                ("[alerts]", Some("interval")) => Some(format!("interval = {}", secs(interval))),
                ("[alerts]", Some("min_disk_gb")) => Some("min_disk_gb = 0".into()),
                ("[alerts]", Some("max_cpu_pct")) => Some("max_cpu_pct = 100".into()),
                ("[alerts]", Some("max_memory_pct")) => Some("max_memory_pct = 100".into()),
                _ => None,
            };
            out.push_str(&replaced.unwrap_or_else(|| line.to_string()));
            out.push('\n');
        }
        out.push_str(&format!(
            "\n[[alerts.webhook]]\nname = \"bench\"\nurl = {hook:?}\n"
        ));
        out
    })?;
    let http = client(2)?;
    let url = server.url.clone();
    let target = offline + Duration::from_secs(5);
    let mut samples = Vec::with_capacity(args.runs);
    for run in 0..args.runs {
        let name = format!("bench-alert-{run}");
        let created = send_json(
            http.post(format!("{url}/api/v1/tokens"))
                .bearer_auth(&server.token)
                .json(&json!({ "name": name, "role": "agent" })),
        )
        .await
        .with_context(|| format!("creating token {name}"))?;
        let Some(token) = created["token"].as_str().map(str::to_string) else {
            bail!("token answer without a token: {created}");
        };
        let resource = format!("{name}-build");
        let req = RegisterRequest {
            version: env!("CARGO_PKG_VERSION").into(),
            hostname: name.clone(),
            resources: vec![AgentResource {
                name: resource.clone(),
                kind: ResourceKind::BuildServer,
                labels: Default::default(),
                capabilities: Default::default(),
                board: None,
                offline_reason: None,
                verification: Vec::new(),
                quarantine: None,
            }],
            running: Vec::new(),
        };
        send(
            http.post(format!("{url}/api/v1/agents/register"))
                .bearer_auth(&token)
                .json(&req),
        )
        .await
        .with_context(|| format!("registering agent {name}"))?;
        let mut last = Instant::now();
        for _ in 0..3 {
            let hb = Heartbeat {
                metrics: vec![ResourceMetrics {
                    resource: resource.clone(),
                    cpu_pct: 10.0,
                    memory_pct: 10.0,
                    disk_pct: 10.0,
                    disk_free_gb: 500.0,
                    active_compilations: 0,
                    running_jobs: 0,
                }],
                running: Vec::new(),
            };
            send(
                http.post(format!("{url}/api/v1/agents/heartbeat"))
                    .bearer_auth(&token)
                    .json(&hb),
            )
            .await
            .context("heartbeat")?;
            last = Instant::now();
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        // Silent from here on.
        let deadline = last + target + Duration::from_secs(30);
        let arrived = loop {
            let hit = seen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .iter()
                .find(|(s, e, _)| *s == resource && e == "raised")
                .map(|(_, _, at)| *at);
            if let Some(at) = hit {
                break at;
            }
            if Instant::now() > deadline {
                bail!(
                    "no alert for {resource} within {:?} of its last heartbeat",
                    deadline - last
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        samples.push(arrived.saturating_duration_since(last));
    }
    let worst = samples.iter().max().copied().unwrap_or_default();
    let round = |x: f64| (x * 1000.0).round() / 1000.0;
    let per_run: Vec<f64> = samples.iter().map(|d| round(d.as_secs_f64())).collect();
    Ok(json!({
        "bench": "alerts",
        "runs": args.runs,
        "offline_after_s": offline.as_secs_f64(),
        "interval_s": interval.as_secs_f64(),
        "target_s": target.as_secs_f64(),
        "latency_s": per_run,
        "latency_ms": latency(&mut samples),
        "worst_s": round(worst.as_secs_f64()),
        "ratio_to_target": round(worst.as_secs_f64() / target.as_secs_f64()),
        "within_target": worst <= target,
    }))
}
