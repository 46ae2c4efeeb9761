//! One script's run as the report writers see it: its parsed TAP plus what the harness
//! knows and TAP cannot say (duration, exit status, a timeout, captured output, where it
//! ran). The writers ([`crate::junit`], [`crate::json`], [`crate::summary`]) all take
//! `&[SuiteRun]`, so `prove`, `vmtest` and the server report the same way.

use std::time::Duration;

use crate::document::{Document, DocumentBuilder};
use crate::event::Event;
use crate::verdict::Summary;

/// A harness-level outcome that overrides the TAP verdict: the lab failed, not the test
/// (DESIGN.md: `error` and `failed` are never mixed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    /// Killed at its deadline.
    TimedOut { after: Duration },
    /// Could not run or finish for a reason outside the test (spawn failed, VM died…).
    Error { message: String },
}

impl RunOutcome {
    /// Stable machine name (`timed_out`, `error`), also the JUnit `error` type.
    pub fn kind(&self) -> &'static str {
        match self {
            RunOutcome::TimedOut { .. } => "timed_out",
            RunOutcome::Error { .. } => "error",
        }
    }

    pub fn message(&self) -> String {
        match self {
            RunOutcome::TimedOut { after } => format!("timed out after {}", seconds(*after)),
            RunOutcome::Error { message } => message.clone(),
        }
    }
}

/// `1.5s`, `60s`: a duration as people write it.
pub(crate) fn seconds(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{:.3}s", d.as_secs_f64())
    }
}

/// One test script (one TAP stream) and how its run went.
#[derive(Debug, Clone, PartialEq)]
pub struct SuiteRun {
    pub name: String,
    pub document: Document,
    pub duration: Duration,
    /// The producing process's exit status (`None`: unknown, e.g. killed).
    pub exit_code: Option<i32>,
    pub outcome: Option<RunOutcome>,
    /// Rendered as JUnit `<properties>` (e.g. `("vm", "vm-1")`).
    pub properties: Vec<(String, String)>,
    pub system_out: String,
    pub system_err: String,
    /// Passed only on a retry.
    pub flaky: bool,
    pub attempts: u32,
}

impl SuiteRun {
    /// A run with just a name and its document; fill in the rest with struct update.
    pub fn new(name: impl Into<String>, document: Document) -> SuiteRun {
        SuiteRun {
            name: name.into(),
            document,
            duration: Duration::ZERO,
            exit_code: None,
            outcome: None,
            properties: Vec::new(),
            system_out: String::new(),
            system_err: String::new(),
            flaky: false,
            attempts: 1,
        }
    }

    /// The TAP verdict (including the exit status).
    pub fn summary(&self) -> Summary {
        self.document.summary(self.exit_code)
    }

    /// Passed: no harness outcome and a passing TAP verdict.
    pub fn ok(&self) -> bool {
        self.outcome.is_none() && self.summary().ok
    }

    /// `passed`, `failed`, `timed_out` or `error`: the job-state words of DESIGN.md.
    pub fn status(&self) -> &'static str {
        match &self.outcome {
            Some(o) => o.kind(),
            None if self.summary().ok => "passed",
            None => "failed",
        }
    }
}

/// Splits a stream carrying `TAP_START name` / `TAP_END name exit=N` markers into one
/// [`SuiteRun`] per script. Output outside any marker pair becomes a run named after
/// `default_name` (only if it held any TAP).
#[derive(Debug)]
pub struct Collector {
    default_name: String,
    current: Option<(String, DocumentBuilder)>,
    outside: DocumentBuilder,
    outside_used: bool,
    runs: Vec<SuiteRun>,
}

impl Collector {
    pub fn new(default_name: impl Into<String>) -> Collector {
        Collector {
            default_name: default_name.into(),
            current: None,
            outside: DocumentBuilder::new(),
            outside_used: false,
            runs: Vec::new(),
        }
    }

    pub fn event(&mut self, event: Event) {
        match event {
            Event::TapStart { name } => {
                self.close(None);
                self.current = Some((name, DocumentBuilder::new()));
            }
            Event::TapEnd { name, exit } => {
                if self.current.is_none() {
                    self.current = Some((name, DocumentBuilder::new()));
                }
                self.close(Some(exit));
            }
            other => match self.current.as_mut() {
                Some((_, builder)) => builder.event(other),
                None => {
                    self.outside_used = true;
                    self.outside.event(other);
                }
            },
        }
    }

    fn close(&mut self, exit: Option<i32>) {
        if let Some((name, builder)) = self.current.take() {
            let mut run = SuiteRun::new(name, builder.finish());
            run.exit_code = exit;
            if exit.is_none() {
                run.outcome = Some(RunOutcome::Error {
                    message: "stream ended without TAP_END".to_string(),
                });
            }
            self.runs.push(run);
        }
    }

    /// The runs, in stream order (a run still open at the end is reported as an error).
    pub fn finish(mut self) -> Vec<SuiteRun> {
        self.close(None);
        if self.outside_used {
            let doc = std::mem::take(&mut self.outside).finish();
            if !doc.tests.is_empty() || doc.plan.is_some() || doc.bailout.is_some() {
                self.runs.insert(0, SuiteRun::new(self.default_name, doc));
            }
        }
        self.runs
    }
}
