//! The streaming parser: bytes in, [`Event`]s out.
//!
//! Two layers. [`Parser`] cuts the byte stream into lines (memchr over each chunk; a line
//! that is complete inside a chunk is classified in place, only a line split across chunks
//! is copied), caps line length, decodes UTF-8 lossily, and handles the VM agent's
//! `TAP_START`/`TAP_END` markers. [`Level`] is one TAP stream's state machine; a subtest is
//! a child `Level` owned by its parent, fed the parent's lines minus four spaces, exactly
//! as node's tap-parser feeds its child parsers. Memory is bounded by the line cap, the
//! YAML block cap and the nesting cap, never by the stream length.

use crate::event::{BailOut, Event, TestPoint};
use crate::line::{self, Line};
use crate::yaml;

/// Longer lines are cut to this many bytes (the rest of the line is dropped). Real TAP
/// lines are short; a megabyte of base64 on one line must not cost a megabyte per stream.
pub const MAX_LINE: usize = 64 * 1024;
/// A YAML block larger than this is not diagnostics any more: its lines are released as
/// unknown output and the block is abandoned, so a runaway block cannot grow memory.
pub const MAX_YAML: usize = 1024 * 1024;
/// Subtests nested deeper than this are not opened; their lines are unknown output. It
/// bounds recursion (and so the stack) on hostile input like lines of 60,000 spaces.
pub const MAX_DEPTH: usize = 64;

/// What the parser builds beyond classifying lines. The defaults suit most callers; the
/// counting path (`testfarm tap --format summary`) turns both off to parse at memchr speed.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Parse YAML blocks into values. When off, a well-formed block (`---` … `...`) is
    /// reported as `Event::Yaml { value: Null }` without being checked.
    pub parse_yaml: bool,
    /// Build descriptions, reasons and comment texts. When off they are empty strings.
    pub keep_text: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            parse_yaml: true,
            keep_text: true,
        }
    }
}

/// Streaming TAP parser. Feed it chunks of any size (results do not depend on where the
/// chunks are cut) and call [`Parser::finish`] at the end of the stream.
#[derive(Debug)]
pub struct Parser {
    options: Options,
    /// The beginning of a line whose end has not arrived yet (at most [`MAX_LINE`] bytes).
    partial: Vec<u8>,
    top: Level,
    /// Whether any byte has been fed since the last line end (so `finish` knows whether an
    /// unterminated last line exists, even an empty-after-cap one).
    pending_line: bool,
}

impl Default for Parser {
    fn default() -> Self {
        Self::new()
    }
}

impl Parser {
    pub fn new() -> Parser {
        Parser::with_options(Options::default())
    }

    pub fn with_options(options: Options) -> Parser {
        Parser {
            options,
            partial: Vec::new(),
            top: Level::new(0, false),
            pending_line: false,
        }
    }

    /// Parses the complete lines in `bytes` (plus what was left over from earlier chunks)
    /// and emits their events. An unterminated tail is kept for the next call.
    pub fn feed(&mut self, bytes: &[u8], emit: &mut impl FnMut(Event)) {
        let mut rest = bytes;
        while let Some(nl) = memchr::memchr(b'\n', rest) {
            let (line, tail) = (&rest[..nl], &rest[nl + 1..]);
            if self.pending_line {
                self.push_partial(line);
                let buf = std::mem::take(&mut self.partial);
                self.line(&buf, emit);
                self.partial = buf;
                self.partial.clear();
                self.pending_line = false;
            } else {
                let capped = &line[..line.len().min(MAX_LINE)];
                self.line(capped, emit);
            }
            rest = tail;
        }
        if !rest.is_empty() {
            self.push_partial(rest);
            self.pending_line = true;
        }
    }

    /// Ends the stream: a last line without `\n` is parsed, open YAML blocks and subtests
    /// are closed. The parser is then ready for a new stream.
    pub fn finish(&mut self, emit: &mut impl FnMut(Event)) {
        if self.pending_line {
            let buf = std::mem::take(&mut self.partial);
            self.line(&buf, emit);
            self.pending_line = false;
        }
        self.top.finish(&self.options, emit);
        self.top = Level::new(0, false);
    }

