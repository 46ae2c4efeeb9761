//! Board work against the real simulated board (a `testfarm-agent-sim-board` process on a
//! TCP console), switched by the real `command` power driver: configuration, verification,
//! a deploy job through the executor (artifacts from a small local artifact server, flashed
//! by a command), a board that never boots, a board that hangs mid-job (recovered, or
//! not), and board actions. Reports and logs are recorded in memory. Every test bounds
//! its own time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use testfarm_agent::board::{BoardHandle, BoardReports, BoardTarget, actions, register};
use testfarm_agent::client::Client;
use testfarm_agent::config::AgentConfig;
use testfarm_agent::control::JobControl;
use testfarm_agent::executor::{
    self, ExecSettings, JobResult, JobRun, ReportError, Reporter, Target,
};
use testfarm_agent::logs::{self, ChunkSink, SinkError};
use testfarm_api::agent::{Outcome, StepReport};
use testfarm_api::board::{BoardAction, BoardActionKind, BoardReport, PowerState};
use testfarm_core::JobSpec;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SIM: &str = env!("CARGO_BIN_EXE_testfarm-agent-sim-board");

async fn bounded<F: std::future::Future<Output = T>, T>(secs: u64, f: F) -> T {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .unwrap_or_else(|_| panic!("test did not finish within {secs}s"))
}

/// A simulated board process; killed on drop.
struct Sim {
    _process: testfarm_board::sim::process::SimProcess,
    dir: tempfile::TempDir,
    console: String,
}

