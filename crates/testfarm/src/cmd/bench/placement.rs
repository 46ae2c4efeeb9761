//! `testfarm bench placement --jobs 10000 --resources 1000 [--json]`: one scheduler pass
//! over a large queue, in this process, on a real SQLite file in a temporary directory.
//!
//! The lab is a mix: half boards (four board types, exclusive), 30% QEMU hosts (64 cpus,
//! 256 GiB, kvm; VMs of 1 cpu / 1 GiB), 20% build servers (32 cpus, rust+gcc toolchains;
//! jobs of 1 cpu). Jobs: as many board jobs as there are boards (at most 5% of the queue),
//! the rest 80% VMs and 20% builds, so a 10000/1000 lab can take every job at once.
//! Resources and jobs are written through the store's transactions, as the API would.
//!
//! Then, timed:
//! - `load`: what a pass reads (`Server::scheduler_world`);
//! - `place`: the pure `testfarm_core::placement::place` on that world;
//! - `pass`: the real scheduler pass (`Server::schedule_once`: load, place, and one
//!   transaction per placement writing the lease, the assignment and their events);
//!   `write` is `pass − load − place`.
//!
//! Baselines, same process and database: as many empty write transactions (`BEGIN
//! IMMEDIATE; COMMIT`) as placements were written, the floor of one transaction per
//! placement; and one point read (a job by id) per job in one transaction, the cost of
//! one statement, so `write_in_point_reads_per_placement` says how many statements' worth
//! a placement's write costs.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use serde_json::json;
use testfarm_api::job::{Job, JobState};
use testfarm_core::Role;
use testfarm_core::jobspec::JobSpec;
use testfarm_core::placement::{Decision, place};
use testfarm_core::resource::{Resource, ResourceKind};
use testfarm_server::config::Config;
use testfarm_server::{Paths, Server};
use testfarm_store::jobs::JobRow;
use ulid::Ulid;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Queued jobs to place.
    #[arg(long, default_value_t = 10_000)]
    pub jobs: usize,
    /// Resources in the lab.
    #[arg(long, default_value_t = 1_000)]
    pub resources: usize,
    /// Print one JSON object instead of lines for people.
    #[arg(long)]
    pub json: bool,
}