    fn push_partial(&mut self, bytes: &[u8]) {
        let room = MAX_LINE.saturating_sub(self.partial.len());
        self.partial
            .extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    fn line(&mut self, raw: &[u8], emit: &mut impl FnMut(Event)) {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        // `from_utf8` validates ASCII a word at a time; the lossy decoder is only for the
        // rare invalid line (it walks byte by byte).
        let text = match std::str::from_utf8(raw) {
            Ok(s) => std::borrow::Cow::Borrowed(s),
            Err(_) => String::from_utf8_lossy(raw),
        };
        if let Some(marker) = marker(&text) {
            self.top.finish(&self.options, emit);
            self.top = Level::new(0, false);
            emit(marker);
            return;
        }
        self.top.line(&text, &self.options, emit);
    }
}

/// `TAP_START name`, `TAP_END name exit=N` (also `TAP_END exit=N`): the VM agent's markers
/// around each script, written by `testfarm-guest` (see its protocol module).
fn marker(line: &str) -> Option<Event> {
    if let Some(rest) = line.strip_prefix("TAP_START") {
        if rest.is_empty() || rest.starts_with(' ') {
            return Some(Event::TapStart {
                name: rest.trim().to_string(),
            });
        }
        return None;
    }
    let rest = line.strip_prefix("TAP_END")?;
    let (name, exit) = if let Some(exit) = rest.strip_prefix(" exit=") {
        ("", exit)
    } else {
        let rest = rest.strip_prefix(' ')?;
        rest.rsplit_once(" exit=")?
    };
    let exit = exit.trim().parse().ok()?;
    Some(Event::TapEnd {
        name: name.trim().to_string(),
        exit,
    })
}

/// Whether a line of one level was taken as a bail out (which ends every enclosing level).
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    BailedOut(String),
}

/// An open YAML block: its indentation (taken from the `---` line, so any indentation
/// works) and its lines with that indentation removed.
#[derive(Debug)]
struct YamlBlock {
    indent: String,
    text: String,
}

/// The state of one TAP stream (the top level or one subtest).
#[derive(Debug)]
struct Level {
    depth: usize,
    /// A buffered subtest (`ok 1 - name {` … `}`): it ends only at its `}`.
    buffered: bool,
    child: Option<Box<Level>>,
    /// The test point of a buffered subtest, emitted once its child has ended.
    held: Option<TestPoint>,
    /// `# Subtest: name` seen unindented: the next indented TAP opens that subtest.
    maybe_child: Option<String>,
    yaml: Option<YamlBlock>,
    /// A YAML block may still attach to the last test point (node's `#current`).
    test_open: bool,
    /// The open test point got a YAML block (node's `#current.diag`).
    yaml_attached: bool,
    /// `{` on its own line after the open test point's YAML block: the next indented lines
    /// are a buffered subtest of that (already emitted) test point.
    brace_after_yaml: bool,
    /// The open child is such a subtest: it ends with [`Event::SubtestEndPrevious`].
    child_closes_previous: bool,
    plan_seen: bool,
    /// A plan came after test points (or was `1..0`): only comments may follow.
    post_plan: bool,
    count: u64,
    bailed: bool,
}

impl Level {
    fn new(depth: usize, buffered: bool) -> Level {
        Level {
            depth,
            buffered,
            child: None,
            held: None,
            maybe_child: None,
            yaml: None,
            test_open: false,
            yaml_attached: false,
            brace_after_yaml: false,
            child_closes_previous: false,
            plan_seen: false,
            post_plan: false,
            count: 0,
            bailed: false,
        }
    }