impl Sim {
    async fn start(extra: &[&str]) -> Sim {
        let dir = tempfile::tempdir().unwrap();
        let mut args = vec!["--line-delay", "5"];
        args.extend_from_slice(extra);
        let p = testfarm_board::sim::process::SimProcess::start(
            std::path::Path::new(SIM),
            "tcp:127.0.0.1:0",
            dir.path(),
            &args,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        Sim {
            console: p.console.clone(),
            _process: p,
            dir,
        }
    }

    fn power(&self, action: &str) -> String {
        format!(
            "{SIM} power {action} --state-dir {}",
            self.dir.path().display()
        )
    }

    fn is_on(&self) -> bool {
        std::fs::read_to_string(self.dir.path().join("power")).is_ok_and(|s| s.starts_with("on"))
    }

    /// Its `[[board]]` table; `on` overrides the power-on command.
    fn toml(&self, on: Option<&str>, extra: &str) -> String {
        format!(
            r#"
[[board]]
name = "sim-1"
board_type = "sim"
arch = "arm"
labels = {{ rack = "r1" }}
targets = ["sp-sim"]
peripherals = ["ethernet"]
power = {{ driver = "command", on = "{on}", off = "{off}", status = "{status}", timeout = "5s", cycle_delay = "100ms" }}
console = {{ driver = "tcp", address = "{console}" }}
boot = {{ expect = "login:", timeout = "10s", silence = "3s", login = "root" }}
recovery = {{ tries = 1, backoff = "100ms", backoff_max = "100ms", hang_after = "2s" }}
quarantine = {{ health_failures = 2, lab_errors = 3, window = "1h" }}
{extra}
"#,
            on = on.map(str::to_string).unwrap_or_else(|| self.power("on")),
            off = self.power("off"),
            status = self.power("status"),
            console = self.console,
        )
    }

    fn handle(&self, on: Option<&str>, extra: &str) -> Arc<BoardHandle> {
        let b = testfarm_board::parse_boards(&self.toml(on, extra))
            .unwrap_or_else(|e| panic!("{e}"))
            .remove(0);
        Arc::new(BoardHandle::new(b))
    }
}

#[derive(Clone, Default)]
struct Recorder {
    steps: Arc<Mutex<Vec<StepReport>>>,
    outputs: Arc<Mutex<BTreeMap<String, Bytes>>>,
    boards: Arc<Mutex<Vec<BoardReport>>>,
    client: Option<Client>,
}

impl Reporter for Recorder {
    async fn step(&self, report: StepReport) -> Result<(), ReportError> {
        self.steps.lock().unwrap().push(report);
        Ok(())
    }
    async fn output(&self, name: &str, body: Bytes) -> Result<(), ReportError> {
        self.outputs.lock().unwrap().insert(name.to_string(), body);
        Ok(())
    }
    fn client(&self) -> Option<&Client> {
        self.client.as_ref()
    }
    async fn board_report(&self, _board: &str, report: BoardReport) {
        self.boards.lock().unwrap().push(report);
    }
}

impl BoardReports for Recorder {
    async fn board_report(&self, _board: &str, report: BoardReport) {
        self.boards.lock().unwrap().push(report);
    }
}

#[derive(Default, Clone)]
struct MemLog(Arc<Mutex<Vec<u8>>>);

impl ChunkSink for MemLog {
    async fn put(&self, _seq: u64, body: Bytes) -> Result<(), SinkError> {
        self.0.lock().unwrap().extend_from_slice(&body);
        Ok(())
    }
}

struct Ran {
    result: Option<JobResult>,
    steps: Vec<StepReport>,
    outputs: BTreeMap<String, Bytes>,
    boards: Vec<BoardReport>,
    log: String,
}

async fn run_job(board: &Arc<BoardHandle>, yaml: &str, client: Option<Client>) -> Ran {
    let spec = JobSpec::parse(yaml).unwrap_or_else(|e| panic!("{e}"));
    let job = JobRun {
        job_id: "01JOBBOARD".into(),
        lease_id: "01LEASE".into(),
        epoch: 1,
        resource: "sim-1".into(),
        vars: spec.vars.clone(),
        spec,
        timeout: Some(Duration::from_secs(80)),
    };
    let work = tempfile::tempdir().unwrap();
    let settings = ExecSettings {
        work_dir: work.path().to_path_buf(),
        kill_grace: Duration::from_secs(1),
        always_timeout: Duration::from_secs(20),
        keep_work_dirs: false,
    };
    let rec = Recorder {
        client,
        ..Recorder::default()
    };
    let control = JobControl::new();
    let mem = MemLog::default();
    let (log, shipper) = logs::spawn(mem.clone(), control.clone());
    let target = Target::Board(BoardTarget(board.clone()));
    let result = executor::execute(&job, &settings, &target, &rec, &log, &control).await;
    drop(log);
    let _ = shipper.finish().await;
    Ran {
        result,
        steps: rec.steps.lock().unwrap().clone(),
        outputs: rec.outputs.lock().unwrap().clone(),
        boards: rec.boards.lock().unwrap().clone(),
        log: String::from_utf8_lossy(&mem.0.lock().unwrap()).into_owned(),
    }
}

/// A tiny artifact repository on loopback: one build with one firmware artifact, as
/// `GET /api/v1/artifacts?build=…` and `GET /api/v1/artifacts/{sha256}` answer.
async fn artifact_server(build: &str, body: &'static [u8]) -> String {
    let sha = hex(&Sha256::digest(body));
    let listing = serde_json::json!({
        "items": [{
            "build_id": build, "name": "fw.bin", "kind": "firmware", "sha256": sha,
            "size": body.len(), "created_at": "2026-12-01T00:00:00Z",
            "commit": "abc123", "branch": "main", "arch": "arm"
        }]
    })
    .to_string();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let (listing, sha) = (listing.clone(), sha.clone());
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                let (ctype, extra, payload): (&str, String, Vec<u8>) = if path
                    .starts_with("/api/v1/artifacts?")
                {
                    ("application/json", String::new(), listing.into_bytes())
                } else if path == format!("/api/v1/artifacts/{sha}") {
                    (
                        "application/octet-stream",
                        format!("x-checksum-sha256: {sha}\r\n"),
                        body.to_vec(),
                    )
                } else {
                    let resp =
                        "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
                    let _ = s.write_all(resp.as_bytes()).await;
                    return;
                };
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: {ctype}\r\n{extra}content-length: {}\r\nconnection: close\r\n\r\n",
                    payload.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
                let _ = s.write_all(&payload).await;
                let _ = s.shutdown().await;
            });
        }
    });
    format!("http://{addr}")
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn outcome(r: &Ran) -> Outcome {
    r.result
        .as_ref()
        .map(|r| r.outcome)
        .unwrap_or(Outcome::Skipped)
}

