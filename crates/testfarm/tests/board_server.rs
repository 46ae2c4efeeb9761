//! The server's side of boards managed by agents, against a real server process and a
//! real SQLite file. The agent here is an HTTP client with an agent token making the
//! protocol's calls (`testfarm_api::board`), so each rule of the server is driven
//! exactly, without a board: actions through the work poll, reports, quarantine, lease-end
//! release, restore. Every wait is bounded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Http, Lab, Resp, wait_for};

/// An agent speaking the protocol by hand.
struct Agent {
    http: Http,
    token: String,
}

impl Agent {
    fn new(url: &str, admin: &str, name: &str) -> Agent {
        let http = Http::new(url);
        let token = http.create_token(admin, name, "agent");
        Agent { http, token }
    }

    fn register(&self, resources: Value) -> Resp {
        let r = self.http.post(
            "/api/v1/agents/register",
            &self.token,
            json!({"version": "t", "hostname": "h", "resources": resources}),
        );
        assert_eq!(r.status, 200, "{}", r.text);
        r
    }

    fn work(&self, wait: u64) -> Value {
        let r = self
            .http
            .get(&format!("/api/v1/agents/work?wait={wait}"), &self.token);
        assert_eq!(r.status, 200, "{}", r.text);
        r.body
    }

    /// Polls until a board action of `kind` comes; returns it.
    fn next_action(&self, kind: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let w = self.work(1);
            if let Some(a) = w["board_actions"]
                .as_array()
                .and_then(|a| a.iter().find(|a| a["action"] == kind))
            {
                return a.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no {kind} action within {timeout:?}"
            );
        }
    }

    /// Polls until an assignment comes; returns it.
    fn next_assignment(&self, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let w = self.work(1);
            if let Some(a) = w["assignments"].as_array().and_then(|a| a.first()) {
                return a.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no assignment within {timeout:?}"
            );
        }
    }

    fn answer(&self, id: &str, ok: bool, detail: &str) -> Resp {
        self.http.post(
            &format!("/api/v1/agents/board-actions/{id}"),
            &self.token,
            json!({"ok": ok, "detail": detail, "power": if ok { "off" } else { "unknown" }}),
        )
    }

    fn report(&self, board: &str, report: Value) -> Resp {
        let r = self.http.post(
            &format!("/api/v1/agents/boards/{board}/report"),
            &self.token,
            report,
        );
        assert_eq!(r.status, 200, "{}", r.text);
        r
    }

    /// Starts an assignment and finishes it with `outcome`.
    fn run(&self, a: &Value, outcome: &str) {
        let id = a["job_id"].as_str().unwrap();
        let epoch = a["epoch"].as_u64().unwrap();
        let s = self.http.post(
            &format!("/api/v1/jobs/{id}/start"),
            &self.token,
            json!({ "epoch": epoch }),
        );
        assert_eq!(s.status, 200, "{}", s.text);
        let f = self.http.post(
            &format!("/api/v1/jobs/{id}/finish"),
            &self.token,
            json!({"epoch": epoch, "outcome": outcome, "log_chunks": 0, "reason": "test"}),
        );
        assert_eq!(f.status, 200, "{}", f.text);
    }
}

fn lab() -> Lab {
    let lab = Lab::new();
    lab.fast();
    lab.set("boards", "action_timeout", "\"2s\"");
    lab
}

fn board(name: &str) -> Value {
    // Quarantine settings: a `[[board]]` the agent drives, so lease ends are its to clean.
    json!({"name": name, "kind": "board", "labels": {"board_type": "sim"},
           "board": {"board_type": "sim"},
           "quarantine": {"health_failures": 3, "lab_errors": 3, "window_ms": 3600000}})
}

fn board_view(http: &Http, t: &str, name: &str) -> Value {
    let r = http.get(&format!("/api/v1/boards/{name}"), t);
    assert_eq!(r.status, 200, "{}", r.text);
    r.body
}

fn state_of(http: &Http, t: &str, name: &str) -> String {
    board_view(http, t, name)["resource"]["state"]
        .as_str()
        .unwrap()
        .to_string()
}

