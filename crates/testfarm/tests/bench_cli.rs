//! Smoke tests of `testfarm bench placement|lease|fleet|logs|pipeline|artifacts|recovery|alerts|dashboard`: each runs tiny and the JSON
//! it prints has the expected shape and sane counts. Benchmarks, not timed tests: no
//! assertion here is about speed.
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
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
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

fn non_negative(v: &serde_json::Value, path: &[&str]) -> f64 {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    let x = cur
        .as_f64()
        .unwrap_or_else(|| panic!("{path:?} is not a number in {v}"));
    assert!(x >= 0.0 && x.is_finite(), "{path:?} = {x}");
    x
}

#[test]
fn placement_places_every_job_of_a_tiny_lab() {
    let v = bench(
        &["placement", "--jobs", "60", "--resources", "20"],
        Duration::from_secs(60),
    );
    assert_eq!(v["bench"], "placement");
    assert_eq!(v["jobs"], 60);
    assert_eq!(v["placed"], 60, "{v}");
    assert_eq!(v["active_leases"], 60, "{v}");
    assert_eq!(v["still_queued"], 0, "{v}");
    for k in ["load", "place", "write"] {
        non_negative(&v, &["split_seconds", k]);
    }
    assert!(non_negative(&v, &["seconds_to_place_all"]) > 0.0);
    non_negative(&v, &["placements_per_s"]);
    non_negative(&v, &["baseline_empty_tx", "seconds"]);
    assert!(v["meets_target"].is_boolean());
}

#[test]
fn lease_times_round_trips_against_a_spawned_server() {
    let v = bench(
        &["lease", "--n", "40", "--concurrency", "2"],
        Duration::from_secs(60),
    );
    assert_eq!(v["bench"], "lease");
    assert_eq!(v["server"], "spawned");
    assert_eq!(v["boards_created"], 2);
    assert_eq!(v["acquire_release"]["n"], 40);
    assert_eq!(v["baseline_healthz"]["n"], 40);
    for k in ["p50_ms", "p99_ms"] {
        non_negative(&v, &["acquire_release", k]);
        non_negative(&v, &["baseline_healthz", k]);
    }
    non_negative(&v, &["p50_vs_baseline"]);
    // A spawned server's CPU is read from /proc, and so is the generator's own.
    assert!(
        non_negative(&v, &["cpu_us_per_pair", "server"]) > 0.0,
        "{v}"
    );
    assert!(
        non_negative(&v, &["cpu_us_per_pair", "load_generator"]) > 0.0,
        "{v}"
    );
}

#[test]
fn fleet_heartbeats_from_a_few_agents_and_reads_server_rss() {
    let v = bench(
        &[
            "fleet",
            "--agents",
            "10",
            "--interval",
            "500ms",
            "--duration",
            "1s",
        ],
        Duration::from_secs(60),
    );
    assert_eq!(v["bench"], "fleet");
    assert_eq!(v["agents"], 10);
    assert_eq!(v["heartbeat_errors"], 0, "{v}");
    assert_eq!(v["baseline_errors"], 0, "{v}");
    // 10 agents, one beat each per 500 ms over 1 s: two each.
    assert_eq!(v["heartbeat"]["n"], 20, "{v}");
    for k in ["p50_ms", "p99_ms"] {
        non_negative(&v, &["heartbeat", k]);
        non_negative(&v, &["baseline_healthz", k]);
    }
    assert!(non_negative(&v, &["server_rss", "vm_hwm_mb"]) > 0.0);
}

#[test]
fn logs_ships_one_jobs_log_and_the_server_stores_every_byte() {
    let v = bench(&["logs", "--size", "3MB"], Duration::from_secs(60));
    assert_eq!(v["bench"], "logs");
    assert_eq!(v["size_bytes"], 3_000_000);
    assert_eq!(v["stored_log_bytes"], 3_000_000, "{v}");
    assert_eq!(v["job_state"], "passed", "{v}");
    // Chunk sizes are the shipper's business (256 KiB, larger under a backlog).
    let chunks = v["chunks"].as_u64().unwrap();
    assert!((1..=3_000_000 / 65_536 + 1).contains(&chunks), "{v}");
    assert!(non_negative(&v, &["ingest", "mb_s"]) > 0.0);
    assert!(non_negative(&v, &["baseline_local_file", "mb_s"]) > 0.0);
}

#[test]
fn pipeline_times_stage_handovers_against_a_client_chain() {
    let v = bench(
        &["pipeline", "--spawn", "--stages", "3", "--runs", "1"],
        Duration::from_secs(120),
    );
    assert_eq!(v["bench"], "pipeline");
    assert_eq!(v["stage_handover"]["n"], 2, "{v}");
    assert_eq!(v["baseline_client_chain"]["n"], 2, "{v}");
    non_negative(&v, &["stage_handover", "p50_ms"]);
    non_negative(&v, &["ratio_p50_vs_baseline"]);
}

#[test]
fn artifacts_moves_a_file_both_ways_and_times_latest_and_retention() {
    let v = bench(
        &[
            "artifacts",
            "--size",
            "4M",
            "--builds",
            "500",
            "--requests",
            "20",
        ],
        Duration::from_secs(180),
    );
    assert_eq!(v["bench"], "artifacts");
    assert_eq!(v["transfer"]["bytes"], 4_000_000u64, "{v}");
    for k in ["upload_ratio", "download_ratio", "baseline_upload_mb_s"] {
        assert!(non_negative(&v, &["transfer", k]) > 0.0, "{k}: {v}");
    }
    assert_eq!(v["scale"]["latest"]["n"], 20, "{v}");
    // 1% of the builds are past max_age: the dry run names them, the pass deletes them.
    assert_eq!(v["scale"]["retention_dry_run_expired"], 5, "{v}");
    assert_eq!(v["scale"]["retention_pass_deleted"], 5, "{v}");
}

#[test]
fn recovery_brings_a_hung_simulated_board_back_to_the_pool() {
    let v = bench(
        &[
            "recovery",
            "--runs",
            "1",
            "--hang-after-ms",
            "600",
            "--backoff-ms",
            "50",
        ],
        Duration::from_secs(60),
    );
    assert_eq!(v["bench"], "recovery");
    let limits = non_negative(&v, &["configured_limits_s"]);
    assert!((limits - 0.75).abs() < 1e-9, "{v}");
    // The recovery cannot beat the limits it waits out.
    assert!(non_negative(&v, &["recovery_s"]) >= limits, "{v}");
    non_negative(&v, &["baseline_s"]);
    // Measured to the board back in the pool on the server, past the prompt.
    let to_prompt = non_negative(&v, &["to_recovered_s"]);
    assert!(
        to_prompt >= limits && to_prompt <= non_negative(&v, &["recovery_s"]),
        "{v}"
    );
    non_negative(&v, &["to_available_after_recovery_s"]);
}

#[test]
fn alerts_times_an_offline_agent_to_its_webhook() {
    let v = bench(
        &[
            "alerts",
            "--runs",
            "1",
            "--offline-after",
            "2s",
            "--interval",
            "500ms",
        ],
        Duration::from_secs(90),
    );
    assert_eq!(v["bench"], "alerts");
    assert_eq!(non_negative(&v, &["target_s"]), 7.0, "{v}");
    // Nothing is alerted before the agent could be called silent.
    assert!(non_negative(&v, &["worst_s"]) >= 2.0, "{v}");
    non_negative(&v, &["ratio_to_target"]);
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