const BOARD_TYPES: [&str; 4] = ["rpi4", "bbb", "imx8", "jetson"];
const ARCHES: [&str; 2] = ["x86_64", "arm64"];

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.resources < 10 {
        eprintln!("error: --resources must be at least 10 (a mix of three kinds)");
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

struct Lab {
    boards: usize,
    qemu: usize,
    build: usize,
}

fn resources(n: usize, now: chrono::DateTime<Utc>) -> (Lab, Vec<Resource>) {
    let boards = n / 2;
    let qemu = n * 3 / 10;
    let build = n - boards - qemu;
    let mut out = Vec::with_capacity(n);
    for i in 0..boards {
        let mut r = Resource::new(
            Ulid::new(),
            format!("board-{i:05}"),
            ResourceKind::Board,
            now,
        );
        let bt = BOARD_TYPES[i % BOARD_TYPES.len()];
        r.labels.insert("board_type", bt);
        r.labels
            .insert("site", if i % 2 == 0 { "lab-a" } else { "lab-b" });
        r.capabilities.arch = Some(if bt == "bbb" { "armv7" } else { "arm64" }.into());
        r.capabilities.peripherals = vec!["ethernet".into(), "serial".into()];
        if let Some(b) = r.board.as_mut() {
            b.board_type = Some(bt.into());
            b.power_method = Some("pdu".into());
        }
        out.push(r);
    }
    for i in 0..qemu {
        let mut r = Resource::new(
            Ulid::new(),
            format!("qemu-{i:05}"),
            ResourceKind::QemuHost,
            now,
        );
        r.labels
            .insert("site", if i % 2 == 0 { "lab-a" } else { "lab-b" });
        r.capabilities.cpus = Some(64);
        r.capabilities.memory_mb = Some(256 * 1024);
        r.capabilities.disk_gb = Some(2000);
        r.capabilities.kvm = Some(true);
        r.capabilities.arch = Some(ARCHES[i % ARCHES.len()].into());
        out.push(r);
    }
    for i in 0..build {
        let mut r = Resource::new(
            Ulid::new(),
            format!("build-{i:05}"),
            ResourceKind::BuildServer,
            now,
        );
        r.labels.insert("site", "lab-a");
        r.capabilities.cpus = Some(32);
        r.capabilities.memory_mb = Some(128 * 1024);
        r.capabilities.arch = Some(ARCHES[i % ARCHES.len()].into());
        r.capabilities.toolchains = vec!["rust".into(), "gcc".into()];
        out.push(r);
    }
    (
        Lab {
            boards,
            qemu,
            build,
        },
        out,
    )
}

/// The spec of job `i`; the kinds come in the proportions the module doc gives.
fn spec_text(i: usize, board_jobs: usize) -> String {
    if i < board_jobs {
        let bt = BOARD_TYPES[i % BOARD_TYPES.len()];
        return format!(
            "name: boot-{bt}\nrequires:\n  kind: board\n  labels: {{ board_type: {bt} }}\n  peripherals: [ethernet]\nsteps:\n  - shell: \"true\"\n"
        );
    }
    let arch = ARCHES[i % ARCHES.len()];
    if (i - board_jobs) % 5 == 4 {
        format!(
            "name: build-{arch}\nrequires:\n  kind: build-server\n  arch: {arch}\n  toolchains: [rust]\nsteps:\n  - shell: \"true\"\n"
        )
    } else {
        format!(
            "name: vm-{arch}\nrequires:\n  kind: qemu-host\n  arch: {arch}\n  kvm: true\nsteps:\n  - shell: \"true\"\n"
        )
    }
}

fn job_row(spec: &JobSpec, now: chrono::DateTime<Utc>) -> anyhow::Result<JobRow> {
    Ok(JobRow {
        job: Job {
            id: Ulid::new().to_string(),
            name: spec.name.clone(),
            state: JobState::Queued,
            priority: spec.priority.value(),
            submitter: "bench".into(),
            resource: None,
            lease_id: None,
            attempt: 1,
            reason: None,
            created_at: now,
            queued_at: now,
            assigned_at: None,
            started_at: None,
            ended_at: None,
            log_bytes: 0,
            spec: serde_json::to_value(spec)?,
            vars: serde_json::to_value(&spec.vars)?,
            steps: Vec::new(),
            estimated_start: None,
        },
        submitter_role: Role::User,
        resource_id: None,
        last_report_at: None,
        log_chunks: 0,
        cancel_requested: None,
        avoid_resource: None,
    })
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e6
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

async fn bench(args: &Args) -> anyhow::Result<serde_json::Value> {
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let mut config = Config::default();
    config.server.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let paths = Paths {
        data_dir: dir.path().to_path_buf(),
        database: dir.path().join("bench.db"),
        admin_token_file: dir.path().join("no-admin.token"),
        config_dir: dir.path().to_path_buf(),
    };
    let server = Server::bind(config, &paths).await?;
    let store = server.store();
    let now = Utc::now();

    let fill_start = Instant::now();
    let (lab, all) = resources(args.resources, now);
    for batch in all.chunks(500) {
        let mut tx = store.begin().await?;
        for r in batch {
            tx.insert_resource(r).await?;
        }
        tx.commit().await?;
    }
    let board_jobs = lab.boards.min(args.jobs / 20);
    let mut parsed: std::collections::HashMap<String, JobSpec> = Default::default();
    let mut rows = Vec::with_capacity(args.jobs);
    for i in 0..args.jobs {
        let text = spec_text(i, board_jobs);
        if !parsed.contains_key(&text) {
            let spec = JobSpec::parse(&text).map_err(|e| anyhow::anyhow!("bench spec: {e}"))?;
            parsed.insert(text.clone(), spec);
        }
        if let Some(spec) = parsed.get(&text) {
            rows.push(job_row(spec, now)?);
        }
    }
    for batch in rows.chunks(1000) {
        let mut tx = store.begin().await?;
        for row in batch {
            tx.insert_job(row).await?;
        }
        tx.commit().await?;
    }
    let fill = fill_start.elapsed();

    // What a pass reads, and the pure rule on it (read-only: the queue stays as it is).
    let t = Instant::now();
    let (snapshot, queue, policies) = server.scheduler_world().await?;
    let load = t.elapsed();
    let t = Instant::now();
    let decisions = place(&snapshot, &queue, &policies, Utc::now());
    let place_time = t.elapsed();
    let decided_place = decisions
        .iter()
        .filter(|d| matches!(d, Decision::Place { .. }))
        .count();
    drop((snapshot, policies));

    // The real pass.
    let t = Instant::now();
    server.schedule_once().await?;
    let pass = t.elapsed();
    let write = pass.saturating_sub(load + place_time);

    let assigned = store.jobs_in(&[JobState::Assigned]).await?.len();
    let still_queued = store.jobs_in(&[JobState::Queued]).await?.len();
    let leases = store.active_leases().await?.len();

    // Baseline: the floor of one write transaction per placement.
    let n_tx = assigned.max(1);
    let t = Instant::now();
    for _ in 0..n_tx {
        store.begin().await?.commit().await?;
    }
    let empty_tx = t.elapsed();

    // Second baseline: the cost of one statement, a point read of a job by id (what
    // each placement starts with), all in one transaction, rolled back.
    let ids: Vec<String> = queue.iter().map(|q| q.id.to_string()).collect();
    let t = Instant::now();
    {
        let mut tx = store.begin().await?;
        for id in &ids {
            tx.get_job(id).await?;
        }
    }
    let point_reads = t.elapsed();
    let point_read_us = point_reads.as_secs_f64() * 1e6 / ids.len().max(1) as f64;

    server.store().close().await;
    let per = |d: Duration| d.as_secs_f64() * 1e6 / assigned.max(1) as f64;
    Ok(json!({
        "bench": "placement",
        "jobs": args.jobs,
        "queued_seen": queue.len(),
        "resources": { "total": args.resources, "boards": lab.boards, "qemu_hosts": lab.qemu, "build_servers": lab.build },
        "placed": assigned,
        "decided_place": decided_place,
        "still_queued": still_queued,
        "active_leases": leases,
        "fill_seconds": secs(fill),
        "seconds_to_place_all": secs(pass),
        "placements_per_s": round(assigned as f64 / pass.as_secs_f64().max(1e-9)),
        "split_seconds": { "load": secs(load), "place": secs(place_time), "write": secs(write) },
        "write_share_of_pass": round(write.as_secs_f64() / pass.as_secs_f64().max(1e-9)),
        "pure_place_seconds": secs(place_time),
        "write_us_per_placement": round(per(write)),
        "baseline_empty_tx": {
            "transactions": n_tx,
            "seconds": secs(empty_tx),
            "us_per_tx": round(empty_tx.as_secs_f64() * 1e6 / n_tx as f64),
        },
        "baseline_point_read": {
            "statements": ids.len(),
            "seconds": secs(point_reads),
            "us_per_statement": round(point_read_us),
        },
        "write_in_point_reads_per_placement": round(per(write) / point_read_us.max(1e-9)),
        "write_vs_empty_tx": round(write.as_secs_f64() / empty_tx.as_secs_f64().max(1e-9)),
        "target": { "seconds_to_place_all": 1.0 },
        "meets_target": assigned == args.jobs && pass.as_secs_f64() <= 1.0,
        "load_average_1m": super::spawn::load_average(),
    }))
}