    fn line(&mut self, line: &str, o: &Options, emit: &mut impl FnMut(Event)) -> Flow {
        if self.bailed {
            // node ignores everything after a bail out.
            return Flow::Continue;
        }
        if line.is_empty() {
            // Blank lines belong to an open subtest or YAML block, else they are ignored.
            if let Some(child) = self.child.as_mut() {
                let flow = child.line("", o, emit);
                return self.after_child(flow, o, emit);
            }
            if let Some(y) = self.yaml.as_mut() {
                y.text.push('\n');
            }
            return Flow::Continue;
        }
        if self.depth > 0 && self.yaml.is_none() && line::version(line).is_some() {
            // node's omitVersion: children may repeat the version line; it means nothing.
            return Flow::Continue;
        }
        let first = line.as_bytes()[0];
        if first == b' ' || first == b'\t' {
            return self.indented(line, o, emit);
        }
        if line == "}" && self.child.as_ref().is_some_and(|c| c.buffered) {
            self.end_child(o, emit);
            self.release_held(emit);
            // node emits the test point here: no YAML block attaches to it any more.
            self.test_open = false;
            return Flow::Continue;
        }
        if line == "{"
            && self.test_open
            && self.yaml_attached
            && self.yaml.is_none()
            && self.held.is_none()
            && self.child.is_none()
        {
            // node's buffered subtest with diagnostics: `ok 1 - name`, its YAML, then `{`.
            self.brace_after_yaml = true;
            return Flow::Continue;
        }
        if line == "}" && self.held.is_some() && self.child.is_none() {
            // `ok 1 - name {` followed directly by `}`: an empty buffered subtest.
            let name = self.held_name(o);
            emit(Event::SubtestStart {
                name,
                buffered: true,
            });
            emit(Event::SubtestEnd);
            self.release_held(emit);
            return Flow::Continue;
        }
        let kind = line::classify(line, o.keep_text);
        match kind {
            Line::Unknown => {
                // node tolerates non-TAP in the middle of a YAML block; so do we.
                emit(unknown(line, o));
                return Flow::Continue;
            }
            Line::Comment(text) => {
                emit(Event::Comment {
                    text: keep(text, o),
                });
                return Flow::Continue;
            }
            _ => {}
        }
        // Real TAP: an unfinished YAML block was not one, a pending `# Subtest` was only a
        // comment unless this is another `# Subtest`.
        self.yaml_garbage(o, emit);
        if let Some(name) = self.maybe_child.take() {
            emit(Event::Comment {
                text: subtest_comment(&name, o),
            });
        }
        self.brace_after_yaml = false;
        if self.post_plan {
            emit(unknown(line, o));
            return Flow::Continue;
        }
        match kind {
            Line::Subtest(name) => {
                self.maybe_child = Some(name.to_string());
                Flow::Continue
            }
            Line::BailOut(reason) => {
                self.close_child(o, emit);
                self.bail(reason, emit)
            }
            Line::Pragma { name, enabled } => {
                if self.child.is_some() {
                    // node: no pragma inside an open subtest; the subtest stays open.
                    emit(unknown(line, o));
                    return Flow::Continue;
                }
                self.close_child(o, emit);
                self.test_open = false;
                emit(Event::Pragma {
                    name: name.to_string(),
                    enabled,
                });
                Flow::Continue
            }
            Line::Version(version) => {
                let at_start = version >= 13
                    && !self.plan_seen
                    && self.count == 0
                    && !self.test_open
                    && self.child.is_none()
                    && self.held.is_none();
                if at_start {
                    emit(Event::Version { version });
                } else {
                    emit(unknown(line, o));
                }
                Flow::Continue
            }
            Line::Plan(plan) => {
                let valid = plan.end >= plan.start || plan.skip_all;
                // node: a second plan, an invalid one, or one while a subtest is still open
                // (it has had no closing test point yet) is not a plan.
                if self.plan_seen || !valid || self.child.is_some() {
                    emit(unknown(line, o));
                    return Flow::Continue;
                }
                self.close_child(o, emit);
                self.test_open = false;
                self.plan_seen = true;
                if self.count > 0 || plan.skip_all {
                    self.post_plan = true;
                }
                emit(Event::Plan(plan));
                Flow::Continue
            }
            Line::TestPoint { point, buffered } => {
                self.close_child(o, emit);
                self.count += 1;
                self.test_open = true;
                self.yaml_attached = false;
                if buffered {
                    self.held = Some(point);
                } else {
                    emit(Event::TestPoint(point));
                }
                Flow::Continue
            }
            Line::Unknown | Line::Comment(_) => Flow::Continue,
        }
    }