fn events_of(http: &Http, t: &str, kind: &str) -> Vec<Value> {
    let r = http.get("/api/v1/events?limit=1000", t);
    r.body
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == kind)
        .cloned()
        .collect()
}

fn submit(http: &Http, t: &str, spec: &str) -> String {
    let r = http.post("/api/v1/jobs", t, json!({ "spec": spec }));
    assert_eq!(r.status, 201, "{}", r.text);
    r.body["id"].as_str().unwrap().to_string()
}

fn on_board(name: &str) -> String {
    format!(
        "name: on-{name}\nrequires: {{ kind: board, resource: {name} }}\nsteps:\n  - shell: 'true'\n"
    )
}

/// Answers the `release` that follows a lease end, and waits for the board to be back.
fn ack_release(agent: &Agent, http: &Http, t: &str, name: &str) {
    let a = agent.next_action("release", Duration::from_secs(10));
    assert_eq!(a["board"], name);
    assert_eq!(a["requested_by"], "reaper");
    let r = agent.answer(a["id"].as_str().unwrap(), true, "powered off");
    assert_eq!(r.status, 200, "{}", r.text);
    wait_for("board back in the pool", Duration::from_secs(10), || {
        (state_of(http, t, name) == "available").then_some(())
    });
}

#[test]
fn power_goes_through_the_work_poll_at_once_with_history_and_roles() {
    let lab = lab();
    let server = lab.start();
    let http = server.http();
    let t = &lab.token;
    let agent = Agent::new(&server.url, t, "agent-p");
    agent.register(json!([board("pw-1")]));
    let user = http.create_token(t, "ann", "user");
    let operator = http.create_token(t, "olga", "operator");

    // A user without the board's lease may not switch it.
    let r = http.post("/api/v1/boards/pw-1/power", &user, json!({"action": "on"}));
    assert_eq!(r.status, 403, "{}", r.text);
    // A name that is not a board, and one that is nothing.
    let r = http.post(
        "/api/v1/boards/nope/power",
        &operator,
        json!({"action": "on"}),
    );
    assert_eq!(r.status, 404, "{}", r.text);
    let r = http.post(
        "/api/v1/boards/pw-1/power",
        &operator,
        json!({"action": "on", "wait_ms": 999999}),
    );
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.body["field"], "wait_ms", "{}", r.text);

    // The agent is already waiting in its long-poll when the operator asks.
    let url = server.url.clone();
    let token = agent.token.clone();
    let poller = std::thread::spawn(move || {
        let a = Agent {
            http: Http::new(&url),
            token,
        };
        let w = a.work(30);
        let got = Instant::now();
        let action = w["board_actions"][0].clone();
        assert_eq!(action["action"], "power_on", "{w}");
        std::thread::sleep(Duration::from_millis(200));
        let r = a.http.post(
            &format!(
                "/api/v1/agents/board-actions/{}",
                action["id"].as_str().unwrap()
            ),
            &a.token,
            json!({"ok": true, "power": "on", "detail": "uhubctl: port 2 on"}),
        );
        assert_eq!(r.status, 200, "{}", r.text);
        // Answering twice is refused.
        let again = a.http.post(
            &format!(
                "/api/v1/agents/board-actions/{}",
                action["id"].as_str().unwrap()
            ),
            &a.token,
            json!({"ok": true}),
        );
        assert_eq!(again.status, 409, "{}", again.text);
        got
    });
    std::thread::sleep(Duration::from_millis(500));
    let asked = Instant::now();
    let r = http.post(
        "/api/v1/boards/pw-1/power",
        &operator,
        json!({"action": "on", "reason": "bring-up"}),
    );
    let got = poller.join().unwrap();
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["state"], "done", "{}", r.text);
    assert_eq!(r.body["result"]["power"], "on");
    let latency = got.saturating_duration_since(asked);
    assert!(
        latency < Duration::from_millis(1000),
        "the long-poll woke {latency:?} after the action was queued"
    );
    assert_eq!(board_view(&http, t, "pw-1")["power"], "on");

    // Another agent may not answer for it.
    let other = Agent::new(&server.url, t, "agent-q");
    let r = http.post(
        "/api/v1/boards/pw-1/power",
        &operator,
        json!({"action": "status", "wait_ms": 0}),
    );
    assert_eq!(r.status, 202, "{}", r.text);
    let id = r.body["id"].as_str().unwrap().to_string();
    let r = other.answer(&id, true, "");
    assert_eq!(r.status, 403, "{}", r.text);

    // The holder of a manual lease on the board may switch it.
    let l = http.post(
        "/api/v1/leases",
        &user,
        json!({"selector": "name=pw-1", "duration": "1h"}),
    );
    assert_eq!(l.status, 201, "{}", l.text);
    let r = http.post(
        "/api/v1/boards/pw-1/power",
        &user,
        json!({"action": "off", "wait_ms": 100}),
    );
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.body["requested_by"], "ann");

    // History: who, when, result, newest first; filtered by kind.
    let h = http.get("/api/v1/boards/pw-1/history?kind=power", t);
    assert_eq!(h.status, 200, "{}", h.text);
    let items = h.body["items"].as_array().unwrap();
    let on = items
        .iter()
        .find(|e| e["action"] == "on")
        .expect("power on in history");
    assert_eq!(on["actor"], "olga");
    assert_eq!(on["ok"], true);
    assert_eq!(on["detail"], "uhubctl: port 2 on");
    assert!(!events_of(&http, t, "board.power").is_empty());
    let bad = http.get("/api/v1/boards/pw-1/history?kind=colour", t);
    assert_eq!(bad.status, 400, "{}", bad.text);
}

