//! `testfarm bench logs [--url URL --token T | --spawn] --size 200MB [--json]`: log ingest
//! throughput of one job, through the agent's own shipper (`testfarm_agent::logs`).
//!
//! Sets up a job as an agent sees it: an agent token (`POST /api/v1/tokens`), one board
//! registered under it, a job requiring that board, the assignment taken by long-poll,
//! `start`. Then writes `--size` bytes of log lines into the shipper in 64 KiB pieces
//! (what a pipe read gives), which sends 256 KiB chunks, one at a time and in order, to
//! `PUT /api/v1/jobs/{id}/logs/{seq}` with the lease's epoch; timed until every byte has
//! landed. Then `finish`, and the server's stored `log_bytes` is checked.
//!
//! Baseline, same process: the same bytes written in the same pieces to a local file.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use serde_json::json;
use testfarm_agent::client::Client;
use testfarm_agent::control::JobControl;
use testfarm_agent::logs::{ClientSink, spawn};
use testfarm_api::agent::{AgentResource, FinishRequest, Outcome, RegisterRequest};
use testfarm_api::resource::ResourceKind;

use super::spawn::{Target, client, load_average, send, send_json};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Server to measure (default: spawn one in a temporary directory).
    #[arg(long)]
    pub url: Option<String>,
    /// Admin token of the server at --url (or TESTFARM_TOKEN); creates an agent token.
    #[arg(long)]
    pub token: Option<String>,
    /// Start a server of this binary in a temporary directory, even with --url.
    #[arg(long)]
    pub spawn: bool,
    /// Log size: a number with an optional KB/MB/GB suffix (powers of 1000).
    #[arg(long, default_value = "200MB")]
    pub size: String,
    /// Print one JSON object instead of lines for people.
    #[arg(long)]
    pub json: bool,
}

/// What one pipe read hands the shipper.
const PIECE: usize = 64 * 1024;

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let Some(size) = super::spawn::parse_size(&args.size) else {
        eprintln!(
            "error: --size {:?}: expected e.g. 200MB, 512KB, 1GB",
            args.size
        );
        return Ok(ExitCode::from(2));
    };
    let target = Target::new(args.url.clone(), args.token.clone(), args.spawn)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let report = rt.block_on(bench(&target, size))?;
    drop(target);
    if args.json {
        outln!("{report}");
    } else {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(ExitCode::SUCCESS)
}

/// 64 KiB of log lines, reused for every piece.
fn piece() -> Bytes {
    let mut out = Vec::with_capacity(PIECE);
    let mut i = 0u64;
    while out.len() < PIECE {
        let line = format!(
            "[{i:08}] kernel: usb 1-1.{}: new high-speed USB device number {} using dwc2\n",
            i % 4,
            i % 128
        );
        out.extend_from_slice(line.as_bytes());
        i += 1;
    }
    out.truncate(PIECE);
    Bytes::from(out)
}