    fn indented(&mut self, line: &str, o: &Options, emit: &mut impl FnMut(Event)) -> Flow {
        if self.child.is_some()
            && let Some(rest) = line.strip_prefix("    ")
        {
            let flow = match self.child.as_mut() {
                Some(child) => child.line(rest, o, emit),
                None => Flow::Continue,
            };
            return self.after_child(flow, o, emit);
        }
        if let Some(y) = self.yaml.as_mut() {
            if let Some(rest) = line.strip_prefix(y.indent.as_str()) {
                if rest == "..." {
                    self.finish_yaml(o, emit);
                } else if y.text.len() + rest.len() + 1 > MAX_YAML {
                    self.yaml_garbage(o, emit);
                    emit(unknown(line, o));
                } else {
                    y.text.push_str(rest);
                    y.text.push('\n');
                }
                return Flow::Continue;
            }
            // The indentation shrank: it was not YAML after all.
            self.yaml_garbage(o, emit);
        }
        let indent_len = line.len() - line.trim_start_matches([' ', '\t']).len();
        if self.test_open && self.yaml.is_none() && &line[indent_len..] == "---" {
            self.yaml = Some(YamlBlock {
                indent: line[..indent_len].to_string(),
                text: String::new(),
            });
            return Flow::Continue;
        }
        if let Some(rest) = line.strip_prefix("    ") {
            if self.maybe_child.is_some()
                || self.held.is_some()
                || self.brace_after_yaml
                || line::indented_subtest_name(line).is_some()
            {
                return self.start_child(line, o, emit);
            }
            // Any whole number of 4-space indents in front of real TAP opens an unnamed
            // subtest; an indented comment stays a comment of this level.
            let stripped = rest.trim_start_matches("    ");
            if !stripped.starts_with(' ') && line::is_tap(stripped) {
                if let Some(comment) = stripped.strip_prefix('#') {
                    emit(Event::Comment {
                        text: keep(comment.trim(), o),
                    });
                    return Flow::Continue;
                }
                return self.start_child(line, o, emit);
            }
        }
        let trimmed = &line[indent_len..];
        if let Some(text) = trimmed.strip_prefix('#') {
            emit(Event::Comment {
                text: keep(text.trim(), o),
            });
        } else {
            emit(unknown(line, o));
        }
        Flow::Continue
    }

    fn start_child(&mut self, line: &str, o: &Options, emit: &mut impl FnMut(Event)) -> Flow {
        if self.depth + 1 >= MAX_DEPTH {
            emit(unknown(line, o));
            return Flow::Continue;
        }
        let closes_previous = self.held.is_none() && self.brace_after_yaml;
        self.brace_after_yaml = false;
        let buffered = self.held.is_some() || closes_previous;
        let from_comment = !buffered && self.maybe_child.is_none();
        let name = if closes_previous {
            // The test point is already out; the document builder names the child after it.
            String::new()
        } else if buffered {
            self.held_name(o)
        } else if let Some(name) = self.maybe_child.take() {
            name
        } else {
            line::indented_subtest_name(line)
                .map(|n| keep(n, o))
                .unwrap_or_default()
        };
        if !buffered {
            self.test_open = false;
        }
        emit(Event::SubtestStart { name, buffered });
        let mut child = Box::new(Level::new(self.depth + 1, buffered));
        self.child_closes_previous = closes_previous;
        let flow = if from_comment && line::indented_subtest_name(line).is_some() {
            Flow::Continue
        } else {
            child.line(&line[4..], o, emit)
        };
        self.child = Some(child);
        self.after_child(flow, o, emit)
    }

    /// A bail out in a child ends the child and bails this level out too.
    fn after_child(&mut self, flow: Flow, o: &Options, emit: &mut impl FnMut(Event)) -> Flow {
        match flow {
            Flow::Continue => Flow::Continue,
            Flow::BailedOut(reason) => {
                self.end_child(o, emit);
                self.held = None;
                self.bail(reason, emit)
            }
        }
    }

