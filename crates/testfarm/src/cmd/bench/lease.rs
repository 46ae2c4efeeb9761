//! `testfarm bench lease [--url URL --token T | --spawn] --n 2000 --concurrency 8 [--json]`:
//! the round trip of taking and giving back a board, as `lease exec` and CI scripts do.
//!
//! Creates as many boards as workers, labelled with a label unique to this run so the
//! selector matches only them; each worker then loops `POST /api/v1/leases` (selector,
//! no wait) and `DELETE /api/v1/leases/{id}?epoch=E`, timing the pair. Baseline: as many
//! `GET /healthz` round trips, same client, same pool, same concurrency. At the end the
//! boards it created are retired and deleted; nothing else is touched.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use hyper::Method;
use serde_json::json;

use super::conn::Conn;
use super::spawn::{Target, client, latency, load_average, own_cpu, send};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Server to measure (default: spawn one in a temporary directory).
    #[arg(long)]
    pub url: Option<String>,
    /// Token with operator rights on the server at --url (or TESTFARM_TOKEN).
    #[arg(long)]
    pub token: Option<String>,
    /// Start a server of this binary in a temporary directory, even with --url.
    #[arg(long)]
    pub spawn: bool,
    /// Acquire+release round trips in all.
    #[arg(long, default_value_t = 2000)]
    pub n: usize,
    /// Concurrent workers (and boards created for them).
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Print one JSON object instead of lines for people.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.n == 0 || args.concurrency == 0 {
        eprintln!("error: --n and --concurrency must be at least 1");
        return Ok(ExitCode::from(2));
    }
    let target = Target::new(args.url.clone(), args.token.clone(), args.spawn)?;
    // One thread drives all the workers' connections (as `wrk` does): the generator
    // needs ~30 µs of CPU per round trip, far from saturating it, and a second thread
    // would only contend with the server for the cores it is measuring.
    let rt = tokio::runtime::Builder::new_current_thread()
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

async fn bench(args: &Args, target: &Target) -> anyhow::Result<serde_json::Value> {
    let http = client(args.concurrency)?;
    let url = target.url.as_str();
    let token = target.token.as_str();
    let run_label = format!("r{}", ulid::Ulid::new().to_string().to_lowercase());
    let mut boards = Vec::new();
    let result = async {
        for i in 0..args.concurrency {
            let name = format!("bench-lease-{run_label}-{i}");
            send(
                http.post(format!("{url}/api/v1/resources"))
                    .bearer_auth(token)
                    .json(&json!({
                        "name": name, "kind": "board",
                        "labels": { "bench-run": run_label },
                    })),
            )
            .await
            .with_context(|| format!("creating board {name}"))?;
            boards.push(name);
        }
        let acquire = Bytes::from(serde_json::to_vec(&json!({
            "selector": format!("bench-run={run_label}"), "kind": "board",
            "duration": "5m", "wait": "30s",
        }))?);
        // Warm the connections and the server's caches (token, statements, selectors).
        timed(
            target,
            args.concurrency,
            args.concurrency * 4,
            Op::Healthz,
            &acquire,
        )
        .await?;
        timed(
            target,
            args.concurrency,
            args.concurrency * 4,
            Op::AcquireRelease,
            &acquire,
        )
        .await?;

        let (mut base, base_wall) =
            timed(target, args.concurrency, args.n, Op::Healthz, &acquire).await?;
        let cpu_before = (target.server_cpu(), own_cpu());
        let (mut lease, lease_wall) = timed(
            target,
            args.concurrency,
            args.n,
            Op::AcquireRelease,
            &acquire,
        )
        .await?;
        let cpu_after = (target.server_cpu(), own_cpu());
        // µs of CPU per acquire+release pair over the timed phase (`None` where it cannot
        // be read, or when a thread that had run exited meanwhile and took its time along).
        let per_pair = |before: Option<Duration>, after: Option<Duration>| {
            let used = after?.checked_sub(before?)?;
            Some((used.as_secs_f64() * 1e6 / args.n as f64 * 10.0).round() / 10.0)
        };
        let base_stats = latency(&mut base);
        let lease_stats = latency(&mut lease);
        let p50 = lease_stats["p50_ms"].as_f64().unwrap_or(f64::NAN);
        let ratio = |k: &str| {
            let b = base_stats[k].as_f64().unwrap_or(0.0);
            let l = lease_stats[k].as_f64().unwrap_or(0.0);
            (l / b.max(1e-6) * 100.0).round() / 100.0
        };
        Ok::<_, anyhow::Error>(json!({
            "bench": "lease",
            "server": if target.spawned.is_some() { "spawned" } else { "url" },
            "n": args.n,
            "concurrency": args.concurrency,
            "boards_created": boards.len(),
            "acquire_release": lease_stats,
            "acquire_release_per_s": (args.n as f64 / lease_wall.as_secs_f64().max(1e-9)).round(),
            "cpu_us_per_pair": {
                "server": per_pair(cpu_before.0, cpu_after.0),
                "load_generator": per_pair(cpu_before.1, cpu_after.1),
            },
            "baseline_healthz": base_stats,
            "baseline_healthz_per_s": (args.n as f64 / base_wall.as_secs_f64().max(1e-9)).round(),
            "p50_vs_baseline": ratio("p50_ms"),
            "p99_vs_baseline": ratio("p99_ms"),
            "target": { "p50_ms": 1.0 },
            "meets_target": p50 <= 1.0,
            "load_average_1m": load_average(),
        }))
    }
    .await;
    // Remove what this run created, even when it failed half-way.
    for name in &boards {
        let _ = send(
            http.post(format!("{url}/api/v1/resources/{name}/retire"))
                .bearer_auth(token)
                .json(&json!({ "force": true, "reason": "bench lease done" })),
        )
        .await;
        let _ = send(
            http.delete(format!("{url}/api/v1/resources/{name}"))
                .bearer_auth(token),
        )
        .await;
    }
    result
}

