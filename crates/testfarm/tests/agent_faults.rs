//! Real server + real agent processes under faults: the agent killed, or frozen (SIGSTOP)
//! for less and for more than `offline_after`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod agent_support;
mod support;

use std::time::{Duration, Instant};

use agent_support::*;

fn resource_state(http: &support::Http, token: &str, name: &str) -> String {
    let r = http.get(&format!("/api/v1/resources/{name}"), token);
    r.body["state"].as_str().unwrap_or("").to_string()
}

/// Kill the agent: its resources go offline within offline_after (default 30 s) plus a
/// few seconds, its running job ends `error`, its lease ends; restart it: the resources
/// come back, and the processes its previous life left are killed.
#[test]
fn a_killed_agent_goes_offline_its_job_errors_and_it_comes_back() {
    let lab = lab("30s", "30s");
    let server = lab.start();
    let http = server.http();
    let t = lab.token.clone();
    let at = agent_token(&http, &t, "kill1");
    let mut agent = Agent::start(&server.url, &at, "kill1", "");
    let res = agent.resource();
    wait_registered(&http, &t, &res);
    let marks = tempfile::tempdir().unwrap();
    let pidfile = marks.path().join("child.pid");
    let id = submit(
        &http,
        &t,
        &spec(
            &res,
            &format!(
                "steps:\n  - shell: \"sleep 1000 & echo $! > {}; wait\"\n",
                pidfile.display()
            ),
        ),
    );
    let pid = read_pid(&pidfile);
    wait_state(&http, &t, &id, "running", Duration::from_secs(10));
    let lease = job(&http, &t, &id)["lease_id"]
        .as_str()
        .unwrap()
        .to_string();
    agent.kill9();
    let killed = Instant::now();
    wait_for(
        "the resource to go offline",
        Duration::from_secs(40),
        || (resource_state(&http, &t, &res) == "offline").then_some(()),
    );
    let offline_after = killed.elapsed();
    assert!(offline_after < Duration::from_secs(36), "{offline_after:?}");
    let j = wait_job(&http, &t, &id, Duration::from_secs(40));
    assert_eq!(j["state"], "error", "{j}");
    let l = http.get(&format!("/api/v1/leases/{lease}"), &t);
    assert!(
        l.status == 200 && l.body["state"] != "active",
        "the lease did not end: {}",
        l.text
    );
    // The orphan still runs (the agent died without cleaning up) until the agent returns.
    assert!(alive(pid), "expected the orphan to outlive its agent");
    agent.spawn();
    wait_for("the resource to come back", Duration::from_secs(30), || {
        (resource_state(&http, &t, &res) == "available").then_some(())
    });
    wait_for("the orphan to be killed", Duration::from_secs(10), || {
        (!alive(pid)).then_some(())
    });
}

/// A freeze shorter than offline_after changes nothing: the job passes.
#[test]
fn a_short_partition_changes_nothing() {
    let lab = lab("6s", "6s");
    let server = lab.start();
    let http = server.http();
    let t = lab.token.clone();
    let at = agent_token(&http, &t, "short1");
    let agent = Agent::start(&server.url, &at, "short1", "");
    let res = agent.resource();
    wait_registered(&http, &t, &res);
    let id = submit(
        &http,
        &t,
        &spec(
            &res,
            "steps:\n  - shell: \"for i in 1 2 3 4 5 6 7 8; do echo tick $i; sleep 0.5; done\"\n",
        ),
    );
    wait_state(&http, &t, &id, "running", Duration::from_secs(10));
    agent.signal("STOP");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(resource_state(&http, &t, &res), "leased");
    agent.signal("CONT");
    let j = wait_job(&http, &t, &id, Duration::from_secs(60));
    assert_eq!(j["state"], "passed", "{j}\n{}", agent.log());
    let log = log(&http, &t, &id);
    for i in 1..=8 {
        assert!(log.contains(&format!("tick {i}\n")), "{log}");
    }
}

/// A freeze longer than offline_after ends the job `error`; when the agent comes back,
/// its late log chunks and results are refused (409) and it drops the work (killing it).
#[test]
fn a_long_partition_ends_the_job_and_late_writes_are_refused() {
    let lab = lab("3s", "3s");
    let server = lab.start();
    let http = server.http();
    let t = lab.token.clone();
    let at = agent_token(&http, &t, "long1");
    let agent = Agent::start(&server.url, &at, "long1", "");
    let res = agent.resource();
    wait_registered(&http, &t, &res);
    let marks = tempfile::tempdir().unwrap();
    let pidfile = marks.path().join("child.pid");
    let id = submit(
        &http,
        &t,
        &spec(
            &res,
            &format!(
                "steps:\n  - shell: |\n      sleep 1000 & echo $! > {}\n      while :; do echo tick; sleep 0.1; done\n",
                pidfile.display()
            ),
        ),
    );
    let pid = read_pid(&pidfile);
    wait_state(&http, &t, &id, "running", Duration::from_secs(10));
    agent.signal("STOP");
    let j = wait_job(&http, &t, &id, Duration::from_secs(30));
    assert_eq!(j["state"], "error", "{j}");
    let bytes_at_end = j["log_bytes"].as_u64().unwrap();
    std::thread::sleep(Duration::from_secs(1));
    agent.signal("CONT");
    // Told to drop it (409 on a late write or the heartbeat's drop list): it kills the work.
    wait_for(
        "the dropped job's processes to die",
        Duration::from_secs(20),
        || (!alive(pid)).then_some(()),
    );
    // The kill and the log line race; give the line a moment to be written.
    wait_for(
        "the agent to say it dropped the work",
        Duration::from_secs(10),
        || {
            let log_text = agent.log();
            (log_text.contains("drop") || log_text.contains("stale")).then_some(())
        },
    );
    std::thread::sleep(Duration::from_secs(2));
    let j = job(&http, &t, &id);
    assert_eq!(
        j["state"], "error",
        "a late result overwrote the verdict: {j}"
    );
    assert_eq!(
        j["log_bytes"].as_u64().unwrap(),
        bytes_at_end,
        "late log chunks were stored"
    );
    wait_for("the resource to be back", Duration::from_secs(20), || {
        (resource_state(&http, &t, &res) == "available").then_some(())
    });
}
