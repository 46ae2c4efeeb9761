//! `testfarm tap`: formats, exit codes, markers, stdin.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_testfarm");

/// Runs the binary with a time bound (every test bounds its time).
fn run(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(data) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        let data = data.to_vec();
        std::thread::spawn(move || {
            let _ = pipe.write_all(&data);
        });
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("testfarm {args:?} took longer than 60s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

fn file(content: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(content.as_bytes()).unwrap();
    f
}

const EXAMPLE: &str = "TAP version 14\n1..3\nok 1 - loopback exists\nnot ok - dns answers # TODO not implemented\n  ---\n  got: 1\n  expected: 2\n  ...\n";

#[test]
fn json_is_the_issue_shape() {
    let f = file(EXAMPLE);
    let out = run(
        &["tap", "--format", "json", f.path().to_str().unwrap()],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v,
        serde_json::json!({
            "version": 14,
            "plan": { "start": 1, "end": 3, "skip_all": false, "reason": null },
            "bailout": null,
            "tests": [
                { "number": 1, "ok": true, "description": "loopback exists",
                  "directive": null, "yaml": null, "subtest": null },
                { "number": null, "ok": false, "description": "dns answers",
                  "directive": { "kind": "todo", "reason": "not implemented" },
                  "yaml": { "got": 1, "expected": 2 }, "subtest": null }
            ],
            "comments": 0,
            "summary": { "ok": false, "count": 2, "pass": 1, "fail": 1, "todo": 1, "skip": 0,
                         "reasons": ["plan_mismatch: planned 3 tests but ran 2"] }
        })
    );
}

#[test]
fn summary_from_stdin_and_exit_codes() {
    let out = run(&["tap"], Some(b"1..2\nok 1\nok 2\n"));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("stdin: ok (tests 2, pass 2"), "{text}");
    assert!(text.contains("Result: PASS"));

    let out = run(&["tap", "-"], Some(b"1..2\nok 1\nnot ok 2\n"));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("failures: 1 failed tests"));

    let out = run(&["tap", "/nonexistent/file.tap"], None);
    assert_eq!(out.status.code(), Some(2));
    let out = run(&["tap", "--format", "yaml"], None);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn junit_output_validates() {
    let f = file(EXAMPLE);
    let out = run(
        &["tap", "--format", "junit", f.path().to_str().unwrap()],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let xml = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(xml.path(), &out.stdout).unwrap();
    let xsd = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../testfarm-tap/tests/data/junit-10.xsd"
    );
    let check = Command::new("xmllint")
        .args(["--noout", "--schema", xsd, xml.path().to_str().unwrap()])
        .output()
        .expect("xmllint is required (apt-get install libxml2-utils)");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn marked_streams_report_per_script() {
    let stream = b"boot noise\nTAP_START a_test.sh\n1..1\nok 1\nTAP_END a_test.sh exit=0\nTAP_START b_test.sh\n1..1\nok 1\nTAP_END b_test.sh exit=2\nlogin: \n";
    let out = run(&["tap"], Some(stream));
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("a_test.sh: ok"), "{text}");
    assert!(text.contains("b_test.sh: FAILED"), "{text}");
    assert!(
        text.contains("non_zero_exit: exited with status 2"),
        "{text}"
    );

    let out = run(&["tap", "--format", "json"], Some(stream));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["totals"]["runs"], 2);
    assert_eq!(v["runs"][1]["status"], "failed");
}

#[test]
fn summary_counts_a_large_stream() {
    let mut s = String::from("TAP version 14\n");
    for i in 1..=20_000 {
        s.push_str(&format!("ok {i} - point {i}\n"));
        if i % 50 == 0 {
            s.push_str("  ---\n  a: 1\n  ...\n");
        }
    }
    s.push_str("1..20000\n");
    let f = file(&s);
    let out = run(&["tap", f.path().to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("tests 20000, pass 20000"));
}

/// `testfarm tap --format json big.tap | head -1`: the closed pipe ends it quietly.
#[test]
fn a_closed_pipe_ends_the_json_report_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.tap");
    let mut tap = String::from("TAP version 13\n1..3000\n");
    for i in 1..=3000 {
        tap.push_str(&format!(
            "ok {i} - a test with a reasonably long description {i}\n"
        ));
    }
    std::fs::write(&path, tap).unwrap();
    let mut child = Command::new(BIN)
        .args(["tap", "--format", "json"])
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 1];
    std::io::Read::read_exact(&mut child.stdout.take().unwrap(), &mut first).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "testfarm tap did not end");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(status.success(), "{status:?}: {err}");
    assert!(
        !err.contains("panicked") && !err.contains("Broken pipe"),
        "{err}"
    );
}
