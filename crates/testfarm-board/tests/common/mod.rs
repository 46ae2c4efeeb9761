//! Shared by the integration tests: a bound on every test, and a simulated board process.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use testfarm_board::BoardConfig;
use testfarm_board::console::{Console, ConsoleEvent, ConsoleLine};

pub const SIM: &str = env!("CARGO_BIN_EXE_testfarm-board-sim");

/// Every test's own time limit.
pub async fn bounded<F: std::future::Future<Output = T>, T>(secs: u64, f: F) -> T {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .unwrap_or_else(|_| panic!("test did not finish within {secs}s"))
}

/// A `testfarm-board-sim` process with its own state directory; killed on drop.
pub struct SimBoard {
    _process: testfarm_board::sim::process::SimProcess,
    pub dir: tempfile::TempDir,
    pub console: String,
}

impl SimBoard {
    pub async fn start(console: &str, extra: &[&str]) -> SimBoard {
        let dir = tempfile::tempdir().unwrap();
        let mut args = vec!["--line-delay", "5"];
        args.extend_from_slice(extra);
        let p = testfarm_board::sim::process::SimProcess::start(
            Path::new(SIM),
            console,
            dir.path(),
            &args,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        SimBoard {
            console: p.console.clone(),
            _process: p,
            dir,
        }
    }

    pub fn state_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn power_cmd(&self, action: &str) -> String {
        format!(
            "{SIM} power {action} --state-dir {}",
            self.dir.path().display()
        )
    }

    /// The `[[board]]` an operator would write for it.
    pub fn config(&self, console_table: &str, boot: &str) -> BoardConfig {
        let toml = format!(
            r#"
[[board]]
name = "sim-1"
board_type = "sim"
arch = "arm"
power = {{ driver = "command", on = "{on}", off = "{off}", status = "{status}", timeout = "5s", cycle_delay = "100ms" }}
console = {console_table}
boot = {boot}
"#,
            on = self.power_cmd("on"),
            off = self.power_cmd("off"),
            status = self.power_cmd("status"),
        );
        testfarm_board::parse_boards(&toml).unwrap().remove(0)
    }

    pub fn tcp_config(&self, boot: &str) -> BoardConfig {
        self.config(
            &format!("{{ driver = \"tcp\", address = \"{}\" }}", self.console),
            boot,
        )
    }
}

/// Lines until one matches `pattern` (returned) or `secs` pass (None).
pub async fn wait_for(console: &mut Console, pattern: &str, secs: u64) -> Option<ConsoleLine> {
    let re = regex::Regex::new(pattern).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        tokio::select! {
            ev = console.next() => match ev {
                ConsoleEvent::Line(l) if re.is_match(&l.text) => return Some(l),
                ConsoleEvent::Line(_) => {}
                ConsoleEvent::Closed { .. } => return None,
            },
            _ = tokio::time::sleep_until(deadline) => return None,
        }
    }
}

/// Every line that comes within `ms` milliseconds.
pub async fn drain(console: &mut Console, ms: u64) -> Vec<ConsoleLine> {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(ms);
    let mut lines = Vec::new();
    loop {
        tokio::select! {
            ev = console.next() => match ev {
                ConsoleEvent::Line(l) => lines.push(l),
                ConsoleEvent::Closed { .. } => return lines,
            },
            _ = tokio::time::sleep_until(deadline) => return lines,
        }
    }
}

pub fn tmp_path(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}
