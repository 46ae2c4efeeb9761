//! Classifying one line (already stripped of its subtest indentation, its `\n` and `\r`).
//!
//! Each pattern is node tap-parser's (`line-type.ts`, `result.ts`, `parse-directive.ts`),
//! written as byte scans instead of regular expressions: this is the hot path, and a
//! dispatch on the first byte plus one forward scan is what makes the parser fast.

use crate::event::{Directive, DirectiveKind, Plan, TestPoint};

/// What a line is, before the level state machine decides whether it is allowed where it
/// stands (a second plan, a late version line… become [`Line::Unknown`] there).
#[derive(Debug)]
pub(crate) enum Line<'a> {
    TestPoint {
        point: TestPoint,
        buffered: bool,
    },
    Plan(Plan),
    BailOut(String),
    Version(u32),
    Pragma {
        name: &'a str,
        enabled: bool,
    },
    /// `# Subtest` / `# Subtest: name`.
    Subtest(&'a str),
    Comment(&'a str),
    Unknown,
}

/// Classifies an unindented line. `keep_text` false skips building descriptions and
/// reasons (the counting path never looks at them).
pub(crate) fn classify(line: &str, keep_text: bool) -> Line<'_> {
    let b = line.as_bytes();
    match b.first() {
        Some(b'o') | Some(b'n') => test_point(line, keep_text).unwrap_or(Line::Unknown),
        Some(b'#') => comment_or_subtest(line),
        Some(b'0'..=b'9') => plan(line, keep_text).map_or(Line::Unknown, Line::Plan),
        Some(b'p') => pragma(line).unwrap_or(Line::Unknown),
        Some(b'B') | Some(b'b') => bail_out(line, keep_text).unwrap_or(Line::Unknown),
        Some(b'T') | Some(b't') => version(line).map_or(Line::Unknown, Line::Version),
        _ => Line::Unknown,
    }
}

/// Whether the line (unindented) is any kind of TAP, used to decide if an indented line
/// opens an unnamed subtest.
pub(crate) fn is_tap(line: &str) -> bool {
    !matches!(classify(line, false), Line::Unknown)
}

/// `# Subtest…` indented by exactly four spaces (node's `subtestIndent`).
pub(crate) fn indented_subtest_name(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("    ")?;
    if !rest.starts_with('#') {
        return None;
    }
    match comment_or_subtest(rest) {
        Line::Subtest(name) => Some(name),
        _ => None,
    }
}

/// `TAP version N`, case-insensitive, as node's `version` pattern.
pub(crate) fn version(line: &str) -> Option<u32> {
    let b = line.as_bytes();
    if b.len() < 13 || !b[..12].eq_ignore_ascii_case(b"TAP version ") {
        return None;
    }
    let digits = &line[12..];
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    // An absurd version number is still a version line; it saturates.
    Some(digits.parse().unwrap_or(u32::MAX))
}

fn comment_or_subtest(line: &str) -> Line<'_> {
    if let Some(rest) = line.strip_prefix("# Subtest") {
        if rest.is_empty() {
            return Line::Subtest("");
        }
        if let Some(name) = rest.strip_prefix(": ") {
            return Line::Subtest(name.trim());
        }
    }
    Line::Comment(line.strip_prefix('#').unwrap_or(line).trim())
}

fn pragma(line: &str) -> Option<Line<'_>> {
    let rest = line.strip_prefix("pragma ")?;
    let enabled = match rest.as_bytes().first()? {
        b'+' => true,
        b'-' => false,
        _ => return None,
    };
    let name = &rest[1..];
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-');
    valid.then_some(Line::Pragma { name, enabled })
}

fn bail_out(line: &str, keep_text: bool) -> Option<Line<'_>> {
    let b = line.as_bytes();
    if b.len() < 9 || !b[..9].eq_ignore_ascii_case(b"bail out!") {
        return None;
    }
    let reason = if keep_text {
        unescape(line[9..].trim())
    } else {
        String::new()
    };
    Some(Line::BailOut(reason))
}

