//! The verdict on a stream: pass/fail counts and every reason it failed.
//!
//! One set of rules, two ways in: [`Tally::of_document`] for a kept [`Document`], and
//! [`Counter`] for a stream of events that nobody keeps (memory stays constant, which is
//! what `testfarm tap --format summary` needs on huge streams). Both fill a [`Tally`] and
//! [`Tally::summary`] decides.

use std::collections::HashSet;
use std::fmt;

use serde::{Serialize, Serializer};

use crate::document::Document;
use crate::event::{Event, Plan, TestPoint};

/// Why a stream failed. Each variant is one distinct, named rule; a failed stream lists
/// every rule it broke, in this order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// `Bail out!`: the producer gave up.
    BailOut { reason: String },
    /// No plan line at all (and the stream was not empty subtest).
    MissingPlan,
    /// The plan promised a different number of test points.
    PlanMismatch { planned: u64, ran: u64 },
    /// `1..0` (skip all) but test points followed.
    TestsAfterSkipAll { count: u64 },
    /// A test point's number lies outside the plan's range.
    NumberOutOfPlan { number: u64, start: u64, end: u64 },
    /// A test point number that an earlier test point already had.
    DuplicateNumber { number: u64 },
    /// Lines that are not TAP while `pragma +strict` was on.
    StrictNonTap { count: u64 },
    /// `not ok` test points without TODO/SKIP.
    Failures { count: u64 },
    /// Subtests whose own stream failed while their closing test point said `ok` (or that
    /// no test point closed).
    SubtestFailures { count: u64 },
    /// The producing process exited non-zero.
    NonZeroExit { code: i32 },
}

impl Reason {
    /// Stable machine name of the rule (also the prefix of its `Display` form).
    pub fn kind(&self) -> &'static str {
        match self {
            Reason::BailOut { .. } => "bail_out",
            Reason::MissingPlan => "missing_plan",
            Reason::PlanMismatch { .. } => "plan_mismatch",
            Reason::TestsAfterSkipAll { .. } => "tests_after_skip_all",
            Reason::NumberOutOfPlan { .. } => "number_out_of_plan",
            Reason::DuplicateNumber { .. } => "duplicate_number",
            Reason::StrictNonTap { .. } => "strict_non_tap",
            Reason::Failures { .. } => "failures",
            Reason::SubtestFailures { .. } => "subtest_failures",
            Reason::NonZeroExit { .. } => "non_zero_exit",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.kind())?;
        match self {
            Reason::BailOut { reason } if reason.is_empty() => write!(f, "bailed out"),
            Reason::BailOut { reason } => write!(f, "bailed out: {reason}"),
            Reason::MissingPlan => write!(f, "no plan"),
            Reason::PlanMismatch { planned, ran } => {
                write!(f, "planned {planned} tests but ran {ran}")
            }
            Reason::TestsAfterSkipAll { count } => {
                write!(f, "plan 1..0 skips all, but {count} tests ran")
            }
            Reason::NumberOutOfPlan { number, start, end } => {
                write!(f, "test number {number} outside plan {start}..{end}")
            }
            Reason::DuplicateNumber { number } => {
                write!(f, "test number {number} appears more than once")
            }
            Reason::StrictNonTap { count } => {
                write!(f, "{count} non-TAP lines under pragma +strict")
            }
            Reason::Failures { count } => write!(f, "{count} failed tests"),
            Reason::SubtestFailures { count } => write!(f, "{count} failed subtests"),
            Reason::NonZeroExit { code } => write!(f, "exited with status {code}"),
        }
    }
}

/// In JSON a reason is its `Display` string (`"plan_mismatch: planned 3 tests but ran 2"`):
/// the shape lists strings, and the `kind` prefix keeps them machine-readable.
impl Serialize for Reason {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Counts and verdict of one stream. `pass` counts every `ok` (also TODO/SKIP ones), `fail`
/// every `not ok` (also TODO ones), as node's tap-parser counts; `ok` ignores TODO and
/// SKIP failures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub ok: bool,
    pub count: u64,
    pub pass: u64,
    pub fail: u64,
    pub todo: u64,
    pub skip: u64,
    pub reasons: Vec<Reason>,
}

/// Everything the verdict needs, in constant space.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub plan: Option<Plan>,
    pub bailout: Option<String>,
    pub count: u64,
    pub pass: u64,
    pub fail: u64,
    pub todo: u64,
    pub skip: u64,
    /// `not ok` without directive.
    pub failures: u64,
    pub subtest_failures: u64,
    pub min_number: Option<u64>,
    pub max_number: Option<u64>,
    /// A subtest stream: empty and planless is fine there (node synthesises `1..0`).
    pub is_subtest: bool,
    /// Non-TAP lines under `pragma +strict`.
    pub strict_errors: u64,
    /// The first test number seen twice.
    pub duplicate: Option<u64>,
    /// Numbers seen so far: `run` is a contiguous range (the usual, in-sequence stream costs
    /// nothing more); numbers off that run go to `scattered`, at most [`MAX_SCATTERED`].
    run: Option<(u64, u64)>,
    scattered: HashSet<u64>,
}

