//! Boards end to end: a real server, a real `testfarm agent` with `[[board]]` tables, and
//! simulated boards as their own processes, driven through the same drivers a real board
//! uses (command power, TCP console, command flash). Deploy → power cycle → boot → TAP over
//! the console; a board that never shows its prompt; a board that hangs mid-job and is
//! power-cycled back, and one whose power is stuck, which goes to maintenance with an alert
//! and returns only after a health check; a lease that expires with the board on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod agent_support;
mod board_support;
mod support;

use std::time::Duration;

use agent_support::*;
use board_support::*;
use serde_json::json;
use support::{Http, cli, stderr, stdout};

struct Setup {
    lab: support::Lab,
    _server: support::Server,
    url: String,
    agent: Agent,
    http: Http,
}

/// A lab whose agent `bench-1` drives `boards` (a `[[board]]` table each).
fn setup(boards: &str, heartbeat_ttl: &str) -> Setup {
    let lab = lab("30s", heartbeat_ttl);
    let server = lab.start();
    let http = server.http();
    let at = agent_token(&http, &lab.token, "bench-1");
    let agent = Agent::start_tables(&server.url, &at, "bench-1", boards);
    Setup {
        url: server.url.clone(),
        lab,
        _server: server,
        agent,
        http,
    }
}

impl Setup {
    fn t(&self) -> &str {
        &self.lab.token
    }

    fn wait_available(&self, board: &str) {
        wait_board_state(
            &self.http,
            self.t(),
            board,
            "available",
            Duration::from_secs(60),
        );
    }

    fn job(&self, spec: &str) -> String {
        submit(&self.http, self.t(), spec)
    }

    fn wait(&self, id: &str, within: Duration) -> serde_json::Value {
        support::wait_job(&self.http, self.t(), id, within)
    }

    fn log(&self, id: &str) -> String {
        log(&self.http, self.t(), id)
    }

    fn console_log(&self, id: &str) -> String {
        self.http
            .get(&format!("/api/v1/jobs/{id}/outputs/console.log"), self.t())
            .text
    }

    fn cli(&self, args: &[&str]) -> std::process::Output {
        cli(&self.url, self.t(), args)
    }
}

