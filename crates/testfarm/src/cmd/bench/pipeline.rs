//! `testfarm bench pipeline [--url URL --token T | --spawn] --stages 10 --runs 5 [--json]`:
//! the overhead a pipeline adds between stages — from one stage's job ending to the next
//! stage's job starting.
//!
//! Each run is a pipeline of `--stages` server-side stages (`sleep: 1ms`, so a stage's own
//! work is negligible), each needing the one before. The gap of a hand-over is the next
//! job's `started_at` minus the previous job's `ended_at`, both stamped by the server.
//! Baseline, in the same run: the same chain driven by a client the way a CI script would
//! — wait for a job to end (long-poll of its log), then submit the next — measured the
//! same way.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::spawn::{Target, client, latency, load_average, send_json};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Server to measure (default: spawn one in a temporary directory).
    #[arg(long)]
    pub url: Option<String>,
    /// Token with user rights on the server at --url (or TESTFARM_TOKEN).
    #[arg(long)]
    pub token: Option<String>,
    /// Start a server of this binary in a temporary directory, even with --url.
    #[arg(long)]
    pub spawn: bool,
    /// Stages per pipeline.
    #[arg(long, default_value_t = 10)]
    pub stages: usize,
    /// Pipelines (and baseline chains) to run.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Print one JSON object instead of lines for people.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.stages < 2 || args.runs == 0 {
        eprintln!("error: --stages must be at least 2 and --runs at least 1");
        return Ok(ExitCode::from(2));
    }
    let target = Target::new(args.url.clone(), args.token.clone(), args.spawn)?;
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

fn time(v: &Value, key: &str) -> anyhow::Result<DateTime<Utc>> {
    v[key]
        .as_str()
        .and_then(|s| s.parse::<DateTime<Utc>>().ok())
        .with_context(|| format!("job without {key}: {v}"))
}

/// `next.started_at - prev.ended_at`, never negative.
fn gap(prev: &Value, next: &Value) -> anyhow::Result<Duration> {
    let d = time(next, "started_at")? - time(prev, "ended_at")?;
    Ok(d.to_std().unwrap_or_default())
}

const STAGE_JOB: &str = "steps:\n  - sleep: 1ms\n";

async fn bench(args: &Args, target: &Target) -> anyhow::Result<Value> {
    let http = client(2)?;
    let url = target.url.as_str();
    let token = target.token.as_str();
    let get = |path: String| {
        let http = http.clone();
        async move { send_json(http.get(format!("{url}{path}")).bearer_auth(token)).await }
    };
    let mut spec = String::from("name: bench-pipeline\nstages:\n");
    for i in 0..args.stages {
        spec.push_str(&format!(
            "  - name: s{i}\n    job: {{ steps: [ {{ sleep: 1ms }} ] }}\n"
        ));
    }
    let mut pipeline_gaps = Vec::new();
    let wall = Instant::now();
    for _ in 0..args.runs {
        let p = send_json(
            http.post(format!("{url}/api/v1/pipelines"))
                .bearer_auth(token)
                .json(&json!({ "spec": spec })),
        )
        .await?;
        let id = p["id"].as_str().context("pipeline without id")?.to_string();
        let deadline = Instant::now() + Duration::from_secs(120);
        let end = loop {
            let p = get(format!("/api/v1/pipelines/{id}")).await?;
            if p["state"] != "running" {
                break p;
            }
            if Instant::now() > deadline {
                bail!("pipeline {id} did not end in 120 s: {p}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        if end["state"] != "passed" {
            bail!("the benchmark pipeline did not pass: {end}");
        }
        let mut jobs = Vec::new();
        for s in end["stages"].as_array().context("no stages")? {
            let job = s["job"].as_str().context("stage without job")?;
            jobs.push(get(format!("/api/v1/jobs/{job}")).await?);
        }
        for w in jobs.windows(2) {
            pipeline_gaps.push(gap(&w[0], &w[1])?);
        }
    }
    let pipeline_wall = wall.elapsed();
    // Baseline: a client chaining the same jobs.
    let mut client_gaps = Vec::new();
    let wall = Instant::now();
    for r in 0..args.runs {
        let mut prev: Option<Value> = None;
        for i in 0..args.stages {
            let job = send_json(
                http.post(format!("{url}/api/v1/jobs"))
                    .bearer_auth(token)
                    .json(&json!({ "spec": format!("name: bench-chain-{r}-{i}\n{STAGE_JOB}") })),
            )
            .await?;
            let id = job["id"].as_str().context("job without id")?.to_string();
            // Wait as `submit --wait` does: long-poll the log until the job has ended.
            let deadline = Instant::now() + Duration::from_secs(60);
            let ended = loop {
                let resp = http
                    .get(format!("{url}/api/v1/jobs/{id}/log"))
                    .bearer_auth(token)
                    .query(&[("wait", "5")])
                    .send()
                    .await?;
                let state = resp
                    .headers()
                    .get("x-testfarm-job-state")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                let _ = resp.bytes().await?;
                if ["passed", "failed", "error", "cancelled", "timed_out"].contains(&state.as_str())
                {
                    break get(format!("/api/v1/jobs/{id}")).await?;
                }
                if Instant::now() > deadline {
                    bail!("job {id} did not end in 60 s");
                }
            };
            if let Some(p) = &prev {
                client_gaps.push(gap(p, &ended)?);
            }
            prev = Some(ended);
        }
    }
    let client_wall = wall.elapsed();
    let p50 = |v: &mut Vec<Duration>| {
        v.sort_unstable();
        v.get(v.len() / 2).copied().unwrap_or_default()
    };
    let (mut pg, mut cg) = (pipeline_gaps.clone(), client_gaps.clone());
    let (pp50, cp50) = (p50(&mut pg), p50(&mut cg));
    let ratio = if cp50.is_zero() {
        0.0
    } else {
        pp50.as_secs_f64() / cp50.as_secs_f64()
    };
    Ok(json!({
        "bench": "pipeline",
        "stages": args.stages,
        "runs": args.runs,
        "stage_handover": latency(&mut pipeline_gaps),
        "baseline_client_chain": latency(&mut client_gaps),
        "ratio_p50_vs_baseline": (ratio * 1000.0).round() / 1000.0,
        "target_p50_ms": 100,
        "pipeline_wall_s": pipeline_wall.as_secs_f64(),
        "baseline_wall_s": client_wall.as_secs_f64(),
        "load_average": load_average(),
    }))
}
