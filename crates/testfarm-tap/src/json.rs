//! JSON reports. [`document`] is the `testfarm tap --format json` shape (a document plus
//! its `summary`); [`render`] wraps one such object per run with what the harness knows.

use serde::Serialize;
use serde_json::{Value, json};

use crate::document::Document;
use crate::report::SuiteRun;
use crate::verdict::Summary;

#[derive(Serialize)]
struct WithSummary<'a> {
    #[serde(flatten)]
    document: &'a Document,
    summary: Summary,
}

/// `{ version, plan, bailout, tests, comments, summary }` for one stream. As a `Value` the
/// keys are sorted (serde_json's default map); [`document_string`] keeps the documented order.
pub fn document(doc: &Document, exit_code: Option<i32>) -> Value {
    let with = WithSummary {
        document: doc,
        summary: doc.summary(exit_code),
    };
    serde_json::to_value(with).unwrap_or(Value::Null)
}

/// [`document`] as pretty JSON text with keys in the documented order (what
/// `testfarm tap --format json` prints).
pub fn document_string(doc: &Document, exit_code: Option<i32>) -> String {
    let with = WithSummary {
        document: doc,
        summary: doc.summary(exit_code),
    };
    serde_json::to_string_pretty(&with).unwrap_or_default()
}

/// The report for several runs:
/// `{ "ok", "totals": {runs, passed, failed, timed_out, error, tests}, "runs": [ { "name",
/// "status", "duration_secs", "exit_code", "outcome", "properties", "flaky", "attempts",
/// "system_out", "system_err", "document": <document + summary> } ] }`.
pub fn render(runs: &[SuiteRun]) -> Value {
    let mut passed = 0u64;
    let mut failed = 0u64;
    let mut timed_out = 0u64;
    let mut error = 0u64;
    let mut tests = 0u64;
    let items: Vec<Value> = runs
        .iter()
        .map(|run| {
            let status = run.status();
            match status {
                "passed" => passed += 1,
                "failed" => failed += 1,
                "timed_out" => timed_out += 1,
                _ => error += 1,
            }
            tests += run.document.tests.len() as u64;
            let props: serde_json::Map<String, Value> = run
                .properties
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            let outcome = run
                .outcome
                .as_ref()
                .map(|o| json!({ "kind": o.kind(), "message": o.message() }));
            json!({
                "name": run.name,
                "status": status,
                "duration_secs": (run.duration.as_secs_f64() * 1000.0).round() / 1000.0,
                "exit_code": run.exit_code,
                "outcome": outcome,
                "properties": props,
                "flaky": run.flaky,
                "attempts": run.attempts,
                "system_out": run.system_out,
                "system_err": run.system_err,
                "document": document(&run.document, run.exit_code),
            })
        })
        .collect();
    json!({
        "ok": failed == 0 && timed_out == 0 && error == 0,
        "totals": {
            "runs": runs.len(),
            "passed": passed,
            "failed": failed,
            "timed_out": timed_out,
            "error": error,
            "tests": tests,
        },
        "runs": items,
    })
}
