//! The human summary, shaped like Perl `prove`'s: one line per run, then a "Test Summary
//! Report" listing only what went wrong, then totals and `Result: PASS|FAIL`.

use std::fmt::Write;
use std::time::Duration;

use crate::report::SuiteRun;

/// The status word of one run, as `prove` prints after the dots: `ok`, `skipped: reason`,
/// `Failed 2/5 subtests`, `timed out after 60s`, …
pub fn status_line(run: &SuiteRun) -> String {
    let s = run.summary();
    if let Some(outcome) = &run.outcome {
        return outcome.message();
    }
    if let Some(plan) = run.document.plan.as_ref().filter(|p| p.skip_all)
        && s.ok
    {
        return match &plan.reason {
            Some(r) => format!("skipped: {r}"),
            None => "skipped".to_string(),
        };
    }
    if s.ok {
        let mut line = "ok".to_string();
        if s.skip > 0 || s.todo > 0 {
            let _ = write!(line, " ({} skipped, {} todo)", s.skip, s.todo);
        }
        return line;
    }
    let failures = run.document.tests.iter().filter(|t| t.is_failure()).count();
    if failures > 0 {
        format!("Failed {failures}/{} subtests", s.count)
    } else if let Some(first) = s.reasons.first() {
        format!("Failed: {first}")
    } else {
        "Failed".to_string()
    }
}

/// `name ..... status` padded so the statuses line up for names up to `width`.
pub fn progress_line(run: &SuiteRun, width: usize) -> String {
    let dots = width.saturating_sub(run.name.chars().count()) + 3;
    format!("{} {} {}", run.name, ".".repeat(dots), status_line(run))
}

/// The whole summary for a finished set of runs (`wall` is the elapsed wall clock).
pub fn render_with_wall(runs: &[SuiteRun], wall: Option<Duration>) -> String {
    let width = runs
        .iter()
        .map(|r| r.name.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for run in runs {
        let _ = writeln!(out, "{}", progress_line(run, width));
    }
    out.push_str(&tail(runs, wall));
    out
}

/// The part after the per-run lines (for harnesses that printed those as runs finished):
/// the failure report, `Files=…, Tests=…` and `Result: PASS|FAIL`.
pub fn tail(runs: &[SuiteRun], wall: Option<Duration>) -> String {
    let mut out = String::new();
    let bad: Vec<&SuiteRun> = runs.iter().filter(|r| !r.ok()).collect();
    if !bad.is_empty() {
        out.push_str("\nTest Summary Report\n-------------------\n");
        for run in &bad {
            let s = run.summary();
            let _ = writeln!(
                out,
                "{} (Tests: {} Failed: {})",
                run.name,
                s.count,
                run.document.tests.iter().filter(|t| t.is_failure()).count()
            );
            let failed: Vec<String> = run
                .document
                .tests
                .iter()
                .enumerate()
                .filter(|(_, t)| t.is_failure())
                .map(|(i, t)| t.number.unwrap_or(i as u64 + 1).to_string())
                .collect();
            if !failed.is_empty() {
                let shown: Vec<&str> = failed.iter().take(20).map(String::as_str).collect();
                let more = if failed.len() > 20 { ", …" } else { "" };
                let _ = writeln!(out, "  Failed tests:  {}{more}", shown.join(", "));
            }
            if let Some(outcome) = &run.outcome {
                let _ = writeln!(out, "  {}: {}", outcome.kind(), outcome.message());
            }
            for reason in &s.reasons {
                if !matches!(reason, crate::verdict::Reason::Failures { .. }) {
                    let _ = writeln!(out, "  {reason}");
                }
            }
        }
    }
    let tests: u64 = runs.iter().map(|r| r.document.tests.len() as u64).sum();
    let _ = write!(out, "Files={}, Tests={tests}", runs.len());
    if let Some(w) = wall {
        let _ = write!(out, ", {:.2} wallclock secs", w.as_secs_f64());
    }
    out.push('\n');
    let _ = writeln!(
        out,
        "Result: {}",
        if bad.is_empty() { "PASS" } else { "FAIL" }
    );
    out
}

/// The summary without a wall-clock figure.
pub fn render(runs: &[SuiteRun]) -> String {
    render_with_wall(runs, None)
}
