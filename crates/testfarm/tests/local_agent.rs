//! The server's built-in agent: registers this host, runs a job's shell and test steps,
//! and the job's TAP becomes its test results.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use serde_json::json;
use support::{Lab, cli, stdout, wait_for, wait_job};

#[test]
fn built_in_agent_runs_a_test_step_and_results_follow() {
    let lab = Lab::new();
    lab.fast();
    lab.set("agent.local", "enabled", "true");
    let server = lab.start();
    let http = server.http();
    let t = &lab.token;
    let build = wait_for(
        "the built-in agent's build server",
        Duration::from_secs(20),
        || {
            let r = http.get("/api/v1/resources/local-build", t);
            (r.status == 200).then_some(r.body)
        },
    );
    assert_eq!(build["agent"], "local");
    assert!(
        build["capabilities"]["cpus"].as_u64().unwrap() >= 1,
        "measured, not typed: {build}"
    );
    let spec = r#"
name: local-tests
timeout: 2m
requires:
  kind: build-server
steps:
  - shell: |
      mkdir -p t/net
      printf 'echo 1..2\necho ok 1 - lo\necho "ok 2 - eth0 # SKIP no cable"\n' > t/a_test.sh
      printf 'echo 1..1\necho "not ok 1 - dns"\nexit 1\n' > t/net/b_test.sh
  - test: { run: "t/**/*_test.sh", format: tap, timeout: 1m }
always:
  - shell: echo always-ran
"#;
    let r = http.post("/api/v1/jobs", t, json!({"spec": spec}));
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.body["id"].as_str().unwrap().to_string();
    let job = wait_job(&http, t, &id, Duration::from_secs(60));
    let log = stdout(&cli(&server.url, t, &["logs", &id]));
    assert_eq!(
        job["state"], "failed",
        "a failing test script fails the job: {job}\n{log}"
    );
    assert_eq!(job["resource"], "local-build");
    let log = stdout(&cli(&server.url, t, &["logs", &id]));
    assert!(
        log.contains("TAP_START t/a_test.sh") && log.contains("always-ran"),
        "{log}"
    );
    let report = wait_for("results", Duration::from_secs(10), || {
        let r = http.get(&format!("/api/v1/jobs/{id}/results"), t).body;
        (r["runs"].as_array().map(Vec::len) == Some(2)).then_some(r)
    });
    assert_eq!(report["runs"][0]["name"], "t/a_test.sh");
    assert_eq!(report["runs"][0]["status"], "passed");
    assert_eq!(report["runs"][0]["document"]["summary"]["skip"], 1);
    assert_eq!(report["runs"][1]["name"], "t/net/b_test.sh");
    assert_eq!(report["runs"][1]["status"], "failed", "{report}\n{log}");
    // Heartbeats carry measured load; the server keeps a short history.
    let samples = wait_for("heartbeat metrics", Duration::from_secs(10), || {
        let m = http.get("/api/v1/resources/local-build/metrics", t).body;
        m.as_array().is_some_and(|a| !a.is_empty()).then_some(m)
    });
    let cpu = samples[0]["metrics"]["cpu_pct"].as_f64().unwrap();
    assert!((0.0..=100.0).contains(&cpu), "{samples}");
    assert!(
        samples[0]["metrics"]["disk_free_gb"].as_f64().unwrap() > 0.0,
        "{samples}"
    );
    let shown = stdout(&cli(&server.url, t, &["resource", "show", "local-build"]));
    assert!(
        shown.contains("load") && shown.contains("GB free"),
        "{shown}"
    );
    // The lease ended with the job and the host is free again.
    let build = http.get("/api/v1/resources/local-build", t).body;
    assert_eq!(build["state"], "available", "{build}");
}

/// A build server with less free disk than `health.min_disk_gb` takes no builds, and
/// `why` says so instead of leaving the job waiting without a word.
#[test]
fn a_build_server_short_of_disk_takes_no_builds_and_why_says_so() {
    let lab = Lab::new();
    lab.fast();
    lab.set("agent.local", "enabled", "true");
    lab.set("health", "min_disk_gb", "1000000"); // no disk here has a petabyte free
    let server = lab.start();
    let http = server.http();
    let t = &lab.token;
    let build = wait_for("the build server degraded", Duration::from_secs(20), || {
        let r = http.get("/api/v1/resources/local-build", t);
        (r.status == 200 && r.body["health"]["status"] == "degraded").then_some(r.body)
    });
    let reasons = build["health"]["reasons"].to_string();
    assert!(reasons.contains("below 1000000 GB"), "{build}");
    let r = http.post(
        "/api/v1/jobs",
        t,
        json!({"spec": "name: needs-disk\nrequires:\n  kind: build-server\nsteps:\n  - shell: 'true'\n"}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.body["id"].as_str().unwrap().to_string();
    std::thread::sleep(Duration::from_millis(600)); // three scheduler ticks
    assert_eq!(
        http.get(&format!("/api/v1/jobs/{id}"), t).body["state"],
        "queued"
    );
    let why = stdout(&cli(&server.url, t, &["job", "why", &id]));
    assert!(
        why.contains("local-build") && why.contains("degraded") && why.contains("GB free"),
        "{why}"
    );
    // And the server's log says it where operators look first.
    assert!(
        server
            .stderr_lines()
            .iter()
            .any(|l| l.contains("resource degraded")
                && l.contains("local-build")
                && l.contains("GB free")),
        "no warning in the server's log"
    );
}
