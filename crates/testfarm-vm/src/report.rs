//! Turning pod results into `testfarm-tap` report runs, so vmtest's JUnit, JSON and summary
//! are the same writers `prove` and the server use.

use testfarm_tap::Document;
use testfarm_tap::report::{RunOutcome, SuiteRun};

use crate::pod::{TestOutcome, TestResult};

pub fn suite_run(r: &TestResult) -> SuiteRun {
    let mut run = SuiteRun::new(r.path.clone(), Document::parse(&r.stdout));
    run.duration = r.duration;
    run.exit_code = r.exit_code();
    run.outcome = match &r.outcome {
        TestOutcome::Exited { .. } => None,
        TestOutcome::TimedOut(after) => Some(RunOutcome::TimedOut { after: *after }),
        TestOutcome::Error(message) => Some(RunOutcome::Error {
            message: message.clone(),
        }),
    };
    run.properties = vec![
        ("vm".into(), r.vm.clone()),
        ("attempts".into(), r.attempts.to_string()),
    ];
    if let TestOutcome::Exited {
        signal: Some(sig), ..
    } = r.outcome
    {
        run.properties.push(("signal".into(), sig.to_string()));
    }
    run.system_out = String::from_utf8_lossy(&r.stdout).into_owned();
    let mut err = String::from_utf8_lossy(&r.stderr).into_owned();
    if !r.kernel_log.trim().is_empty() {
        err.push_str("\n--- guest kernel log during the test ---\n");
        err.push_str(r.kernel_log.trim_end());
        err.push('\n');
    }
    if let Some(tail) = &r.console_tail {
        err.push_str("\n--- console tail ---\n");
        err.push_str(tail.trim_end());
        err.push('\n');
    }
    run.system_err = err;
    run.flaky = r.flaky;
    run.attempts = r.attempts;
    run
}