#[test]
fn an_unreachable_board_is_registered_offline_and_stays_so_until_registered_without_it() {
    let lab = lab();
    let server = lab.start();
    let http = server.http();
    let t = &lab.token;
    let agent = Agent::new(&server.url, t, "agent-o");
    let mut b = board("off-1");
    b["offline_reason"] = json!("console /dev/ttyUSB0: no such device");
    b["verification"] = json!(["power: status off"]);
    b["quarantine"] = json!({"health_failures": 5, "lab_errors": 4, "window_ms": 60000});
    agent.register(json!([b]));
    let v = board_view(&http, t, "off-1");
    assert_eq!(v["resource"]["state"], "offline", "{v}");
    assert_eq!(
        v["resource"]["health"]["reasons"][0],
        "console /dev/ttyUSB0: no such device"
    );
    assert_eq!(v["offline_reason"], "console /dev/ttyUSB0: no such device");
    assert_eq!(v["verification"][0], "power: status off");
    assert_eq!(v["quarantine"]["health_failures"], 5);
    // Heartbeats speak for the host: the board stays offline.
    for _ in 0..2 {
        let hb = agent.http.post(
            "/api/v1/agents/heartbeat",
            &agent.token,
            json!({"metrics": [], "running": []}),
        );
        assert_eq!(hb.status, 200, "{}", hb.text);
    }
    assert_eq!(state_of(&http, t, "off-1"), "offline");
    // Registered again, reachable: back in the pool.
    agent.register(json!([board("off-1")]));
    let v = board_view(&http, t, "off-1");
    assert_eq!(v["resource"]["state"], "available", "{v}");
    assert!(v.get("offline_reason").is_none(), "{v}");
}

