//! Old history goes: events and ended leases older than `[retention]` allows are deleted
//! by the running server; active leases and the newest event stay, and event ids keep
//! growing after a prune.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use serde_json::json;
use support::{Lab, wait_for};

#[test]
fn old_events_and_ended_leases_are_pruned_and_the_rest_stays() {
    let lab = Lab::new();
    lab.fast();
    lab.set("retention", "events", "\"2s\"");
    lab.set("retention", "ended_leases", "\"2s\"");
    lab.set("retention", "interval", "\"300ms\"");
    let server = lab.start();
    let http = server.http();
    let t = &lab.token;
    for name in ["r1", "r2"] {
        let r = http.post(
            "/api/v1/resources",
            t,
            json!({"name": name, "kind": "board", "labels": {"pool": name}}),
        );
        assert_eq!(r.status, 201, "{}", r.text);
    }
    let lease = |pool: &str| {
        let l = http.post(
            "/api/v1/leases",
            t,
            json!({"selector": format!("pool={pool}"), "duration": "10m", "heartbeat_ttl": "1h"}),
        );
        assert_eq!(l.status, 201, "{}", l.text);
        (
            l.body["id"].as_str().unwrap().to_string(),
            l.body["epoch"].as_u64().unwrap(),
        )
    };
    let (held, _) = lease("r1");
    let (ended, epoch) = lease("r2");
    let r = http.call(
        "DELETE",
        &format!("/api/v1/leases/{ended}?epoch={epoch}"),
        Some(t),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let events = http.get("/api/v1/events?limit=1000", t).body;
    let before: Vec<i64> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    assert!(before.len() > 3, "{events}");
    let newest = *before.last().unwrap();

    // Once they are older than 2 s, the retention pass (every 300 ms) deletes them.
    wait_for("the old history to go", Duration::from_secs(15), || {
        let all = http.get("/api/v1/leases?state=all", t).body;
        let ids: Vec<&str> = all
            .as_array()?
            .iter()
            .filter_map(|l| l["id"].as_str())
            .collect();
        let left = http.get("/api/v1/events?limit=1000", t).body;
        let left: Vec<i64> = left
            .as_array()?
            .iter()
            .filter_map(|e| e["id"].as_i64())
            .collect();
        (!ids.contains(&ended.as_str()) && left == vec![newest]).then_some(())
    });
    // The active lease stays, however old; the newest event stays, and ids go on from it.
    let l = http.get(&format!("/api/v1/leases/{held}"), t);
    assert_eq!(l.status, 200, "{}", l.text);
    assert_eq!(l.body["state"], "active");
    let r = http.post(
        "/api/v1/resources",
        t,
        json!({"name": "r3", "kind": "board"}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let after = http.get(&format!("/api/v1/events?after={newest}"), t).body;
    let next = after.as_array().unwrap().first().unwrap()["id"]
        .as_i64()
        .unwrap();
    assert!(next > newest, "{after}");
    // The pruned lease is gone for the API too, and the server counted what it deleted.
    assert_eq!(http.get(&format!("/api/v1/leases/{ended}"), t).status, 404);
    let metrics = http.get("/metrics", t).text;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("testfarm_retention_pruned_total{what=\"leases\"} ")),
        "{metrics}"
    );
}

#[test]
fn a_zero_retention_interval_is_refused_with_its_name() {
    let lab = Lab::new();
    lab.set("retention", "interval", "\"0s\"");
    let out = std::process::Command::new(support::BIN)
        .args(["server", "-f"])
        .arg(lab.config())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("retention.interval"), "{err}");
}