async fn bench(target: &Target, size: u64) -> anyhow::Result<serde_json::Value> {
    let http = client(2)?;
    let url = target.url.as_str();
    let admin = target.token.as_str();
    let run = ulid::Ulid::new().to_string().to_lowercase();
    let agent_name = format!("bench-logs-{run}");
    let board = format!("bench-logs-board-{run}");

    let created = send_json(
        http.post(format!("{url}/api/v1/tokens"))
            .bearer_auth(admin)
            .json(&json!({ "name": agent_name, "role": "agent" })),
    )
    .await
    .context("creating an agent token")?;
    let Some(agent_token) = created["token"].as_str() else {
        bail!("token answer without a token: {created}");
    };
    let agent = Client::new(url, agent_token)?;
    agent
        .register(&RegisterRequest {
            version: env!("CARGO_PKG_VERSION").into(),
            hostname: agent_name.clone(),
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
        })
        .await
        .context("registering the bench board")?;
    let spec = format!(
        "name: bench-logs\nrequires:\n  kind: board\n  resource: {board}\nsteps:\n  - shell: \"true\"\n"
    );
    let job = send_json(
        http.post(format!("{url}/api/v1/jobs"))
            .bearer_auth(admin)
            .json(&json!({ "spec": spec })),
    )
    .await
    .context("submitting the bench job")?;
    let Some(job_id) = job["id"].as_str().map(str::to_string) else {
        bail!("job answer without an id: {job}");
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let assignment = loop {
        let work = agent.work(Duration::from_secs(5)).await?;
        if let Some(a) = work.assignments.into_iter().find(|a| a.job_id == job_id) {
            break a;
        }
        if Instant::now() > deadline {
            bail!("job {job_id} was not assigned to the bench board within 30 s");
        }
    };
    agent.start(&job_id, assignment.epoch).await?;

    let piece = piece();
    let pieces = size.div_ceil(PIECE as u64);
    let last_len = usize::try_from(size - (pieces - 1) * PIECE as u64).unwrap_or(PIECE);

    // Baseline: the same bytes, same pieces, to a local file.
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let t = Instant::now();
    {
        let mut f = std::io::BufWriter::with_capacity(
            256 * 1024,
            std::fs::File::create(dir.path().join("log")).context("creating the baseline file")?,
        );
        for i in 0..pieces {
            let n = if i + 1 == pieces { last_len } else { PIECE };
            f.write_all(&piece[..n])?;
        }
        f.flush()?;
    }
    let file_time = t.elapsed();
    drop(dir);

    // The real path: the agent's shipper to the server.
    let sink = ClientSink {
        client: agent.clone(),
        job_id: job_id.clone(),
        epoch: assignment.epoch,
    };
    let t = Instant::now();
    let (writer, shipper) = spawn(sink, JobControl::new());
    for i in 0..pieces {
        let n = if i + 1 == pieces { last_len } else { PIECE };
        if !writer.write(piece.slice(..n)).await {
            break;
        }
    }
    drop(writer);
    let stats = shipper.finish().await?;
    let ship_time = t.elapsed();

    agent
        .finish(
            &job_id,
            &FinishRequest {
                epoch: assignment.epoch,
                outcome: Outcome::Passed,
                reason: None,
                log_chunks: stats.chunks,
            },
        )
        .await
        .context("finishing the bench job")?;
    let stored = send_json(
        http.get(format!("{url}/api/v1/jobs/{job_id}"))
            .bearer_auth(admin),
    )
    .await?;
    // The board stays registered under the bench's agent (agents' resources are theirs);
    // the agent token is revoked so it cannot be used again.
    let _ = send(
        http.delete(format!("{url}/api/v1/tokens/{agent_name}"))
            .bearer_auth(admin),
    )
    .await;

    let mb_s =
        |d: Duration| ((size as f64 / 1e6 / d.as_secs_f64().max(1e-9)) * 10.0).round() / 10.0;
    let ingest = mb_s(ship_time);
    Ok(json!({
        "bench": "logs",
        "server": if target.spawned.is_some() { "spawned" } else { "url" },
        "size_bytes": size,
        "chunks": stats.chunks,
        "retries": stats.retries,
        "stored_log_bytes": stored["log_bytes"],
        "job_state": stored["state"],
        "ingest": { "seconds": (ship_time.as_secs_f64() * 1e3).round() / 1e3, "mb_s": ingest },
        "baseline_local_file": { "seconds": (file_time.as_secs_f64() * 1e3).round() / 1e3, "mb_s": mb_s(file_time) },
        "ingest_time_vs_baseline": ((ship_time.as_secs_f64() / file_time.as_secs_f64().max(1e-9)) * 100.0).round() / 100.0,
        "server_rss_kb": target.rss_kb().map(|(hwm, rss)| json!({ "vm_hwm": hwm, "vm_rss": rss })),
        "target": { "mb_s": 100 },
        "meets_target": ingest >= 100.0,
        "load_average_1m": load_average(),
    }))
}
