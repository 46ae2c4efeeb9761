//! JUnit output validated against Jenkins' junit-10.xsd with xmllint (CI installs
//! libxml2-utils; a missing xmllint is a failure, not a skip, so the check cannot silently
//! vanish).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testfarm_tap::Document;
use testfarm_tap::report::{RunOutcome, SuiteRun};

const XSD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/junit-10.xsd");

fn validate(xml: &str) {
    let mut child = match Command::new("xmllint")
        .args(["--noout", "--schema", XSD, "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            panic!("xmllint is required to validate JUnit XML (apt-get install libxml2-utils): {e}")
        }
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(xml.as_bytes())
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("xmllint took longer than 30s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "junit-10.xsd rejects the XML:\n{}\n{xml}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const RICH: &str = "\
TAP version 14
1..6
ok 1 - plain <pass> & \"quotes\"
not ok 2 - fails
  ---
  message: \"boom\"
  got: [1, 2]
  duration_ms: 12.3456
  ...
ok 3 - skipped # SKIP no network
not ok 4 - todo # TODO later
ok 5 - timed # time=1500ms
# Subtest: child
    1..2
    ok 1 - c1
    ok 2 - c2 {
        1..1
        not ok 1 - deep \u{1} control char
    }
ok 6 - child
";

#[test]
fn rich_document_validates() {
    let mut run = SuiteRun::new("t/rich_test.sh", Document::parse(RICH.as_bytes()));
    run.duration = Duration::from_millis(1234);
    run.exit_code = Some(0);
    run.properties = vec![
        ("vm".into(), "vm-1".into()),
        ("arch".into(), "x86_64".into()),
    ];
    run.system_out = "stdout <with> markup & \u{0} nul\n".into();
    run.system_err = "stderr ]]> end\n".into();
    run.attempts = 2;
    run.flaky = true;
    let xml = testfarm_tap::junit::render(&[run]);
    validate(&xml);
    assert!(
        xml.contains("<testsuite name=\"t/rich_test.sh.child\""),
        "{xml}"
    );
    assert!(xml.contains("<property name=\"vm\" value=\"vm-1\"/>"));
    assert!(xml.contains("<failure type=\"not_ok\""));
    assert!(xml.contains("<skipped message=\"no network\"/>"));
    assert!(xml.contains("time=\"1.500\""), "{xml}");
    assert!(xml.contains("time=\"0.012\""), "{xml}");
    assert!(xml.contains("time=\"1.234\""), "{xml}");
    // the subtest under an ok point failed: the verdict case says so
    assert!(xml.contains("subtest_failures"), "{xml}");
}

#[test]
fn outcomes_and_verdict_reasons_validate() {
    let mut timed_out = SuiteRun::new("hang", Document::parse(b"1..3\nok 1\n"));
    timed_out.outcome = Some(RunOutcome::TimedOut {
        after: Duration::from_secs(60),
    });
    let mut error = SuiteRun::new("err", Document::default());
    error.outcome = Some(RunOutcome::Error {
        message: "spawn failed: ENOENT".into(),
    });
    let mut bailed = SuiteRun::new("bail", Document::parse(b"1..2\nBail out! no disk\n"));
    bailed.exit_code = Some(255);
    let skipped = SuiteRun::new("skip", Document::parse(b"1..0 # SKIP nothing to do\n"));
    let orphan = SuiteRun::new(
        "orphan",
        Document::parse(b"1..1\n# Subtest: s\n    not ok 1\n"),
    );
    let xml = testfarm_tap::junit::render(&[timed_out, error, bailed, skipped, orphan]);
    validate(&xml);
    assert!(
        xml.contains("<error type=\"timed_out\" message=\"timed out after 60s\"/>"),
        "{xml}"
    );
    assert!(xml.contains("type=\"bail_out\""));
    assert!(xml.contains("type=\"non_zero_exit\""));
    assert!(
        xml.contains("type=\"missing_plan\"") || xml.contains("orphan.s"),
        "{xml}"
    );
}

#[test]
fn empty_report_validates() {
    validate(&testfarm_tap::junit::render(&[]));
}

#[test]
fn garbage_document_validates() {
    let mut bytes = b"\xff\xfe\x00\x01 garbage\n1..2\nnot ok 1 - \x1b[31mred\x1b[0m\n".to_vec();
    bytes.extend_from_slice("ok 2 - ünïcödé ✓ \u{FFFF}\n".as_bytes());
    let run = SuiteRun::new("g\u{1}arbage", Document::parse(&bytes));
    validate(&testfarm_tap::junit::render(&[run]));
}