fn reason(r: &Ran) -> String {
    r.result
        .as_ref()
        .and_then(|r| r.reason.clone())
        .unwrap_or_default()
}

#[test]
fn an_agent_config_with_a_bad_board_is_refused_with_line_and_column() {
    let text = "url = \"http://x\"\nname = \"a\"\n\n[[board]]\nname = \"b1\"\nboard_type = \"t\"\narch = \"arm\"\npower = { driver = \"command\", on = \"true\", off = \"true\" }\nconsole = { driver = \"tcp\", adress = \"127.0.0.1:1\" }\n";
    let e = AgentConfig::parse(Path::new("agent.toml"), text).unwrap_err();
    assert_eq!(e.line, 9, "{e}");
    assert!(e.column > 1, "{e}");
    assert!(e.message.contains("board `b1`"), "{e}");
    assert!(e.message.contains("adress"), "{e}");
    assert!(e.to_string().starts_with("agent.toml:9:"), "{e}");
    let good = text.replace("adress", "address");
    let c = AgentConfig::parse(Path::new("agent.toml"), &good).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.boards.0.len(), 1);
}

#[tokio::test]
async fn verification_finds_a_sim_board_and_names_an_unreachable_one() {
    bounded(30, async {
        let sim = Sim::start(&[]).await;
        let b = sim.handle(None, "");
        let v = register::verify(&b).await;
        assert_eq!(v.offline_reason, None, "{v:?}");
        let all = v.lines.join("\n");
        assert!(all.contains("power (command): status off"), "{all}");
        assert!(all.contains("console: open"), "{all}");
        let r = register::resource(&b, &v);
        assert_eq!(r.labels.get("board_type"), Some("sim"));
        assert_eq!(r.labels.get("arch"), Some("arm"));
        assert_eq!(r.labels.get("rack"), Some("r1"));
        assert_eq!(r.capabilities.targets, vec!["sp-sim".to_string()]);
        assert_eq!(r.capabilities.peripherals, vec!["ethernet".to_string()]);
        let info = r.board.clone().unwrap();
        assert_eq!(info.power_method.as_deref(), Some("command"));
        assert_eq!(r.quarantine.unwrap().health_failures, 2);
        assert!(!b.hub.is_open(), "verification leaves the console detached");

        // Nothing listens on the console, and the power command fails.
        let dead = "[[board]]\nname = \"gone-1\"\nboard_type = \"sim\"\narch = \"arm\"\npower = { driver = \"command\", on = \"true\", off = \"true\", status = \"echo relay gone >&2; exit 2\" }\nconsole = { driver = \"tcp\", address = \"127.0.0.1:1\", connect_timeout = \"1s\" }\n";
        let gone = BoardHandle::new(testfarm_board::parse_boards(dead).unwrap().remove(0));
        let v = register::verify(&gone).await;
        let why = v.offline_reason.clone().expect("an unreachable board is offline");
        assert!(why.contains("console cannot be opened"), "{why}");
        assert!(why.contains("power does not answer"), "{why}");
        assert!(register::resource(&gone, &v).offline_reason.is_some());
    })
    .await;
}

