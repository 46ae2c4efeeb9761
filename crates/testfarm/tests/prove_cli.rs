//! `testfarm prove` on real script trees: pass/fail/skip, timeouts that kill the whole
//! process group, parallelism, filters, report files.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_testfarm");

fn prove(dir: &Path, args: &[&str]) -> (Output, Duration) {
    let start = Instant::now();
    let mut child = Command::new(BIN)
        .arg("prove")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = start + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("testfarm prove {args:?} took longer than 60s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    (out, start.elapsed())
}

fn script(dir: &Path, rel: &str, body: &str, executable: bool) -> PathBuf {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
    let mode = if executable { 0o755 } else { 0o644 };
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn validate_junit(path: &Path) {
    let xsd = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../testfarm-tap/tests/data/junit-10.xsd"
    );
    let check = Command::new("xmllint")
        .args(["--noout", "--schema", xsd])
        .arg(path)
        .output()
        .expect("xmllint is required (apt-get install libxml2-utils)");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn a_mixed_tree_with_reports() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    script(
        d,
        "t/01-ok/pass_test.sh",
        "echo 1..2\necho ok 1 - one\necho 'ok 2 - two # SKIP later'\n",
        true,
    );
    script(
        d,
        "t/02-bad/fail_test.sh",
        "echo 1..2\necho ok 1\necho 'not ok 2 - broken'\necho '  ---'\necho '  got: 1'\necho '  ...'\necho oops >&2\n",
        true,
    );
    script(
        d,
        "t/03-skip/skip_test.sh",
        "echo '1..0 # SKIP no board'\n",
        true,
    );
    script(
        d,
        "t/04-noexec/plain_test.sh",
        "echo 1..1\necho ok 1\n",
        false,
    );
    script(d, "t/04-noexec/helper.sh", "echo not a test\n", true);
    script(
        d,
        "t/05-exit/exit_test.sh",
        "echo 1..1\necho ok 1\nexit 3\n",
        true,
    );
    let (out, _) = prove(d, &["--junit", "report.xml", "--json", "report.json"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("t/01-ok/pass_test.sh"), "{text}");
    assert!(text.contains("ok (1 skipped, 0 todo)"), "{text}");
    assert!(text.contains("Failed 1/2 subtests"), "{text}");
    assert!(text.contains("skipped: no board"), "{text}");
    assert!(!text.contains("helper.sh"), "{text}");
    assert!(
        text.contains("non_zero_exit: exited with status 3"),
        "{text}"
    );
    assert!(text.contains("Files=5, Tests=6"), "{text}");
    assert!(text.contains("Result: FAIL"), "{text}");

    validate_junit(&d.join("report.xml"));
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("report.json")).unwrap()).unwrap();
    assert_eq!(v["totals"]["runs"], 5);
    assert_eq!(v["totals"]["passed"], 3);
    assert_eq!(v["totals"]["failed"], 2);
    let runs = v["runs"].as_array().unwrap();
    assert_eq!(runs[1]["name"], "t/02-bad/fail_test.sh");
    assert_eq!(runs[1]["document"]["tests"][1]["yaml"]["got"], 1);
    assert_eq!(runs[1]["system_err"], "oops\n");
}

#[test]
fn timeout_kills_the_process_group() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    // The grandchild records its pid; both it and the script would run for 300s.
    script(
        d,
        "t/hang_test.sh",
        "sleep 300 &\necho $! > grandchild.pid\necho 1..2\necho ok 1 - started\nsleep 300\n",
        true,
    );
    let (out, elapsed) = prove(d, &["--timeout", "1s", "--junit", "r.xml"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(elapsed < Duration::from_secs(15), "took {elapsed:?}");
    assert!(text.contains("timed out after 1s"), "{text}");
    let pid: i32 = std::fs::read_to_string(d.join("grandchild.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // Gone, or a zombie waiting for init to reap it: either way not running.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
        let alive = state.as_deref().is_some_and(|s| {
            let after = s.rsplit(')').next().unwrap_or("");
            !after.trim_start().starts_with('Z')
        });
        if !alive {
            break;
        }
        assert!(Instant::now() < deadline, "grandchild {pid} still running");
        std::thread::sleep(Duration::from_millis(50));
    }
    validate_junit(&d.join("r.xml"));
    let xml = std::fs::read_to_string(d.join("r.xml")).unwrap();
    assert!(xml.contains("<error type=\"timed_out\""), "{xml}");
}

#[test]
fn jobs_run_in_parallel() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    for i in 0..4 {
        script(
            d,
            &format!("t/s{i}_test.sh"),
            "sleep 1\necho 1..1\necho ok 1\n",
            true,
        );
    }
    let (out, elapsed) = prove(d, &["-j", "4"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    // Serially this takes 4s.
    assert!(elapsed < Duration::from_millis(3500), "took {elapsed:?}");
    assert!(stdout(&out).contains("Files=4, Tests=4"));
}

#[test]
fn filter_and_explicit_paths() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    script(d, "t/net/dns_test.sh", "echo 1..1\necho ok 1\n", true);
    script(d, "t/disk/fs_test.sh", "echo 1..1\necho 'not ok 1'\n", true);
    let (out, _) = prove(d, &["--filter", "net"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("Files=1,"));
    let (out, _) = prove(d, &["--filter", "t/*/fs_*"]);
    assert_eq!(out.status.code(), Some(1));
    // an explicit file runs even without the _test.sh name
    let other = script(d, "other.sh", "echo 1..1\necho ok 1\n", true);
    let (out, _) = prove(d, &[other.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
}

#[test]
fn usage_errors_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let (out, _) = prove(tmp.path(), &[]);
    assert_eq!(out.status.code(), Some(2), "no t/ directory");
    std::fs::create_dir(tmp.path().join("t")).unwrap();
    let (out, _) = prove(tmp.path(), &[]);
    assert_eq!(out.status.code(), Some(2), "no tests");
    let (out, _) = prove(tmp.path(), &["--timeout", "soon"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn the_example_tree_passes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/prove");
    let (out, _) = prove(&root, &["-j", "2"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("Result: PASS"), "{text}");
}
