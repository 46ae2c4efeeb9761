//! Log streaming with real server and agent processes: a 50 MB log arrives whole even
//! through a proxy that keeps cutting the agent's connections, and the ingest rate of one
//! job is measured against writing the same bytes to /dev/null.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod agent_support;
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use agent_support::*;

/// A TCP proxy on loopback that forwards to `upstream` and cuts every open connection
/// every `cut_every`. Returns its address and a counter of cuts; runs until the runtime
/// it lives on is dropped.
fn cutting_proxy(
    rt: &tokio::runtime::Runtime,
    upstream: std::net::SocketAddr,
    cut_every: Duration,
) -> (std::net::SocketAddr, Arc<AtomicU64>) {
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let cuts = Arc::new(AtomicU64::new(0));
    let generation = Arc::new(tokio::sync::watch::Sender::new(0u64));
    {
        let (g, cuts) = (generation.clone(), cuts.clone());
        rt.spawn(async move {
            loop {
                tokio::time::sleep(cut_every).await;
                g.send_modify(|n| *n += 1);
                cuts.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    rt.spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                continue;
            };
            let mut cut = generation.subscribe();
            tokio::spawn(async move {
                let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await else {
                    return;
                };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    _ = cut.changed() => {}
                }
                // Dropping both ends resets the connection mid-request.
            });
        }
    });
    (addr, cuts)
}

fn expected_output(cmd: &str) -> Vec<u8> {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .unwrap();
    assert!(out.status.success());
    out.stdout
}

/// The job's own output: the log without the agent's `[testfarm]` lines.
fn job_output(log: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(log.len());
    for line in log.split_inclusive(|b| *b == b'\n') {
        if !line.starts_with(b"[testfarm] ") {
            out.extend_from_slice(line);
        }
    }
    out
}

fn raw_log(http: &support::Http, token: &str, id: &str) -> Vec<u8> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // The endpoint answers in pages: read from each end offset until the log's size.
    rt.block_on(async {
        let client = reqwest::Client::new();
        let mut out = Vec::new();
        loop {
            let r = client
                .get(format!(
                    "{}/api/v1/jobs/{id}/log?offset={}",
                    http.url,
                    out.len()
                ))
                .bearer_auth(token)
                .timeout(Duration::from_secs(60))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let size: usize = r.headers()["x-testfarm-log-size"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            let page = r.bytes().await.unwrap();
            out.extend_from_slice(&page);
            if out.len() >= size || page.is_empty() {
                return out;
            }
        }
    })
}

#[test]
fn a_50mb_log_arrives_whole_through_cut_connections() {
    let lab = lab("30s", "30s");
    let server = lab.start();
    let http = server.http();
    let t = lab.token.clone();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let upstream: std::net::SocketAddr = server.url.trim_start_matches("http://").parse().unwrap();
    let (proxy, cuts) = cutting_proxy(&rt, upstream, Duration::from_millis(300));
    let at = agent_token(&http, &t, "logs1");
    let agent = Agent::start(&format!("http://{proxy}"), &at, "logs1", "");
    wait_registered(&http, &t, &agent.resource());
    // ~50 MB of numbered lines, paced a little so the stream spans many cuts.
    let cmd = "for i in 0 1 2 3 4 5 6 7 8 9; do seq $((i*600000+1)) $((i*600000+600000)); sleep 0.2; done";
    let expected = expected_output(cmd);
    assert!(expected.len() > 45_000_000, "{}", expected.len());
    let id = submit(
        &http,
        &t,
        &spec(
            &agent.resource(),
            &format!("steps:\n  - shell: \"{cmd}\"\n"),
        ),
    );
    let j = wait_job(&http, &t, &id, Duration::from_secs(240));
    assert_eq!(j["state"], "passed", "{j}\n{}", agent.log());
    let log = raw_log(&http, &t, &id);
    let got = job_output(&log);
    assert_eq!(got.len(), expected.len(), "log length differs");
    assert!(got == expected, "log content differs");
    let n = cuts.load(Ordering::Relaxed);
    assert!(n >= 3, "only {n} cuts happened during the stream");
    eprintln!("50 MB log whole through {n} connection cuts");
}

#[test]
fn log_ingest_rate_of_one_job() {
    let lab = lab("30s", "30s");
    let server = lab.start();
    let http = server.http();
    let t = lab.token.clone();
    let at = agent_token(&http, &t, "rate1");
    let agent = Agent::start(&server.url, &at, "rate1", "");
    wait_registered(&http, &t, &agent.resource());
    let bytes: u64 = 200_000_000;
    let cmd = format!("head -c {bytes} /dev/zero | tr '\\\\0' 'x' | fold -w 99");
    // Baseline: the same bytes to /dev/null on this machine, now.
    let t0 = Instant::now();
    let st = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{} > /dev/null", cmd.replace("\\\\", "\\")))
        .status()
        .unwrap();
    assert!(st.success());
    let baseline = t0.elapsed();
    let t0 = Instant::now();
    let id = submit(
        &http,
        &t,
        &spec(
            &agent.resource(),
            &format!("steps:\n  - shell: \"{cmd}\"\n"),
        ),
    );
    let j = wait_job(&http, &t, &id, Duration::from_secs(240));
    let wall = t0.elapsed();
    assert_eq!(j["state"], "passed", "{j}\n{}", agent.log());
    let size = j["log_bytes"].as_u64().unwrap();
    assert!(size >= bytes, "{size}");
    let mb = size as f64 / 1e6;
    let rate = mb / wall.as_secs_f64();
    let base_rate = mb / baseline.as_secs_f64();
    eprintln!(
        "log ingest: {mb:.0} MB in {:.2}s = {rate:.0} MB/s (submit to end); same bytes to /dev/null: {:.2}s = {base_rate:.0} MB/s",
        wall.as_secs_f64(),
        baseline.as_secs_f64()
    );
    // A floor only: the machine is shared; the figure is in the output.
    assert!(rate > 20.0, "log ingest {rate:.0} MB/s");
}