/// Out-of-sequence test numbers remembered for the duplicate check; past this many
/// (1 MiB or so), further out-of-sequence numbers are not checked.
pub const MAX_SCATTERED: usize = 65_536;

impl Tally {
    /// Counts a test point; `subtest_ok` is the verdict on the child stream it closes.
    pub fn test(&mut self, point: &TestPoint, subtest_ok: Option<bool>) {
        self.count += 1;
        if point.ok {
            self.pass += 1;
        } else {
            self.fail += 1;
        }
        if point.is_todo() {
            self.todo += 1;
        }
        if point.is_skip() {
            self.skip += 1;
        }
        if point.is_failure() {
            self.failures += 1;
        }
        if point.ok && point.directive.is_none() && subtest_ok == Some(false) {
            self.subtest_failures += 1;
        }
        if let Some(n) = point.number {
            self.min_number = Some(self.min_number.map_or(n, |m| m.min(n)));
            self.max_number = Some(self.max_number.map_or(n, |m| m.max(n)));
            self.seen(n);
        }
    }

    /// Records a test number for the duplicate check (node and Perl both fail a stream
    /// that repeats one).
    fn seen(&mut self, n: u64) {
        let dup = match self.run {
            None => {
                self.run = Some((n, n));
                false
            }
            Some((lo, hi)) if hi.checked_add(1) == Some(n) => {
                self.run = Some((lo, n));
                !self.scattered.is_empty() && self.scattered.remove(&n)
            }
            Some((lo, hi)) if (lo..=hi).contains(&n) => true,
            Some(_) => {
                if self.scattered.contains(&n) {
                    true
                } else {
                    if self.scattered.len() < MAX_SCATTERED {
                        self.scattered.insert(n);
                    }
                    false
                }
            }
        };
        if dup && self.duplicate.is_none() {
            self.duplicate = Some(n);
        }
    }

    /// The tally of a kept document (recursing into its subtests for their verdicts).
    pub fn of_document(doc: &Document, is_subtest: bool) -> Tally {
        let mut t = Tally {
            plan: doc.plan.clone(),
            bailout: doc.bailout.as_ref().map(|b| b.reason.clone()),
            is_subtest,
            strict_errors: doc.strict_errors,
            ..Tally::default()
        };
        for point in &doc.tests {
            let sub = point
                .subtest
                .as_deref()
                .map(|d| Tally::of_document(d, true).summary(None).ok);
            t.test(point, sub);
        }
        for orphan in &doc.orphan_subtests {
            if !Tally::of_document(orphan, true).summary(None).ok {
                t.subtest_failures += 1;
            }
        }
        t
    }

    pub fn summary(&self, exit_code: Option<i32>) -> Summary {
        let mut reasons = Vec::new();
        if let Some(reason) = &self.bailout {
            reasons.push(Reason::BailOut {
                reason: reason.clone(),
            });
        }
        match &self.plan {
            None => {
                let empty_child = self.is_subtest && self.count == 0;
                if self.bailout.is_none() && !empty_child {
                    reasons.push(Reason::MissingPlan);
                }
            }
            Some(plan) if plan.skip_all => {
                if self.count > 0 {
                    reasons.push(Reason::TestsAfterSkipAll { count: self.count });
                }
            }
            Some(plan) => {
                if self.bailout.is_none() && self.count != plan.expected() {
                    reasons.push(Reason::PlanMismatch {
                        planned: plan.expected(),
                        ran: self.count,
                    });
                }
                let out = match (self.min_number, self.max_number) {
                    (Some(min), _) if min < plan.start => Some(min),
                    (_, Some(max)) if max > plan.end => Some(max),
                    _ => None,
                };
                if let Some(number) = out {
                    reasons.push(Reason::NumberOutOfPlan {
                        number,
                        start: plan.start,
                        end: plan.end,
                    });
                }
            }
        }
        if let Some(number) = self.duplicate {
            reasons.push(Reason::DuplicateNumber { number });
        }
        if self.strict_errors > 0 {
            reasons.push(Reason::StrictNonTap {
                count: self.strict_errors,
            });
        }
        if self.failures > 0 {
            reasons.push(Reason::Failures {
                count: self.failures,
            });
        }
        if self.subtest_failures > 0 {
            reasons.push(Reason::SubtestFailures {
                count: self.subtest_failures,
            });
        }
        if let Some(code) = exit_code.filter(|&c| c != 0) {
            reasons.push(Reason::NonZeroExit { code });
        }
        Summary {
            ok: reasons.is_empty(),
            count: self.count,
            pass: self.pass,
            fail: self.fail,
            todo: self.todo,
            skip: self.skip,
            reasons,
        }
    }
}

