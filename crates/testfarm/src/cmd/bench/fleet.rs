//! `testfarm bench fleet [--url URL --token T | --spawn] --agents 2000 --interval 5s
//! --duration 60s [--json]`: many agents heartbeating against one server.
//!
//! Each simulated agent gets its own agent-role token (`POST /api/v1/tokens`, admin
//! token), registers one board (`POST /api/v1/agents/register`), then heartbeats (`POST
//! /api/v1/agents/heartbeat` with its board's metrics) every `--interval` for
//! `--duration`; start times are staggered evenly over one interval, as a real fleet's
//! are. The agents share one HTTP client and its connection pool (2000 sockets of our own
//! would measure this process's file limit, not the server).
//!
//! Baseline, same process and schedule: before the heartbeats, the same agents send
//! `GET /healthz` on the same staggered schedule for two intervals, so the ratio is what a
//! heartbeat costs beyond an HTTP round trip at that rate. With `--spawn` (the default
//! without `--url`) the server's VmHWM/VmRSS come from /proc.
//!
//! Afterwards the bench's tokens are revoked; its boards stay registered under those
//! agents' names (a spawned server's directory is deleted anyway).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use serde_json::json;
use testfarm_api::agent::{AgentResource, Heartbeat, RegisterRequest, ResourceMetrics};
use testfarm_api::resource::ResourceKind;

use super::spawn::{Target, client, latency, load_average, parse_duration, send, send_json};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Server to measure (default: spawn one in a temporary directory).
    #[arg(long)]
    pub url: Option<String>,
    /// Admin token of the server at --url (or TESTFARM_TOKEN); creates agent tokens.
    #[arg(long)]
    pub token: Option<String>,
    /// Start a server of this binary in a temporary directory, even with --url.
    #[arg(long)]
    pub spawn: bool,
    /// Simulated agents (one token and one board each).
    #[arg(long, default_value_t = 2000)]
    pub agents: usize,
    /// Heartbeat interval of each agent.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub interval: Duration,
    /// How long the agents heartbeat.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Requests in flight during setup (tokens, registrations, cleanup).
    #[arg(long, default_value_t = 16)]
    pub setup_concurrency: usize,
    /// Print one JSON object instead of lines for people.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.agents == 0 || args.interval.is_zero() {
        eprintln!("error: --agents and --interval must be more than zero");
        return Ok(ExitCode::from(2));
    }
    let target = Target::new(args.url.clone(), args.token.clone(), args.spawn)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let report = rt.block_on(bench(&args, &target))?;
    drop(target);
    if args.json {
        outln!("{report}");
    } else {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(ExitCode::SUCCESS)
}

struct Agent {
    name: String,
    token: String,
    board: String,
}

