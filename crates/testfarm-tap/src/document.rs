//! A whole TAP stream as a value: what `testfarm tap --format json` prints and what the
//! report writers consume. It keeps every test point, so it is for streams a caller wants
//! to keep; counting-only callers use [`crate::verdict::Tally`] instead.

use serde::{Deserialize, Serialize};

use crate::event::{BailOut, Event, Plan, TestPoint};
use crate::parser::Parser;
use crate::verdict::{Summary, Tally};

/// One TAP stream. Serializes to exactly the JSON shape (`version`, `plan`,
/// `bailout`, `tests`, `comments`); the other fields are kept for reports and verdicts
/// but are not part of that shape.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Document {
    pub version: Option<u32>,
    pub plan: Option<Plan>,
    pub bailout: Option<BailOut>,
    pub tests: Vec<TestPoint>,
    /// How many comment lines the stream had.
    pub comments: u64,
    /// Lines that were not TAP (still counted, so "garbage" is visible).
    #[serde(skip)]
    pub unknown: u64,
    /// Of those, the ones that came while `pragma +strict` was on (each fails the stream).
    #[serde(skip)]
    pub strict_errors: u64,
    /// `pragma +name` / `-name`, in order.
    #[serde(skip)]
    pub pragmas: Vec<(String, bool)>,
    /// Subtests that no test point closed (a stream that ended or moved on without one).
    /// They still count for the verdict.
    #[serde(skip)]
    pub orphan_subtests: Vec<Document>,
    /// The subtest's name (`# Subtest: name`); empty at the top level.
    #[serde(skip)]
    pub name: String,
}

impl Document {
    /// Parses a complete stream. Markers (`TAP_START`/`TAP_END`) are ignored here; use
    /// [`crate::report::Collector`] to split a marked stream into one run per script.
    pub fn parse(bytes: &[u8]) -> Document {
        let mut parser = Parser::new();
        let mut builder = DocumentBuilder::new();
        parser.feed(bytes, &mut |e| builder.event(e));
        parser.finish(&mut |e| builder.event(e));
        builder.finish()
    }

    /// The verdict on this stream; `exit_code` is the producing process's exit status
    /// (non-zero fails the stream even if every test passed).
    pub fn summary(&self, exit_code: Option<i32>) -> Summary {
        Tally::of_document(self, false).summary(exit_code)
    }
}

/// Builds a [`Document`] from events (the parser's or a recorded list).
#[derive(Debug, Default)]
pub struct DocumentBuilder {
    /// Open streams, the top level first. A finished subtest waits in `pending` of its
    /// parent frame for the test point that closes it.
    stack: Vec<Frame>,
}

#[derive(Debug, Default)]
struct Frame {
    doc: Document,
    pending: Option<Document>,
    /// `pragma +strict` is on (inherited from the parent, as node's child parsers do).
    strict: bool,
    /// A subtest (not the top level), and whether it is a buffered one.
    subtest: bool,
    buffered: bool,
}

impl DocumentBuilder {
    pub fn new() -> DocumentBuilder {
        DocumentBuilder {
            stack: vec![Frame::default()],
        }
    }

    pub fn event(&mut self, event: Event) {
        if self.stack.is_empty() {
            self.stack.push(Frame::default());
        }
        let depth = self.stack.len();
        let Some(frame) = self.stack.last_mut() else {
            return;
        };
        match event {
            Event::Version { version } => frame.doc.version = Some(version),
            Event::Plan(plan) => {
                if frame.doc.plan.is_none() {
                    frame.doc.plan = Some(plan);
                }
            }
            Event::TestPoint(mut point) => {
                if let Some(child) = frame.pending.take() {
                    point.subtest = Some(Box::new(child));
                }
                frame.doc.tests.push(point);
            }
            Event::Yaml { mut value } => {
                if let Some(last) = frame.doc.tests.last_mut() {
                    crate::yaml::take_duration(&mut value, &mut last.time_ms);
                    last.yaml = Some(value);
                }
            }
            Event::BailOut(b) => {
                if frame.doc.bailout.is_none() {
                    frame.doc.bailout = Some(b);
                }
            }
            Event::Comment { .. } => frame.doc.comments += 1,
            Event::Pragma { name, enabled } => {
                if name == "strict" {
                    frame.strict = enabled;
                }
                frame.doc.pragmas.push((name, enabled));
            }
            Event::Unknown { .. } => {
                frame.doc.unknown += 1;
                if frame.strict {
                    frame.doc.strict_errors += 1;
                }
            }
            Event::SubtestStart { name, buffered } => {
                if let Some(orphan) = frame.pending.take() {
                    frame.doc.orphan_subtests.push(orphan);
                }
                let strict = frame.strict;
                self.stack.push(Frame {
                    doc: Document {
                        name,
                        ..Document::default()
                    },
                    pending: None,
                    strict,
                    subtest: true,
                    buffered,
                });
            }
            Event::SubtestEndPrevious => {
                if depth > 1
                    && let Some(child) = self.stack.pop()
                {
                    let mut doc = close(child);
                    if let Some(parent) = self.stack.last_mut() {
                        match parent.doc.tests.last_mut() {
                            Some(last) if last.subtest.is_none() => {
                                if doc.name.is_empty() {
                                    doc.name = last.description.clone();
                                }
                                last.subtest = Some(Box::new(doc));
                            }
                            _ => parent.doc.orphan_subtests.push(doc),
                        }
                    }
                }
            }
            Event::SubtestEnd => {
                if depth > 1
                    && let Some(child) = self.stack.pop()
                {
                    let doc = close(child);
                    if let Some(parent) = self.stack.last_mut()
                        && let Some(orphan) = parent.pending.replace(doc)
                    {
                        parent.doc.orphan_subtests.push(orphan);
                    }
                }
            }
            Event::TapStart { .. } | Event::TapEnd { .. } => {}
        }
    }

    pub fn finish(mut self) -> Document {
        while self.stack.len() > 1 {
            if let Some(child) = self.stack.pop() {
                let doc = close(child);
                if let Some(parent) = self.stack.last_mut() {
                    parent.doc.orphan_subtests.push(doc);
                }
            }
        }
        self.stack.pop().map(close).unwrap_or_default()
    }
}

fn close(mut frame: Frame) -> Document {
    if let Some(orphan) = frame.pending.take() {
        frame.doc.orphan_subtests.push(orphan);
    }
    let doc = &mut frame.doc;
    if frame.subtest && doc.plan.is_none() && doc.tests.is_empty() && doc.bailout.is_none() {
        // node gives an empty, planless subtest a synthetic `1..0` plan (and, streamed, the
        // version line and comment it would have printed): it passes, with nothing to run.
        doc.plan = Some(Plan {
            start: 1,
            end: 0,
            skip_all: true,
            reason: (!frame.buffered).then(|| "no tests found".to_string()),
        });
        if !frame.buffered {
            doc.version = Some(14);
        }
    }
    frame.doc
}