#[test]
fn a_sim_board_is_flashed_booted_and_tested_over_its_console() {
    let sim = Sim::start(&[]);
    let s = setup(&sim.board_toml("sim-1", ""), "30s");
    s.wait_available("sim-1");
    let view = board(&s.http, s.t(), "sim-1");
    assert_eq!(view["resource"]["kind"], "board", "{view}");

    let build = firmware_build(&s.http, s.t(), "firmware v1 for sim-1\n");
    let id = s.job(&deploy_spec("sim-1", &build, "run-tap 3", ""));
    let j = s.wait(&id, Duration::from_secs(120));
    let log = s.log(&id);
    assert_eq!(j["state"], "passed", "{j}\n{log}\n{}", s.agent.log());
    // Flashed with the build's firmware, booted, tested over the console.
    assert_eq!(
        std::fs::read_to_string(sim.flashed()).unwrap(),
        "firmware v1 for sim-1\n"
    );
    assert!(log.contains("ok 3"), "{log}");
    let results = s.http.get(&format!("/api/v1/jobs/{id}/results"), s.t());
    assert_eq!(results.status, 200, "{}", results.text);
    assert_eq!(results.body["totals"]["tests"], 3, "{}", results.text);
    assert_eq!(
        results.body["runs"][0]["document"]["summary"]["pass"], 3,
        "{}",
        results.text
    );
    // Every console line of the job is kept, with its time.
    let console = s.console_log(&id);
    assert!(console.contains("sim-board login:"), "{console}");
    assert!(console.contains("Starting kernel"), "{console}");
    // The deployed build is recorded, and a passing job makes it the known-good one.
    let view = board(&s.http, s.t(), "sim-1");
    assert_eq!(view["current"]["build_id"], build.as_str(), "{view}");
    assert_eq!(view["current"]["job_id"], id.as_str(), "{view}");
    assert_eq!(view["known_good"]["build_id"], build.as_str(), "{view}");
    let flashes = history(&s.http, s.t(), "sim-1", "flash");
    assert!(
        flashes
            .iter()
            .any(|e| e["ok"] == true && e["job_id"] == id.as_str()),
        "{flashes:?}"
    );
    let power = history(&s.http, s.t(), "sim-1", "power");
    assert!(!power.is_empty(), "no power history");
    // The lease's end leaves it off (its on_release), and back in the pool.
    wait_for(
        "the board off after the job",
        Duration::from_secs(30),
        || (sim.power() == "off").then_some(()),
    );
    s.wait_available("sim-1");

    // By hand: power, the console over the WebSocket, the history.
    let out = s.cli(&["board", "power", "sim-1", "on", "--reason", "poking it"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("power on"), "{}", stdout(&out));
    assert_eq!(sim.power(), "on");
    std::thread::sleep(Duration::from_millis(800)); // let it boot to its login prompt
    let console = std::process::Command::new(support::BIN)
        .args([
            "console",
            "sim-1",
            "--linger",
            "2s",
            "--url",
            &s.url,
            "--token",
            s.t(),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = console.stdin.as_ref().unwrap();
        std::thread::sleep(Duration::from_millis(500));
        stdin.write_all(b"root\r\n").unwrap();
        std::thread::sleep(Duration::from_millis(300));
        stdin.write_all(b"echo hello-from-ws\r\n").unwrap();
    }
    let out = wait_output(console, Duration::from_secs(30));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("hello-from-ws"),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = s.cli(&["board", "history", "sim-1", "--kind", "power"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("admin"), "{}", stdout(&out));

    // From the dashboard: the power-cycle form on the board's page (operator, CSRF).
    let cookie = format!("tf_session={}", s.t());
    let page = s.http.call_with_headers(
        "GET",
        "/ui/resources/sim-1",
        s.t(),
        &[("cookie", &cookie)],
        Vec::new(),
    );
    assert_eq!(page.status, 200, "{}", page.text);
    let at = page
        .text
        .find("name=\"csrf\" value=\"")
        .expect("a csrf field")
        + 19;
    let csrf = page.text[at..at + 64].to_string();
    let before = history(&s.http, s.t(), "sim-1", "power").len();
    let r = s.http.call_with_headers(
        "POST",
        "/ui/resources/sim-1/power",
        s.t(),
        &[
            ("cookie", &cookie),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        format!("csrf={csrf}&action=cycle").into_bytes(),
    );
    assert!(
        r.status == 303 || r.status == 200,
        "{}: {}",
        r.status,
        r.text
    );
    let cycled = wait_for(
        "the dashboard's power cycle",
        Duration::from_secs(30),
        || {
            let h = history(&s.http, s.t(), "sim-1", "power");
            (h.len() > before).then_some(h)
        },
    );
    assert_eq!(cycled[0]["action"], "cycle", "{}", cycled[0]);
    assert_eq!(cycled[0]["ok"], true, "{}", cycled[0]);
    assert_eq!(sim.power(), "on", "a cycle leaves it on");
    let out = s.cli(&["board", "list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("sim-1"), "{}", stdout(&out));
    let out = s.cli(&["board", "show", "sim-1"]);
    assert!(stdout(&out).contains(&build), "{}", stdout(&out));
}

/// Waits for a child with a bound; kills it past the bound.
fn wait_output(mut child: std::process::Child, within: Duration) -> std::process::Output {
    let deadline = std::time::Instant::now() + within;
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn a_board_that_never_shows_its_prompt_ends_error_with_its_console_and_a_restore() {
    let mut sim = Sim::start(&[]);
    let s = setup(&sim.board_toml("sim-2", ""), "30s");
    s.wait_available("sim-2");
    let good = firmware_build(&s.http, s.t(), "good firmware\n");
    let id = s.job(&deploy_spec("sim-2", &good, "run-tap 1", ""));
    assert_eq!(
        s.wait(&id, Duration::from_secs(120))["state"],
        "passed",
        "{}",
        s.log(&id)
    );

    // The next build never reaches its login prompt.
    sim.restart(&["--no-boot"]);
    let bad = firmware_build(&s.http, s.t(), "bad firmware\n");
    let id = s.job(&deploy_spec("sim-2", &bad, "run-tap 1", ""));
    let j = s.wait(&id, Duration::from_secs(120));
    let log = s.log(&id);
    assert_eq!(j["state"], "error", "{j}\n{log}");
    let reason = j["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("testfarm board restore sim-2"), "{reason}");
    let console = s.console_log(&id);
    assert!(console.contains("Starting kernel"), "{console}");
    let view = board(&s.http, s.t(), "sim-2");
    assert_eq!(view["known_good"]["build_id"], good.as_str(), "{view}");

    // Restore puts the known-good build back.
    sim.restart(&[]);
    s.wait_available("sim-2");
    let out = s.cli(&["board", "restore", "sim-2", "--wait"]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert_eq!(
        std::fs::read_to_string(sim.flashed()).unwrap(),
        "good firmware\n"
    );
    let view = board(&s.http, s.t(), "sim-2");
    assert_eq!(view["current"]["build_id"], good.as_str(), "{view}");
}

#[test]
fn a_hung_board_is_cycled_back_and_one_with_stuck_power_leaves_the_pool_until_checked() {
    let mut sim = Sim::start(&["--hang-after", "1"]);
    let stuck = sim.state_dir().join("relay-stuck");
    // A relay that can stick: while `relay-stuck` exists, switching fails.
    let table = sim
        .board_toml(
            "sim-3",
            "recovery = { tries = 1, backoff = \"500ms\", backoff_max = \"1s\", hang_after = \"3s\" }",
        )
        .replace(
            &format!("\"'{}' sim-board power on", support::BIN),
            &format!("\"test ! -e '{}' && '{}' sim-board power on", stuck.display(), support::BIN),
        )
        .replace(
            &format!("\"'{}' sim-board power off", support::BIN),
            &format!("\"test ! -e '{}' && '{}' sim-board power off", stuck.display(), support::BIN),
        );
    let s = setup(&table, "30s");
    s.wait_available("sim-3");
    let build = firmware_build(&s.http, s.t(), "fw\n");
    let two_commands = |name: &str| {
        format!(
            "name: {name}\nrequires: {{ kind: board, resource: sim-3 }}\ntimeout: 2m\nsteps:\n  - deploy: {{ artifacts: {{ build: {build}, kinds: [firmware] }} }}\n  - shell: {{ run: 'echo first-command', via: console }}\n  - test: {{ run: 'run-tap 2', via: console, timeout: 1m }}\n"
        )
    };

    // It hangs at its second command; a power cycle brings it back; the job is a lab error.
    let id = s.job(&two_commands("hang-once"));
    let j = s.wait(&id, Duration::from_secs(120));
    assert_eq!(j["state"], "error", "{j}\n{}", s.log(&id));
    let recoveries = history(&s.http, s.t(), "sim-3", "recovery");
    assert!(recoveries.iter().any(|e| e["ok"] == true), "{recoveries:?}");
    s.wait_available("sim-3");

    // Again, but its relay sticks while it hangs: the cycle fails, so it goes to
    // maintenance needing a person, with an alert.
    let id = s.job(&two_commands("hang-stuck"));
    wait_for(
        "the first command's output",
        Duration::from_secs(60),
        || s.log(&id).contains("first-command").then_some(()),
    );
    std::fs::write(&stuck, "").unwrap();
    let j = s.wait(&id, Duration::from_secs(120));
    assert_eq!(j["state"], "error", "{j}\n{}", s.log(&id));
    // Out of the pool once the lease-end cleanup (which cannot switch it off either) has
    // given up too.
    let r = wait_for("the board out of the pool", Duration::from_secs(60), || {
        let r = s.http.get("/api/v1/resources/sim-3", s.t()).body;
        let why = r["maintenance"]["reason"].as_str().unwrap_or_default();
        (r["state"] == "maintenance" && !why.starts_with("cleanup after lease")).then_some(r)
    });
    eprintln!("out of the pool: {r}");
    let why = r["maintenance"]["reason"].as_str().unwrap_or_default();
    assert!(why.contains("manual intervention"), "{r}");
    let events = s.http.get("/api/v1/events?kind=alert.raised", s.t());
    assert!(events.text.contains("sim-3"), "{}", events.text);

    // Not placed while out of the pool...
    // (Pinned to it by name the submit is refused outright; by its labels it waits.)
    let waiting = s.job(
        &deploy_spec("sim-3", &build, "run-tap 1", "")
            .replace("resource: sim-3", "labels: { board_type: sim }"),
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(job(&s.http, s.t(), &waiting)["state"], "queued");
    // ...until someone fixes it and a health check passes.
    std::fs::remove_file(&stuck).unwrap();
    sim.restart(&[]);
    let out = s.cli(&["board", "health-check", "sim-3"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let j = s.wait(&waiting, Duration::from_secs(120));
    assert_eq!(j["state"], "passed", "{j}\n{}", s.log(&waiting));
    let health = history(&s.http, s.t(), "sim-3", "health");
    assert!(health.iter().any(|e| e["ok"] == true), "{health:?}");
}

#[test]
fn a_lease_that_expires_with_the_board_on_powers_it_off_and_returns_it() {
    let sim = Sim::start(&[]);
    let s = setup(&sim.board_toml("sim-4", ""), "2s");
    s.wait_available("sim-4");
    let r = s.http.post(
        "/api/v1/leases",
        s.t(),
        json!({"selector": "name=sim-4", "duration": "1h"}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let lease = r.body["id"].as_str().unwrap().to_string();
    let r = s
        .http
        .post("/api/v1/boards/sim-4/power", s.t(), json!({"action": "on"}));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["state"], "done", "{}", r.text);
    assert_eq!(sim.power(), "on");
    // Nobody renews: the lease expires, the server's cleanup switches the board off and
    // returns it to the pool.
    wait_for("the lease to expire", Duration::from_secs(20), || {
        (s.http.get(&format!("/api/v1/leases/{lease}"), s.t()).body["state"] == "expired")
            .then_some(())
    });
    wait_for("the board off", Duration::from_secs(30), || {
        (sim.power() == "off").then_some(())
    });
    s.wait_available("sim-4");
    let power = history(&s.http, s.t(), "sim-4", "power");
    assert!(
        power
            .iter()
            .any(|e| e["action"] == "release" && e["ok"] == true),
        "{power:?}"
    );
}

/// A simulated board poked every second when idle, with `recovery` as its policy, booted
/// by a passing deploy and left on: (the board, the lab, its build).
fn booted_idle_board(name: &str, recovery: &str) -> (Sim, Setup, String) {
    let sim = Sim::start(&[]);
    let table = sim.board_toml(
        name,
        &format!(
            "on_release = \"leave\"\nhealth = {{ interval = \"1s\", console_timeout = \"1s\" }}\nquarantine = {{ health_failures = 2 }}\nrecovery = {recovery}"
        ),
    );
    let s = setup(&table, "30s");
    s.wait_available(name);
    // Before anything booted it, the console is not expected to answer: no probe at all.
    std::thread::sleep(Duration::from_secs(2));
    assert!(history(&s.http, s.t(), name, "health").is_empty());
    let build = firmware_build(&s.http, s.t(), "fw\n");
    deploy_passes(&s, name, &build);
    (sim, s, build)
}

/// A deploy and TAP test on the board that passes, the board back in the pool after.
fn deploy_passes(s: &Setup, name: &str, build: &str) {
    let id = s.job(&deploy_spec(name, build, "run-tap 1", ""));
    assert_eq!(
        s.wait(&id, Duration::from_secs(120))["state"],
        "passed",
        "{}",
        s.log(&id)
    );
    s.wait_available(name);
}

/// `sim-board hang`: the board prints nothing and ignores input until its next power cycle.
fn hang(sim: &Sim) {
    let out = std::process::Command::new(support::BIN)
        .args(["sim-board", "hang", "--state-dir"])
        .arg(sim.state_dir())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn an_idle_board_whose_console_goes_silent_is_quarantined_after_n_silent_pokes() {
    // No automatic power cycles: the silence only counts toward quarantine.
    let (sim, s, _) = booted_idle_board("sim-5", "{ tries = 0 }");
    // Left on and booted: the idle probe pokes its console and it answers.
    wait_for("a passing console poke", Duration::from_secs(30), || {
        history(&s.http, s.t(), "sim-5", "health")
            .into_iter()
            .find(|e| {
                e["ok"] == true
                    && e["detail"]
                        .as_str()
                        .unwrap_or("")
                        .contains("console answers")
            })
    });

    // Told to hang, it says nothing: each poke fails like a failed probe, and the second
    // in a row (its `health_failures`) takes it out of the pool.
    hang(&sim);
    let r = wait_for("the board quarantined", Duration::from_secs(30), || {
        let r = s.http.get("/api/v1/resources/sim-5", s.t()).body;
        (r["state"] == "maintenance").then_some(r)
    });
    let why = r["maintenance"]["reason"].as_str().unwrap_or_default();
    assert!(
        why.contains("quarantined: 2 health checks failed in a row"),
        "{r}"
    );
    let view = board(&s.http, s.t(), "sim-5");
    assert_eq!(view["health_level"], "degraded", "{view}");
    assert!(
        view["health_findings"][0]
            .as_str()
            .unwrap_or("")
            .contains("console silent"),
        "{view}"
    );
    let probes = history(&s.http, s.t(), "sim-5", "health");
    let silent: Vec<_> = probes
        .iter()
        .take_while(|e| e["ok"] == false)
        .filter(|e| {
            e["action"] == "probe"
                && e["detail"]
                    .as_str()
                    .unwrap_or("")
                    .contains("console silent")
        })
        .collect();
    assert!(silent.len() >= 2, "{probes:?}");
    let quarantine = history(&s.http, s.t(), "sim-5", "quarantine");
    assert!(
        quarantine.iter().any(|e| e["action"] == "quarantined"),
        "{quarantine:?}"
    );

    // Only a passing health check (a power cycle clears the hang) returns it.
    let out = s.cli(&["board", "health-check", "sim-5"]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    s.wait_available("sim-5");
}

/// An idle board that hangs (its console silent while on and booted) is power-cycled back
/// by its recovery policy before any job finds it hung, and stays in the pool; the
/// recovery is in its history and events.
#[test]
fn an_idle_board_that_hangs_is_power_cycled_back_and_stays_in_the_pool() {
    let (sim, s, build) = booted_idle_board("sim-6", "{ tries = 2, backoff = \"100ms\" }");
    hang(&sim);
    let recovered = wait_for("the idle recovery", Duration::from_secs(60), || {
        history(&s.http, s.t(), "sim-6", "recovery")
            .into_iter()
            .find(|e| e["ok"] == true)
    });
    assert!(recovered["job_id"].is_null(), "not a job's: {recovered}");
    let detail = recovered["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("idle board hung") && detail.contains("recovered by a power cycle"),
        "{recovered}"
    );
    assert_eq!(sim.power(), "on", "cycled back on");
    // In the pool throughout: one silent poke, then the cycle fixed it.
    let r = s.http.get("/api/v1/resources/sim-6", s.t()).body;
    assert_eq!(r["state"], "available", "{r}");
    // And it answers its console again.
    wait_for(
        "a passing console poke after the cycle",
        Duration::from_secs(30),
        || {
            history(&s.http, s.t(), "sim-6", "health")
                .into_iter()
                .next()
                .filter(|e| e["ok"] == true)
        },
    );
    // A job still runs on it.
    deploy_passes(&s, "sim-6", &build);
}

/// `testfarm console NAME` with stdin held open (no linger): the session runs until the
/// server ends it.
fn open_console(s: &Setup, board: &str, extra: &[&str]) -> std::process::Child {
    std::process::Command::new(support::BIN)
        .args(["console", board, "--url", &s.url, "--token", s.t()])
        .args(extra)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn console_sessions_end_at_their_limit_and_when_the_lease_ends() {
    let sim = Sim::start(&[]);
    let s = setup(&sim.board_toml("sim-6", ""), "30s");
    s.wait_available("sim-6");

    // A short cap: the session ends by itself, and says why.
    let started = std::time::Instant::now();
    let console = open_console(&s, "sim-6", &["--limit", "2s"]);
    let out = wait_output(console, Duration::from_secs(30));
    let took = started.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("this session ends after 2s"), "{err}");
    assert!(
        err.contains("closed: the session reached its limit of 2s (boards.console_session_limit)"),
        "{err}"
    );
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(20),
        "{took:?}"
    );
    // A zero limit is refused with the field named.
    let console = open_console(&s, "sim-6", &["--limit", "0s"]);
    let out = wait_output(console, Duration::from_secs(30));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("limit_ms"), "{err}");

    // The holder of a manual lease watches its console; the lease's end detaches it.
    let r = s.http.post(
        "/api/v1/leases",
        s.t(),
        json!({"selector": "name=sim-6", "duration": "1h"}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let lease = r.body["id"].as_str().unwrap().to_string();
    let epoch = r.body["epoch"].as_u64().unwrap();
    let console = open_console(&s, "sim-6", &[]);
    std::thread::sleep(Duration::from_secs(2)); // attached
    let r = s.http.call(
        "DELETE",
        &format!("/api/v1/leases/{lease}?epoch={epoch}"),
        Some(s.t()),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let out = wait_output(console, Duration::from_secs(30));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("attached to sim-6"), "{err}");
    assert!(
        err.contains("closed: the lease on sim-6 ended: the board was released"),
        "{err}"
    );
    s.wait_available("sim-6");
}