#[test]
fn health_failures_in_a_row_quarantine_and_only_a_passing_check_returns() {
    let lab = lab();
    let server = lab.start();
    let http = server.http();
    let t = &lab.token;
    let agent = Agent::new(&server.url, t, "agent-h");
    let mut b = board("hq-1");
    b["quarantine"] = json!({"health_failures": 2, "lab_errors": 3, "window_ms": 3600000});
    agent.register(json!([b]));
    let fail = json!({"kind": "health", "passed": false, "level": "degraded", "findings": ["no console output"]});
    let pass_probe = json!({"kind": "health", "passed": true, "level": "ok"});
    let pass_check = json!({"kind": "health", "passed": true, "level": "ok", "check": true});
    // One failure, a pass, one failure: hysteresis, still in the pool.
    agent.report("hq-1", fail.clone());
    agent.report("hq-1", pass_probe.clone());
    agent.report("hq-1", fail.clone());
    assert_eq!(state_of(&http, t, "hq-1"), "available");
    // The second in a row takes it out.
    let v = agent.report("hq-1", fail.clone()).body;
    assert_eq!(v["resource"]["state"], "maintenance", "{v}");
    let reason = v["quarantine_reason"].as_str().unwrap();
    assert!(reason.starts_with("quarantined:"), "{reason}");
    assert_eq!(v["consecutive_health_failures"], 2);
    assert_eq!(events_of(&http, t, "board.quarantined").len(), 1);
    let out = http.get("/api/v1/boards?state=maintenance&limit=5", t);
    assert_eq!(out.status, 200, "{}", out.text);
    assert_eq!(
        out.body["items"][0]["resource"]["name"], "hq-1",
        "{}",
        out.text
    );
    let none = http.get("/api/v1/boards?state=available", t);
    assert_eq!(
        none.body["items"].as_array().unwrap().len(),
        0,
        "{}",
        none.text
    );
    // An idle probe passing does not bring it back; a full health check does.
    agent.report("hq-1", pass_probe);
    assert_eq!(state_of(&http, t, "hq-1"), "maintenance");
    let v = agent.report("hq-1", pass_check.clone()).body;
    assert_eq!(v["resource"]["state"], "available", "{v}");
    assert_eq!(events_of(&http, t, "board.returned").len(), 1);

    // An operator's own maintenance is never ended by a passing check.
    let m = http.post(
        "/api/v1/resources/hq-1/maintenance",
        t,
        json!({"enabled": true, "reason": "rewiring"}),
    );
    assert_eq!(m.status, 200, "{}", m.text);
    agent.report("hq-1", pass_check);
    assert_eq!(state_of(&http, t, "hq-1"), "maintenance");
    let h = http.get("/api/v1/boards/hq-1/history?kind=quarantine", t);
    assert_eq!(h.body["items"].as_array().unwrap().len(), 2, "{}", h.text);
    // An operator queues a health check for the agent.
    let hc = http.post("/api/v1/boards/hq-1/health-check", t, json!({}));
    assert_eq!(hc.status, 202, "{}", hc.text);
    let user = http.create_token(t, "ursula", "user");
    let hc = http.post("/api/v1/boards/hq-1/health-check", &user, json!({}));
    assert_eq!(hc.status, 403, "{}", hc.text);
    agent.next_action("health_check", Duration::from_secs(5));
}

#[test]
fn a_board_that_does_not_recover_needs_intervention_and_is_placed_again_after_a_passing_check() {
    let lab = lab();
    let server = lab.start();
    let http = server.http();
    let t = &lab.token;
    let agent = Agent::new(&server.url, t, "agent-r");
    agent.register(json!([board("rc-1")]));
    let v = agent
        .report(
            "rc-1",
            json!({"kind": "recovery", "recovered": false,
                   "attempts": ["cycle 1: no prompt", "cycle 2: no prompt"], "detail": "no console after 2 power cycles"}),
        )
        .body;
    assert_eq!(v["resource"]["state"], "maintenance", "{v}");
    let reason = v["resource"]["maintenance"]["reason"].as_str().unwrap();
    assert!(reason.starts_with("needs manual intervention"), "{reason}");
    let alerts = events_of(&http, t, "alert.raised");
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0]["data"]["severity"], "critical");
    assert_eq!(alerts[0]["data"]["board"], "rc-1");
    assert_eq!(alerts[0]["data"]["attempts"].as_array().unwrap().len(), 2);
    // A real alert record, with the power cycles tried as its recovery attempts.
    let id = alerts[0]["subject"].as_str().unwrap();
    let a = http.get(&format!("/api/v1/alerts/{id}"), t).body;
    assert_eq!(a["rule"], "board_health", "{a}");
    assert_eq!(a["subject"], "rc-1", "{a}");
    assert_eq!(a["state"], "open", "{a}");
    let tried = a["recovery_attempts"].as_array().unwrap();
    assert_eq!(tried.len(), 3, "{a}");
    assert_eq!(tried[0]["action"], "power cycle", "{a}");
    // Not placed while out (a pinned job would be refused at submit: it asks for any board).
    let job = submit(
        &http,
        t,
        "name: any-board\nrequires: { kind: board }\nsteps:\n  - shell: 'true'\n",
    );
    std::thread::sleep(Duration::from_millis(800));
    let j = http.get(&format!("/api/v1/jobs/{job}"), t);
    assert_eq!(j.body["state"], "queued", "{}", j.text);
    // A passing health check returns it and the job is placed.
    agent.report(
        "rc-1",
        json!({"kind": "health", "passed": true, "level": "ok", "check": true}),
    );
    let a = agent.next_assignment(Duration::from_secs(10));
    assert_eq!(a["job_id"], job.as_str());
    assert_eq!(a["resource"], "rc-1");
}

