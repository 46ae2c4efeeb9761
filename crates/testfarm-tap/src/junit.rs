//! JUnit XML (Jenkins `junit-10.xsd`; the test suite validates every shape with xmllint).
//!
//! Hand-written rather than quick-junit: TAP subtests map naturally to nested
//! `<testsuite>` elements, which junit-10.xsd allows but quick-junit's model (suites
//! holding only cases) cannot express, and the writer is small: escaping, counts, times.
//!
//! Mapping, per run (one `<testsuite>`):
//! - each test point is a `<testcase>` named `N - description` (classname: the run name);
//!   `not ok` is a `<failure>`, SKIP and failing TODO are `<skipped>`, a passing TODO
//!   passes; its YAML diagnostics go to the case's `<system-out>`; `# time=` or the YAML
//!   `duration_ms` becomes its `time`;
//! - a subtest is a nested `<testsuite>` named `parent.child`, right after its closing case;
//! - verdict reasons a case cannot show (plan mismatch, missing plan, bail out, exit status)
//!   are `<failure>`s of one extra case named `(tap)`; a timeout or harness error is an
//!   `<error>` there, so a red suite is never all green cases;
//! - the run's properties (plus `exit_code`, `attempts`, `flaky`) are `<properties>`, its
//!   captured output is `<system-out>` / `<system-err>`; times have 3 decimals.

use std::fmt::Write;

use crate::document::Document;
use crate::event::TestPoint;
use crate::report::SuiteRun;
use crate::verdict::Reason;
use crate::yaml;

/// The JUnit XML document for `runs`, one top-level `<testsuite>` per run.
pub fn render(runs: &[SuiteRun]) -> String {
    let mut suites = Vec::with_capacity(runs.len());
    let mut total = Counts::default();
    let mut time = 0.0;
    for run in runs {
        let (xml, counts) = run_suite(run);
        total.add(&counts);
        time += run.duration.as_secs_f64();
        suites.push(xml);
    }
    let mut out = String::new();
    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"testfarm\" tests=\"{}\" failures=\"{}\" errors=\"{}\" time=\"{}\">",
        total.tests_deep,
        total.failures_deep,
        total.errors_deep,
        secs(time)
    );
    for s in suites {
        out.push_str(&s);
    }
    out.push_str("</testsuites>\n");
    out
}

#[derive(Debug, Default)]
struct Counts {
    tests: u64,
    failures: u64,
    errors: u64,
    skipped: u64,
    /// Including nested suites (for the `<testsuites>` totals).
    tests_deep: u64,
    failures_deep: u64,
    errors_deep: u64,
}

impl Counts {
    fn add(&mut self, other: &Counts) {
        self.tests_deep += other.tests_deep;
        self.failures_deep += other.failures_deep;
        self.errors_deep += other.errors_deep;
    }
}

fn run_suite(run: &SuiteRun) -> (String, Counts) {
    let mut props = run.properties.clone();
    if let Some(code) = run.exit_code {
        props.push(("exit_code".into(), code.to_string()));
    }
    if run.attempts > 1 || run.flaky {
        props.push(("attempts".into(), run.attempts.to_string()));
        props.push(("flaky".into(), run.flaky.to_string()));
    }
    let mut extra = Vec::new();
    if let Some(outcome) = &run.outcome {
        extra.push(Problem::Error {
            kind: outcome.kind(),
            message: outcome.message(),
        });
    }
    for reason in run.summary().reasons {
        if !matches!(reason, Reason::Failures { .. }) {
            extra.push(Problem::Failure(reason));
        }
    }
    suite(
        &run.name,
        &run.document,
        Some(run.duration.as_secs_f64()),
        &props,
        &extra,
        &run.system_out,
        &run.system_err,
    )
}