/// `start..end [# comment]` (node: `^([0-9]+)\.\.([0-9]+)(?:\s+(?:#\s*(.*)))?$`).
fn plan(line: &str, keep_text: bool) -> Option<Plan> {
    let b = line.as_bytes();
    let dots = b.iter().position(|&c| !c.is_ascii_digit())?;
    if b.get(dots..dots + 2) != Some(b"..") {
        return None;
    }
    let start: u64 = line[..dots].parse().ok()?;
    let after = &line[dots + 2..];
    let end_len = after
        .bytes()
        .position(|c| !c.is_ascii_digit())
        .unwrap_or(after.len());
    if end_len == 0 {
        return None;
    }
    let end: u64 = after[..end_len].parse().ok()?;
    let tail = &after[end_len..];
    let comment = if tail.is_empty() {
        None
    } else {
        let trimmed = tail.trim_start();
        if trimmed.len() == tail.len() {
            return None; // needs whitespace before `#`
        }
        let text = trimmed.strip_prefix('#')?;
        Some(text.trim())
    };
    let skip_all = start == 1 && end == 0;
    let reason = match comment {
        Some(c) if keep_text && !c.is_empty() => {
            let c = unescape(c);
            let c = if skip_all { strip_skip_word(&c) } else { c };
            Some(c)
        }
        _ => None,
    };
    Some(Plan {
        start,
        end,
        skip_all,
        reason,
    })
}

/// `SKIP reason` → `reason` in a skip-all plan's comment.
fn strip_skip_word(c: &str) -> String {
    let b = c.as_bytes();
    if b.len() >= 4 && b[..4].eq_ignore_ascii_case(b"skip") {
        let rest = c[4..].trim_start_matches(|ch: char| !ch.is_whitespace() && ch != ':');
        let rest = rest.trim_start_matches(':').trim();
        rest.to_string()
    } else {
        c.to_string()
    }
}

/// `(not )?ok( N)?(( -)? description)?({)?` and its directive.
fn test_point(line: &str, keep_text: bool) -> Option<Line<'static>> {
    let (ok, rest) = if let Some(r) = line.strip_prefix("ok") {
        (true, r)
    } else if let Some(r) = line.strip_prefix("not ok") {
        (false, r)
    } else {
        return None;
    };
    // Optional number: ` 123` followed by nothing, `{` or a space (else the digits are
    // part of the description, as the regex backtracks).
    let mut number = None;
    let mut m = rest;
    if let Some(after_space) = rest.strip_prefix(' ') {
        let n = after_space
            .bytes()
            .position(|c| !c.is_ascii_digit())
            .unwrap_or(after_space.len());
        if n > 0 {
            let tail = &after_space[n..];
            if tail.is_empty() || tail == "{" || tail.starts_with(' ') {
                // Overflowing numbers are not numbers: they stay in the description.
                if let Ok(v) = after_space[..n].parse::<u64>() {
                    number = Some(v);
                    m = tail;
                }
            }
        }
    }
    // node's OPEN_BRACE_EOL (`\{\s*$`): trailing whitespace after the brace is allowed.
    let (part, mut buffered) = match m.trim_end().strip_suffix('{') {
        Some(p) => (p, true),
        None => (m, false),
    };
    if !part.is_empty() && !part.starts_with(' ') {
        return None;
    }
    // ` - description`: the dash goes only when a space follows it.
    let part = match part.strip_prefix(" -") {
        Some(p) if p.starts_with(' ') => p,
        _ => part,
    };
    let (mut description, directive, time_ms, brace) = split_directive(part, keep_text);
    if brace && !buffered {
        // `ok 2 - name { # time=1ms`: node strips the brace from the description (before the
        // directive) and buffers the subtest all the same.
        buffered = true;
        if keep_text {
            description = description
                .strip_suffix('{')
                .unwrap_or(&description)
                .trim_end()
                .to_string();
        }
    }
    Some(Line::TestPoint {
        point: TestPoint {
            number,
            ok,
            description,
            directive,
            yaml: None,
            subtest: None,
            time_ms,
        },
        buffered,
    })
}

