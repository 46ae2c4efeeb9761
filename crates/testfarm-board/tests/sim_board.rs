//! The simulated board driven through the same drivers a real one would be: command power
//! (the sim's own power CLI), TCP and pty (serial driver) consoles, the boot watcher, a
//! board that never boots, and a board that hangs and is recovered by a power cycle.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{SimBoard, bounded, drain, wait_for};
use regex::Regex;
use testfarm_board::boot::{probe_alive, watch_boot};
use testfarm_board::console::{Console, console_driver};
use testfarm_board::power::{PowerOutcome, PowerState, power_driver};
use testfarm_board::rules::boot::{BootRules, BootVerdict};
use testfarm_board::rules::recovery::{RecoveryPolicy, RecoveryStep};

async fn login(c: &mut Console) {
    c.write(b"root\r\n").await.unwrap();
    assert!(
        wait_for(c, r"root@sim-board:~# $", 5).await.is_some(),
        "no shell prompt"
    );
}

async fn command(c: &mut Console, cmd: &str) -> Vec<String> {
    c.write(format!("{cmd}\r\n").as_bytes()).await.unwrap();
    let mut out = Vec::new();
    loop {
        let Some(l) = wait_for(c, ".*", 5).await else {
            panic!("no answer to {cmd}: {out:?}");
        };
        if l.partial && l.text.ends_with("# ") {
            return out;
        }
        if l.text != cmd {
            out.push(l.text);
        }
    }
}

