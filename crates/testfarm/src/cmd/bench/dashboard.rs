//! `testfarm bench dashboard [--resources 1000] [--jobs 10000] [--streams 200] [--json]`:
//! the web dashboard's cost against a store of that size, on a spawned server.
//!
//! The store is filled directly (one transaction per batch) before the server starts:
//! resources of the three kinds with one heartbeat of metrics each, jobs in every state
//! spread over the last two days (some running on resources). Then, in one run:
//! - `overview`, `resources`: latency of `GET /ui` and `GET /ui/resources` (the cookie
//!   session), interleaved with `GET /healthz` as the baseline; `*_server_ms` is the p50
//!   minus the healthz p50 (the request's own cost beyond a loopback round trip);
//! - `events`: `--streams` open `GET /ui/events` streams, one maintenance change through
//!   the REST API, and the time until each stream has the event (p99 against the 1 s
//!   target), with the server's RSS growth across opening the streams and the change.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{TimeDelta, Utc};
use serde_json::{Value, json};
use testfarm_api::agent::ResourceMetrics;
use testfarm_api::job::{Job, JobState};
use testfarm_core::Role;
use testfarm_core::resource::{Resource, ResourceKind};
use testfarm_store::Store;
use testfarm_store::jobs::JobRow;
use ulid::Ulid;

use super::spawn::{Spawned, client, latency};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Resources in the store.
    #[arg(long, default_value_t = 1_000)]
    pub resources: usize,
    /// Jobs in the store.
    #[arg(long, default_value_t = 10_000)]
    pub jobs: usize,
    /// Open event streams for the live-update figure.
    #[arg(long, default_value_t = 200)]
    pub streams: usize,
    /// Timed requests per page.
    #[arg(long, default_value_t = 100)]
    pub samples: usize,
    /// Print one JSON object instead of lines for people.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.resources < 3 || args.streams == 0 || args.samples == 0 {
        eprintln!("error: --resources must be at least 3, --streams and --samples at least 1");
        return Ok(ExitCode::from(2));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
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

const KINDS: [ResourceKind; 3] = [
    ResourceKind::BuildServer,
    ResourceKind::QemuHost,
    ResourceKind::Board,
];
const ENDED: [JobState; 4] = [
    JobState::Passed,
    JobState::Passed,
    JobState::Failed,
    JobState::Error,
];

fn job(i: usize, resources: &[Resource], now: chrono::DateTime<Utc>) -> JobRow {
    let age = TimeDelta::minutes(i64::try_from(i % 2880).unwrap_or(0));
    let (state, on) = match i % 20 {
        0 => (JobState::Queued, None),
        1 => (JobState::Running, Some(&resources[i % resources.len()])),
        n => (
            ENDED[n % ENDED.len()],
            Some(&resources[i % resources.len()]),
        ),
    };
    let queued_at = now - age;
    let started = on.map(|_| queued_at + TimeDelta::seconds(5));
    JobRow {
        job: Job {
            id: Ulid::new().to_string(),
            name: format!("bench-{}", i % 50),
            state,
            priority: 200,
            submitter: "bench".into(),
            resource: on.map(|r| r.name.clone()),
            lease_id: None,
            attempt: 1,
            reason: None,
            created_at: queued_at,
            queued_at,
            assigned_at: started,
            started_at: started,
            ended_at: state
                .is_terminal()
                .then(|| queued_at + TimeDelta::seconds(65)),
            log_bytes: 0,
            spec: json!({"name": "bench", "steps": [{"shell": "true"}]}),
            vars: json!({}),
            steps: Vec::new(),
            estimated_start: None,
        },
        submitter_role: Role::User,
        resource_id: on.map(|r| r.id.to_string()),
        last_report_at: None,
        log_chunks: 0,
        cancel_requested: None,
        avoid_resource: None,
    }
}

