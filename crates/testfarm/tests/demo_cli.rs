//! The README's first command: `testfarm demo` starts a server with SQLite, the built-in
//! agent and a virtual lab, runs the example jobs and says where to look.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::BIN;

#[test]
fn demo_runs_the_examples_and_says_where_to_look() {
    let base = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args([
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--exit-after",
            "0",
            "--base-dir",
        ])
        .arg(base.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Bounded: the demo's own waits are 120 s per job; this is the test's.
    let deadline = Instant::now() + Duration::from_secs(150);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the demo did not finish within 150 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(status.success(), "{stdout}\n{stderr}");
    for want in [
        "testfarm demo is running",
        "database",
        "sim-board",
        "local-build",
        "try, in another terminal:",
    ] {
        assert!(stdout.contains(want), "no {want:?} in:\n{stdout}");
    }
    let jobs: Vec<&str> = stdout.lines().filter(|l| l.starts_with("job ")).collect();
    assert_eq!(jobs.len(), 2, "{stdout}");
    assert!(jobs.iter().all(|l| l.contains(" passed ")), "{stdout}");
    // The database it names is a real SQLite file and holds the jobs it ran.
    let db = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("database"))
        .map(str::trim)
        .expect("the demo names its database");
    let q = Command::new("sqlite3")
        .args([db, "SELECT state, COUNT(*) FROM jobs GROUP BY state"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&q.stdout).trim(),
        "passed|2",
        "{db}"
    );
}
