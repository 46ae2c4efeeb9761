//! `testfarm bench artifacts [--size 1G] [--builds 100000] [--json]`: the artifact
//! repository's two costs.
//!
//! **Transfer.** A file of `--size` bytes is uploaded to a spawned `testfarm server` the
//! way an agent does it (sha256 computed first, then streamed as the body of `PUT
//! /api/v1/builds/{id}/artifacts/{name}?sha256=`) and downloaded again (`GET
//! /api/v1/artifacts/{sha256}`), both with `curl`. Baseline, in the same run: `curl` moving
//! the same file to and from a plain file server (PUT writes the body to a file, GET
//! streams it back; no checksum, no fsync, no database) started in this process. The
//! server's RSS is read before and after.
//!
//! **Scale.** A second server, in this process, with `--builds` builds (one kernel
//! artifact each, across 100 branches) written straight into its store: the latency of
//! `GET /api/v1/artifacts/latest?branch=…&kind=kernel` against `GET /healthz` on the same
//! client, and a retention pass over them (dry run, then a real pass in which 1% are
//! older than `max_age`).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::Utc;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use testfarm_api::artifact::{ArtifactKind, Build};
use testfarm_server::config::Config;
use testfarm_server::{Paths, Server};
use testfarm_store::artifacts::NewArtifact;
use ulid::Ulid;

use super::spawn::{Spawned, client, latency, load_average, parse_size, send_json};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Size of the file moved (K, M, G suffixes).
    #[arg(long, default_value = "1G", value_parser = size_arg)]
    pub size: u64,
    /// Builds stored for the `latest` and retention figures.
    #[arg(long, default_value_t = 100_000)]
    pub builds: usize,
    /// `latest` requests timed (and as many `/healthz`).
    #[arg(long, default_value_t = 2000)]
    pub requests: usize,
    /// Print one JSON object instead of lines for people.
    #[arg(long)]
    pub json: bool,
}