async fn seed(db: &std::path::Path, resources: usize, jobs: usize) -> anyhow::Result<()> {
    let store = Store::open(db).await?;
    let now = Utc::now();
    let all: Vec<Resource> = (0..resources)
        .map(|i| {
            let kind = KINDS[i % KINDS.len()];
            let mut r = Resource::new(Ulid::new(), format!("{kind}-{i:05}"), kind, now);
            r.labels
                .insert("site", if i % 2 == 0 { "lab-a" } else { "lab-b" });
            r.capabilities.cpus = Some(32);
            r.capabilities.memory_mb = Some(65536);
            r
        })
        .collect();
    for batch in all.chunks(500) {
        let mut tx = store.begin().await?;
        for (i, r) in batch.iter().enumerate() {
            tx.insert_resource(r).await?;
            let pct = (i % 100) as f64;
            let m = ResourceMetrics {
                resource: r.name.clone(),
                cpu_pct: pct,
                memory_pct: 100.0 - pct,
                disk_pct: 40.0,
                disk_free_gb: 120.0,
                active_compilations: 0,
                running_jobs: u32::try_from(i % 4).unwrap_or(0),
            };
            tx.record_metrics(r.id, now, &m).await?;
        }
        tx.commit().await?;
    }
    let rows: Vec<JobRow> = (0..jobs).map(|i| job(i, &all, now)).collect();
    for batch in rows.chunks(1000) {
        let mut tx = store.begin().await?;
        for row in batch {
            tx.insert_job(row).await?;
        }
        tx.commit().await?;
    }
    Ok(())
}

fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

fn p50(v: &Value) -> f64 {
    v["p50_ms"].as_f64().unwrap_or(0.0)
}

async fn timed(
    http: &reqwest::Client,
    url: &str,
    cookie: Option<&str>,
) -> anyhow::Result<Duration> {
    let mut req = http.get(url);
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let start = Instant::now();
    let resp = req.send().await?;
    let status = resp.status();
    resp.bytes().await?;
    if !status.is_success() {
        bail!("GET {url}: HTTP {status}");
    }
    Ok(start.elapsed())
}

/// Opens one event stream; returns when the headers are in, with a task that reports the
/// instant `kind` arrives on it.
async fn stream(
    http: &reqwest::Client,
    url: &str,
    cookie: &str,
    kind: &'static str,
) -> anyhow::Result<tokio::task::JoinHandle<Option<Instant>>> {
    let mut resp = http
        .get(url)
        .header("cookie", cookie)
        .timeout(Duration::from_secs(120))
        .send()
        .await?;
    if !resp.status().is_success() {
        bail!("GET {url}: HTTP {}", resp.status());
    }
    Ok(tokio::spawn(async move {
        let mut seen = String::new();
        while let Ok(Some(chunk)) = resp.chunk().await {
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if seen.contains(kind) {
                return Some(Instant::now());
            }
            if seen.len() > 1 << 16 {
                seen.drain(..seen.len() - 256);
            }
        }
        None
    }))
}

