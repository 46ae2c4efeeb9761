//! The README's first command: `testfarm demo` starts a server with SQLite, the built-in
//! agent and a virtual lab, runs the example jobs and says where to look — on a machine with
//! QEMU and on one without it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::ffi::OsString;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::BIN;

/// Runs the demo to its end (with `PATH` replaced when given) and returns its stdout,
/// after checking what every run must show.
fn run_demo(path: Option<&OsString>) -> String {
    let base = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args([
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
    .stderr(Stdio::piped());
    if let Some(p) = path {
        cmd.env("PATH", p);
    }
    let mut child = cmd.spawn().unwrap();
    // Bounded: the demo's own waits are 120 s per job and 900 s for its pipeline (a VM
    // boots under TCG here); this is the test's.
    let deadline = Instant::now() + Duration::from_secs(600);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the demo did not finish within 600 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
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
    // The pipeline: build, then test (in a VM, or on the host without QEMU).
    let stages: Vec<&str> = stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("stage "))
        .collect();
    assert_eq!(stages.len(), 2, "{stdout}");
    assert!(stages.iter().all(|l| l.contains(" passed ")), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("pipeline ") && l.contains(" passed (")),
        "{stdout}"
    );
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
        "passed|4",
        "{db}"
    );
    stdout
}

fn on_path(name: &str) -> bool {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .any(|d| d.join(name).is_file())
}

#[test]
fn demo_runs_the_examples_and_says_where_to_look() {
    let stdout = run_demo(None);
    // What it offers follows what this machine has.
    if on_path("qemu-system-x86_64") {
        assert!(stdout.contains("qemu-host"), "{stdout}");
        assert!(stdout.contains("in a QEMU VM on local-qemu"), "{stdout}");
        assert!(!stdout.contains("skipped"), "{stdout}");
    }
}

/// A machine without QEMU: every program on this one's PATH but `qemu-system-*`.
#[test]
fn demo_without_qemu_says_what_it_skipped_and_why() {
    let bin = tempfile::tempdir().unwrap();
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let link = bin.path().join(&name);
            if name.to_string_lossy().starts_with("qemu-system-") || link.exists() {
                continue;
            }
            std::os::unix::fs::symlink(e.path(), &link).unwrap();
        }
    }
    let path = OsString::from(bin.path());
    assert!(!Path::new(&path).join("qemu-system-x86_64").exists());
    let stdout = run_demo(Some(&path));
    let skipped = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("skipped:"))
        .unwrap_or_else(|| panic!("no skipped line in:\n{stdout}"));
    assert!(skipped.contains("qemu-host"), "{skipped}");
    assert!(skipped.contains("qemu-system-x86_64"), "{skipped}");
    assert!(
        skipped.contains("apt-get install qemu-system-x86"),
        "{skipped}"
    );
    // The pipeline tested on the host instead, and says so.
    assert!(stdout.contains("no QEMU here, so no VM stage"), "{stdout}");
    // Nothing registered a QEMU host it cannot run.
    assert!(
        !stdout
            .lines()
            .any(|l| l.contains(" qemu-host ") && !l.contains("skipped")),
        "{stdout}"
    );
}