#[test]
fn lab_errors_in_the_window_quarantine_the_board() {
    let lab = lab();
    let server = lab.start();
    let http = server.http();
    let t = &lab.token;
    let agent = Agent::new(&server.url, t, "agent-e");
    let mut b = board("le-1");
    b["quarantine"] = json!({"health_failures": 3, "lab_errors": 2, "window_ms": 3600000});
    agent.register(json!([b]));
    for i in 0..2 {
        submit(&http, t, &on_board("le-1"));
        let a = agent.next_assignment(Duration::from_secs(10));
        agent.run(&a, "error");
        if i == 0 {
            ack_release(&agent, &http, t, "le-1");
        }
    }
    // The second lab error took it out; the release still runs, and does not put it back.
    let a = agent.next_action("release", Duration::from_secs(10));
    assert_eq!(
        agent.answer(a["id"].as_str().unwrap(), true, "off").status,
        200
    );
    std::thread::sleep(Duration::from_millis(500));
    let v = board_view(&http, t, "le-1");
    assert_eq!(v["resource"]["state"], "maintenance", "{v}");
    let reason = v["resource"]["maintenance"]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("quarantined:") && reason.contains("lab error"),
        "{reason}"
    );
    assert_eq!(events_of(&http, t, "board.quarantined").len(), 1);
}

#[test]
fn an_expired_lease_on_a_board_is_released_by_its_agent_and_the_board_returns() {
    let lab = lab();
    let server = lab.start();
    let http = server.http();
    let t = &lab.token;
    let agent = Agent::new(&server.url, t, "agent-x");
    agent.register(json!([board("ex-1")]));
    let l = http.post(
        "/api/v1/leases",
        t,
        json!({"selector": "name=ex-1", "duration": "1s"}),
    );
    assert_eq!(l.status, 201, "{}", l.text);
    let lease = l.body["id"].as_str().unwrap().to_string();
    let a = agent.next_action("release", Duration::from_secs(10));
    assert_eq!(a["lease_id"], lease.as_str());
    // While the release runs the board is out of the pool.
    assert_eq!(state_of(&http, t, "ex-1"), "maintenance");
    assert_eq!(
        agent.answer(a["id"].as_str().unwrap(), true, "off").status,
        200
    );
    wait_for("board back", Duration::from_secs(10), || {
        (state_of(&http, t, "ex-1") == "available").then_some(())
    });
    let h = http.get("/api/v1/boards/ex-1/history?kind=power", t);
    let first = &h.body["items"][0];
    assert_eq!(first["action"], "release", "{}", h.text);
    assert_eq!(first["actor"], "reaper");
}