async fn bench(args: &Args) -> anyhow::Result<Value> {
    let (n_res, n_jobs) = (args.resources, args.jobs);
    let fill = Instant::now();
    // The seeding runtime runs on its own thread: this one is inside the bench's runtime.
    let server = Spawned::start_seeded(str::to_string, |db| {
        std::thread::scope(|s| {
            s.spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?
                    .block_on(seed(db, n_res, n_jobs))
            })
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the seeding thread panicked")))
        })
    })?;
    let fill_secs = fill.elapsed().as_secs_f64();
    let url = server.url.trim_end_matches('/').to_string();
    let cookie = format!("tf_session={}", server.token);
    let http = client(args.streams + 4)?;

    for _ in 0..5 {
        timed(&http, &format!("{url}/healthz"), None).await?;
        timed(&http, &format!("{url}/ui"), Some(&cookie)).await?;
        timed(&http, &format!("{url}/ui/resources"), Some(&cookie)).await?;
    }
    let (mut health, mut overview, mut resources) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..args.samples {
        health.push(timed(&http, &format!("{url}/healthz"), None).await?);
        overview.push(timed(&http, &format!("{url}/ui"), Some(&cookie)).await?);
        resources.push(timed(&http, &format!("{url}/ui/resources"), Some(&cookie)).await?);
    }
    let (health, overview, resources) = (
        latency(&mut health),
        latency(&mut overview),
        latency(&mut resources),
    );
    let overview_server = (p50(&overview) - p50(&health)).max(0.0);
    let resources_server = (p50(&resources) - p50(&health)).max(0.0);

    // Live updates: open the streams after the newest event, then change one resource.
    let page = http
        .get(format!("{url}/ui"))
        .header("cookie", &cookie)
        .send()
        .await?
        .text()
        .await?;
    let after = page
        .split("data-after=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or("0")
        .to_string();
    let rss_before = rss_kb(server.pid());
    let events_url = format!("{url}/ui/events?after={after}");
    let mut tasks = Vec::with_capacity(args.streams);
    for _ in 0..args.streams {
        tasks.push(stream(&http, &events_url, &cookie, "resource.maintenance_on").await?);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_open = rss_kb(server.pid());
    let name = format!("{}-00000", ResourceKind::BuildServer);
    let changed = Instant::now();
    let resp = http
        .post(format!("{url}/api/v1/resources/{name}/maintenance"))
        .bearer_auth(&server.token)
        .json(&json!({"enabled": true, "reason": "bench"}))
        .send()
        .await?;
    if !resp.status().is_success() {
        bail!("maintenance on {name}: HTTP {}", resp.status());
    }
    let mut arrivals = Vec::with_capacity(tasks.len());
    let mut missed = 0usize;
    for t in tasks {
        match tokio::time::timeout(Duration::from_secs(30), t).await {
            Ok(Ok(Some(at))) => arrivals.push(at.saturating_duration_since(changed)),
            _ => missed += 1,
        }
    }
    let rss_after = rss_kb(server.pid());
    let events = latency(&mut arrivals);
    let growth_mb = match (rss_before, rss_after.max(rss_open)) {
        (Some(a), Some(b)) => Some(((b.saturating_sub(a)) as f64 / 1024.0 * 10.0).round() / 10.0),
        _ => None,
    };
    let meets = json!({
        "overview": overview_server <= 20.0,
        "resources_page": resources_server <= 20.0,
        "events_p99": missed == 0 && events["p99_ms"].as_f64().unwrap_or(f64::MAX) <= 1000.0,
        "rss_growth": growth_mb.is_some_and(|g| g <= 50.0),
    });
    let ratio = |a: f64, b: f64| {
        if b > 0.0 {
            (a / b * 100.0).round() / 100.0
        } else {
            0.0
        }
    };
    Ok(json!({
        "bench": "dashboard",
        "resources": n_res,
        "jobs": n_jobs,
        "fill_secs": (fill_secs * 100.0).round() / 100.0,
        "healthz": health,
        "overview": overview,
        "resources_page": resources,
        "overview_server_ms": (overview_server * 1000.0).round() / 1000.0,
        "resources_server_ms": (resources_server * 1000.0).round() / 1000.0,
        "overview_vs_healthz": ratio(p50(&overview), p50(&health)),
        "resources_vs_healthz": ratio(p50(&resources), p50(&health)),
        "target_server_ms": 20,
        "events": {
            "streams": args.streams,
            "received": arrivals.len(),
            "missed": missed,
            "latency": events,
            "target_p99_ms": 1000,
            "rss_before_kb": rss_before,
            "rss_open_kb": rss_open,
            "rss_after_kb": rss_after,
            "rss_growth_mb": growth_mb,
            "target_rss_growth_mb": 50,
        },
        "target": "overview and resources page ≤ 20 ms server time p50; event to 200 streams ≤ 1 s p99; RSS growth ≤ 50 MB",
        "meets_target": meets,
        "load_average_1m": super::spawn::load_average(),
    }))
}