async fn bench(args: &Args, target: &Target) -> anyhow::Result<serde_json::Value> {
    let http = client(args.setup_concurrency.max(64))?;
    let url = target.url.clone();
    let admin = target.token.clone();
    let run = ulid::Ulid::new().to_string().to_lowercase();
    let setup_start = Instant::now();

    // Tokens and registrations, a few in flight at a time.
    let results: Vec<anyhow::Result<Agent>> = futures::stream::iter(0..args.agents)
        .map(|i| {
            let (http, url, admin) = (http.clone(), url.clone(), admin.clone());
            let name = format!("bench-fleet-{run}-{i}");
            async move { setup_agent(&http, &url, &admin, name).await }
        })
        .buffer_unordered(args.setup_concurrency.max(1))
        .collect()
        .await;
    let mut agents = Vec::with_capacity(args.agents);
    let mut setup_errors = 0usize;
    let mut first_error = None;
    for r in results {
        match r {
            Ok(a) => agents.push(Arc::new(a)),
            Err(e) => {
                setup_errors += 1;
                first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    let setup = setup_start.elapsed();
    // Agents whose token or registration failed are left out (and counted): a server
    // that refuses some of a fleet's registrations is a finding, not a reason for no figures.
    let measured = async {
        if agents.is_empty() {
            bail!(
                "no simulated agent could be set up: {}",
                first_error.as_deref().unwrap_or("?")
            );
        }
        let (mut base, base_errors) = schedule(
            &http,
            &url,
            &agents,
            args.interval,
            args.interval * 2,
            Probe::Healthz,
        )
        .await;
        let rss_before = target.rss_kb();
        let (mut hb, hb_errors) = schedule(
            &http,
            &url,
            &agents,
            args.interval,
            args.duration,
            Probe::Heartbeat,
        )
        .await;
        let rss_after = target.rss_kb();
        Ok((
            latency(&mut base),
            base_errors,
            latency(&mut hb),
            hb_errors,
            rss_before,
            rss_after,
        ))
    }
    .await;

    // Revoke what this run created.
    let _: Vec<()> = futures::stream::iter(agents.iter().cloned())
        .map(|a| {
            let (http, url, admin) = (http.clone(), url.clone(), admin.clone());
            async move {
                let _ = send(
                    http.delete(format!("{url}/api/v1/tokens/{}", a.name))
                        .bearer_auth(&admin),
                )
                .await;
            }
        })
        .buffer_unordered(args.setup_concurrency.max(1))
        .collect()
        .await;

    let (base, base_errors, hb, hb_errors, rss_before, rss_after) = measured?;
    let first_error = first_error.map(|e| e.chars().take(300).collect::<String>());
    let p = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    let ratio = |k: &str| (p(&hb, k) / p(&base, k).max(1e-6) * 100.0).round() / 100.0;
    let rss = rss_after.map(|(hwm, rss)| {
        json!({
            "vm_hwm_mb": (hwm as f64 / 1024.0 * 10.0).round() / 10.0,
            "vm_rss_mb": (rss as f64 / 1024.0 * 10.0).round() / 10.0,
            "vm_rss_mb_before_heartbeats": rss_before.map(|(_, r)| (r as f64 / 1024.0 * 10.0).round() / 10.0),
        })
    });
    let hwm_mb = rss_after.map(|(hwm, _)| hwm as f64 / 1024.0);
    let p99 = p(&hb, "p99_ms");
    Ok(json!({
        "bench": "fleet",
        "server": if target.spawned.is_some() { "spawned" } else { "url" },
        "agents_requested": args.agents,
        "agents": agents.len(),
        "interval_s": args.interval.as_secs_f64(),
        "duration_s": args.duration.as_secs_f64(),
        "setup_s": (setup.as_secs_f64() * 1e3).round() / 1e3,
        "setup_errors": setup_errors,
        "setup_first_error": first_error,
        "heartbeats_per_s_offered": (agents.len() as f64 / args.interval.as_secs_f64() * 10.0).round() / 10.0,
        "heartbeat": hb,
        "heartbeat_errors": hb_errors,
        "baseline_healthz": base,
        "baseline_errors": base_errors,
        "p50_vs_baseline": ratio("p50_ms"),
        "p99_vs_baseline": ratio("p99_ms"),
        "server_rss": rss,
        "target": { "p99_ms": 20, "rss_mb": 150 },
        "meets_target": p99 <= 20.0 && hb_errors == 0 && setup_errors == 0 && hwm_mb.is_none_or(|m| m <= 150.0),
        "load_average_1m": load_average(),
    }))
}

async fn setup_agent(
    http: &reqwest::Client,
    url: &str,
    admin: &str,
    name: String,
) -> anyhow::Result<Agent> {
    let created = send_json(
        http.post(format!("{url}/api/v1/tokens"))
            .bearer_auth(admin)
            .json(&json!({ "name": name, "role": "agent" })),
    )
    .await
    .with_context(|| format!("creating token {name}"))?;
    let Some(token) = created["token"].as_str().map(str::to_string) else {
        bail!("token answer without a token: {created}");
    };
    let board = format!("{name}-board");
    let req = RegisterRequest {
        version: env!("CARGO_PKG_VERSION").into(),
        hostname: name.clone(),
        resources: vec![AgentResource {
            name: board.clone(),
            kind: ResourceKind::Board,
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
    Ok(Agent { name, token, board })
}

#[derive(Clone, Copy)]
enum Probe {
    Healthz,
    Heartbeat,
}

/// Every agent sends `probe` every `interval` for `duration`, agent `i` starting at
/// `i/n` of an interval. Returns the latencies and the number of failed requests.
async fn schedule(
    http: &reqwest::Client,
    url: &str,
    agents: &[Arc<Agent>],
    interval: Duration,
    duration: Duration,
    probe: Probe,
) -> (Vec<Duration>, u64) {
    let start = tokio::time::Instant::now();
    let end = start + duration;
    let n = agents.len().max(1) as u32;
    let mut tasks = Vec::with_capacity(agents.len());
    for (i, a) in agents.iter().enumerate() {
        let (http, url, a) = (http.clone(), url.to_string(), Arc::clone(a));
        let offset = interval * u32::try_from(i).unwrap_or(0) / n;
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut errors = 0u64;
            let mut next = start + offset;
            let mut beat = 0u64;
            while next < end {
                tokio::time::sleep_until(next).await;
                let req = match probe {
                    Probe::Healthz => http.get(format!("{url}/healthz")),
                    Probe::Heartbeat => {
                        beat += 1;
                        let hb = Heartbeat {
                            metrics: vec![ResourceMetrics {
                                resource: a.board.clone(),
                                cpu_pct: (beat % 100) as f64,
                                memory_pct: 40.0,
                                disk_pct: 55.0,
                                disk_free_gb: 120.0,
                                active_compilations: 0,
                                running_jobs: 0,
                            }],
                            running: Vec::new(),
                        };
                        http.post(format!("{url}/api/v1/agents/heartbeat"))
                            .bearer_auth(&a.token)
                            .json(&hb)
                    }
                };
                let t = Instant::now();
                match send(req).await {
                    Ok(resp) => {
                        let _ = resp.bytes().await;
                        samples.push(t.elapsed());
                    }
                    Err(_) => errors += 1,
                }
                next += interval;
            }
            (samples, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        if let Ok((s, e)) = t.await {
            all.extend(s);
            errors += e;
        }
    }
    (all, errors)
}