    fn bail(&mut self, reason: String, emit: &mut impl FnMut(Event)) -> Flow {
        self.bailed = true;
        self.test_open = false;
        emit(Event::BailOut(BailOut {
            reason: reason.clone(),
        }));
        Flow::BailedOut(reason)
    }

    /// What a TAP line at this level does to an open subtest: it is over (a test point
    /// right after it is its closing test point), and a held buffered point is released.
    fn close_child(&mut self, o: &Options, emit: &mut impl FnMut(Event)) {
        self.end_child(o, emit);
        self.release_held(emit);
    }

    fn end_child(&mut self, o: &Options, emit: &mut impl FnMut(Event)) {
        if let Some(mut child) = self.child.take() {
            child.finish(o, emit);
            if std::mem::take(&mut self.child_closes_previous) {
                emit(Event::SubtestEndPrevious);
            } else {
                emit(Event::SubtestEnd);
            }
        }
    }

    fn release_held(&mut self, emit: &mut impl FnMut(Event)) {
        if let Some(point) = self.held.take() {
            emit(Event::TestPoint(point));
        }
    }

    fn held_name(&self, o: &Options) -> String {
        match &self.held {
            Some(p) if o.keep_text => p.description.clone(),
            _ => String::new(),
        }
    }

    fn finish_yaml(&mut self, o: &Options, emit: &mut impl FnMut(Event)) {
        let Some(block) = self.yaml.take() else {
            return;
        };
        let value = if o.parse_yaml {
            match yaml::parse(&block.text) {
                Ok(Some(v)) => v,
                Ok(None) => return,
                Err(_) => {
                    release_yaml_lines(&block, true, o, emit);
                    return;
                }
            }
        } else {
            serde_json::Value::Null
        };
        match self.held.as_mut() {
            Some(point) => {
                let mut value = value;
                yaml::take_duration(&mut value, &mut point.time_ms);
                point.yaml = Some(value);
            }
            None => {
                self.yaml_attached = true;
                emit(Event::Yaml { value });
            }
        }
    }

    /// An unfinished (or oversized) YAML block turns out not to be one: its lines become
    /// unknown output, in order.
    fn yaml_garbage(&mut self, o: &Options, emit: &mut impl FnMut(Event)) {
        if let Some(block) = self.yaml.take() {
            release_yaml_lines(&block, false, o, emit);
        }
    }

    fn finish(&mut self, o: &Options, emit: &mut impl FnMut(Event)) {
        self.yaml_garbage(o, emit);
        self.end_child(o, emit);
        if let Some(name) = self.maybe_child.take() {
            emit(Event::Comment {
                text: subtest_comment(&name, o),
            });
        }
        self.release_held(emit);
    }
}

fn release_yaml_lines(block: &YamlBlock, closed: bool, o: &Options, emit: &mut impl FnMut(Event)) {
    let line = |s: &str| Event::Unknown {
        line: if o.keep_text {
            format!("{}{}", block.indent, s)
        } else {
            String::new()
        },
    };
    emit(line("---"));
    for l in block.text.lines() {
        emit(line(l));
    }
    if closed {
        emit(line("..."));
    }
}

fn subtest_comment(name: &str, o: &Options) -> String {
    if !o.keep_text {
        String::new()
    } else if name.is_empty() {
        "Subtest".to_string()
    } else {
        format!("Subtest: {name}")
    }
}

fn keep(text: &str, o: &Options) -> String {
    if o.keep_text {
        text.to_string()
    } else {
        String::new()
    }
}

fn unknown(line: &str, o: &Options) -> Event {
    Event::Unknown {
        line: keep(line, o),
    }
}

/// Parses a whole byte slice into events (convenience for tests and small inputs).
pub fn events(bytes: &[u8]) -> Vec<Event> {
    let mut out = Vec::new();
    let mut p = Parser::new();
    p.feed(bytes, &mut |e| out.push(e));
    p.finish(&mut |e| out.push(e));
    out
}
