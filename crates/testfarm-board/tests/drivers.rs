//! Drivers against real processes and real loopback sockets: command power (hanging,
//! failing, status, cycle), HTTP power against a small PDU, command flash, TCP and command
//! consoles fed garbage, long lines and a stop mid-line.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::bounded;
use testfarm_board::BoardError;
use testfarm_board::console::{ConsoleEvent, console_driver};
use testfarm_board::flash::{FlashRequest, flash_driver};
use testfarm_board::parse_boards;
use testfarm_board::power::{PowerAction, PowerOutcome, PowerState, power_driver};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn board(power: &str, console: &str, extra: &str) -> testfarm_board::BoardConfig {
    let toml = format!(
        "[[board]]\nname = \"b1\"\nboard_type = \"t\"\narch = \"arm\"\npower = {power}\nconsole = {console}\n{extra}"
    );
    parse_boards(&toml)
        .unwrap_or_else(|e| panic!("{e}"))
        .remove(0)
}

const TCP_ANY: &str = r#"{ driver = "tcp", address = "127.0.0.1:1" }"#;

#[tokio::test]
async fn a_hanging_power_command_is_killed_with_its_children_and_named() {
    bounded(20, async {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let on = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
        let b = board(
            &format!(r#"{{ driver = "command", on = "{on}", off = "true", timeout = "500ms" }}"#),
            TCP_ANY,
            "",
        );
        let p = power_driver(&b);
        let start = Instant::now();
        let e = p.on().await.unwrap_err();
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
        assert!(matches!(e, BoardError::CommandTimeout { .. }), "{e}");
        assert!(e.to_string().contains("power on b1"), "{e}");
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Gone, or a zombie waiting for init to reap it: either way no longer running.
        let alive = std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| !r.trim_start().starts_with('Z'))
        });
        assert!(!alive, "the background sleep {pid} survived the timeout");
    })
    .await;
}

#[tokio::test]
async fn a_failing_power_command_says_why() {
    bounded(20, async {
        let b = board(
            r#"{ driver = "command", on = "echo relay 3 not responding >&2; exit 3", off = "true" }"#,
            TCP_ANY,
            "",
        );
        let e = power_driver(&b).on().await.unwrap_err();
        let BoardError::CommandFailed { status, stderr, .. } = &e else {
            panic!("{e}")
        };
        assert!(status.contains('3'), "{status}");
        assert!(stderr.contains("relay 3"), "{stderr}");
        assert!(e.to_string().contains("relay 3 not responding"), "{e}");
    })
    .await;
}

#[tokio::test]
async fn command_power_status_and_cycle() {
    bounded(20, async {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let l = log.display();
        let b = board(
            &format!(
                r#"{{ driver = "command", on = "echo on-{{{{ board.name }}}} >> {l}", off = "echo {{{{ action }}}} >> {l}", status = "echo ON", status_on = "(?i)^on", cycle_delay = "10ms" }}"#
            ),
            TCP_ANY,
            "",
        );
        let p = power_driver(&b);
        assert_eq!(p.cycle().await.unwrap(), PowerOutcome::Done(PowerState::On));
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "off\non-b1\n");
        assert_eq!(p.status().await.unwrap(), PowerOutcome::Done(PowerState::On));

        let manual = board(r#"{ driver = "manual" }"#, TCP_ANY, "");
        let out = power_driver(&manual).act(PowerAction::Cycle).await.unwrap();
        assert!(matches!(out, PowerOutcome::OperatorActionNeeded { action: PowerAction::Cycle, .. }));
    })
    .await;
}

/// A PDU that answers one request per connection and reports what it was asked.
async fn pdu(answer: &'static str, status: u16) -> (String, tokio::sync::mpsc::Receiver<String>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let mut buf = vec![0u8; 8192];
            let mut got = Vec::new();
            // Headers and a small body arrive together on loopback; read until a pause.
            while let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await
            {
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            let _ = tx.send(String::from_utf8_lossy(&got).into_owned()).await;
            let resp = format!(
                "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                answer.len()
            );
            let _ = s.write_all(resp.as_bytes()).await;
        }
    });
    (addr, rx)
}

#[tokio::test]
async fn http_power_sends_templated_requests_with_auth() {
    bounded(20, async {
        let (addr, mut seen) = pdu("on", 200).await;
        // Setting a variable is unsafe in edition 2024 (denied here): PATH is always set,
        // and stands in for the token variable.
        let token = std::env::var("PATH").unwrap();
        let b = board(
            &format!(
                r#"{{ driver = "http", url = "http://{addr}/outlet/{{{{ board.name }}}}/{{{{ action }}}}", method = "PUT", body = "state={{{{ action }}}}", bearer_env = "PATH", timeout = "2s" }}"#
            ),
            TCP_ANY,
            "",
        );
        let p = power_driver(&b);
        assert_eq!(p.off().await.unwrap(), PowerOutcome::Done(PowerState::Off));
        let req = seen.recv().await.unwrap();
        assert!(req.starts_with("PUT /outlet/b1/off "), "{req}");
        assert!(req.contains(&format!("bearer {token}")) || req.contains(&format!("Bearer {token}")), "{req}");
        assert!(req.ends_with("state=off"), "{req}");
        assert_eq!(p.status().await.unwrap(), PowerOutcome::Done(PowerState::On));

        let (addr, _seen) = pdu("outlet locked", 409).await;
        let b = board(
            &format!(r#"{{ driver = "http", url = "http://{addr}/o/{{{{ action }}}}" }}"#),
            TCP_ANY,
            "",
        );
        let e = power_driver(&b).on().await.unwrap_err();
        assert!(matches!(e, BoardError::Http { .. }) && e.to_string().contains("409"), "{e}");
        assert!(e.to_string().contains("outlet locked"), "{e}");
    })
    .await;
}

#[tokio::test]
async fn flash_command_renders_artifacts_and_is_bounded() {
    bounded(20, async {
        let dir = tempfile::tempdir().unwrap();
        let fw = dir.path().join("fw.bin");
        std::fs::write(&fw, b"firmware").unwrap();
        let out = dir.path().join("flashed");
        let b = board(
            r#"{ driver = "manual" }"#,
            TCP_ANY,
            &format!(
                "flash = {{ driver = \"command\", run = \"cp {{{{ artifacts.firmware }}}} {} && echo flashed {{{{ board.name }}}}\", timeout = \"5s\" }}",
                out.display()
            ),
        );
        let f = flash_driver(&b).unwrap();
        let req = FlashRequest {
            artifacts: BTreeMap::from([("firmware".to_string(), fw.clone())]),
            config: None,
        };
        let report = f.flash(&req).await.unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"firmware");
        assert!(report.output.contains("flashed b1"), "{}", report.output);
        let e = f.flash(&FlashRequest::default()).await.unwrap_err();
        assert!(matches!(e, BoardError::Template { .. }), "{e}");

        let b = board(
            r#"{ driver = "manual" }"#,
            TCP_ANY,
            "flash = { driver = \"command\", run = \"sleep 30\", timeout = \"300ms\" }",
        );
        let e = flash_driver(&b).unwrap().flash(&req).await.unwrap_err();
        assert!(matches!(e, BoardError::CommandTimeout { .. }), "{e}");
    })
    .await;
}