#[tokio::test]
async fn a_board_deploy_flashes_power_cycles_boots_and_runs_tap_over_the_console() {
    bounded(90, async {
        let sim = Sim::start(&[]).await;
        let flashed = sim.dir.path().join("flashed.bin");
        let flash = format!(
            "flash = {{ driver = \"command\", run = \"cp {{{{ artifacts.firmware }}}} {}\", timeout = \"20s\" }}",
            flashed.display()
        );
        let b = sim.handle(None, &flash);
        let build = "01JBXD0000000000000000AAAA";
        let url = artifact_server(build, b"firmware bytes").await;
        let client = Client::new(&url, "agent-token").unwrap();
        let yaml = format!(
            "name: board-smoke\nrequires: {{ kind: board }}\nsteps:\n  - deploy: {{ artifacts: {{ build: {build}, kinds: [firmware] }} }}\n  - boot: {{ expect: 'login:', timeout: 20s }}\n  - test: {{ run: run-tap 3, via: console, timeout: 30s }}\n  - shell: {{ run: uname -a, via: console, timeout: 30s }}\n"
        );
        let r = run_job(&b, &yaml, Some(client)).await;
        assert_eq!(outcome(&r), Outcome::Passed, "{}\n{}", reason(&r), r.log);
        assert_eq!(std::fs::read(&flashed).unwrap(), b"firmware bytes");
        assert!(r.log.contains("TAP_START run-tap 3\n"), "{}", r.log);
        assert!(r.log.contains("\nok 3 - sim test 3\n"), "{}", r.log);
        assert!(r.log.contains("TAP_END run-tap 3 exit=0\n"), "{}", r.log);
        assert!(r.log.contains("Linux sim-board 6.1.0-sim"), "{}", r.log);
        assert!(r.steps.iter().all(|s| s.outcome == Outcome::Passed), "{:?}", r.steps);
        let console = String::from_utf8_lossy(&r.outputs["console.log"]).into_owned();
        assert!(console.contains("Starting kernel"), "{console}");
        assert!(console.lines().all(|l| l.starts_with("20")), "timestamped: {console}");
        let flash_ok = r.boards.iter().any(|x| matches!(x, BoardReport::Flash { ok: true, build_id: Some(id), .. } if id == build));
        assert!(flash_ok, "{:?}", r.boards);
        assert!(r.boards.iter().any(|x| matches!(x, BoardReport::Power { action, ok: true, .. } if action == "cycle")), "{:?}", r.boards);
        assert!(r.boards.iter().any(|x| matches!(x, BoardReport::Deployed { booted: true, .. })), "{:?}", r.boards);
        // The job's end leaves the board off with its console detached.
        assert!(r.boards.iter().any(|x| matches!(x, BoardReport::Power { action, ok: true, .. } if action == "off")), "{:?}", r.boards);
        assert!(!sim.is_on());
        assert!(!b.hub.is_open());
        assert_eq!(b.holder(), None);
    })
    .await;
}

#[tokio::test]
async fn a_board_that_never_shows_the_prompt_ends_error_with_the_console_tail() {
    bounded(60, async {
        let sim = Sim::start(&["--no-boot"]).await;
        let b = sim.handle(None, "");
        let yaml = "name: no-boot\nrequires: { kind: board }\nsteps:\n  - boot: { expect: 'login:', timeout: 3s }\n  - test: { run: run-tap 1, via: console }\n";
        let r = run_job(&b, yaml, None).await;
        assert_eq!(outcome(&r), Outcome::Error, "{}", r.log);
        let why = reason(&r);
        assert!(why.contains("did not boot"), "{why}");
        assert!(why.contains("testfarm board restore sim-1"), "{why}");
        assert!(r.log.contains("console tail"), "{}", r.log);
        assert!(r.log.contains("U-Boot SPL"), "{}", r.log);
        assert!(r.outputs.contains_key("console.log"));
        assert_eq!(r.steps[1].outcome, Outcome::Skipped);
        assert!(!sim.is_on());
    })
    .await;
}

#[tokio::test]
async fn a_board_that_hangs_mid_job_is_recovered_by_a_power_cycle() {
    bounded(60, async {
        let sim = Sim::start(&["--hang-after", "1"]).await;
        let b = sim.handle(None, "");
        let yaml = "name: hang\nrequires: { kind: board }\nsteps:\n  - boot: {}\n  - shell: { run: echo one, via: console }\n  - shell: { run: echo two, via: console }\n";
        let r = run_job(&b, yaml, None).await;
        assert_eq!(outcome(&r), Outcome::Error, "{}", r.log);
        assert_eq!(r.steps[1].outcome, Outcome::Passed, "{:?}", r.steps);
        let why = reason(&r);
        assert!(why.contains("the board hung"), "{why}");
        assert!(why.contains("recovered by a power cycle"), "{why}");
        assert!(
            r.boards.iter().any(|x| matches!(x, BoardReport::Recovery { recovered: true, .. })),
            "{:?}",
            r.boards
        );
    })
    .await;
}