/// Tallies a stream of events without keeping them: the constant-memory verdict.
/// Stack depth is bounded by the parser's nesting cap.
#[derive(Debug)]
pub struct Counter {
    stack: Vec<CounterFrame>,
    comments: u64,
    version: Option<u32>,
}

#[derive(Debug, Default)]
struct CounterFrame {
    tally: Tally,
    /// Verdict of the subtest that just ended, waiting for its closing test point.
    pending: Option<bool>,
    /// `pragma +strict` is on at this level.
    strict: bool,
    /// The last test point here said `ok` without a directive and closes no subtest yet
    /// (for [`Event::SubtestEndPrevious`]).
    last_plain_ok: Option<bool>,
}

impl Default for Counter {
    fn default() -> Self {
        Self::new()
    }
}

impl Counter {
    pub fn new() -> Counter {
        Counter {
            stack: vec![CounterFrame::default()],
            comments: 0,
            version: None,
        }
    }

    pub fn event(&mut self, event: &Event) {
        let depth = self.stack.len();
        let Some(frame) = self.stack.last_mut() else {
            return;
        };
        match event {
            Event::Version { version } if depth == 1 => self.version = Some(*version),
            Event::Plan(plan) if frame.tally.plan.is_none() => {
                frame.tally.plan = Some(plan.clone());
            }
            Event::TestPoint(point) => {
                let sub = frame.pending.take();
                frame.tally.test(point, sub);
                frame.last_plain_ok = sub
                    .is_none()
                    .then_some(point.ok && point.directive.is_none());
            }
            Event::Pragma { name, enabled } if name == "strict" => frame.strict = *enabled,
            Event::Unknown { .. } if frame.strict => frame.tally.strict_errors += 1,
            Event::BailOut(b) if frame.tally.bailout.is_none() => {
                frame.tally.bailout = Some(b.reason.clone());
            }
            Event::Comment { .. } if depth == 1 => self.comments += 1,
            Event::SubtestStart { .. } => {
                if frame.pending.take() == Some(false) {
                    frame.tally.subtest_failures += 1;
                }
                let strict = frame.strict;
                self.stack.push(CounterFrame {
                    tally: Tally {
                        is_subtest: true,
                        ..Tally::default()
                    },
                    pending: None,
                    strict,
                    last_plain_ok: None,
                });
            }
            Event::SubtestEndPrevious if depth > 1 => {
                if let Some(child) = self.stack.pop() {
                    let ok = close_counter(child);
                    if let Some(parent) = self.stack.last_mut() {
                        // Attached to the last test point (as the document builder does),
                        // or an orphan when that one already closes a subtest.
                        let failed = match parent.last_plain_ok.take() {
                            Some(plain_ok) => plain_ok && !ok,
                            None => !ok,
                        };
                        if failed {
                            parent.tally.subtest_failures += 1;
                        }
                    }
                }
            }
            Event::SubtestEnd if depth > 1 => {
                if let Some(child) = self.stack.pop() {
                    let ok = close_counter(child);
                    if let Some(parent) = self.stack.last_mut()
                        && parent.pending.replace(ok) == Some(false)
                    {
                        parent.tally.subtest_failures += 1;
                    }
                }
            }
            _ => {}
        }
    }

    /// Top-level comment lines seen.
    pub fn comments(&self) -> u64 {
        self.comments
    }

    pub fn version(&self) -> Option<u32> {
        self.version
    }

    /// The top-level tally (open subtests closed as orphans).
    pub fn finish(mut self) -> Tally {
        while self.stack.len() > 1 {
            if let Some(child) = self.stack.pop() {
                let ok = close_counter(child);
                if let Some(parent) = self.stack.last_mut()
                    && !ok
                {
                    parent.tally.subtest_failures += 1;
                }
            }
        }
        match self.stack.pop() {
            Some(mut top) => {
                if top.pending.take() == Some(false) {
                    top.tally.subtest_failures += 1;
                }
                top.tally
            }
            None => Tally::default(),
        }
    }
}

fn close_counter(mut frame: CounterFrame) -> bool {
    if frame.pending.take() == Some(false) {
        frame.tally.subtest_failures += 1;
    }
    frame.tally.summary(None).ok
}
