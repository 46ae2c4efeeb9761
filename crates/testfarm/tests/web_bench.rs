//! Smoke test of `testfarm bench dashboard`: run tiny, the JSON has the expected shape
//! and every stream got the change. A benchmark, not a timed test: no assertion here is
//! about speed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_testfarm");

/// Runs `testfarm bench ARGS --json` (killed after `limit`) and parses its one JSON line.
fn bench(args: &[&str], limit: Duration) -> serde_json::Value {
    let mut child = Command::new(BIN)
        .arg("bench")
        .args(args)
        .arg("--json")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("bench {args:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench {args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

#[test]
fn bench_dashboard_runs_small() {
    let v = bench(
        &[
            "dashboard",
            "--resources",
            "30",
            "--jobs",
            "300",
            "--streams",
            "10",
            "--samples",
            "5",
        ],
        Duration::from_secs(120),
    );
    assert_eq!(v["bench"], "dashboard");
    assert_eq!(v["resources"], 30);
    assert_eq!(v["jobs"], 300);
    for k in ["healthz", "overview", "resources_page"] {
        assert_eq!(v[k]["n"], 5, "{k}: {v}");
        assert!(v[k]["p50_ms"].as_f64().unwrap() > 0.0, "{k}: {v}");
    }
    assert!(v["overview_server_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(v["events"]["streams"], 10);
    assert_eq!(
        v["events"]["received"], 10,
        "every stream saw the change: {v}"
    );
    assert_eq!(v["events"]["missed"], 0);
    assert!(v["events"]["rss_growth_mb"].as_f64().is_some(), "{v}");
}
