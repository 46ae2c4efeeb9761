//! testfarm as a buildomat factory, every part a real process except buildomat-server: a
//! fake buildomat-server on loopback (the one the factory's own contract tests use), a
//! real `testfarm server` with `[buildomat]`, real `testfarm agent`s owning simulated
//! boards (`testfarm sim-board`), and a fake buildomat agent (a shell script) that
//! bootstraps against the fake server the way `buildomat-agent install` does.
//!
//! lease → worker → associate → agent started (its output in the buildomat job) →
//! testfarm restarted in the middle → recycle → destroy → DELETE, the board's job
//! cancelled, its lease ended and the board powered off; and a board whose agent dies
//! during the job: its instance is destroyed, the board leaves the pool (offline, the
//! health rule), and the next buildomat job goes to the other board. Every wait is bounded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod agent_support;
mod board_support;
#[path = "../../testfarm-buildomat/tests/fake_buildomat/mod.rs"]
mod fake_buildomat;
mod support;

use std::time::Duration;

use agent_support::*;
use board_support::*;
use fake_buildomat::Fake;
use support::{Http, cli, stderr, stdout};

const FACTORY_TOKEN: &str = "bmat-factory-token";
const WAIT: Duration = Duration::from_secs(90);

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// The fake buildomat-server on its own runtime (the test itself is blocking).
fn fake() -> (tokio::runtime::Runtime, Fake) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let fake = rt.block_on(Fake::start(FACTORY_TOKEN));
    (rt, fake)
}