#[tokio::test]
async fn boots_to_login_then_runs_commands_and_tap_then_goes_silent_when_off() {
    bounded(60, async {
        let sim = SimBoard::start("tcp:127.0.0.1:0", &[]).await;
        let board = sim.tcp_config(r#"{ expect = "login: $", timeout = "10s", silence = "5s" }"#);
        let power = power_driver(&board);
        assert_eq!(
            power.status().await.unwrap(),
            PowerOutcome::Done(PowerState::Off)
        );
        let mut console = console_driver(&board).open().await.unwrap();
        assert!(
            drain(&mut console, 300).await.is_empty(),
            "an unpowered board spoke"
        );

        assert_eq!(
            power.on().await.unwrap(),
            PowerOutcome::Done(PowerState::On)
        );
        let mut log = Vec::new();
        let report = watch_boot(&mut console, BootRules::from(&board.boot), 20, &mut |l| {
            log.push(l.text.clone())
        })
        .await;
        assert!(
            report.verdict.booted(),
            "{:?} {:?}",
            report.verdict,
            report.tail
        );
        assert!(log.iter().any(|l| l.contains("U-Boot")), "{log:?}");
        assert!(log.iter().any(|l| l.contains("Linux version")), "{log:?}");
        assert_eq!(
            power.status().await.unwrap(),
            PowerOutcome::Done(PowerState::On)
        );

        login(&mut console).await;
        assert_eq!(
            command(&mut console, "echo hello board").await,
            ["hello board"]
        );
        assert_eq!(command(&mut console, "uname").await, ["Linux"]);
        let tap = command(&mut console, "run-tap 3 fail 2").await;
        assert_eq!(
            tap[..3],
            ["TAP version 13", "1..3", "ok 1 - sim test 1"],
            "{tap:?}"
        );
        assert!(
            tap.contains(&"not ok 2 - sim test 2".to_string()),
            "{tap:?}"
        );
        assert_eq!(tap.last().map(String::as_str), Some("ok 3 - sim test 3"));

        assert_eq!(
            power.off().await.unwrap(),
            PowerOutcome::Done(PowerState::Off)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        console.write(b"echo anyone\r\n").await.unwrap();
        let after = drain(&mut console, 500).await;
        assert!(after.is_empty(), "a powered-off board answered: {after:?}");
    })
    .await;
}

#[tokio::test]
async fn a_board_that_never_boots_times_out_with_the_console_tail() {
    bounded(30, async {
        let sim = SimBoard::start("tcp:127.0.0.1:0", &["--no-boot"]).await;
        let board = sim.tcp_config(r#"{ expect = "login:", timeout = "1500ms" }"#);
        let mut console = console_driver(&board).open().await.unwrap();
        power_driver(&board).on().await.unwrap();
        let start = Instant::now();
        let report = watch_boot(&mut console, BootRules::from(&board.boot), 5, &mut |_| {}).await;
        let took = start.elapsed();
        assert!(
            matches!(report.verdict, BootVerdict::TimedOut { .. }),
            "{:?}",
            report.verdict
        );
        assert!(
            took >= Duration::from_millis(1400) && took < Duration::from_secs(4),
            "{took:?}"
        );
        assert_eq!(
            report.tail.last().map(String::as_str),
            Some("Starting kernel ...")
        );
        assert!(
            report.verdict.describe().contains("not seen"),
            "{}",
            report.verdict.describe()
        );
    })
    .await;
}

#[tokio::test]
async fn an_unpowered_board_is_silent_not_timed_out() {
    bounded(30, async {
        let sim = SimBoard::start("tcp:127.0.0.1:0", &[]).await;
        let board = sim.tcp_config(r#"{ timeout = "5s", silence = "700ms" }"#);
        let mut console = console_driver(&board).open().await.unwrap();
        let report = watch_boot(&mut console, BootRules::from(&board.boot), 5, &mut |_| {}).await;
        assert!(
            matches!(report.verdict, BootVerdict::Silent { .. }),
            "{:?}",
            report.verdict
        );
    })
    .await;
}

#[tokio::test]
async fn a_hung_board_is_detected_and_a_power_cycle_recovers_it() {
    bounded(60, async {
        let sim = SimBoard::start("tcp:127.0.0.1:0", &["--hang-after", "1"]).await;
        let board = sim.tcp_config(r#"{ expect = "login: $", timeout = "10s" }"#);
        let power = power_driver(&board);
        let mut console = console_driver(&board).open().await.unwrap();
        let rules = BootRules::from(&board.boot);
        power.on().await.unwrap();
        assert!(
            watch_boot(&mut console, rules.clone(), 5, &mut |_| {})
                .await
                .verdict
                .booted()
        );
        login(&mut console).await;
        let ping = Regex::new("^ping$").unwrap();
        assert!(probe_alive(&mut console, "echo ping\r\n", &ping, Duration::from_secs(3)).await);
        // That was its one command: now it hangs.
        let start = Instant::now();
        let alive = probe_alive(
            &mut console,
            "echo ping\r\n",
            &ping,
            Duration::from_millis(800),
        )
        .await;
        assert!(!alive, "a hung board answered");
        assert!(start.elapsed() < Duration::from_secs(2));

        let policy = RecoveryPolicy {
            tries: 2,
            backoff: Duration::from_millis(50),
            ..RecoveryPolicy::default()
        };
        let RecoveryStep::PowerCycle { wait, .. } = policy.next(0) else {
            panic!("policy gave up at once")
        };
        tokio::time::sleep(wait).await;
        let recovery = Instant::now();
        assert_eq!(
            power.cycle().await.unwrap(),
            PowerOutcome::Done(PowerState::On)
        );
        assert!(
            watch_boot(&mut console, rules, 5, &mut |_| {})
                .await
                .verdict
                .booted()
        );
        login(&mut console).await;
        assert!(probe_alive(&mut console, "echo ping\r\n", &ping, Duration::from_secs(3)).await);
        let took = recovery.elapsed();
        assert!(took < Duration::from_secs(5), "recovery took {took:?}");
    })
    .await;
}

#[tokio::test]
async fn the_serial_driver_reads_the_sim_board_on_a_pty() {
    bounded(30, async {
        let sim = SimBoard::start("pty", &[]).await;
        assert!(sim.console.starts_with("/dev/"), "{}", sim.console);
        let board = sim.config(
            &format!(
                r#"{{ driver = "serial", device = "{}", baud = 115200 }}"#,
                sim.console
            ),
            r#"{ expect = "login: $", timeout = "10s" }"#,
        );
        let mut console = console_driver(&board).open().await.unwrap();
        power_driver(&board).on().await.unwrap();
        let report = watch_boot(&mut console, BootRules::from(&board.boot), 5, &mut |_| {}).await;
        assert!(
            report.verdict.booted(),
            "{:?} {:?}",
            report.verdict,
            report.tail
        );
        login(&mut console).await;
        assert_eq!(command(&mut console, "uname -a").await.len(), 1);
        let _ = sim.state_dir();
    })
    .await;
}

#[tokio::test]
async fn recovery_gives_up_on_a_board_that_never_boots() {
    use testfarm_board::recover::{RecoveryOutcome, recover};
    bounded(60, async {
        let sim = SimBoard::start("tcp:127.0.0.1:0", &["--no-boot"]).await;
        let board = sim.tcp_config(r#"{ expect = "login: $", timeout = "800ms" }"#);
        let power = power_driver(&board);
        let mut console = console_driver(&board).open().await.unwrap();
        let policy = RecoveryPolicy {
            tries: 2,
            backoff: Duration::from_millis(50),
            backoff_max: Duration::from_millis(100),
            hang_after: Duration::from_secs(1),
        };
        let start = Instant::now();
        let out = recover(
            power.as_ref(),
            &mut console,
            &BootRules::from(&board.boot),
            &policy,
            &mut |_| {},
        )
        .await;
        let RecoveryOutcome::NeedsManualIntervention { reason, attempts } = out else {
            panic!("{out:?}")
        };
        assert!(reason.contains("needs manual intervention"), "{reason}");
        assert_eq!(attempts.len(), 2, "{attempts:?}");
        assert!(attempts[0].contains("not seen"), "{attempts:?}");
        // Two boot timeouts, the waits and two cycles (100 ms delay each): bounded.
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );

        let sim = SimBoard::start("tcp:127.0.0.1:0", &[]).await;
        let board = sim.tcp_config(r#"{ expect = "login: $", timeout = "5s" }"#);
        let mut console = console_driver(&board).open().await.unwrap();
        let out = recover(
            power_driver(&board).as_ref(),
            &mut console,
            &BootRules::from(&board.boot),
            &policy,
            &mut |_| {},
        )
        .await;
        assert!(
            matches!(out, RecoveryOutcome::Recovered { attempts: 1, .. }),
            "{out:?}"
        );
    })
    .await;
}