fn size_arg(s: &str) -> Result<u64, String> {
    parse_size(s).ok_or_else(|| format!("{s:?} is not a size (e.g. 1G, 512M)"))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.size == 0 || args.builds == 0 || args.requests == 0 {
        eprintln!("error: --size, --builds and --requests must be more than zero");
        return Ok(ExitCode::from(2));
    }
    if Command::new("curl").arg("--version").output().is_err() {
        eprintln!("error: curl is needed for the transfer baseline (Debian: apt-get install curl)");
        return Ok(ExitCode::from(2));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
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

async fn bench(args: &Args) -> anyhow::Result<Value> {
    let dir = tempfile::Builder::new()
        .prefix("tf-bench-artifacts-")
        .tempdir()
        .context("creating a temporary directory")?;
    let transfer = transfer(args, dir.path()).await?;
    let scale = scale(args, dir.path()).await?;
    Ok(json!({
        "bench": "artifacts",
        "transfer": transfer,
        "scale": scale,
        "load_average": load_average(),
    }))
}

/// Writes `size` bytes of incompressible-looking data (a xorshift stream).
fn write_file(path: &Path, size: u64) -> anyhow::Result<String> {
    use std::io::Write;
    let mut f = std::io::BufWriter::with_capacity(
        1 << 20,
        std::fs::File::create(path).context("creating the test file")?,
    );
    let mut hasher = Sha256::new();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        for chunk in buf.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let bytes = state.to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        let n = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
        f.write_all(&buf[..n])?;
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    f.flush()?;
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs curl; returns the seconds it took.
fn curl(args: &[&str]) -> anyhow::Result<f64> {
    let start = Instant::now();
    let out = Command::new("curl")
        .args(["-sS", "--fail-with-body", "-o", "/dev/null"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running curl")?;
    if !out.status.success() {
        bail!(
            "curl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(start.elapsed().as_secs_f64())
}

fn sha256_file(path: &Path) -> anyhow::Result<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

/// The plain file server of the baseline: PUT /f stores the body, GET /f streams it.
async fn plain_server(dir: PathBuf) -> anyhow::Result<(String, tokio::task::JoinHandle<()>)> {
    use axum::body::Body;
    use axum::extract::State;
    use axum::routing::put;
    use futures::StreamExt;
    use tokio::io::AsyncWriteExt;

    async fn store(State(dir): State<PathBuf>, body: Body) -> axum::http::StatusCode {
        let Ok(mut f) = tokio::fs::File::create(dir.join("plain.bin")).await else {
            return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
        };
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let Ok(chunk) = chunk else {
                return axum::http::StatusCode::BAD_REQUEST;
            };
            if f.write_all(&chunk).await.is_err() {
                return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
            }
        }
        axum::http::StatusCode::CREATED
    }
    async fn serve(State(dir): State<PathBuf>) -> axum::response::Response {
        use axum::response::IntoResponse;
        use tokio::io::AsyncReadExt;
        let Ok(f) = tokio::fs::File::open(dir.join("plain.bin")).await else {
            return axum::http::StatusCode::NOT_FOUND.into_response();
        };
        let chunks = futures::stream::unfold(f, |mut f| async move {
            let mut buf = vec![0u8; 1 << 16];
            match f.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok::<_, std::io::Error>(bytes::Bytes::from(buf)), f))
                }
                Err(e) => Some((Err(e), f)),
            }
        });
        Body::from_stream(chunks).into_response()
    }
    let app = axum::Router::new()
        .route("/f", put(store).get(serve))
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(dir);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((url, task))
}

async fn transfer(args: &Args, dir: &Path) -> anyhow::Result<Value> {
    let file = dir.join("payload.bin");
    let expected = write_file(&file, args.size)?;
    let file_s = file.to_string_lossy().to_string();
    let spawned = Spawned::start()?;
    let http = client(1)?;
    let auth = format!("Authorization: Bearer {}", spawned.token);
    let build: Build = serde_json::from_value(
        send_json(
            http.post(format!("{}/api/v1/builds", spawned.url))
                .bearer_auth(&spawned.token)
                .json(&json!({"commit": "bench", "branch": "bench", "arch": "x86_64"})),
        )
        .await?,
    )?;
    let rss_before = rss_kb(spawned.pid());
    // Ours: the checksum first (as the agent does), then the body.
    let t = Instant::now();
    let sha = sha256_file(&file)?;
    let checksum_s = t.elapsed().as_secs_f64();
    if sha != expected {
        bail!("the test file's checksum changed under us");
    }
    let put_url = format!(
        "{}/api/v1/builds/{}/artifacts/payload.bin?kind=other&sha256={sha}",
        spawned.url, build.id
    );
    let up_s = curl(&[
        "-X",
        "PUT",
        "-H",
        &auth,
        "-H",
        "Content-Type: application/octet-stream",
        "--data-binary",
        &format!("@{file_s}"),
        &put_url,
    ])?;
    let rss_after_upload = rss_kb(spawned.pid());
    let get_url = format!("{}/api/v1/artifacts/{sha}", spawned.url);
    let down_s = curl(&["-H", &auth, &get_url])?;
    let rss_after = rss_kb(spawned.pid());
    // The plain server, same file, same curl.
    let plain_dir = dir.join("plain");
    std::fs::create_dir_all(&plain_dir)?;
    let (plain, task) = plain_server(plain_dir).await?;
    let plain_url = format!("{plain}/f");
    let plain_up_s = curl(&[
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/octet-stream",
        "--data-binary",
        &format!("@{file_s}"),
        &plain_url,
    ])?;
    let plain_down_s = curl(&[&plain_url])?;
    task.abort();
    let mb = args.size as f64 / 1e6;
    let rate = |s: f64| if s > 0.0 { mb / s } else { 0.0 };
    let round = |x: f64| (x * 1000.0).round() / 1000.0;
    let growth_mb = match (rss_before, rss_after_upload.max(rss_after)) {
        (Some(a), Some(b)) => Some(round(b.saturating_sub(a) as f64 / 1024.0)),
        _ => None,
    };
    Ok(json!({
        "bytes": args.size,
        "upload_mb_s": round(rate(up_s)),
        "upload_with_checksum_mb_s": round(rate(up_s + checksum_s)),
        "download_mb_s": round(rate(down_s)),
        "baseline_upload_mb_s": round(rate(plain_up_s)),
        "baseline_download_mb_s": round(rate(plain_down_s)),
        "upload_ratio": round(plain_up_s / up_s.max(1e-9)),
        "upload_with_checksum_ratio": round(plain_up_s / (up_s + checksum_s).max(1e-9)),
        "download_ratio": round(plain_down_s / down_s.max(1e-9)),
        "target_ratio": 0.5,
        "server_rss_growth_mb": growth_mb,
        "target_rss_growth_mb": 64,
    }))
}

/// VmRSS of a process, in KiB.
fn rss_kb(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

async fn scale(args: &Args, dir: &Path) -> anyhow::Result<Value> {
    let base = dir.join("scale");
    std::fs::create_dir_all(&base)?;
    let (_, token) = testfarm_server::auth::new_token();
    std::fs::write(base.join("admin.token"), &token)?;
    let mut config = Config::default();
    config.server.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    config.agent.local.enabled = false;
    let paths = Paths {
        data_dir: base.clone(),
        database: base.join("bench.db"),
        admin_token_file: base.join("admin.token"),
        config_dir: base.clone(),
    };
    let server = Server::bind(config, &paths).await?;
    let addr = server.local_addr()?;
    let url = format!("http://{addr}");
    let store = server.store().clone();
    // One real blob that every artifact names (retention only deletes rows of it).
    let sha = hex(&Sha256::digest(b"bench kernel"));
    let now = Utc::now();
    let max_age = chrono::Duration::days(30);
    let fill = Instant::now();
    let old = args.builds / 100;
    for chunk in (0..args.builds).collect::<Vec<_>>().chunks(2000) {
        let mut tx = store.begin().await?;
        for &i in chunk {
            let created = if i < old {
                now - max_age - chrono::Duration::days(1)
            } else {
                now - chrono::Duration::seconds(i64::try_from(args.builds - i).unwrap_or(0))
            };
            let b = Build {
                id: Ulid::from_parts(
                    u64::try_from(created.timestamp_millis()).unwrap_or(0),
                    u128::try_from(i).unwrap_or(0),
                ),
                commit: format!("c{i:08}"),
                branch: format!("branch-{:03}", i % 100),
                arch: "x86_64".into(),
                created_at: created,
                pinned: false,
                source_job: None,
                tags: Vec::new(),
                artifacts: Vec::new(),
            };
            tx.insert_build(&b, "bench").await?;
            tx.insert_artifact(&NewArtifact {
                build: b.id,
                name: "Image",
                kind: ArtifactKind::Kernel,
                sha256: &sha,
                size: 12,
                created_at: created,
            })
            .await?;
        }
        tx.commit().await?;
    }
    let fill_s = fill.elapsed().as_secs_f64();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(server.run(async move {
        let _ = stop_rx.await;
    }));
    let http = client(1)?;
    let mut latest = Vec::with_capacity(args.requests);
    let mut health = Vec::with_capacity(args.requests);
    for i in 0..args.requests {
        let branch = format!("branch-{:03}", i % 100);
        let t = Instant::now();
        let r = http
            .get(format!("{url}/api/v1/artifacts/latest"))
            .bearer_auth(&token)
            .query(&[("branch", branch.as_str()), ("kind", "kernel")])
            .send()
            .await?;
        let status = r.status();
        let _ = r.bytes().await?;
        latest.push(t.elapsed());
        if !status.is_success() {
            bail!("latest for {branch}: HTTP {status}");
        }
        let t = Instant::now();
        let r = http.get(format!("{url}/healthz")).send().await?;
        let _ = r.bytes().await?;
        health.push(t.elapsed());
    }
    let gc = |dry: bool| {
        let http = http.clone();
        let url = url.clone();
        let token = token.clone();
        async move {
            let t = Instant::now();
            let report = send_json(
                http.post(format!("{url}/api/v1/artifacts/gc"))
                    .bearer_auth(&token)
                    .query(&[("dry_run", dry.to_string())])
                    .timeout(Duration::from_secs(600)),
            )
            .await?;
            anyhow::Ok((t.elapsed().as_secs_f64(), report))
        }
    };
    let (dry_s, dry) = gc(true).await?;
    let (real_s, real) = gc(false).await?;
    let _ = stop_tx.send(());
    let _ = run.await;
    let latest_summary = latency(&mut latest);
    let health_summary = latency(&mut health);
    let ratio = latest_summary["p50_ms"].as_f64().unwrap_or(0.0)
        / health_summary["p50_ms"].as_f64().unwrap_or(1.0).max(1e-9);
    Ok(json!({
        "builds": args.builds,
        "fill_s": fill_s,
        "latest": latest_summary,
        "baseline_healthz": health_summary,
        "latest_p50_ratio_vs_healthz": (ratio * 1000.0).round() / 1000.0,
        "target_latest_p50_ms": 2,
        "retention_dry_run_s": dry_s,
        "retention_dry_run_expired": dry["builds"].as_array().map_or(0, Vec::len),
        "retention_pass_s": real_s,
        "retention_pass_deleted": real["builds"].as_array().map_or(0, Vec::len),
        "target_retention_pass_s": 2,
    }))
}
