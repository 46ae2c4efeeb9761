//! A server that stalls (its VM paused, the process stopped or starved) did not hear
//! anyone while it was stalled: the silence is its own, and it must not end the leases,
//! take the agents offline or fail the jobs that ran through it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::json;
use support::{Lab, wait_for, wait_job};

#[test]
fn a_stalled_server_blames_nobody_for_its_silence() {
    let lab = Lab::new();
    lab.fast(); // heartbeat bound 2 s, offline after 3 s
    lab.set("agent.local", "enabled", "true");
    let server = lab.start();
    let http = server.http();
    let t = &lab.token;
    wait_for("the built-in agent", Duration::from_secs(20), || {
        (http.get("/api/v1/resources/local-build", t).status == 200).then_some(())
    });
    // A manual lease held by this test, and a job running on the built-in agent.
    let r = http.post(
        "/api/v1/resources",
        t,
        json!({"name": "b1", "kind": "board", "labels": {"pool": "stall"}}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let l = http.post(
        "/api/v1/leases",
        t,
        json!({"selector": "pool=stall", "duration": "10m"}),
    );
    assert_eq!(l.status, 201, "{}", l.text);
    let lease = l.body["id"].as_str().unwrap().to_string();
    let epoch = l.body["epoch"].as_u64().unwrap();
    let spec = "name: through-a-stall\ntimeout: 2m\nrequires:\n  kind: build-server\n\
                steps:\n  - shell: sleep 3\n  - shell: echo after-the-stall\n";
    let r = http.post("/api/v1/jobs", t, json!({"spec": spec}));
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.body["id"].as_str().unwrap().to_string();
    wait_for("the job to run", Duration::from_secs(20), || {
        (http.get(&format!("/api/v1/jobs/{id}"), t).body["state"] == "running").then_some(())
    });

    // Stop the whole server for twice the heartbeat bound.
    let pid = server.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .unwrap()
            .success()
    );
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        Command::new("kill")
            .args(["-CONT", &pid])
            .status()
            .unwrap()
            .success()
    );

    // The holder was silent for 4 s, but so was the server: its renewal still counts.
    let renew = http.post(
        &format!("/api/v1/leases/{lease}/renew"),
        t,
        json!({"epoch": epoch}),
    );
    assert_eq!(renew.status, 200, "{}", renew.text);
    let job = wait_job(&http, t, &id, Duration::from_secs(60));
    assert_eq!(job["state"], "passed", "{job}");
    let log = http.get(&format!("/api/v1/jobs/{id}/log"), t).text;
    assert!(log.contains("after-the-stall"), "{log}");
    let events = http.get("/api/v1/events?limit=1000", t).body;
    let kinds: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert!(!kinds.contains(&"resource.offline"), "{kinds:?}");
    assert!(!kinds.contains(&"lease.expired"), "{kinds:?}");
    assert_eq!(
        http.get(&format!("/api/v1/leases/{lease}"), t).body["state"],
        "active"
    );
    // The server says what happened, and counts it.
    let metrics = http.get("/metrics", t).text;
    assert!(
        metrics.contains("testfarm_server_stalls_total"),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("stall"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        server
            .stderr_lines()
            .iter()
            .any(|l| l.contains("the server was stalled")),
        "no warning about the stall"
    );

    // A holder that really went silent still loses its lease, a bound after the stall.
    let ended = wait_for("the lease to end", Duration::from_secs(15), || {
        let l = http.get(&format!("/api/v1/leases/{lease}"), t).body;
        (l["state"] == "expired").then_some(l)
    });
    assert!(
        ended["end_reason"].to_string().contains("heartbeat"),
        "{ended}"
    );
}