#[tokio::test]
async fn a_board_that_keeps_hanging_is_reported_not_recovered() {
    bounded(60, async {
        let sim = Sim::start(&["--hang-after", "1"]).await;
        // Power comes on once; after that the relay does nothing (the board stays dark).
        let once = sim.dir.path().join("once");
        let on = format!(
            "test -e {o} || {{ touch {o}; {p}; }}",
            o = once.display(),
            p = sim.power("on")
        );
        let b = sim.handle(Some(&on), "");
        let yaml = "name: hang\nrequires: { kind: board }\nsteps:\n  - boot: {}\n  - shell: { run: echo one, via: console }\n  - shell: { run: echo two, via: console }\n";
        let r = run_job(&b, yaml, None).await;
        assert_eq!(outcome(&r), Outcome::Error, "{}", r.log);
        assert_eq!(r.steps[1].outcome, Outcome::Passed, "{:?}", r.steps);
        let why = reason(&r);
        assert!(why.contains("not recovered"), "{why}");
        assert!(
            r.boards.iter().any(|x| matches!(x, BoardReport::Recovery { recovered: false, .. })),
            "{:?}",
            r.boards
        );
    })
    .await;
}

fn action(kind: BoardActionKind) -> BoardAction {
    BoardAction {
        id: "01ACTION".into(),
        board: "sim-1".into(),
        action: kind,
        requested_by: "test".into(),
        reason: None,
        lease_id: None,
        session: None,
    }
}

#[tokio::test]
async fn power_actions_are_answered() {
    bounded(60, async {
        let sim = Sim::start(&[]).await;
        let b = sim.handle(None, "");
        let rec = Recorder::default();
        let on = actions::handle(&b, &action(BoardActionKind::PowerOn), &rec, None).await;
        assert!(on.ok, "{on:?}");
        assert_eq!(on.power, Some(PowerState::On));
        assert!(sim.is_on());
        let st = actions::handle(&b, &action(BoardActionKind::PowerStatus), &rec, None).await;
        assert_eq!(st.power, Some(PowerState::On), "{st:?}");
        let off = actions::handle(&b, &action(BoardActionKind::PowerOff), &rec, None).await;
        assert!(off.ok && !sim.is_on(), "{off:?}");
        // Release twice: idempotent.
        for _ in 0..2 {
            let rel = actions::handle(&b, &action(BoardActionKind::Release), &rec, None).await;
            assert!(rel.ok, "{rel:?}");
        }
        let power_reports = rec
            .boards
            .lock()
            .unwrap()
            .iter()
            .filter(|r| matches!(r, BoardReport::Power { .. }))
            .count();
        assert!(power_reports >= 5, "{:?}", rec.boards.lock().unwrap());
        // A health check power-cycles, sees the prompt, logs in and gets an answer.
        let hc = actions::handle(&b, &action(BoardActionKind::HealthCheck), &rec, None).await;
        assert!(hc.ok, "{hc:?}");
        assert!(
            rec.boards.lock().unwrap().iter().any(|r| matches!(r, BoardReport::Health { check: true, passed: true, .. })),
            "{:?}",
            rec.boards.lock().unwrap()
        );

        // Manual power: a person is asked.
        let manual = "[[board]]\nname = \"m-1\"\nboard_type = \"sim\"\narch = \"arm\"\npower = { driver = \"manual\", instructions = \"press the red button\" }\nconsole = { driver = \"tcp\", address = \"127.0.0.1:1\" }\n";
        let m = BoardHandle::new(testfarm_board::parse_boards(manual).unwrap().remove(0));
        let r = actions::handle(&m, &action(BoardActionKind::PowerCycle), &rec, None).await;
        assert!(!r.ok && r.operator_action_needed, "{r:?}");
        assert!(r.detail.contains("red button"), "{r:?}");

        // A board without drivers.
        let r = actions::without_drivers(&action(BoardActionKind::PowerOn));
        assert!(!r.ok && r.detail.contains("no drivers configured"), "{r:?}");
        let r = actions::without_drivers(&action(BoardActionKind::Release));
        assert!(r.ok, "{r:?}");
    })
    .await;
}