#[test]
fn a_release_nobody_answers_leaves_the_board_out_of_the_pool_with_the_reason() {
    let lab = lab();
    let server = lab.start();
    let http = server.http();
    let t = &lab.token;
    let agent = Agent::new(&server.url, t, "agent-s");
    agent.register(json!([board("sl-1")]));
    let l = http.post(
        "/api/v1/leases",
        t,
        json!({"selector": "name=sl-1", "duration": "1h"}),
    );
    assert_eq!(l.status, 201, "{}", l.text);
    let id = l.body["id"].as_str().unwrap();
    let epoch = l.body["epoch"].as_u64().unwrap();
    let r = http.call(
        "DELETE",
        &format!("/api/v1/leases/{id}?epoch={epoch}"),
        Some(t),
        None,
    );
    assert!(r.status < 300, "{}", r.text);
    // Two tries of 2 s each (plus slack), then it stays out.
    let failed = wait_for("cleanup failed", Duration::from_secs(20), || {
        events_of(&http, t, "resource.cleanup_failed").pop()
    });
    assert_eq!(failed["subject"], "sl-1");
    let v = board_view(&http, t, "sl-1");
    assert_eq!(v["resource"]["state"], "maintenance", "{v}");
    let reason = v["resource"]["maintenance"]["reason"].as_str().unwrap();
    assert!(reason.contains("did not answer"), "{reason}");
    let h = http.get("/api/v1/boards/sl-1/history?kind=power", t);
    let releases = h.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "release" && e["ok"] == false)
        .count();
    assert_eq!(releases, 2, "{}", h.text);
    // A passing health check brings it back (the server took it out).
    agent.report(
        "sl-1",
        json!({"kind": "health", "passed": true, "level": "ok", "check": true}),
    );
    assert_eq!(state_of(&http, t, "sl-1"), "available");
}

#[test]
fn restore_submits_a_deploy_of_the_known_good_build_on_that_board() {
    let lab = lab();
    let server = lab.start();
    let http = server.http();
    let t = &lab.token;
    let agent = Agent::new(&server.url, t, "agent-k");
    agent.register(json!([board("kg-1")]));
    // Nothing known-good yet.
    let r = http.post("/api/v1/boards/kg-1/restore", t, json!({}));
    assert_eq!(r.status, 409, "{}", r.text);
    assert!(
        r.body["detail"].as_str().unwrap().contains("known-good"),
        "{}",
        r.text
    );
    let r = http.post("/api/v1/boards/none-such/restore", t, json!({}));
    assert_eq!(r.status, 404, "{}", r.text);

    // A job deploys a build that boots, and passes: it becomes known-good.
    let job = submit(&http, t, &on_board("kg-1"));
    let a = agent.next_assignment(Duration::from_secs(10));
    assert_eq!(a["job_id"], job.as_str());
    agent.report(
        "kg-1",
        json!({"kind": "activity", "activity": "flashing", "job_id": job}),
    );
    let v = board_view(&http, t, "kg-1");
    assert_eq!(v["activity"], "flashing");
    assert_eq!(v["resource"]["state"], "leased");
    agent.report(
        "kg-1",
        json!({"kind": "flash", "job_id": job, "build_id": "01JD3Z6S0R8W9Q2A5Y7C4K1M3N", "ok": true, "duration_ms": 1200}),
    );
    agent.report(
        "kg-1",
        json!({"kind": "deployed", "job_id": job, "build_id": "01JD3Z6S0R8W9Q2A5Y7C4K1M3N", "commit": "abc123", "booted": true}),
    );
    agent.run(&a, "passed");
    ack_release(&agent, &http, t, "kg-1");
    let v = board_view(&http, t, "kg-1");
    assert_eq!(
        v["known_good"]["build_id"], "01JD3Z6S0R8W9Q2A5Y7C4K1M3N",
        "{v}"
    );
    assert_eq!(v["current"]["job_id"], job.as_str());
    for kind in ["board.activity", "board.flashed", "board.deployed"] {
        assert!(!events_of(&http, t, kind).is_empty(), "no {kind} event");
    }

    let r = http.post("/api/v1/boards/kg-1/restore", t, json!({}));
    assert_eq!(r.status, 201, "{}", r.text);
    let spec = &r.body["spec"];
    assert_eq!(spec["requires"]["resource"], "kg-1", "{}", r.text);
    assert_eq!(
        spec["steps"][0]["deploy"]["artifacts"]["build"], "01JD3Z6S0R8W9Q2A5Y7C4K1M3N",
        "{}",
        r.text
    );
}