enum Problem {
    Error { kind: &'static str, message: String },
    Failure(Reason),
}

fn suite(
    name: &str,
    doc: &Document,
    time: Option<f64>,
    props: &[(String, String)],
    extra: &[Problem],
    out: &str,
    err: &str,
) -> (String, Counts) {
    let mut body = String::new();
    let mut c = Counts::default();
    if !props.is_empty() {
        body.push_str("<properties>");
        for (k, v) in props {
            let _ = write!(
                body,
                "<property name=\"{}\" value=\"{}\"/>",
                attr(k),
                attr(v)
            );
        }
        body.push_str("</properties>\n");
    }
    for (i, point) in doc.tests.iter().enumerate() {
        case(&mut body, &mut c, name, i, point);
        if let Some(sub) = point.subtest.as_deref() {
            let sub_name = child_name(name, sub, point);
            let reasons = child_problems(sub);
            let (xml, counts) = suite(&sub_name, sub, None, &[], &reasons, "", "");
            c.add(&counts);
            body.push_str(&xml);
        }
    }
    for (i, orphan) in doc.orphan_subtests.iter().enumerate() {
        let label = if orphan.name.is_empty() {
            format!("subtest {}", i + 1)
        } else {
            orphan.name.clone()
        };
        let reasons = child_problems(orphan);
        let (xml, counts) = suite(
            &format!("{name}.{label}"),
            orphan,
            None,
            &[],
            &reasons,
            "",
            "",
        );
        c.add(&counts);
        body.push_str(&xml);
    }
    if !extra.is_empty() {
        let mut inner = String::new();
        let mut errored = false;
        for p in extra {
            match p {
                Problem::Error { kind, message } => {
                    errored = true;
                    let _ = write!(
                        inner,
                        "<error type=\"{}\" message=\"{}\"/>",
                        attr(kind),
                        attr(message)
                    );
                }
                Problem::Failure(r) => {
                    let _ = write!(
                        inner,
                        "<failure type=\"{}\" message=\"{}\"/>",
                        attr(r.kind()),
                        attr(&r.to_string())
                    );
                }
            }
        }
        let _ = writeln!(
            body,
            "<testcase name=\"(tap)\" classname=\"{}\">{inner}</testcase>",
            attr(name)
        );
        c.tests += 1;
        c.tests_deep += 1;
        if errored {
            c.errors += 1;
            c.errors_deep += 1;
        } else {
            c.failures += 1;
            c.failures_deep += 1;
        }
    }
    if !out.is_empty() {
        let _ = writeln!(body, "<system-out>{}</system-out>", text(out));
    }
    if !err.is_empty() {
        let _ = writeln!(body, "<system-err>{}</system-err>", text(err));
    }
    let mut head = String::new();
    let _ = write!(
        head,
        "<testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\"",
        attr(name),
        c.tests,
        c.failures,
        c.errors,
        c.skipped
    );
    if let Some(t) = time {
        let _ = write!(head, " time=\"{}\"", secs(t));
    }
    head.push_str(">\n");
    head.push_str(&body);
    head.push_str("</testsuite>\n");
    (head, c)
}

/// Verdict reasons of a subtest that its cases do not show.
fn child_problems(doc: &Document) -> Vec<Problem> {
    crate::verdict::Tally::of_document(doc, true)
        .summary(None)
        .reasons
        .into_iter()
        .filter(|r| !matches!(r, Reason::Failures { .. }))
        .map(Problem::Failure)
        .collect()
}

fn child_name(parent: &str, sub: &Document, point: &TestPoint) -> String {
    let label = if !sub.name.is_empty() {
        sub.name.as_str()
    } else if !point.description.is_empty() {
        point.description.as_str()
    } else {
        "subtest"
    };
    format!("{parent}.{label}")
}

fn case(body: &mut String, c: &mut Counts, classname: &str, index: usize, p: &TestPoint) {
    let name = match (p.number, p.description.is_empty()) {
        (Some(n), false) => format!("{n} - {}", p.description),
        (Some(n), true) => n.to_string(),
        (None, false) => p.description.clone(),
        (None, true) => format!("test {}", index + 1),
    };
    let _ = write!(
        body,
        "<testcase name=\"{}\" classname=\"{}\"",
        attr(&name),
        attr(classname)
    );
    let ms = p.time_ms.or_else(|| {
        p.yaml
            .as_ref()
            .and_then(|y| y.get("duration_ms"))
            .and_then(|v| v.as_f64())
    });
    if let Some(ms) = ms.filter(|m| m.is_finite() && *m >= 0.0) {
        let _ = write!(body, " time=\"{}\"", secs(ms / 1000.0));
    }
    body.push('>');
    c.tests += 1;
    c.tests_deep += 1;
    let reason = p
        .directive
        .as_ref()
        .and_then(|d| d.reason.clone())
        .unwrap_or_default();
    if p.is_skip() {
        c.skipped += 1;
        let _ = write!(body, "<skipped message=\"{}\"/>", attr(&reason));
    } else if p.is_todo() && !p.ok {
        c.skipped += 1;
        let _ = write!(body, "<skipped message=\"TODO {}\"/>", attr(&reason));
    } else if !p.ok {
        c.failures += 1;
        c.failures_deep += 1;
        let _ = write!(
            body,
            "<failure type=\"not_ok\" message=\"{}\"/>",
            attr(&format!("not ok {name}"))
        );
    }
    if let Some(y) = &p.yaml {
        let _ = write!(body, "<system-out>{}</system-out>", text(&yaml::render(y)));
    }
    body.push_str("</testcase>\n");
}

/// Seconds with at most 3 decimals (the schema's SUREFIRE_TIME).
fn secs(s: f64) -> String {
    if s.is_finite() && s >= 0.0 {
        format!("{s:.3}")
    } else {
        "0.000".to_string()
    }
}

/// Character data: escapes markup and replaces characters XML 1.0 forbids.
fn text(s: &str) -> String {
    escape(s, false)
}

fn attr(s: &str) -> String {
    escape(s, true)
}

fn escape(s: &str, attribute: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' if attribute => out.push_str("&quot;"),
            '\n' if attribute => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' if attribute => out.push_str("&#9;"),
            '\t' | '\n' => out.push(ch),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_control_chars() {
        assert_eq!(attr("a\"<&>\n\u{1}"), "a&quot;&lt;&amp;&gt;&#10;\u{FFFD}");
        assert_eq!(text("x\ny\u{0}"), "x\ny\u{FFFD}");
    }

    #[test]
    fn times_have_three_decimals() {
        assert_eq!(secs(1.23456), "1.235");
        assert_eq!(secs(f64::NAN), "0.000");
    }
}
