//! Jobs, the scheduler and leases through real server processes: expiry, holder death
//! under `lease exec`, fencing, cleanup, `why`, pinned refusals, queue timeouts, the
//! agent protocol driven over HTTP, and a kill -9 of the server mid-burst.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Http, Lab, cli, stderr, stdout, wait_for};

fn board(http: &Http, t: &str, name: &str, labels: Value) {
    let r = http.post(
        "/api/v1/resources",
        t,
        json!({"name": name, "kind": "board", "labels": labels}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
}

fn submit(http: &Http, t: &str, spec: &str) -> Value {
    let r = http.post("/api/v1/jobs", t, json!({"spec": spec}));
    assert_eq!(r.status, 201, "{}", r.text);
    r.body
}

fn job_state(http: &Http, t: &str, id: &str) -> String {
    http.get(&format!("/api/v1/jobs/{id}"), t).body["state"]
        .as_str()
        .unwrap()
        .to_string()
}

fn resource_state(http: &Http, t: &str, name: &str) -> String {
    http.get(&format!("/api/v1/resources/{name}"), t).body["state"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn unrenewed_lease_expires_within_ttl_and_the_resource_returns() {
    let lab = Lab::new();
    lab.fast();
    let server = lab.start();
    let http = server.http();
    let t = &lab.token;
    board(&http, t, "b1", json!({"board_type": "rpi4"}));
    let r = http.post(
        "/api/v1/leases",
        t,
        json!({"selector": "board_type=rpi4", "duration": "1h"}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.body["id"].as_str().unwrap().to_string();
    let epoch = r.body["epoch"].as_u64().unwrap();
    assert_eq!(resource_state(&http, t, "b1"), "leased");
    // A second taker is refused while it is held (not queued forever).
    let busy = http.post(
        "/api/v1/leases",
        t,
        json!({"selector": "board_type=rpi4", "duration": "1h"}),
    );
    assert_eq!(busy.status, 409, "{}", busy.text);
    // Renewals keep it alive past its TTL...
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(900));
        let r = http.post(
            &format!("/api/v1/leases/{id}/renew"),
            t,
            json!({"epoch": epoch}),
        );
        assert_eq!(r.status, 200, "{}", r.text);
    }
    // ...and silence ends it within TTL (2 s) + 5 s.
    let silent_from = Instant::now();
    wait_for("lease expiry", Duration::from_secs(7), || {
        let l = http.get(&format!("/api/v1/leases/{id}"), t);
        (l.body["state"] == "expired").then_some(())
    });
    assert!(silent_from.elapsed() < Duration::from_secs(7));
    let l = http.get(&format!("/api/v1/leases/{id}"), t).body;
    assert_eq!(l["end_reason"]["end"], "heartbeat_lost", "{l}");
    assert_eq!(resource_state(&http, t, "b1"), "available");
    // The late holder is fenced.
    let late = http.post(
        &format!("/api/v1/leases/{id}/renew"),
        t,
        json!({"epoch": epoch}),
    );
    assert_eq!(late.status, 409, "{}", late.text);
    let kinds: Vec<String> = http
        .get("/api/v1/events?subject_type=lease", t)
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kinds, ["lease.acquired", "lease.expired"]);
}

#[test]
fn killed_lease_exec_holder_loses_the_lease_cleanup_runs_and_old_epoch_is_fenced() {
    let lab = Lab::new();
    lab.fast();
    let marker = lab.path().join("cleaned");
    lab.set(
        "leases",
        "cleanup_command",
        &format!("\"echo $TESTFARM_RESOURCE >> {}\"", marker.display()),
    );
    let server = lab.start();
    let http = server.http();
    let t = &lab.token;
    board(&http, t, "b1", json!({"board_type": "sim"}));

    // `lease exec` holds the board while its command runs...
    let mut exec = std::process::Command::new(support::BIN)
        .args([
            "lease",
            "exec",
            "-s",
            "board_type=sim",
            "--max",
            "1h",
            "--",
            "sh",
            "-c",
            "echo \"$TESTFARM_RESOURCE $TESTFARM_LEASE_EPOCH\"; sleep 600",
        ])
        .env("TESTFARM_URL", &server.url)
        .env("TESTFARM_TOKEN", t)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lease = wait_for("the lease", Duration::from_secs(10), || {
        let ls = http.get("/api/v1/leases", t).body;
        ls.as_array().unwrap().first().cloned()
    });
    let id = lease["id"].as_str().unwrap().to_string();
    let epoch = lease["epoch"].as_u64().unwrap();
    // ...and keeps it past several TTLs by heartbeating.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        http.get(&format!("/api/v1/leases/{id}"), t).body["state"],
        "active"
    );

    // kill -9 the holder: no release, no goodbye. The child `sleep` is orphaned but the
    // lease must still end within the heartbeat bound.
    let killed_at = Instant::now();
    exec.kill().unwrap();
    exec.wait().unwrap();
    wait_for(
        "the lease to end after the holder died",
        Duration::from_secs(2 + 5),
        || (http.get(&format!("/api/v1/leases/{id}"), t).body["state"] == "expired").then_some(()),
    );
    assert!(killed_at.elapsed() < Duration::from_secs(7));
    // Cleanup ran for the board, then it returned to the pool.
    wait_for("cleanup", Duration::from_secs(10), || {
        (resource_state(&http, t, "b1") == "available").then_some(())
    });
    assert_eq!(std::fs::read_to_string(&marker).unwrap().trim(), "b1");
    let kinds: Vec<String> = http
        .get("/api/v1/events?subject=b1", t)
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect();
    assert!(kinds.contains(&"resource.cleaned".to_string()), "{kinds:?}");
    // Placeable again: a new lease gets a larger epoch; the old epoch is fenced (409).
    let again = http.post(
        "/api/v1/leases",
        t,
        json!({"selector": "board_type=sim", "duration": "10m"}),
    );
    assert_eq!(again.status, 201, "{}", again.text);
    assert!(again.body["epoch"].as_u64().unwrap() > epoch);
    let stale = http.post(
        &format!("/api/v1/leases/{id}/renew"),
        t,
        json!({"epoch": epoch}),
    );
    assert_eq!(stale.status, 409, "{}", stale.text);
    let stale = http.call(
        "DELETE",
        &format!(
            "/api/v1/leases/{}?epoch={epoch}",
            again.body["id"].as_str().unwrap()
        ),
        Some(t),
        None,
    );
    assert_eq!(
        stale.status, 409,
        "a stale epoch cannot release the new lease: {}",
        stale.text
    );
    let _ = std::process::Command::new("pkill")
        .args(["-f", "sleep 600"])
        .status();
}

#[test]
fn failing_cleanup_leaves_the_resource_in_maintenance_with_the_reason() {
    let lab = Lab::new();
    lab.fast();
    lab.set(
        "leases",
        "cleanup_command",
        "\"echo PDU unreachable >&2; exit 3\"",
    );
    let server = lab.start();
    let http = server.http();
    let t = &lab.token;
    board(&http, t, "b1", json!({}));
    let r = http.post(
        "/api/v1/leases",
        t,
        json!({"selector": "name=b1", "duration": "1h"}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.body["id"].as_str().unwrap();
    // An operator force-releases it: the holder is fenced and cleanup runs (and fails).
    let user = http.create_token(t, "u", "user");
    assert_eq!(
        http.call(
            "DELETE",
            &format!("/api/v1/leases/{id}?force=true&reason=stuck"),
            Some(&user),
            None
        )
        .status,
        403
    );
    let forced = http.call(
        "DELETE",
        &format!("/api/v1/leases/{id}?force=true&reason=stuck"),
        Some(t),
        None,
    );
    assert_eq!(forced.status, 200, "{}", forced.text);
    assert_eq!(forced.body["end_reason"]["end"], "forced");
    let r = wait_for("cleanup failure", Duration::from_secs(10), || {
        let r = http.get("/api/v1/resources/b1", t).body;
        r["maintenance"]["reason"]
            .as_str()
            .is_some_and(|s| s.contains("failed"))
            .then_some(r)
    });
    assert_eq!(r["state"], "maintenance");
    assert!(
        r["maintenance"]["reason"]
            .as_str()
            .unwrap()
            .contains("PDU unreachable"),
        "{r}"
    );
}

#[test]
fn why_names_busy_maintenance_offline_and_policy_blockers() {
    let lab = Lab::new();
    lab.fast();
    let server = lab.start();
    let http = server.http();
    let t = &lab.token;
    board(&http, t, "busy-1", json!({"pool": "a"}));
    board(&http, t, "maint-1", json!({"pool": "a"}));
    board(&http, t, "kept-1", json!({"pool": "a", "reserved": "yes"}));
    // An agent registers one board and then falls silent: it goes offline.
    let agent = http.create_token(t, "agent-x", "agent");
    let reg = http.post("/api/v1/agents/register", &agent, json!({
        "version": "test", "hostname": "h", "resources": [{"name": "gone-1", "kind": "board", "labels": {"pool": "a"}}]}));
    assert_eq!(reg.status, 200, "{}", reg.text);
    wait_for("offline", Duration::from_secs(10), || {
        (resource_state(&http, t, "gone-1") == "offline").then_some(())
    });
    assert_eq!(
        http.post(
            "/api/v1/leases",
            t,
            json!({"selector": "name=busy-1", "duration": "1h"})
        )
        .status,
        201
    );
    assert_eq!(
        http.post(
            "/api/v1/resources/maint-1/maintenance",
            t,
            json!({"enabled": true, "reason": "fan"})
        )
        .status,
        200
    );
    assert_eq!(
        http.post(
            "/api/v1/groups",
            t,
            json!({"name": "reserved", "selector": "reserved=yes"})
        )
        .status,
        201
    );
    let p = http.post("/api/v1/policies", t, json!({"name": "kernel-only", "priority": 5, "rule": "reserved_for", "group": "reserved", "team": "kernel"}));
    assert_eq!(p.status, 201, "{}", p.text);

    let job = submit(
        &http,
        t,
        "name: wants-a\nrequires:\n  kind: board\n  labels: { pool: a }\nsteps:\n  - shell: 'true'\n",
    );
    let id = job["id"].as_str().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(job_state(&http, t, id), "queued");
    let why = http.get(&format!("/api/v1/jobs/{id}/why"), t);
    assert_eq!(why.status, 200, "{}", why.text);
    let text = why.body["text"].as_str().unwrap();
    for needle in ["busy-1", "maint-1", "gone-1", "kept-1", "kernel-only"] {
        assert!(text.contains(needle), "why should name {needle}:\n{text}");
    }
    let classes: Vec<String> = why.body["report"]["matching"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| {
            m["blocker"]["block"]
                .as_str()
                .or_else(|| m["blocker"]["reason"].as_str())
                .map(str::to_string)
        })
        .collect();
    assert_eq!(
        why.body["report"]["matching"].as_array().unwrap().len(),
        4,
        "{}",
        why.text
    );
    let _ = classes;
    // The CLI says the same in words.
    let out = cli(&server.url, t, &["job", "why", id]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("maint-1"), "{}", stdout(&out));
}

#[test]
fn submit_refuses_bad_specs_and_unservable_pins_with_alternatives() {
    let lab = Lab::new();
    lab.fast();
    let server = lab.start();
    let http = server.http();
    let t = &lab.token;
    let r = http.post("/api/v1/resources", t, json!({"name": "bs-x86", "kind": "build-server", "capabilities": {"arch": "x86_64", "toolchains": ["gcc"]}}));
    assert_eq!(r.status, 201);
    let r = http.post("/api/v1/resources", t, json!({"name": "bs-arm", "kind": "build-server", "capabilities": {"arch": "arm64", "toolchains": ["gcc"]}}));
    assert_eq!(r.status, 201);
    let pinned = "name: pin\nrequires:\n  kind: build-server\n  resource: bs-x86\n  arch: arm64\nsteps:\n  - shell: make\n";
    let r = http.post("/api/v1/jobs", t, json!({"spec": pinned}));
    assert_eq!(r.status, 409, "{}", r.text);
    let detail = r.body["detail"].as_str().unwrap();
    assert!(
        detail.contains("bs-x86") && detail.contains("bs-arm"),
        "reason and alternative: {detail}"
    );
    // A typo names the field, line and column.
    let typo = "name: t\nrequires:\n  kind: board\n  lables: {a: b}\nsteps: []\n";
    let r = http.post("/api/v1/jobs", t, json!({"spec": typo}));
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(
        r.body["detail"].as_str().unwrap().contains("line 4"),
        "{}",
        r.text
    );
    assert!(
        r.body["field"].as_str().unwrap().starts_with("spec"),
        "{}",
        r.text
    );
    // Through the CLI, the file name leads the message; exit 1.
    let f = lab.path().join("typo.yaml");
    std::fs::write(&f, typo).unwrap();
    let out = cli(&server.url, t, &["submit", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("typo.yaml: ") && stderr(&out).contains("line 4"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        http.get("/api/v1/jobs", t).body["items"]
            .as_array()
            .unwrap()
            .len(),
        0,
        "nothing stored"
    );
}

#[test]
fn queue_timeout_ends_the_job_error() {
    let lab = Lab::new();
    lab.fast();
    let server = lab.start();
    let http = server.http();
    let t = &lab.token;
    let job = submit(
        &http,
        t,
        "name: never\nqueue_timeout: 1s\nrequires:\n  kind: board\n  labels: {x: y}\nsteps:\n  - shell: 'true'\n",
    );
    let id = job["id"].as_str().unwrap().to_string();
    wait_for("queue timeout", Duration::from_secs(8), || {
        (job_state(&http, t, &id) == "error").then_some(())
    });
    let j = http.get(&format!("/api/v1/jobs/{id}"), t).body;
    assert!(j["reason"].as_str().unwrap().contains("queue"), "{j}");
}

/// A minimal agent speaking the protocol over HTTP, to test the server's side of it.
struct ProtoAgent<'a> {
    http: &'a Http,
    token: String,
}

impl ProtoAgent<'_> {
    fn work(&self) -> Vec<Value> {
        let r = self.http.get("/api/v1/agents/work?wait=5", &self.token);
        assert_eq!(r.status, 200, "{}", r.text);
        r.body["assignments"].as_array().unwrap().clone()
    }
    fn post(&self, path: &str, body: Value) -> support::Resp {
        self.http.post(path, &self.token, body)
    }
    fn log(&self, job: &str, seq: u64, epoch: u64, bytes: &str) -> support::Resp {
        let mut r = self.http.call_with_headers(
            "PUT",
            &format!("/api/v1/jobs/{job}/logs/{seq}"),
            &self.token,
            &[("x-testfarm-epoch", &epoch.to_string())],
            bytes.as_bytes().to_vec(),
        );
        r.text.truncate(500);
        r
    }
}

#[test]
fn agent_protocol_runs_a_job_with_fencing_and_exactly_once_logs() {
    let lab = Lab::new();
    lab.fast();
    let server = lab.start();
    let http = server.http();
    let t = &lab.token;
    let agent = ProtoAgent {
        http: &http,
        token: http.create_token(t, "agent-a", "agent"),
    };
    let other = http.create_token(t, "agent-b", "agent");
    let reg = agent.post(
        "/api/v1/agents/register",
        json!({"version": "t", "hostname": "h",
        "resources": [{"name": "a-board", "kind": "board", "labels": {"board_type": "sim"}}]}),
    );
    assert_eq!(reg.status, 200, "{}", reg.text);
    // Another agent cannot claim or act for it.
    let steal = http.post(
        "/api/v1/agents/register",
        &other,
        json!({"version": "t", "hostname": "h2",
        "resources": [{"name": "a-board", "kind": "board"}]}),
    );
    assert_eq!(steal.status, 403, "{}", steal.text);

    let job = submit(
        &http,
        t,
        "name: proto\nrequires:\n  kind: board\n  labels: {board_type: sim}\nsteps:\n  - shell: 'echo hi'\n",
    );
    let id = job["id"].as_str().unwrap().to_string();
    let work = wait_for("assignment", Duration::from_secs(10), || {
        let w = agent.work();
        (!w.is_empty()).then_some(w)
    });
    assert_eq!(work[0]["job_id"], id.as_str());
    assert_eq!(work[0]["resource"], "a-board");
    let epoch = work[0]["epoch"].as_u64().unwrap();
    assert_eq!(
        http.post(
            &format!("/api/v1/jobs/{id}/start"),
            &other,
            json!({"epoch": epoch})
        )
        .status,
        403
    );
    assert_eq!(
        agent
            .post(
                &format!("/api/v1/jobs/{id}/start"),
                json!({"epoch": epoch + 1})
            )
            .status,
        409
    );
    assert_eq!(
        agent
            .post(&format!("/api/v1/jobs/{id}/start"), json!({"epoch": epoch}))
            .status,
        200
    );
    assert_eq!(job_state(&http, t, &id), "running");
    // Chunks: a retry is stored once; a gap is refused.
    assert_eq!(agent.log(&id, 0, epoch, "hello ").status, 200);
    assert_eq!(agent.log(&id, 0, epoch, "hello ").status, 200);
    assert_eq!(agent.log(&id, 2, epoch, "later").status, 422);
    assert_eq!(agent.log(&id, 1, epoch, "world\n").status, 200);
    assert_eq!(agent.log(&id, 2, epoch + 7, "stale").status, 409);
    let log = http.get(&format!("/api/v1/jobs/{id}/log"), t);
    assert_eq!(log.text, "hello world\n");
    let step = agent.post(
        &format!("/api/v1/jobs/{id}/steps"),
        json!({"epoch": epoch, "index": 0, "kind": "shell",
        "outcome": "failed", "exit_code": 2, "duration_ms": 12}),
    );
    assert_eq!(step.status, 200, "{}", step.text);
    // Finishing with fewer chunks than sent is refused; with all of them it ends the job.
    assert_eq!(
        agent
            .post(
                &format!("/api/v1/jobs/{id}/finish"),
                json!({"epoch": epoch, "outcome": "failed", "log_chunks": 3})
            )
            .status,
        422
    );
    let fin = agent.post(
        &format!("/api/v1/jobs/{id}/finish"),
        json!({"epoch": epoch, "outcome": "failed", "reason": "exit 2", "log_chunks": 2}),
    );
    assert_eq!(fin.status, 200, "{}", fin.text);
    let j = http.get(&format!("/api/v1/jobs/{id}"), t).body;
    assert_eq!(j["state"], "failed", "{j}");
    assert_eq!(j["steps"][0]["exit_code"], 2);
    assert_eq!(resource_state(&http, t, "a-board"), "available");
    // After the end, writes under the old epoch are fenced.
    assert_eq!(agent.log(&id, 2, epoch, "late").status, 409);
    assert_eq!(
        agent
            .post(
                &format!("/api/v1/jobs/{id}/finish"),
                json!({"epoch": epoch, "outcome": "passed", "log_chunks": 2})
            )
            .status,
        409
    );
    // `testfarm logs` prints it.
    let out = cli(&server.url, t, &["logs", &id]);
    assert_eq!(stdout(&out), "hello world\n");
}

#[test]
fn kill_9_mid_burst_then_restart_keeps_the_invariants() {
    let lab = Lab::new();
    lab.fast();
    let server = lab.start();
    let http = server.http();
    let t = &lab.token;
    for i in 0..4 {
        board(&http, t, &format!("b{i}"), json!({"pool": "p"}));
    }
    let agent = http.create_token(t, "agent-k", "agent");
    let reg = http.post("/api/v1/agents/register", &agent, json!({"version": "t", "hostname": "h",
        "resources": [{"name": "ab0", "kind": "board", "labels": {"pool": "p"}}, {"name": "ab1", "kind": "board", "labels": {"pool": "p"}}]}));
    assert_eq!(reg.status, 200);
    // A burst of submissions and lease operations from several threads while the server dies.
    let url = server.url.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..4 {
        let (url, t, stop) = (url.clone(), t.clone(), stop.clone());
        workers.push(std::thread::spawn(move || {
            let http = Http::new(&url);
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && n < 400 {
                n += 1;
                let spec = format!("name: burst-{w}-{n}\nrequires:\n  kind: board\n  labels: {{pool: p}}\nsteps:\n  - shell: 'true'\n");
                let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    http.post("/api/v1/jobs", &t, json!({"spec": spec}));
                    let l = http.post("/api/v1/leases", &t, json!({"selector": "pool=p", "duration": "1m"}));
                    if l.status == 201 && n % 2 == 0 {
                        let id = l.body["id"].as_str().unwrap().to_string();
                        let e = l.body["epoch"].as_u64().unwrap();
                        http.call("DELETE", &format!("/api/v1/leases/{id}?epoch={e}"), Some(&t), None);
                    }
                }));
                if ok.is_err() {
                    break; // the server is gone
                }
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(1500));
    server.kill9();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
    let server = lab.start();
    let http = server.http();
    // Let reconciliation and the reaper run (TTL 2 s, grace 3 s).
    std::thread::sleep(Duration::from_secs(6));
    let db = lab.path().join("data.sqlite3");
    let q = |sql: &str| -> String {
        let o = std::process::Command::new("sqlite3")
            .arg(&db)
            .arg(sql)
            .output()
            .expect("sqlite3 installed");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    assert_eq!(
        q(
            "SELECT COUNT(*) FROM (SELECT resource_id FROM leases WHERE state='active' AND share LIKE '%whole%' GROUP BY resource_id HAVING COUNT(*) > 1)"
        ),
        "0",
        "a resource with two active leases"
    );
    assert_eq!(
        q(
            "SELECT COUNT(*) FROM resources r WHERE r.state='leased' AND NOT EXISTS (SELECT 1 FROM leases l WHERE l.resource_id=r.id AND l.state='active')"
        ),
        "0",
        "a leased resource without a lease"
    );
    assert_eq!(
        q(
            "SELECT COUNT(*) FROM resources r WHERE r.state='available' AND EXISTS (SELECT 1 FROM leases l WHERE l.resource_id=r.id AND l.state='active')"
        ),
        "0",
        "an available resource under lease"
    );
    assert_eq!(
        q(
            "SELECT COUNT(*) FROM jobs WHERE state IN ('assigned','running') AND (lease_id IS NULL OR lease_id NOT IN (SELECT id FROM leases WHERE state='active'))"
        ),
        "0",
        "a placed job without its lease"
    );
    assert_eq!(
        q("SELECT COUNT(*) FROM leases WHERE state='active' AND holder_type='person'"),
        "0",
        "person leases from the dead burst should have expired"
    );
    assert_eq!(
        q(
            "SELECT COUNT(*) FROM jobs WHERE state NOT IN ('queued','assigned','running','passed','failed','error','cancelled','timed_out')"
        ),
        "0"
    );
    let epochs_ok = q(
        "SELECT COUNT(*) FROM resources r WHERE r.last_epoch < (SELECT COALESCE(MAX(epoch),0) FROM leases l WHERE l.resource_id = r.id)",
    );
    assert_eq!(epochs_ok, "0", "epochs never go back");
    let jobs = q("SELECT COUNT(*) FROM jobs");
    assert!(jobs.parse::<u32>().unwrap() > 0, "the burst stored jobs");
    assert_eq!(http.get("/readyz", t).status, 200);
}

#[test]
fn tap_in_a_job_log_becomes_json_and_junit_results() {
    let lab = Lab::new();
    lab.fast();
    let server = lab.start();
    let http = server.http();
    let t = &lab.token;
    let agent = ProtoAgent {
        http: &http,
        token: http.create_token(t, "agent-r", "agent"),
    };
    let reg = agent.post(
        "/api/v1/agents/register",
        json!({"version": "t", "hostname": "h",
        "resources": [{"name": "r-board", "kind": "board"}]}),
    );
    assert_eq!(reg.status, 200, "{}", reg.text);
    let job = submit(
        &http,
        t,
        "name: tap-job\nrequires:\n  kind: board\nsteps:\n  - test: { run: 't/*_test.sh', format: tap }\n",
    );
    let id = job["id"].as_str().unwrap().to_string();
    let work = wait_for("assignment", Duration::from_secs(10), || {
        let w = agent.work();
        (!w.is_empty()).then_some(w)
    });
    let epoch = work[0]["epoch"].as_u64().unwrap();
    assert_eq!(
        agent
            .post(&format!("/api/v1/jobs/{id}/start"), json!({"epoch": epoch}))
            .status,
        200
    );
    let log = "booting\nTAP_START t/01_net_test.sh\nTAP version 14\n1..2\nok 1 - link up\nnot ok 2 - dns\n  ---\n  got: 1\n  ...\nTAP_END t/01_net_test.sh exit=1\nnoise\nTAP_START t/02_disk_test.sh\n1..1\nok 1 - mounted # TODO flaky\nTAP_END t/02_disk_test.sh exit=0\n";
    // Split mid-line across chunks: the parser streams.
    let (a, b) = log.split_at(57);
    assert_eq!(agent.log(&id, 0, epoch, a).status, 200);
    // While it runs, results are computed from the log so far.
    let partial = http.get(&format!("/api/v1/jobs/{id}/results"), t);
    assert_eq!(partial.status, 200, "{}", partial.text);
    assert_eq!(agent.log(&id, 1, epoch, b).status, 200);
    let fin = agent.post(
        &format!("/api/v1/jobs/{id}/finish"),
        json!({"epoch": epoch, "outcome": "failed", "log_chunks": 2}),
    );
    assert_eq!(fin.status, 200, "{}", fin.text);
    let report = wait_for("stored results", Duration::from_secs(5), || {
        let r = http.get(&format!("/api/v1/jobs/{id}/results"), t);
        (r.status == 200 && r.body["runs"].as_array().is_some_and(|a| a.len() == 2))
            .then_some(r.body)
    });
    assert_eq!(report["ok"], false);
    assert_eq!(report["runs"][0]["name"], "t/01_net_test.sh");
    assert_eq!(report["runs"][0]["status"], "failed");
    assert_eq!(report["runs"][0]["exit_code"], 1);
    assert_eq!(report["runs"][0]["document"]["tests"][1]["yaml"]["got"], 1);
    assert_eq!(report["runs"][1]["status"], "passed");
    assert_eq!(report["runs"][0]["properties"]["resource"], "r-board");
    let xml = http.call(
        "GET",
        &format!("/api/v1/jobs/{id}/results.xml"),
        Some(t),
        None,
    );
    assert_eq!(xml.status, 200);
    assert!(xml.content_type.starts_with("application/xml"));
    let file = lab.path().join("results.xml");
    std::fs::write(&file, &xml.text).unwrap();
    let xsd = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../testfarm-tap/tests/data/junit-10.xsd"
    );
    let lint = std::process::Command::new("xmllint")
        .args(["--noout", "--schema", xsd])
        .arg(&file)
        .output()
        .expect("xmllint (libxml2-utils) is installed by .ci/run");
    assert!(
        lint.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&lint.stderr),
        xml.text
    );
    // The CLI: a table, exit 1 because a suite failed, and --junit writes the file.
    let out_file = lab.path().join("cli.xml");
    let out = cli(
        &server.url,
        t,
        &["results", &id, "--junit", out_file.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("t/02_disk_test.sh"),
        "{}",
        stdout(&out)
    );
    assert_eq!(std::fs::read_to_string(&out_file).unwrap(), xml.text);
}

#[test]
fn conflicting_policies_are_logged_with_the_winner() {
    let lab = Lab::new();
    lab.fast();
    let server = lab.start();
    let http = server.http();
    let t = &lab.token;
    board(&http, t, "rk-1", json!({"rack": "r9"}));
    assert_eq!(
        http.post(
            "/api/v1/groups",
            t,
            json!({"name": "r9", "selector": "rack=r9"})
        )
        .status,
        201
    );
    let a = http.post("/api/v1/policies", t, json!({"name": "kernel-r9", "priority": 10, "rule": "reserved_for", "group": "r9", "team": "kernel"}));
    assert_eq!(a.status, 201, "{}", a.text);
    let b = http.post("/api/v1/policies", t, json!({"name": "bsp-r9", "priority": 1, "rule": "reserved_for", "group": "r9", "team": "bsp"}));
    assert_eq!(b.status, 201, "{}", b.text);
    let user = http.create_token(t, "plain-user", "user");
    assert_eq!(
        http.post(
            "/api/v1/policies",
            &user,
            json!({"name": "x", "rule": "priority_cap", "role": "user", "max": "low"})
        )
        .status,
        403
    );
    let events = http.get("/api/v1/events?subject=bsp-r9", t).body;
    let conflicts = events[0]["data"]["conflicts"].as_array().unwrap();
    assert_eq!(conflicts.len(), 1, "{events}");
    let text = conflicts[0].as_str().unwrap();
    assert!(text.contains("kernel-r9 applies"), "{text}");
    let listed = http.get("/api/v1/policies", t).body;
    assert_eq!(
        listed[0]["name"], "kernel-r9",
        "evaluation order: priority first"
    );
}