#[tokio::test]
async fn tcp_console_survives_garbage_long_lines_and_a_stop_mid_line() {
    bounded(20, async {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            s.write_all(b"U-Boot 2024.01\r\n").await.unwrap();
            s.write_all(&[0xff, 0xfe, 0x00, 0x81, 0x90, 0x07, b'\n'])
                .await
                .unwrap();
            s.write_all(&[b'x'; 100]).await.unwrap();
            s.write_all(b"\nlogin: ").await.unwrap();
            let mut typed = [0u8; 5];
            s.read_exact(&mut typed).await.unwrap();
            s.write_all(b"typed ").await.unwrap();
            s.write_all(&typed[..4]).await.unwrap();
            // Stops mid-line and hangs up.
        });
        let b = board(
            r#"{ driver = "manual" }"#,
            &format!(r#"{{ driver = "tcp", address = "{addr}", max_line = 64 }}"#),
            "",
        );
        let mut c = console_driver(&b).open().await.unwrap();
        let mut lines = Vec::new();
        loop {
            match c.next().await {
                ConsoleEvent::Line(l) => {
                    if l.partial && l.text == "login: " {
                        c.write(b"root\n").await.unwrap();
                    }
                    lines.push(l);
                }
                ConsoleEvent::Closed { reason } => {
                    assert!(reason.contains("end"), "{reason}");
                    break;
                }
            }
        }
        server.await.unwrap();
        let texts: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts[0], "U-Boot 2024.01");
        assert!(lines[1].garbage, "{:?}", lines[1]);
        assert!(!lines[0].garbage);
        assert_eq!((texts[2].len(), lines[2].truncated), (64, true));
        assert_eq!(texts[3].len(), 36);
        assert_eq!((texts[4], lines[4].partial), ("login: ", true));
        assert_eq!((texts[5], lines[5].partial), ("typed root", true));
        assert!(lines.windows(2).all(|w| w[0].since_open <= w[1].since_open));
        // Closed stays closed.
        assert!(matches!(c.next().await, ConsoleEvent::Closed { .. }));
    })
    .await;
}

#[tokio::test]
async fn tcp_console_refused_and_command_console() {
    bounded(20, async {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let b = board(
            r#"{ driver = "manual" }"#,
            &format!(r#"{{ driver = "tcp", address = "{addr}", connect_timeout = "2s" }}"#),
            "",
        );
        let e = console_driver(&b).open().await.unwrap_err();
        assert!(matches!(e, BoardError::Console { .. }), "{e}");

        let b = board(
            r#"{ driver = "manual" }"#,
            r#"{ driver = "command", command = "echo console of {{ board.name }}; exec cat" }"#,
            "",
        );
        let mut c = console_driver(&b).open().await.unwrap();
        assert!(
            common::wait_for(&mut c, "^console of b1$", 5)
                .await
                .is_some()
        );
        c.write(b"typed back\n").await.unwrap();
        assert!(common::wait_for(&mut c, "^typed back$", 5).await.is_some());
    })
    .await;
}

#[tokio::test]
async fn the_health_probe_is_graded_and_bounded() {
    use testfarm_board::probe::run_probe;
    use testfarm_board::rules::health::HealthLevel;
    bounded(20, async {
        let b = board(
            r#"{ driver = "manual" }"#,
            TCP_ANY,
            r#"health = { probe = "echo board={{ board.name }}; echo temp_c=90", thresholds = { temp_c = { warn = 70.0, degraded = 85.0 } } }"#,
        );
        let r = run_probe(&b).await.unwrap().unwrap();
        assert_eq!(r.level, HealthLevel::Degraded, "{r:?}");
        assert_eq!(r.values.get("board").map(String::as_str), Some("b1"));
        let b = board(
            r#"{ driver = "manual" }"#,
            TCP_ANY,
            r#"health = { probe = "sleep 30", timeout = "300ms" }"#,
        );
        let e = run_probe(&b).await.unwrap().unwrap_err();
        assert!(matches!(e, BoardError::CommandTimeout { .. }), "{e}");
        assert!(run_probe(&board(r#"{ driver = "manual" }"#, TCP_ANY, "")).await.is_none());
    })
    .await;
}
