//! Where the reference parsers (node's tap-parser, Perl's TAP::Parser) disagree, testfarm picks
//! one (docs/tap.md, *Conformance*); each choice is pinned here, next to the readings that both
//! references share and that testfarm took on to agree with them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::json;
use testfarm_tap::{Counter, Document, Event, Options, Parser, Reason, Summary};

fn both(tap: &str) -> (Document, Summary) {
    let doc = Document::parse(tap.as_bytes());
    let summary = doc.summary(None);
    // The counting path must reach the same verdict.
    let mut p = Parser::with_options(Options {
        parse_yaml: false,
        keep_text: false,
    });
    let mut c = Counter::new();
    p.feed(tap.as_bytes(), &mut |e| c.event(&e));
    p.finish(&mut |e| c.event(&e));
    assert_eq!(
        c.finish().summary(None),
        summary,
        "counting path differs for {tap:?}"
    );
    (doc, summary)
}

fn kinds(s: &Summary) -> Vec<&'static str> {
    s.reasons.iter().map(Reason::kind).collect()
}

// --- Choices where the references disagree ---

/// Perl: "No plan found" (fail); node: synthetic `1..0 # no tests found` (pass). We follow
/// Perl at the top level.
#[test]
fn empty_stream_fails_like_perl() {
    for tap in ["", "\n", "one\nthree\n"] {
        let (doc, s) = both(tap);
        assert!(!s.ok, "{tap:?}");
        assert_eq!(kinds(&s), ["missing_plan"]);
        assert_eq!(doc.plan, None);
        assert_eq!(doc.version, None);
    }
}

/// …and node inside subtests: an empty streamed subtest passes with node's synthetic plan.
#[test]
fn empty_subtest_passes_like_node() {
    let (_, s) = both("1..1\n# Subtest: empty\nok 1 - empty\n");
    assert!(s.ok, "{s:?}");
    let (doc, s) = both("1..1\nok 1 - empty {\n}\n");
    assert!(s.ok, "{s:?}");
    assert!(doc.tests[0].subtest.is_some());
    let (doc, _) = both("1..1\n    # Subtest: x\n    # nothing\nok 1 - x\n");
    let sub = doc.tests[0].subtest.as_deref().expect("subtest");
    let plan = sub.plan.as_ref().expect("synthetic plan");
    assert!(plan.skip_all);
    assert_eq!(plan.reason.as_deref(), Some("no tests found"));
    assert_eq!(sub.version, Some(14));
}

/// Perl drops the SKIP word from a skip-all plan's reason; node keeps the whole comment.
#[test]
fn skip_all_reason_without_skip_word_like_perl() {
    for (tap, reason) in [
        (
            "1..0 # SKIP Insufficient positron flux\n",
            "Insufficient positron flux",
        ),
        ("1..0 # skipping: rope\n", "rope"),
        ("1..0 # no network\n", "no network"),
    ] {
        let (doc, s) = both(tap);
        assert!(s.ok);
        assert_eq!(doc.plan.unwrap().reason.as_deref(), Some(reason), "{tap:?}");
    }
    // Not a skip-all plan: the comment stays whole.
    let (doc, _) = both("1..1 # SKIP Insufficient positron flux\nok 1\n");
    assert_eq!(
        doc.plan.unwrap().reason.as_deref(),
        Some("SKIP Insufficient positron flux")
    );
}

/// node counts every test point of a skip-all stream as skipped; Perl (and we) count SKIP
/// directives only. Both fail the stream.
#[test]
fn skip_counts_directives_like_perl() {
    let (_, s) = both("TAP version 13\nok\n1..0\n");
    assert_eq!((s.ok, s.count, s.skip), (false, 1, 0));
    assert_eq!(kinds(&s), ["tests_after_skip_all"]);
}

// --- Readings both references share, which testfarm used to differ on ---

#[test]
fn duplicate_numbers_fail() {
    let (_, s) = both("TAP version 13\nok 1\nok 1\nok 1\n1..3\n");
    assert_eq!(kinds(&s), ["duplicate_number"]);
    let (_, s) = both("1..5\nok 1\nok 2\nok 3\nok 4\nok 4\n");
    assert_eq!(kinds(&s), ["duplicate_number"]);
    // Out of sequence but distinct is fine (node; Perl complains about the order).
    let (_, s) = both("1..4\nok 1\nok 3\nok 2\nok 4\n");
    assert!(s.ok, "{s:?}");
    let (_, s) = both("1..4\nok 1\nok 3\nok 2\nok 3\n");
    assert_eq!(kinds(&s), ["duplicate_number"]);
}