/// Splits `description # directive` the way node does: `\\` is a literal backslash, `\#`
/// a literal hash, and the directive starts at the first other `#` that follows
/// whitespace (or an escaped backslash) or starts the text. Text after it that is not a
/// SKIP/TODO/time directive stays in the description. The flag is whether the description
/// before a recognised directive ends with `{` (a buffered subtest, as node reads it).
fn split_directive(part: &str, keep_text: bool) -> (String, Option<Directive>, Option<f64>, bool) {
    let b = part.as_bytes();
    // Fast path for the common line: no `#` and no escape, so no directive either.
    if memchr::memchr2(b'#', b'\\', b).is_none() {
        let description = if keep_text {
            part.trim().to_string()
        } else {
            String::new()
        };
        return (description, None, None, false);
    }
    let mut split = None;
    let mut i = 0;
    // Whether the previous logical character counts as whitespace for the lookbehind.
    let mut prev_space = true;
    let mut has_escape = false;
    while i < b.len() {
        match b[i] {
            b'\\' if matches!(b.get(i + 1), Some(b'\\') | Some(b'#')) => {
                has_escape = true;
                // `\\` becomes a placeholder that regex `\s` matches; `\#` is a literal.
                prev_space = b[i + 1] == b'\\';
                i += 2;
                continue;
            }
            b'#' if prev_space => {
                split = Some(i);
                break;
            }
            c => prev_space = c.is_ascii_whitespace(),
        }
        i += 1;
    }
    let Some(at) = split else {
        let description = if keep_text {
            text(part.trim(), has_escape)
        } else {
            String::new()
        };
        return (description, None, None, false);
    };
    let head = &part[..at];
    let brace = head.trim_end().ends_with('{');
    let tail = &part[at + 1..];
    let tail_unescaped = unescape(tail);
    match parse_directive(tail_unescaped.trim(), keep_text) {
        Some(Parsed::Directive(d)) => {
            let description = if keep_text {
                text(head.trim(), has_escape)
            } else {
                String::new()
            };
            (description, Some(d), None, brace)
        }
        Some(Parsed::Time(ms)) => {
            let description = if keep_text {
                text(head.trim(), has_escape)
            } else {
                String::new()
            };
            (description, None, Some(ms), brace)
        }
        None => {
            let description = if keep_text {
                let mut d = unescape(head);
                if !tail.is_empty() {
                    d.push('#');
                    d.push_str(&tail_unescaped);
                }
                d.trim().to_string()
            } else {
                String::new()
            };
            (description, None, None, false)
        }
    }
}

fn text(s: &str, has_escape: bool) -> String {
    if has_escape {
        unescape(s)
    } else {
        s.to_string()
    }
}

enum Parsed {
    Directive(Directive),
    Time(f64),
}

/// node's `parseDirective`: `time=12ms|1.5s`, or `^(todo|skip)\S*\b(.*)$` (case-insensitive).
fn parse_directive(s: &str, keep_text: bool) -> Option<Parsed> {
    if s.is_empty() {
        return None;
    }
    if let Some(ms) = time_directive(s) {
        return Some(Parsed::Time(ms));
    }
    let b = s.as_bytes();
    if b.len() < 4 {
        return None;
    }
    let kind = if b[..4].eq_ignore_ascii_case(b"todo") {
        DirectiveKind::Todo
    } else if b[..4].eq_ignore_ascii_case(b"skip") {
        DirectiveKind::Skip
    } else {
        return None;
    };
    // `\S*\b`: the non-space run after the keyword, backtracked to its last word boundary.
    let run_end = b[4..]
        .iter()
        .position(|c| c.is_ascii_whitespace())
        .map_or(b.len(), |p| p + 4);
    let is_word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut cut = 4;
    for p in (4..=run_end).rev() {
        let before = is_word(b[p - 1]);
        let after = b.get(p).is_some_and(|&c| is_word(c));
        if before != after {
            cut = p;
            break;
        }
    }
    let reason = s[cut..].trim();
    let reason = (keep_text && !reason.is_empty()).then(|| reason.to_string());
    Some(Parsed::Directive(Directive { kind, reason }))
}