#[tokio::test]
async fn a_reboot_mid_step_and_a_flash_that_never_ends_are_named_errors() {
    bounded(60, async {
        let sim = Sim::start(&[]).await;
        let b = sim.handle(None, "");
        let yaml = "name: reboot\nrequires: { kind: board }\nsteps:\n  - boot: {}\n  - shell: { run: reboot, via: console }\n";
        let r = run_job(&b, yaml, None).await;
        assert_eq!(outcome(&r), Outcome::Error, "{}", r.log);
        let why = reason(&r);
        assert!(why.contains("the board rebooted during the step"), "{why}");

        let hang = "flash = { driver = \"command\", run = \"sleep 30; echo {{ artifacts.firmware }}\", timeout = \"1s\" }";
        let b = sim.handle(None, hang);
        let build = "01JBXD0000000000000000AAAB";
        let url = artifact_server(build, b"fw").await;
        let client = Client::new(&url, "agent-token").unwrap();
        let yaml = format!(
            "name: flash-hang\nrequires: {{ kind: board }}\nsteps:\n  - deploy: {{ artifacts: {{ build: {build} }} }}\n"
        );
        let t0 = std::time::Instant::now();
        let r = run_job(&b, &yaml, Some(client)).await;
        assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
        assert_eq!(outcome(&r), Outcome::Error, "{}", r.log);
        let why = reason(&r);
        assert!(why.contains("flashing failed"), "{why}");
        assert!(why.contains("did not finish"), "{why}");
        assert!(why.contains("testfarm board restore sim-1"), "{why}");
        assert!(
            r.boards.iter().any(|x| matches!(x, BoardReport::Flash { ok: false, .. })),
            "{:?}",
            r.boards
        );
    })
    .await;
}

#[tokio::test]
async fn a_console_session_relays_the_board_both_ways_over_a_websocket() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    bounded(60, async {
        let sim = Sim::start(&[]).await;
        let b = sim.handle(None, "");
        // The server's side of the session: checks the agent's token, types, reads.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            #[allow(clippy::result_large_err)]
            let check = |req: &tokio_tungstenite::tungstenite::handshake::server::Request, resp| {
                assert_eq!(req.uri().path(), "/api/v1/agents/console/S1");
                let auth = req
                    .headers()
                    .get("authorization")
                    .unwrap()
                    .to_str()
                    .unwrap();
                assert_eq!(auth, "Bearer agent-token");
                Ok(resp)
            };
            let mut ws = tokio_tungstenite::accept_hdr_async(s, check).await.unwrap();
            let mut seen = String::new();
            let mut typed_login = false;
            while let Some(Ok(m)) = ws.next().await {
                if let Message::Binary(b) = m {
                    seen.push_str(&String::from_utf8_lossy(&b));
                }
                if !typed_login && seen.contains("login:") {
                    typed_login = true;
                    ws.send(Message::Binary(Bytes::from_static(b"root\r")))
                        .await
                        .unwrap();
                    ws.send(Message::Binary(Bytes::from_static(b"uname -a\r")))
                        .await
                        .unwrap();
                }
                if seen.contains("Linux sim-board 6.1.0-sim") {
                    break;
                }
            }
            let _ = ws.close(None).await;
            seen
        });
        let client = Client::new(&format!("http://{addr}"), "agent-token").unwrap();
        let mut a = action(BoardActionKind::Console);
        a.session = Some("S1".into());
        let rec = Recorder::default();
        let relay = {
            let b = b.clone();
            tokio::spawn(async move { actions::handle(&b, &a, &rec, Some(&client)).await })
        };
        // Power the board on once the session is attached, so it sees the whole boot.
        for _ in 0..200 {
            if b.hub.is_open() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let on = actions::handle(
            &b,
            &action(BoardActionKind::PowerOn),
            &Recorder::default(),
            None,
        )
        .await;
        assert!(on.ok, "{on:?}");
        let seen = server.await.unwrap();
        assert!(seen.contains("U-Boot SPL"), "{seen}");
        let result = relay.await.unwrap();
        assert!(result.ok, "{result:?}");
        assert!(result.detail.contains("ended"), "{result:?}");
        assert!(!b.hub.is_open(), "the session's end detaches the console");
    })
    .await;
}

