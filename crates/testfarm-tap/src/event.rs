//! What the parser emits: one [`Event`] per meaningful line (or block), in stream order.
//!
//! Events are owned values so a consumer can keep, send or drop them freely; the parser
//! itself keeps nothing once an event is emitted, which is what keeps memory flat on long
//! streams.

use serde::{Deserialize, Serialize};

use crate::document::Document;

/// One thing the parser recognised. Nesting is expressed by [`Event::SubtestStart`] and
/// [`Event::SubtestEnd`] brackets: everything between them belongs to the child stream, and
/// the first [`Event::TestPoint`] after the `SubtestEnd` (at the parent's level) is the test
/// point that closes the subtest.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// `TAP version N` (13 or later, before any plan or test point; otherwise it is
    /// [`Event::Unknown`]). Inside subtests the line is dropped, as node's tap-parser does.
    Version { version: u32 },
    /// `1..N [# reason]`, at the start or the end of the stream.
    Plan(Plan),
    /// `ok` / `not ok`. Emitted as soon as its line is read (so live progress is live); a
    /// YAML block that follows arrives as a separate [`Event::Yaml`]. The one exception is
    /// a buffered subtest (`ok 1 - name {`): its test point is emitted after the child's
    /// `SubtestEnd`, with any YAML that preceded the child already attached.
    TestPoint(TestPoint),
    /// A YAML diagnostic block (`  ---` … `  ...`) for the test point just before it at the
    /// same level. `Null` when the parser was told not to parse YAML
    /// ([`crate::Options::parse_yaml`]).
    Yaml { value: serde_json::Value },
    /// `Bail out! reason`. A bail out inside a subtest is also repeated at every enclosing
    /// level (node does the same): the whole stream is over.
    BailOut(BailOut),
    /// `# text` (the text after `#`, trimmed).
    Comment { text: String },
    /// `pragma +name` / `pragma -name`.
    Pragma { name: String, enabled: bool },
    /// Anything else: kept so no output is lost (it is still not TAP).
    Unknown { line: String },
    /// A child stream begins. `name` comes from `# Subtest: name`, or from the test point of
    /// a buffered subtest; it is empty for an unnamed (indented, no comment) subtest and for
    /// one that [`Event::SubtestEndPrevious`] ends (its test point was already emitted).
    SubtestStart { name: String, buffered: bool },
    /// The child stream that began with the matching `SubtestStart` is over.
    SubtestEnd,
    /// The child stream that began with the matching `SubtestStart` is over, and it belongs
    /// to the test point *before* it at the parent's level, not to the next one. This is
    /// node's buffered subtest with diagnostics (`ok 1 - name`, its YAML block, then `{` …
    /// `}` unindented); its `SubtestStart` has an empty name (the test point's description
    /// is the name, as the document builder sets it).
    SubtestEndPrevious,
    /// `TAP_START name`: the VM agent's marker before a script's output. The parser starts
    /// a fresh top-level stream after it.
    TapStart { name: String },
    /// `TAP_END name exit=N`: the script is over with exit status `exit`. The parser closes
    /// the stream it was reading and starts a fresh one.
    TapEnd { name: String, exit: i32 },
}

/// A plan line. `skip_all` is `1..0`; `reason` is its comment with a leading `SKIP` word
/// removed (`1..0 # SKIP no network` gives `"no network"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub start: u64,
    pub end: u64,
    pub skip_all: bool,
    pub reason: Option<String>,
}

impl Plan {
    /// How many test points the plan promises (0 for skip-all).
    pub fn expected(&self) -> u64 {
        if self.end < self.start {
            0
        } else {
            self.end - self.start + 1
        }
    }
}

/// `Bail out!` and its reason (may be empty).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BailOut {
    pub reason: String,
}

/// `# SKIP` or `# TODO` on a test point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DirectiveKind {
    Skip,
    Todo,
}

/// A directive with its reason (`None` when the directive word stands alone).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Directive {
    pub kind: DirectiveKind,
    pub reason: Option<String>,
}

/// One `ok` / `not ok` line, plus (in a [`Document`]) its YAML block and child stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestPoint {
    /// The number written on the line; `None` when there was none.
    pub number: Option<u64>,
    pub ok: bool,
    /// Description with the leading `- ` removed and `\#`, `\\` unescaped.
    pub description: String,
    pub directive: Option<Directive>,
    /// The YAML diagnostics, parsed. Always `None` in a [`Event::TestPoint`] except for
    /// buffered subtests; the [`Document`] builder attaches [`Event::Yaml`] here.
    pub yaml: Option<serde_json::Value>,
    /// The child stream this test point closes.
    pub subtest: Option<Box<Document>>,
    /// `# time=12ms` (node's timing directive) in milliseconds. Not part of the JSON shape.
    #[serde(skip)]
    pub time_ms: Option<f64>,
}

impl TestPoint {
    /// Whether this test point counts as a failure for the verdict: `not ok` without a
    /// TODO or SKIP directive.
    pub fn is_failure(&self) -> bool {
        !self.ok && self.directive.is_none()
    }

    pub fn is_todo(&self) -> bool {
        matches!(&self.directive, Some(d) if d.kind == DirectiveKind::Todo)
    }

    pub fn is_skip(&self) -> bool {
        matches!(&self.directive, Some(d) if d.kind == DirectiveKind::Skip)
    }
}