#[test]
fn strict_pragma_fails_non_tap() {
    let (_, s) =
        both("TAP version 13\n1..1\npragma +strict\nNonsense!\npragma -strict\nfine\nok 1\n");
    assert_eq!(kinds(&s), ["strict_non_tap"]);
    assert_eq!(s.reasons[0], Reason::StrictNonTap { count: 1 });
    // TAP version 12 and an invalid plan are non-TAP too.
    let (_, s) = both("pragma +strict\nTAP version 12\n1..1\nok 1\n");
    assert_eq!(kinds(&s), ["strict_non_tap"]);
    let (_, s) = both("pragma +strict\n100..1\nok 1\n1..1\n");
    assert_eq!(kinds(&s), ["strict_non_tap"]);
}

#[test]
fn plan_or_pragma_while_subtest_open_is_not_tap() {
    let (doc, s) = both("ok subtest {\n    1..1\n1..99\n    ok\n}\n1..1\n");
    assert!(s.ok, "{s:?}");
    assert_eq!(doc.plan.as_ref().map(|p| p.end), Some(1));
    assert_eq!(doc.tests[0].subtest.as_ref().unwrap().tests.len(), 1);
    let (doc, s) = both("1..1\n# Subtest\n    1..1\npragma +foo\n    ok\nok\n");
    assert!(s.ok, "{s:?}");
    assert!(doc.orphan_subtests.is_empty());
    assert!(doc.pragmas.is_empty());
}

#[test]
fn buffered_subtest_forms() {
    // Brace before a directive.
    let (doc, s) = both("1..1\nok 1 - second { # time=12.34ms\n    ok x\n    1..1\n}\n");
    assert!(s.ok, "{s:?}");
    assert_eq!(doc.tests[0].description, "second");
    assert_eq!(doc.tests[0].time_ms, Some(12.34));
    assert_eq!(doc.tests[0].subtest.as_ref().unwrap().tests.len(), 1);
    // Diagnostics first, then `{` … `}` on their own lines.
    let tap =
        "1..1\nok 1 - third\n  ---\n  some: diagnostic\n  ...\n{\n    not ok y\n    1..1\n}\n";
    let (doc, s) = both(tap);
    assert_eq!(kinds(&s), ["subtest_failures"]);
    let sub = doc.tests[0]
        .subtest
        .as_ref()
        .expect("attached to the test point before it");
    assert_eq!(sub.name, "third");
    assert_eq!(sub.tests[0].description, "y");
    assert_eq!(doc.tests[0].yaml, Some(json!({"some": "diagnostic"})));
    assert!(doc.orphan_subtests.is_empty());
    let events = testfarm_tap::parser::events(tap.as_bytes());
    assert!(events.contains(&Event::SubtestEndPrevious));
}

#[test]
fn duration_ms_is_the_time() {
    let (doc, _) = both("1..1\nok 1 - t\n  ---\n  duration_ms: 1.432\n  at: x\n  ...\n");
    assert_eq!(doc.tests[0].time_ms, Some(1.432));
    assert_eq!(doc.tests[0].yaml, Some(json!({"at": "x"})));
    // `# time=` wins, and then duration_ms stays in the diagnostics.
    let (doc, _) = both("1..1\nok 1 - t # time=5ms\n  ---\n  duration_ms: 1.5\n  ...\n");
    assert_eq!(doc.tests[0].time_ms, Some(5.0));
    assert_eq!(doc.tests[0].yaml, Some(json!({"duration_ms": 1.5})));
}

/// The one place the counting path (no YAML parsing) and the document differ: under strict,
/// a delimited block that is not valid YAML is non-TAP only to the full parse.
#[test]
fn strict_invalid_yaml_only_seen_by_full_parse() {
    let tap = "pragma +strict\n1..1\nok 1\n  ---\n  a: [\n  ...\n";
    let doc = Document::parse(tap.as_bytes());
    assert_eq!(kinds(&doc.summary(None)), ["strict_non_tap"]);
    let mut p = Parser::with_options(Options {
        parse_yaml: false,
        keep_text: false,
    });
    let mut c = Counter::new();
    p.feed(tap.as_bytes(), &mut |e| c.event(&e));
    p.finish(&mut |e| c.event(&e));
    assert!(c.finish().summary(None).ok);
}