/// A lab on a fixed port (so agents find a restarted server) with `[buildomat]` serving
/// `target` on the sim boards, and the fake agent script.
fn lab_for(fake: &Fake, target: &str) -> (support::Lab, u16) {
    let lab = lab("3s", "30s");
    let port = free_port();
    lab.set("server", "listen", &format!("\"127.0.0.1:{port}\""));
    // Agents' long polls must not hold up the restart in the middle.
    lab.set("server", "shutdown_grace", "\"1s\"");
    std::fs::write(lab.path().join("buildomat.token"), FACTORY_TOKEN).unwrap();
    // The fake buildomat agent: bootstraps with the worker's string (as
    // `buildomat-agent install` does), says so, then works until it is stopped.
    let agent = lab.path().join("fake-buildomat-agent");
    std::fs::write(
        &agent,
        "#!/bin/sh\nset -e\ncurl -sSf -X POST -H 'content-type: application/json' \
         -d \"{\\\"bootstrap\\\":\\\"$2\\\",\\\"token\\\":\\\"t\\\"}\" \"$1/0/worker/bootstrap\"\n\
         echo\necho \"fake agent: bootstrapped on $(hostname)\"\nexec sleep 600\n",
    )
    .unwrap();
    std::fs::set_permissions(&agent, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut text = std::fs::read_to_string(lab.config()).unwrap();
    text.push_str(&format!(
        "\n[buildomat]\nurl = {url:?}\ntoken_file = \"buildomat.token\"\npoll = \"300ms\"\n\
         agent_command = \"'{agent}' '{{{{ url }}}}' '{{{{ bootstrap }}}}'\"\n\n\
         [[buildomat.target]]\nid = {target:?}\nboards = \"board_type=sim\"\n",
        url = fake.url,
        agent = agent.display(),
    ));
    std::fs::write(lab.config(), text).unwrap();
    (lab, port)
}

fn instances(http: &Http, token: &str, all: bool) -> Vec<serde_json::Value> {
    let r = http.get(&format!("/api/v1/buildomat/instances?all={all}"), token);
    assert_eq!(r.status, 200, "{}", r.text);
    r.body.as_array().cloned().unwrap()
}

/// The one live instance, once it is running with its worker online on buildomat.
fn running_instance(http: &Http, token: &str, fake: &Fake) -> serde_json::Value {
    wait_for("a running instance with its worker online", WAIT, || {
        let live = instances(http, token, false);
        let i = live.iter().find(|i| i["state"] == "running")?.clone();
        let w = fake
            .live_workers()
            .into_iter()
            .find(|w| w.id == i["worker"].as_str().unwrap_or_default())?;
        (w.online && w.private.as_deref() == i["id"].as_str()).then_some(i)
    })
}

fn ulid() -> String {
    ulid::Ulid::new().to_string()
}

#[test]
fn a_buildomat_job_runs_on_a_board_and_is_torn_down_on_recycle() {
    let (_rt, fake) = fake();
    let target = ulid();
    let bjob = fake.add_job(&target);
    let (lab, _port) = lab_for(&fake, &target);
    let server = lab.start();
    let http = server.http();
    let t = lab.token.clone();
    let at = agent_token(&http, &t, "bench-1");
    let s1 = Sim::start(&[]);
    let s2 = Sim::start(&[]);
    let boards = format!(
        "{}{}",
        s1.board_toml("sim-1", ""),
        s2.board_toml("sim-2", "")
    );
    let agent = Agent::start_tables(&server.url, &at, "bench-1", &boards);
    for b in ["sim-1", "sim-2"] {
        wait_board_state(&http, &t, b, "available", WAIT);
    }

    // Leased, worker created and associated, the agent started on the board's host.
    let i = running_instance(&http, &t, &fake);
    assert_eq!(i["buildomat_job"], bjob.as_str(), "{i}");
    let board = i["board"].as_str().unwrap().to_string();
    let job_id = i["job_id"].as_str().unwrap().to_string();
    let worker = i["worker"].as_str().unwrap().to_string();
    wait_state(&http, &t, &job_id, "running", WAIT);
    wait_board_state(&http, &t, &board, "leased", WAIT);
    // The board's job output reaches the buildomat job's log.
    wait_for("the agent's output appended to the job", WAIT, || {
        let a = fake.inner.lock().unwrap().appended.clone();
        a.iter()
            .any(|(w, l)| w == &worker && l.contains("fake agent: bootstrapped"))
            .then_some(())
    });
    // One job, one worker: nothing else was leased or made.
    assert_eq!(fake.live_workers().len(), 1);

    // The CLI shows it with its buildomat ids.
    let out = cli(&server.url, &t, &["buildomat", "instances"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    for want in [worker.as_str(), bjob.as_str(), board.as_str(), "running"] {
        assert!(table.contains(want), "{want} not in\n{table}");
    }
    // So does the dashboard.
    let page = server.http().call_with_headers(
        "GET",
        "/ui/buildomat",
        &t,
        &[("cookie", &format!("tf_session={t}"))],
        Vec::new(),
    );
    assert_eq!(page.status, 200, "{}", page.text);
    for want in [worker.as_str(), bjob.as_str(), board.as_str(), "running"] {
        assert!(page.text.contains(want), "{want} not on the dashboard page");
    }

    // testfarm restarts in the middle: the instance is picked up again, not duplicated.
    server.stop();
    let server = lab.start();
    let http = server.http();
    std::thread::sleep(Duration::from_secs(2));
    let live = instances(&http, &t, false);
    assert_eq!(live.len(), 1, "{live:?}");
    assert_eq!(live[0]["id"], i["id"], "{live:?}");
    assert_eq!(fake.live_workers().len(), 1);

    // An operator holds the worker: kept, board and all, whatever else happens to it.
    fake.with_worker(&worker, |w| {
        w.hold = true;
        w.recycle = true;
    });
    wait_for("the instance shown held", WAIT, || {
        instances(&http, &t, false)
            .into_iter()
            .find(|x| x["id"] == i["id"] && x["hold"] == true)
    });
    std::thread::sleep(Duration::from_secs(2)); // several passes
    let live = instances(&http, &t, false);
    assert_eq!(live.len(), 1, "{live:?}");
    assert_eq!(live[0]["state"], "running", "{live:?}");
    assert_eq!(fake.live_workers().len(), 1);
    assert_eq!(job(&http, &t, &job_id)["state"], "running");

    // Released, with the job done: buildomat recycles the worker: destroyed, DELETEd, the board's
    // job cancelled, its lease ended and the board off and back in the pool.
    fake.with_worker(&worker, |w| w.hold = false);
    let gone = wait_for("the instance destroyed", WAIT, || {
        instances(&http, &t, true)
            .into_iter()
            .find(|x| x["id"] == i["id"] && x["state"] == "destroyed")
    });
    assert_eq!(gone["destroy_reason"], "recycled", "{gone}");
    assert!(fake.live_workers().is_empty(), "worker not deleted");
    let j = wait_job(&http, &t, &job_id, WAIT);
    assert_eq!(j["state"], "cancelled", "{j}");
    let sim = if board == "sim-1" { &s1 } else { &s2 };
    wait_for("the board powered off", WAIT, || {
        (sim.power() == "off").then_some(())
    });
    wait_board_state(&http, &t, &board, "available", WAIT);
    let lease = http.get(
        &format!("/api/v1/leases/{}", gone["lease_id"].as_str().unwrap()),
        &t,
    );
    assert_eq!(lease.status, 200, "{}", lease.text);
    assert_ne!(lease.body["state"], "active", "{}", lease.text);
    // The factory keeps asking for work now the board is free again.
    let pings = fake.inner.lock().unwrap().pings;
    wait_for("the factory alive on buildomat", WAIT, || {
        let i = fake.inner.lock().unwrap();
        (i.lease_calls > 0 && i.pings + i.lease_calls > pings).then_some(())
    });
    drop(agent);
    let metrics = http.get("/metrics", &t);
    assert_eq!(metrics.status, 200);
}

#[test]
fn a_board_that_fails_during_the_job_leaves_the_pool_and_the_next_job_goes_elsewhere() {
    let (_rt, fake) = fake();
    let target = ulid();
    let first = fake.add_job(&target);
    let (lab, _port) = lab_for(&fake, &target);
    let server = lab.start();
    let http = server.http();
    let t = lab.token.clone();
    // One board per agent, so one board can fail alone.
    let s1 = Sim::start(&[]);
    let s2 = Sim::start(&[]);
    let a1t = agent_token(&http, &t, "bench-1");
    let a2t = agent_token(&http, &t, "bench-2");
    let mut a1 = Agent::start_tables(&server.url, &a1t, "bench-1", &s1.board_toml("sim-1", ""));
    // The second board joins only after the first job is on the first board.
    let i = running_instance(&http, &t, &fake);
    assert_eq!(i["board"], "sim-1", "{i}");
    assert_eq!(i["buildomat_job"], first.as_str(), "{i}");
    let a2 = Agent::start_tables(&server.url, &a2t, "bench-2", &s2.board_toml("sim-2", ""));
    wait_board_state(&http, &t, "sim-2", "available", WAIT);

    // The first board's host dies mid-job: the health rule takes the board out of the
    // pool, the job ends a lab error, the instance is destroyed and its worker deleted.
    a1.kill9();
    let gone = wait_for("the instance destroyed", WAIT, || {
        instances(&http, &t, true)
            .into_iter()
            .find(|x| x["id"] == i["id"] && x["state"] == "destroyed")
    });
    assert_eq!(gone["destroy_reason"], "lab_ended", "{gone}");
    let j = wait_job(&http, &t, i["job_id"].as_str().unwrap(), WAIT);
    assert_eq!(j["state"], "error", "{j}");
    let r = http.get("/api/v1/resources/sim-1", &t).body;
    assert_eq!(r["state"], "offline", "{r}");
    wait_for("the worker deleted", WAIT, || {
        fake.live_workers().is_empty().then_some(())
    });

    // The next buildomat job goes to the other board.
    let second = fake.add_job(&target);
    let i2 = running_instance(&http, &t, &fake);
    assert_eq!(i2["buildomat_job"], second.as_str(), "{i2}");
    assert_eq!(i2["board"], "sim-2", "{i2}");
    drop(a2);
}

#[test]
fn setup_checks_the_server_and_writes_the_section_and_a_private_token_file() {
    let (rt, fake) = fake();
    let lab = support::Lab::new();
    let config = lab.config();
    let token_in = lab.path().join("given.token");
    let setup = |url: &str, token: &str| {
        std::fs::write(&token_in, token).unwrap();
        std::process::Command::new(support::BIN)
            .args(["buildomat", "setup", "-f"])
            .arg(&config)
            .args(["--url", url, "--token-file"])
            .arg(&token_in)
            .args(["--target", "sp-sim=board_type=sim"])
            .output()
            .unwrap()
    };
    let before = std::fs::read_to_string(&config).unwrap();
    let target = fake.add_target("sp-sim");
    let admin = lab.path().join("admin-bmat.token");
    std::fs::write(&admin, fake_buildomat::ADMIN_TOKEN).unwrap();
    let setup = |url: &str, token: &str| {
        let mut out = setup(url, token);
        if out.status.success() {
            return out;
        }
        // Only names need the admin token: retried with it, as an operator would.
        if stderr(&out).contains("admin_token_file") {
            std::fs::write(&token_in, token).unwrap();
            out = std::process::Command::new(support::BIN)
                .args(["buildomat", "setup", "-f"])
                .arg(&config)
                .args(["--url", url, "--token-file"])
                .arg(&token_in)
                .args(["--target", "sp-sim=board_type=sim", "--admin-token-file"])
                .arg(&admin)
                .output()
                .unwrap();
        }
        out
    };

    // A wrong token and a wrong URL are each reported as such, and nothing is written.
    let out = setup(&fake.url, "not-the-token");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("refused the factory token"),
        "{}",
        stderr(&out)
    );
    let dead = format!("http://127.0.0.1:{}", free_port());
    let out = setup(&dead, FACTORY_TOKEN);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot reach buildomat-server"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read_to_string(&config).unwrap(), before);
    assert!(!lab.path().join("buildomat.token").exists());

    // The right ones: the section is written (twice is still once) and the token is 0600.
    for _ in 0..2 {
        let out = setup(&fake.url, FACTORY_TOKEN);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(
            stdout(&out).contains("answered the factory token"),
            "{}",
            stdout(&out)
        );
    }
    let text = std::fs::read_to_string(&config).unwrap();
    assert_eq!(
        text.lines().filter(|l| l.trim() == "[buildomat]").count(),
        1,
        "{text}"
    );
    assert!(text.contains("name = \"sp-sim\""), "{text}");
    assert!(text.contains("boards = \"board_type=sim\""), "{text}");
    let token_file = lab.path().join("buildomat.token");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&token_file).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(
        std::fs::read_to_string(&token_file).unwrap().trim(),
        FACTORY_TOKEN
    );
    assert!(fake.inner.lock().unwrap().pings >= 2);
    assert!(text.contains("admin_token_file"), "{text}");
    // The server reads the section it wrote and resolves the name.
    let config = testfarm_server::config::Config::load(&lab.config()).unwrap();
    let section = config.buildomat.unwrap();
    assert_eq!(section.target[0].name.as_deref(), Some("sp-sim"));
    let resolved = rt
        .block_on(testfarm_server::buildomat::targets::resolve(
            &section,
            Some(fake_buildomat::ADMIN_TOKEN),
        ))
        .unwrap();
    assert!(resolved.contains_key(&target), "{resolved:?}");
}

#[test]
fn a_refused_token_is_logged_once_counted_and_retried() {
    let (_rt, fake) = fake();
    let target = ulid();
    fake.add_job(&target);
    let (lab, _port) = lab_for(&fake, &target);
    std::fs::write(lab.path().join("buildomat.token"), "wrong-token").unwrap();
    let server = lab.start();
    let http = server.http();
    let metric = wait_for("the failure counted in /metrics", WAIT, || {
        let m = http.get("/metrics", &lab.token).text;
        m.lines()
            .find(|l| {
                l.starts_with("testfarm_buildomat_call_failures_total")
                    && l.contains("cause=\"unauthorized\"")
            })
            .map(str::to_string)
    });
    // Retried (with backoff): the counter grows, the warning is not repeated.
    let count = |l: &str| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap();
    let first = count(&metric);
    let later = wait_for("a retry counted", WAIT, || {
        let m = http.get("/metrics", &lab.token).text;
        m.lines()
            .find(|l| {
                l.starts_with("testfarm_buildomat_call_failures_total")
                    && l.contains("cause=\"unauthorized\"")
            })
            .map(count)
            .filter(|c| *c > first)
    });
    assert!(later > first);
    let warned = server
        .stderr_lines()
        .into_iter()
        .filter(|l| l.contains("buildomat factory pass failed"))
        .collect::<Vec<_>>();
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(warned[0].contains("token refused"), "{warned:?}");
    // Nothing was leased with a refused token.
    assert!(fake.live_workers().is_empty());
    assert_eq!(instances(&http, &lab.token, true).len(), 0);
}

#[test]
fn target_names_are_resolved_at_start_and_an_unknown_one_is_reported() {
    let (_rt, fake) = fake();
    let target = fake.add_target("sp-sim");
    fake.add_target("sp-other");
    let bjob = fake.add_job(&target);
    let (lab, _port) = lab_for(&fake, &target);
    std::fs::write(
        lab.path().join("bmat-admin.token"),
        fake_buildomat::ADMIN_TOKEN,
    )
    .unwrap();
    let by_name = |name: &str| {
        let text = std::fs::read_to_string(lab.config()).unwrap();
        let text = text
            .replace(&format!("id = {target:?}"), "name = \"sp-typo\"")
            .replace("name = \"sp-typo\"", &format!("name = {name:?}"))
            .replace(
                "token_file = \"buildomat.token\"\npoll",
                "token_file = \"buildomat.token\"\nadmin_token_file = \"bmat-admin.token\"\npoll",
            );
        std::fs::write(lab.config(), text).unwrap();
    };

    // An unknown name: said once, with the names the server has; counted; nothing leased.
    by_name("sp-typo");
    let server = lab.start();
    let http = server.http();
    wait_for("the failure counted", WAIT, || {
        let m = http.get("/metrics", &lab.token).text;
        m.lines()
            .any(|l| {
                l.starts_with("testfarm_buildomat_call_failures_total")
                    && l.contains("cause=\"unknown_target\"")
            })
            .then_some(())
    });
    let lines = server.stderr_lines();
    let said: Vec<_> = lines
        .iter()
        .filter(|l| l.contains("cannot resolve buildomat targets"))
        .collect();
    assert_eq!(said.len(), 1, "{lines:?}");
    assert!(said[0].contains("sp-typo"), "{said:?}");
    assert!(said[0].contains("sp-other, sp-sim"), "{said:?}");
    assert_eq!(fake.inner.lock().unwrap().lease_calls, 0);
    server.stop();

    // The right name: resolved to its id, and its job runs on a board.
    by_name("sp-sim");
    let server = lab.start();
    let http = server.http();
    let t = lab.token.clone();
    let at = agent_token(&http, &t, "bench-1");
    let sim = Sim::start(&[]);
    let _agent = Agent::start_tables(&server.url, &at, "bench-1", &sim.board_toml("sim-1", ""));
    let i = running_instance(&http, &t, &fake);
    assert_eq!(i["buildomat_job"], bjob.as_str(), "{i}");
    assert_eq!(i["target"], target.as_str(), "{i}");
    // The route is in the OpenAPI document the server serves.
    let doc = http.get("/api/v1/openapi.json", &t).body;
    assert!(
        doc["paths"]["/api/v1/buildomat/instances"]["get"].is_object(),
        "route missing from the OpenAPI document"
    );
}