/// What a worker repeats.
#[derive(Debug, Clone, Copy)]
enum Op {
    /// `GET /healthz`: the baseline round trip.
    Healthz,
    /// `POST /api/v1/leases` then `DELETE /api/v1/leases/{id}?epoch=E`.
    AcquireRelease,
}

/// The part of a lease answer the release needs.
#[derive(serde::Deserialize)]
struct Taken {
    id: String,
    epoch: u64,
}

async fn once(conn: &mut Conn, op: Op, acquire: &Bytes) -> anyhow::Result<()> {
    match op {
        Op::Healthz => {
            conn.call(Method::GET, "/healthz", None).await?;
        }
        Op::AcquireRelease => {
            let body = conn
                .call(Method::POST, "/api/v1/leases", Some(acquire.clone()))
                .await
                .context("acquiring a lease")?;
            let taken: Taken = serde_json::from_slice(&body)
                .with_context(|| format!("lease answer {}", String::from_utf8_lossy(&body)))?;
            conn.call(
                Method::DELETE,
                &format!("/api/v1/leases/{}?epoch={}", taken.id, taken.epoch),
                None,
            )
            .await
            .context("releasing the lease")?;
        }
    }
    Ok(())
}

/// Runs `op` `n` times over `workers` concurrent tasks, each on its own connection
/// (opened before the clock starts); returns each call's duration and the wall time.
async fn timed(
    target: &Target,
    workers: usize,
    n: usize,
    op: Op,
    acquire: &Bytes,
) -> anyhow::Result<(Vec<Duration>, Duration)> {
    let mut conns = Vec::with_capacity(workers);
    for _ in 0..workers {
        conns.push(Conn::open(&target.url, &target.token).await?);
    }
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for mut conn in conns {
        let (next, acquire) = (Arc::clone(&next), acquire.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let t = Instant::now();
                once(&mut conn, op, &acquire).await?;
                out.push(t.elapsed());
            }
            Ok::<_, anyhow::Error>(out)
        }));
    }
    let mut all = Vec::with_capacity(n);
    for t in tasks {
        all.extend(t.await.context("a worker panicked")??);
    }
    Ok((all, start.elapsed()))
}