#[tokio::test]
async fn probe_all_registers_a_verified_board_and_the_idle_probe_reports_health() {
    bounded(30, async {
        let sim = Sim::start(&[]).await;
        let work = tempfile::tempdir().unwrap();
        let probe = "health = { probe = \"echo temp_c=91\", interval = \"1h\", thresholds = { temp_c = { warn = 70.0, degraded = 85.0 } } }";
        let text = format!(
            "url = \"http://127.0.0.1:1\"\nname = \"a1\"\nwork_dir = \"{}\"\n{}",
            work.path().display(),
            sim.toml(None, probe)
        );
        let c = AgentConfig::parse(Path::new("agent.toml"), &text).unwrap_or_else(|e| panic!("{e}"));
        let p = testfarm_agent::agent::probe_all(&c).await;
        assert_eq!(p.len(), 1);
        let m = p[0].result.as_ref().unwrap();
        assert_eq!(m.resource.offline_reason, None, "{:?}", m.resource.verification);
        assert!(!m.resource.verification.is_empty());
        let Target::Board(b) = &m.target else {
            panic!("a [[board]] runs as a board target")
        };
        let rec = Recorder::default();
        let r = testfarm_agent::board::health::probe_once(&b.0, &rec).await.unwrap();
        let BoardReport::Health { passed, check, values, .. } = r else {
            panic!("{r:?}")
        };
        assert!(!passed && !check);
        assert_eq!(values.get("temp_c").map(String::as_str), Some("91"));
    })
    .await;
}

#[tokio::test]
async fn a_console_that_answers_with_binary_garbage_is_a_named_error() {
    bounded(30, async {
        // A "board" whose shell prompts, then answers every command with line noise.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let Ok((mut s, _)) = listener.accept().await else { return };
            let mut buf = [0u8; 1024];
            let mut seen = Vec::new();
            loop {
                let n = match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                seen.extend_from_slice(&buf[..n]);
                if String::from_utf8_lossy(&seen).contains("__TF_") {
                    for _ in 0..50 {
                        if s.write_all(b"\xff\xfe\x01\x02\x03\x9c\x80\xff\xfe\xfd\n").await.is_err() {
                            return;
                        }
                    }
                    seen.clear();
                } else if seen.contains(&b'\r') {
                    let _ = s.write_all(b"# ").await;
                    seen.clear();
                }
            }
        });
        let toml = format!(
            "[[board]]\nname = \"noisy-1\"\nboard_type = \"t\"\narch = \"arm\"\npower = {{ driver = \"command\", on = \"true\", off = \"true\" }}\nconsole = {{ driver = \"tcp\", address = \"{addr}\" }}\nboot = {{ max_garbage_lines = 5 }}\nrecovery = {{ hang_after = \"5s\" }}\n"
        );
        let b = Arc::new(BoardHandle::new(testfarm_board::parse_boards(&toml).unwrap().remove(0)));
        let yaml = "name: noise\nrequires: { kind: board }\nsteps:\n  - shell: { run: cat /proc/version, via: console }\n";
        let r = run_job(&b, yaml, None).await;
        assert_eq!(outcome(&r), Outcome::Error, "{}", r.log);
        let why = reason(&r);
        assert!(why.contains("unreadable lines in a row"), "{why}");
    })
    .await;
}