mod console {
    use super::*;
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    async fn connect(
        url: &str,
        token: &str,
    ) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>
    {
        let mut req = url.into_client_request().unwrap();
        req.headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        let (ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
        assert_eq!(resp.status().as_u16(), 101);
        ws
    }

    /// The next text or binary frame.
    async fn next<S>(ws: &mut S) -> Message
    where
        S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
    {
        loop {
            let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
                .await
                .expect("a frame within 10 s")
                .expect("the socket is open")
                .unwrap();
            if matches!(m, Message::Text(_) | Message::Binary(_) | Message::Close(_)) {
                return m;
            }
        }
    }

    #[test]
    fn the_console_relays_bytes_both_ways_between_person_and_agent() {
        let lab = lab();
        let server = lab.start();
        let http = server.http();
        let t = &lab.token;
        let agent = Agent::new(&server.url, t, "agent-c");
        agent.register(json!([board("cn-1")]));
        let operator = http.create_token(t, "oscar", "operator");
        let user = http.create_token(t, "uma", "user");
        // Without upgrade headers: a documented 400 problem, never a 500.
        let plain = http.get("/api/v1/boards/cn-1/console", &operator);
        assert_eq!(plain.status, 400, "{}", plain.text);
        assert!(plain.content_type.starts_with("application/problem+json"));
        let plain = http.get("/api/v1/boards/cn-1/console", &user);
        assert_eq!(plain.status, 403, "{}", plain.text);
        let plain = http.get(
            "/api/v1/agents/console/01JD3Z6S0R8W9Q2A5Y7C4K1M3N",
            &agent.token,
        );
        assert_eq!(plain.status, 404, "{}", plain.text);

        let ws_base = server.url.replacen("http", "ws", 1);
        let agent_token = agent.token.clone();
        let agent_url = server.url.clone();
        let agent_base = ws_base.clone();
        let agent_side = std::thread::spawn(move || {
            let a = Agent {
                http: Http::new(&agent_url),
                token: agent_token.clone(),
            };
            let action = a.next_action("console", Duration::from_secs(10));
            let session = action["session"].as_str().unwrap().to_string();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let mut ws = connect(
                    &format!("{agent_base}/api/v1/agents/console/{session}"),
                    &agent_token,
                )
                .await;
                ws.send(Message::Binary(b"login: ".to_vec().into()))
                    .await
                    .unwrap();
                let m = next(&mut ws).await;
                assert_eq!(m, Message::Binary(b"root\n".to_vec().into()));
                ws.send(Message::Binary(vec![0u8, 0xff, b'#'].into()))
                    .await
                    .unwrap();
                ws.close(None).await.unwrap();
            });
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut ws = connect(&format!("{ws_base}/api/v1/boards/cn-1/console"), &operator).await;
            assert_eq!(
                next(&mut ws).await,
                Message::Text("attached to cn-1 (this session ends after 30m)".into())
            );
            assert_eq!(
                next(&mut ws).await,
                Message::Binary(b"login: ".to_vec().into())
            );
            ws.send(Message::Binary(b"root\n".to_vec().into()))
                .await
                .unwrap();
            assert_eq!(
                next(&mut ws).await,
                Message::Binary(vec![0u8, 0xff, b'#'].into())
            );
            match next(&mut ws).await {
                Message::Text(t) => assert!(t.starts_with("detached:"), "{t}"),
                other => panic!("expected the detach notice, got {other:?}"),
            }
        });
        agent_side.join().unwrap();
    }
}

