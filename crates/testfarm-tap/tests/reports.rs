//! The JSON and human reports over several runs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use testfarm_tap::Document;
use testfarm_tap::report::{RunOutcome, SuiteRun};

fn runs() -> Vec<SuiteRun> {
    let mut pass = SuiteRun::new(
        "t/a_test.sh",
        Document::parse(b"1..2\nok 1\nok 2 # SKIP x\n"),
    );
    pass.exit_code = Some(0);
    pass.duration = Duration::from_millis(1500);
    pass.properties = vec![("vm".into(), "vm-1".into())];
    let mut fail = SuiteRun::new(
        "t/b_test.sh",
        Document::parse(b"1..3\nok 1\nnot ok 2 - bad\n"),
    );
    fail.exit_code = Some(1);
    let mut hang = SuiteRun::new("t/c_test.sh", Document::parse(b"1..1\n"));
    hang.outcome = Some(RunOutcome::TimedOut {
        after: Duration::from_secs(60),
    });
    let mut err = SuiteRun::new("t/d_test.sh", Document::default());
    err.outcome = Some(RunOutcome::Error {
        message: "VM died".into(),
    });
    vec![pass, fail, hang, err]
}

#[test]
fn json_report() {
    let v = testfarm_tap::json::render(&runs());
    assert_eq!(v["ok"], false);
    assert_eq!(v["totals"]["runs"], 4);
    assert_eq!(v["totals"]["passed"], 1);
    assert_eq!(v["totals"]["failed"], 1);
    assert_eq!(v["totals"]["timed_out"], 1);
    assert_eq!(v["totals"]["error"], 1);
    assert_eq!(v["runs"][0]["duration_secs"], 1.5);
    assert_eq!(v["runs"][0]["properties"]["vm"], "vm-1");
    assert_eq!(
        v["runs"][1]["document"]["summary"]["reasons"][0],
        "plan_mismatch: planned 3 tests but ran 2"
    );
    assert_eq!(v["runs"][2]["outcome"]["kind"], "timed_out");
    assert_eq!(v["runs"][3]["status"], "error");
}

#[test]
fn human_summary() {
    let text = testfarm_tap::summary::render_with_wall(&runs(), Some(Duration::from_secs(2)));
    assert!(
        text.contains("t/a_test.sh ... ok (1 skipped, 0 todo)"),
        "{text}"
    );
    assert!(
        text.contains("t/b_test.sh ... Failed 1/2 subtests"),
        "{text}"
    );
    assert!(
        text.contains("t/c_test.sh ... timed out after 60s"),
        "{text}"
    );
    assert!(text.contains("t/d_test.sh ... VM died"), "{text}");
    assert!(text.contains("Test Summary Report"), "{text}");
    assert!(text.contains("  Failed tests:  2"), "{text}");
    assert!(
        text.contains("  non_zero_exit: exited with status 1"),
        "{text}"
    );
    assert!(
        text.contains("Files=4, Tests=4, 2.00 wallclock secs"),
        "{text}"
    );
    assert!(text.ends_with("Result: FAIL\n"), "{text}");
    let ok = testfarm_tap::summary::render(&runs()[..1]);
    assert!(ok.ends_with("Result: PASS\n"), "{ok}");
    assert!(!ok.contains("Test Summary Report"));
}