fn time_directive(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    if b.len() < 6 || !b[..5].eq_ignore_ascii_case(b"time=") {
        return None;
    }
    let v = &s[5..];
    let vb = v.as_bytes();
    // Byte checks first: the suffix tests must not slice inside a multi-byte character.
    let (num, scale) = if vb.len() > 2 && vb[vb.len() - 2..].eq_ignore_ascii_case(b"ms") {
        (&v[..v.len() - 2], 1.0)
    } else if vb.len() > 1 && vb[vb.len() - 1].eq_ignore_ascii_case(&b's') {
        (&v[..v.len() - 1], 1000.0)
    } else {
        return None;
    };
    let ok = !num.is_empty()
        && num.bytes().all(|c| c.is_ascii_digit() || c == b'.')
        && num.bytes().filter(|&c| c == b'.').count() <= 1
        && !num.starts_with('.')
        && !num.ends_with('.');
    if !ok {
        return None;
    }
    num.parse::<f64>().ok().map(|n| n * scale)
}

/// `\\` → `\`, `\#` → `#` (node's `unesc`).
pub(crate) fn unescape(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\'
            && let Some(&n) = chars.peek()
            && (n == '\\' || n == '#')
        {
            out.push(n);
            chars.next();
            continue;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(line: &str) -> (TestPoint, bool) {
        match classify(line, true) {
            Line::TestPoint { point, buffered } => (point, buffered),
            other => panic!("{line:?} is {other:?}"),
        }
    }

    #[test]
    fn plain_points() {
        let (p, b) = tp("ok 1 - loopback exists");
        assert!(p.ok && !b);
        assert_eq!(p.number, Some(1));
        assert_eq!(p.description, "loopback exists");
        let (p, _) = tp("not ok");
        assert!(!p.ok);
        assert_eq!(p.number, None);
        assert_eq!(p.description, "");
        let (p, _) = tp("ok 12 no dash");
        assert_eq!((p.number, p.description.as_str()), (Some(12), "no dash"));
        let (p, _) = tp("ok 1a");
        assert_eq!((p.number, p.description.as_str()), (None, "1a"));
        let (p, _) = tp("ok - no number");
        assert_eq!((p.number, p.description.as_str()), (None, "no number"));
        let (p, _) = tp("ok 1 -- dashes");
        assert_eq!(p.description, "-- dashes");
        assert!(matches!(classify("okay", true), Line::Unknown));
        assert!(matches!(classify("ok\t1", true), Line::Unknown));
        assert!(matches!(classify("not  ok", true), Line::Unknown));
    }

    #[test]
    fn huge_number_stays_in_description() {
        let (p, _) = tp("ok 99999999999999999999999 - big");
        assert_eq!(p.number, None);
        assert_eq!(p.description, "99999999999999999999999 - big");
    }

    #[test]
    fn directives() {
        let (p, _) = tp("not ok 2 - dns answers # TODO not implemented");
        let d = p.directive.expect("directive");
        assert_eq!(d.kind, DirectiveKind::Todo);
        assert_eq!(d.reason.as_deref(), Some("not implemented"));
        assert_eq!(p.description, "dns answers");

        let (p, _) = tp("ok 3 # skip");
        assert_eq!(
            p.directive.as_ref().map(|d| d.kind),
            Some(DirectiveKind::Skip)
        );
        assert_eq!(p.directive.and_then(|d| d.reason), None);
        assert_eq!(p.description, "");

        // no space after `#`, any case, longer keyword
        let (p, _) = tp("ok 4 - net #SKIP no network");
        assert_eq!(
            p.directive.map(|d| (d.kind, d.reason)),
            Some((DirectiveKind::Skip, Some("no network".into())))
        );
        let (p, _) = tp("ok 5 - x # Skipped: later");
        assert_eq!(p.directive.map(|d| d.kind), Some(DirectiveKind::Skip));
        let (p, _) = tp("not ok 6 - y #todo");
        assert_eq!(p.directive.map(|d| d.kind), Some(DirectiveKind::Todo));
        // `#` glued to a word is not a directive
        let (p, _) = tp("ok 7 - issue#SKIP");
        assert!(p.directive.is_none());
        assert_eq!(p.description, "issue#SKIP");
        // not a directive word: stays in the description
        let (p, _) = tp("ok 8 - a # b");
        assert!(p.directive.is_none());
        assert_eq!(p.description, "a # b");
        // time directive
        let (p, _) = tp("ok 9 - t # time=12.5ms");
        assert_eq!(p.time_ms, Some(12.5));
        let (p, _) = tp("ok 9 - t # time=2s");
        assert_eq!(p.time_ms, Some(2000.0));
    }

    #[test]
    fn escapes() {
        let (p, _) = tp(r"ok 1 - hash \# not a directive # SKIP really");
        assert_eq!(p.description, "hash # not a directive");
        assert_eq!(p.directive.map(|d| d.kind), Some(DirectiveKind::Skip));
        let (p, _) = tp(r"ok 2 - back\\slash");
        assert_eq!(p.description, r"back\slash");
        let (p, _) = tp(r"ok 3 - \# SKIP");
        assert_eq!(p.description, "# SKIP");
        assert!(p.directive.is_none());
        // an escaped backslash before `#` leaves the `#` a directive marker
        let (p, _) = tp(r"ok 4 - a\\# todo t");
        assert_eq!(p.description, r"a\");
        assert_eq!(p.directive.map(|d| d.kind), Some(DirectiveKind::Todo));
    }

    #[test]
    fn buffered() {
        let (p, b) = tp("ok 1 - child {");
        assert!(b);
        assert_eq!(p.description, "child");
        let (_, b) = tp("ok 1 {");
        assert!(b);
        let (p, b) = tp("ok 2 - c # todo later {");
        assert!(b);
        assert_eq!(p.directive.map(|d| d.kind), Some(DirectiveKind::Todo));
    }

    #[test]
    fn plans() {
        let Line::Plan(p) = classify("1..3", true) else {
            panic!()
        };
        assert_eq!((p.start, p.end, p.skip_all, p.reason), (1, 3, false, None));
        let Line::Plan(p) = classify("1..0 # SKIP no network", true) else {
            panic!()
        };
        assert!(p.skip_all);
        assert_eq!(p.reason.as_deref(), Some("no network"));
        let Line::Plan(p) = classify("1..0 #Skipped: all", true) else {
            panic!()
        };
        assert_eq!(p.reason.as_deref(), Some("all"));
        assert!(matches!(classify("1..3 junk", true), Line::Unknown));
        assert!(matches!(classify("1..3#x", true), Line::Unknown));
        assert!(matches!(classify("1..", true), Line::Unknown));
        assert!(matches!(
            classify("1..99999999999999999999999", true),
            Line::Unknown
        ));
    }

    #[test]
    fn others() {
        assert!(
            matches!(classify("Bail out! disk full", true), Line::BailOut(r) if r == "disk full")
        );
        assert!(matches!(classify("BAIL OUT!", true), Line::BailOut(r) if r.is_empty()));
        assert!(matches!(
            classify("TAP version 14", true),
            Line::Version(14)
        ));
        assert!(matches!(
            classify("tap VERSION 13", true),
            Line::Version(13)
        ));
        assert!(matches!(classify("TAP version x", true), Line::Unknown));
        assert!(matches!(
            classify("pragma +strict", true),
            Line::Pragma {
                name: "strict",
                enabled: true
            }
        ));
        assert!(matches!(
            classify("pragma -x_y-z", true),
            Line::Pragma {
                name: "x_y-z",
                enabled: false
            }
        ));
        assert!(matches!(classify("pragma strict", true), Line::Unknown));
        assert!(matches!(
            classify("# Subtest: name here", true),
            Line::Subtest("name here")
        ));
        assert!(matches!(classify("# Subtest", true), Line::Subtest("")));
        assert!(matches!(classify("# hello", true), Line::Comment("hello")));
        assert!(matches!(classify("hello", true), Line::Unknown));
        assert_eq!(indented_subtest_name("    # Subtest: a"), Some("a"));
        assert_eq!(indented_subtest_name("  # Subtest: a"), None);
    }
}