#[test]
fn a_board_quarantined_while_leased_stays_out_after_its_release() {
    let lab = lab();
    let server = lab.start();
    let http = server.http();
    let t = &lab.token;
    let agent = Agent::new(&server.url, t, "agent-w");
    let mut b = board("ql-1");
    b["quarantine"] = json!({"health_failures": 1, "lab_errors": 3, "window_ms": 3600000});
    agent.register(json!([b]));
    let l = http.post(
        "/api/v1/leases",
        t,
        json!({"selector": "name=ql-1", "duration": "1h"}),
    );
    assert_eq!(l.status, 201, "{}", l.text);
    let v = agent
        .report(
            "ql-1",
            json!({"kind": "health", "passed": false, "level": "degraded", "findings": ["hung"]}),
        )
        .body;
    assert_eq!(v["resource"]["state"], "maintenance", "{v}");
    let (id, epoch) = (
        l.body["id"].as_str().unwrap(),
        l.body["epoch"].as_u64().unwrap(),
    );
    let r = http.call(
        "DELETE",
        &format!("/api/v1/leases/{id}?epoch={epoch}"),
        Some(t),
        None,
    );
    assert!(r.status < 300, "{}", r.text);
    // The release still runs, and its success does not lift the quarantine.
    let a = agent.next_action("release", Duration::from_secs(10));
    assert_eq!(
        agent.answer(a["id"].as_str().unwrap(), true, "off").status,
        200
    );
    wait_for("cleaned", Duration::from_secs(10), || {
        events_of(&http, t, "resource.cleaned").pop()
    });
    let v = board_view(&http, t, "ql-1");
    assert_eq!(v["resource"]["state"], "maintenance", "{v}");
    assert!(
        v["quarantine_reason"]
            .as_str()
            .unwrap()
            .starts_with("quarantined:"),
        "{v}"
    );
}

#[test]
fn a_board_the_agent_only_runs_shell_work_on_gets_no_release() {
    let lab = lab();
    let server = lab.start();
    let http = server.http();
    let t = &lab.token;
    let agent = Agent::new(&server.url, t, "agent-n");
    // `[[resource]] kind = "board"`: no quarantine settings, no drivers.
    agent.register(json!([{"name": "sh-1", "kind": "board", "board": {"board_type": "rpi4"}}]));
    let l = http.post(
        "/api/v1/leases",
        t,
        json!({"selector": "name=sh-1", "duration": "1h"}),
    );
    assert_eq!(l.status, 201, "{}", l.text);
    let (id, epoch) = (
        l.body["id"].as_str().unwrap(),
        l.body["epoch"].as_u64().unwrap(),
    );
    let r = http.call(
        "DELETE",
        &format!("/api/v1/leases/{id}?epoch={epoch}"),
        Some(t),
        None,
    );
    assert!(r.status < 300, "{}", r.text);
    assert_eq!(state_of(&http, t, "sh-1"), "available");
    let w = agent.work(0);
    assert!(w.get("board_actions").is_none(), "{w}");
}

#[test]
fn the_submitter_of_the_job_holding_a_board_may_drive_it_and_others_may_not() {
    let lab = lab();
    let server = lab.start();
    let http = server.http();
    let t = &lab.token;
    let agent = Agent::new(&server.url, t, "agent-j");
    agent.register(json!([board("jh-1")]));
    let ann = http.create_token(t, "ann", "user");
    let bob = http.create_token(t, "bob", "user");
    let job = submit(&http, &ann, &on_board("jh-1"));
    let a = agent.next_assignment(Duration::from_secs(10));
    assert_eq!(a["job_id"], job.as_str());
    let cycle = json!({"action": "cycle", "wait_ms": 0});
    let r = http.post("/api/v1/boards/jh-1/power", &bob, cycle.clone());
    assert_eq!(r.status, 403, "{}", r.text);
    let r = http.post("/api/v1/boards/jh-1/power", &ann, cycle);
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.body["action"], "power_cycle");
    let r = http.post("/api/v1/boards/jh-1/restore", &bob, json!({}));
    assert_eq!(r.status, 403, "{}", r.text);
}

#[test]
fn a_console_step_of_several_lines_is_refused_at_submit_with_its_place() {
    let lab = lab();
    let server = lab.start();
    let http = server.http();
    let spec = "name: two-lines\nrequires: { kind: board }\nsteps:\n  - boot: {}\n  - shell:\n      via: console\n      run: |\n        uname -a\n        run-tap 3\n";
    let r = http.post("/api/v1/jobs", &lab.token, json!({ "spec": spec }));
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(r.text.contains("steps[1].shell.run"), "{}", r.text);
    assert!(r.text.contains("line 7, column 7"), "{}", r.text);
    assert!(r.text.contains("one line"), "{}", r.text);
}
