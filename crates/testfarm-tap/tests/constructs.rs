//! Every construct of the issue, through the public API (events, documents, verdicts).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::json;
use testfarm_tap::parser::{MAX_DEPTH, MAX_LINE, events};
use testfarm_tap::{Counter, DirectiveKind, Document, Event, Options, Parser, Reason};

fn doc(s: &str) -> Document {
    Document::parse(s.as_bytes())
}

fn kinds(s: &str) -> Vec<String> {
    events(s.as_bytes())
        .iter()
        .map(|e| match e {
            Event::Version { version } => format!("version {version}"),
            Event::Plan(p) => format!("plan {}..{}", p.start, p.end),
            Event::TestPoint(t) => {
                format!("{} {}", if t.ok { "ok" } else { "not ok" }, t.description)
            }
            Event::Yaml { .. } => "yaml".into(),
            Event::BailOut(b) => format!("bail {}", b.reason),
            Event::Comment { text } => format!("# {text}"),
            Event::Pragma { name, enabled } => format!("pragma {enabled} {name}"),
            Event::Unknown { line } => format!("? {line}"),
            Event::SubtestStart { name, buffered } => format!("start {name} {buffered}"),
            Event::SubtestEnd => "end".into(),
            Event::SubtestEndPrevious => "end previous".into(),
            Event::TapStart { name } => format!("TAP_START {name}"),
            Event::TapEnd { name, exit } => format!("TAP_END {name} {exit}"),
        })
        .collect()
}

#[test]
fn issue_example_json_shape() {
    let d = doc(
        "TAP version 14\n1..3\nok 1 - loopback exists\nnot ok - dns answers # TODO not implemented\n  ---\n  got: 1\n  expected: 2\n  ...\n",
    );
    let v = testfarm_tap::json::document(&d, None);
    assert_eq!(
        v,
        json!({
            "version": 14,
            "plan": { "start": 1, "end": 3, "skip_all": false, "reason": null },
            "bailout": null,
            "tests": [
                { "number": 1, "ok": true, "description": "loopback exists",
                  "directive": null, "yaml": null, "subtest": null },
                { "number": null, "ok": false, "description": "dns answers",
                  "directive": { "kind": "todo", "reason": "not implemented" },
                  "yaml": { "got": 1, "expected": 2 }, "subtest": null }
            ],
            "comments": 0,
            "summary": { "ok": false, "count": 2, "pass": 1, "fail": 1, "todo": 1, "skip": 0,
                         "reasons": ["plan_mismatch: planned 3 tests but ran 2"] }
        })
    );
    // key order is the documented one
    let text = testfarm_tap::json::document_string(&d, None);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&text).unwrap(), v);
    let order: Vec<usize> = [
        "\"version\"",
        "\"plan\"",
        "\"bailout\"",
        "\"tests\"",
        "\"comments\"",
        "\"summary\"",
    ]
    .iter()
    .map(|k| text.rfind(k).unwrap())
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
}

#[test]
fn document_round_trips_through_json() {
    let d = doc("TAP version 13\nok 1 - a {\n    ok 1 - b\n    1..1\n}\n1..1\n");
    let s = serde_json::to_string(&d).unwrap();
    let back: Document = serde_json::from_str(&s).unwrap();
    assert_eq!(back.tests.len(), 1);
    assert!(back.tests[0].subtest.is_some());
}

#[test]
fn plan_at_start_and_end() {
    assert!(doc("1..2\nok 1\nok 2\n").summary(None).ok);
    assert!(doc("ok 1\nok 2\n1..2\n").summary(None).ok);
    let s = doc("ok 1\nok 2\n1..3\n").summary(None);
    assert_eq!(s.reasons, vec![Reason::PlanMismatch { planned: 3, ran: 2 }]);
    // after a trailing plan only comments may follow
    let d = doc("ok 1\n1..1\nok 2\n# fine\n");
    assert_eq!(d.tests.len(), 1);
    assert_eq!(d.unknown, 1);
    assert_eq!(d.comments, 1);
    // a second plan is not a plan
    let d = doc("1..1\nok 1\n1..5\n");
    assert_eq!(d.plan.as_ref().map(|p| p.end), Some(1));
    assert_eq!(d.unknown, 1);
    // a backwards plan is not a plan
    assert!(doc("3..1\n").plan.is_none());
}

#[test]
fn missing_plan_and_empty_stream() {
    let s = doc("ok 1\n").summary(None);
    assert_eq!(s.reasons, vec![Reason::MissingPlan]);
    let s = doc("").summary(None);
    assert_eq!(s.reasons, vec![Reason::MissingPlan]);
    let s = doc("garbage only\n").summary(None);
    assert!(!s.ok);
}

#[test]
fn skip_all() {
    let d = doc("TAP version 14\n1..0 # SKIP no network here\n");
    let p = d.plan.clone().unwrap();
    assert!(p.skip_all);
    assert_eq!(p.reason.as_deref(), Some("no network here"));
    assert!(d.summary(None).ok);
    let s = doc("1..0\nok 1\n").summary(None);
    // the test point after a skip-all plan is not TAP any more (only comments may follow)
    assert!(s.ok, "{s:?}");
    let s = doc("ok 1\n1..0\n").summary(None);
    assert_eq!(s.reasons, vec![Reason::TestsAfterSkipAll { count: 1 }]);
}

#[test]
fn directives_and_counts() {
    let d =
        doc("1..5\nok 1 # SKIP a\nnot ok 2 # skip b\nnot ok 3 #TODO c\nok 4 # todo d\nnot ok 5\n");
    let s = d.summary(None);
    assert_eq!((s.count, s.pass, s.fail, s.todo, s.skip), (5, 2, 3, 2, 2));
    assert_eq!(s.reasons, vec![Reason::Failures { count: 1 }]);
    assert_eq!(
        d.tests[2].directive.as_ref().map(|d| d.kind),
        Some(DirectiveKind::Todo)
    );
    assert_eq!(
        d.tests[2]
            .directive
            .as_ref()
            .and_then(|d| d.reason.as_deref()),
        Some("c")
    );
}

#[test]
fn escapes_in_descriptions() {
    let d = doc("1..2\nok 1 - a \\# b # SKIP c\nok 2 - x\\\\y\n");
    assert_eq!(d.tests[0].description, "a # b");
    assert!(d.tests[0].directive.is_some());
    assert_eq!(d.tests[1].description, "x\\y");
}

#[test]
fn bail_out() {
    let d = doc("1..3\nok 1\nBail out! database is gone\nok 2\nok 3\n");
    assert_eq!(
        d.bailout.as_ref().map(|b| b.reason.as_str()),
        Some("database is gone")
    );
    assert_eq!(d.tests.len(), 1);
    let s = d.summary(None);
    assert_eq!(
        s.reasons,
        vec![Reason::BailOut {
            reason: "database is gone".into()
        }]
    );
}

#[test]
fn bail_out_in_subtest_ends_everything() {
    let k = kinds("1..2\n# Subtest: a\n    1..1\n    Bail out! stop\nok 1 - a\nok 2\n");
    assert_eq!(
        k,
        [
            "plan 1..2",
            "start a false",
            "plan 1..1",
            "bail stop",
            "end",
            "bail stop"
        ]
    );
}

#[test]
fn version_rules() {
    assert_eq!(doc("TAP version 14\n1..0\n").version, Some(14));
    assert_eq!(doc("TAP version 13\n1..0\n").version, Some(13));
    // TAP 12 has no version line: `TAP version 12` is not one
    let d = doc("TAP version 12\n1..0\n");
    assert_eq!(d.version, None);
    assert_eq!(d.unknown, 1);
    // late version line
    let d = doc("ok 1\nTAP version 14\n1..1\n");
    assert_eq!(d.version, None);
}

#[test]
fn pragmas_comments_unknown() {
    let k = kinds("TAP version 14\npragma +strict\n# hello\nrandom text\n1..0\n");
    assert_eq!(
        k,
        [
            "version 14",
            "pragma true strict",
            "# hello",
            "? random text",
            "plan 1..0"
        ]
    );
}

#[test]
fn yaml_blocks() {
    let d = doc("1..1\nnot ok 1 - x\n  ---\n  message: boom\n  data:\n    got: [1, 2]\n  ...\n");
    assert_eq!(
        d.tests[0].yaml,
        Some(json!({"message": "boom", "data": {"got": [1, 2]}}))
    );
}

#[test]
fn yaml_with_odd_indentation() {
    // three spaces, a tab, and four spaces (not a subtest: it follows a test point)
    for indent in ["   ", "\t", "    ", " "] {
        let s = format!(
            "1..1\nnot ok 1\n{indent}---\n{indent}a: 1\n{indent}b:\n{indent}  - x\n{indent}...\n"
        );
        let d = doc(&s);
        assert_eq!(
            d.tests[0].yaml,
            Some(json!({"a": 1, "b": ["x"]})),
            "indent {indent:?}"
        );
        assert_eq!(d.unknown, 0);
    }
}

#[test]
fn yaml_garbage_is_kept_as_unknown() {
    // never closed
    let d = doc("1..2\nnot ok 1\n  ---\n  a: 1\nok 2\n");
    assert!(d.tests[0].yaml.is_none());
    assert_eq!(d.tests.len(), 2);
    assert_eq!(d.unknown, 2);
    // invalid YAML
    let d = doc("1..1\nnot ok 1\n  ---\n  a: [1\n  ...\n");
    assert!(d.tests[0].yaml.is_none());
    assert_eq!(d.unknown, 3);
    // indentation shrinks
    let d = doc("1..1\nnot ok 1\n    ---\n    a: 1\n  b: 2\n  ...\n");
    assert!(d.tests[0].yaml.is_none());
    // no test point before it
    let d = doc("  ---\n  a: 1\n  ...\n1..0\n");
    assert_eq!(d.unknown, 3);
    // blank lines inside are fine, comments and garbage inside are tolerated
    let d = doc("1..1\nnot ok 1\n  ---\n  a: 1\n\n  b: 2\n  ...\n");
    assert_eq!(d.tests[0].yaml, Some(json!({"a": 1, "b": 2})));
}

#[test]
fn subtest_with_comment_indented() {
    let s = "TAP version 14\n1..1\n    # Subtest: child one\n    1..2\n    ok 1 - a\n    not ok 2 - b\nnot ok 1 - child one\n";
    assert_eq!(
        kinds(s),
        [
            "version 14",
            "plan 1..1",
            "start child one false",
            "plan 1..2",
            "ok a",
            "not ok b",
            "end",
            "not ok child one"
        ]
    );
    let d = doc(s);
    let sub = d.tests[0].subtest.as_deref().unwrap();
    assert_eq!(sub.tests.len(), 2);
    assert_eq!(sub.name, "child one");
    assert_eq!(d.summary(None).reasons, vec![Reason::Failures { count: 1 }]);
}

#[test]
fn subtest_with_comment_unindented() {
    let s = "1..1\n# Subtest: outer\n    1..1\n    ok 1 - inner\nok 1 - outer\n";
    assert_eq!(
        kinds(s),
        [
            "plan 1..1",
            "start outer false",
            "plan 1..1",
            "ok inner",
            "end",
            "ok outer"
        ]
    );
}

#[test]
fn unnamed_subtest_without_comment() {
    let s = "1..1\n    1..1\n    ok 1 - inner\nok 1 - outer\n";
    assert_eq!(
        kinds(s),
        [
            "plan 1..1",
            "start  false",
            "plan 1..1",
            "ok inner",
            "end",
            "ok outer"
        ]
    );
    // an indented comment alone is just a comment
    assert_eq!(
        kinds("    # just a note\n1..0\n"),
        ["# just a note", "plan 1..0"]
    );
}

#[test]
fn nested_subtests_both_forms() {
    let s = "\
TAP version 14
1..2
# Subtest: streamed
    1..1
    # Subtest: deeper
        1..1
        ok 1 - leaf
    ok 1 - deeper
ok 1 - streamed
ok 2 - buffered {
    1..2
    ok 1 - b1
    ok 2 - b2 {
        1..1
        not ok 1 - deep leaf # TODO later
    }
}
";
    assert_eq!(
        kinds(s),
        [
            "version 14",
            "plan 1..2",
            "start streamed false",
            "plan 1..1",
            "start deeper false",
            "plan 1..1",
            "ok leaf",
            "end",
            "ok deeper",
            "end",
            "ok streamed",
            "start buffered true",
            "plan 1..2",
            "ok b1",
            "start b2 true",
            "plan 1..1",
            "not ok deep leaf",
            "end",
            "ok b2",
            "end",
            "ok buffered",
        ]
    );
    let d = doc(s);
    assert!(d.summary(None).ok, "{:?}", d.summary(None));
    let b = d.tests[1].subtest.as_deref().unwrap();
    let b2 = b.tests[1].subtest.as_deref().unwrap();
    assert_eq!(b2.tests[0].description, "deep leaf");
}

#[test]
fn failing_subtest_under_ok_point_fails_parent() {
    let d = doc("1..1\n# Subtest: s\n    1..1\n    not ok 1\nok 1 - s\n");
    assert_eq!(
        d.summary(None).reasons,
        vec![Reason::SubtestFailures { count: 1 }]
    );
    // buffered with yaml before the child
    let d = doc("1..1\nok 1 - s {\n  ---\n  note: x\n  ...\n    1..1\n    ok 1\n}\n");
    assert_eq!(d.tests[0].yaml, Some(json!({"note": "x"})));
    assert!(d.tests[0].subtest.is_some());
    assert!(d.summary(None).ok);
}

#[test]
fn empty_buffered_subtest() {
    let d = doc("1..1\nok 1 - nothing {\n}\n");
    assert!(d.tests[0].subtest.is_some());
    assert!(d.summary(None).ok);
}

#[test]
fn orphan_subtest_counts() {
    let d = doc("1..1\n# Subtest: s\n    1..1\n    not ok 1\n");
    assert_eq!(d.orphan_subtests.len(), 1);
    let s = d.summary(None);
    assert!(
        s.reasons.contains(&Reason::SubtestFailures { count: 1 }),
        "{s:?}"
    );
}

#[test]
fn child_version_lines_are_dropped() {
    let k = kinds("1..1\n# Subtest: s\n    TAP version 14\n    1..0\nok 1 - s\n");
    assert_eq!(
        k,
        ["plan 1..1", "start s false", "plan 1..0", "end", "ok s"]
    );
}

#[test]
fn tap_start_end_markers() {
    let s = "noise\nTAP_START a_test.sh\nTAP version 14\n1..1\nok 1\nTAP_END a_test.sh exit=0\nTAP_START b_test.sh\n1..2\nok 1\nTAP_END b_test.sh exit=3\n";
    let k = kinds(s);
    assert_eq!(
        k,
        [
            "? noise",
            "TAP_START a_test.sh",
            "version 14",
            "plan 1..1",
            "ok ",
            "TAP_END a_test.sh 0",
            "TAP_START b_test.sh",
            "plan 1..2",
            "ok ",
            "TAP_END b_test.sh 3"
        ]
    );
    let mut p = Parser::new();
    let mut c = testfarm_tap::report::Collector::new("stream");
    p.feed(s.as_bytes(), &mut |e| c.event(e));
    p.finish(&mut |e| c.event(e));
    let runs = c.finish();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0].name, "a_test.sh");
    assert!(runs[0].ok());
    assert_eq!(runs[1].exit_code, Some(3));
    let reasons = runs[1].summary().reasons;
    assert_eq!(
        reasons,
        vec![
            Reason::PlanMismatch { planned: 2, ran: 1 },
            Reason::NonZeroExit { code: 3 }
        ]
    );
    // the seed's short form, and a start that never ends
    assert_eq!(kinds("TAP_END exit=1\n"), ["TAP_END  1"]);
    assert_eq!(kinds("TAP_END x exit=nope\n"), ["? TAP_END x exit=nope"]);
    let mut c = testfarm_tap::report::Collector::new("s");
    for e in events(b"TAP_START x\n1..1\nok 1\n") {
        c.event(e);
    }
    let runs = c.finish();
    assert!(runs[0].outcome.is_some());
}

#[test]
fn markers_close_open_state() {
    // a subtest and a yaml block open when the script ends
    let k =
        kinds("TAP_START a\n1..1\nok 1\n  ---\n  a: 1\n# Subtest: s\n    ok 1\nTAP_END a exit=1\n");
    assert_eq!(k.last().map(String::as_str), Some("TAP_END a 1"));
    assert!(k.contains(&"end".to_string()));
}

#[test]
fn crlf_invalid_utf8_and_no_final_newline() {
    let d = Document::parse(b"1..2\r\nok 1 - caf\xc3\xa9\r\nok 2 - bad \xff\xfe bytes");
    assert_eq!(d.tests.len(), 2);
    assert_eq!(d.tests[0].description, "café");
    assert_eq!(d.tests[1].description, "bad \u{FFFD}\u{FFFD} bytes");
    assert!(d.summary(None).ok);
}

#[test]
fn huge_lines_are_capped() {
    let mut s = b"1..2\nok 1 - ".to_vec();
    s.extend(std::iter::repeat_n(b'x', 5 * MAX_LINE));
    s.extend_from_slice(b"\nok 2\n");
    // fed in small chunks and whole
    let whole = Document::parse(&s);
    assert_eq!(whole.tests.len(), 2);
    assert!(whole.tests[0].description.len() < MAX_LINE);
    let mut p = Parser::new();
    let mut n = 0;
    for c in s.chunks(1000) {
        p.feed(c, &mut |e| n += matches!(e, Event::TestPoint(_)) as usize);
    }
    p.finish(&mut |e| n += matches!(e, Event::TestPoint(_)) as usize);
    assert_eq!(n, 2);
}

#[test]
fn deep_nesting_is_capped() {
    let mut s = String::new();
    for depth in 0..200 {
        s.push_str(&" ".repeat(depth * 4));
        s.push_str("ok 1\n");
    }
    let evs = events(s.as_bytes());
    let starts = evs
        .iter()
        .filter(|e| matches!(e, Event::SubtestStart { .. }))
        .count();
    assert!(starts < MAX_DEPTH);
    // a line of spaces only
    let s = format!("{}ok 1\n", " ".repeat(1_000_000));
    let _ = events(s.as_bytes());
}

#[test]
fn garbage_never_panics_and_is_unknown() {
    let d = doc("\u{0}\u{1}\n}}}\n{\n...\n---\n  \t \nnot\nok\tx\n1..\n..1\n# Subtest:\n");
    // fuzz finds: multi-byte characters where ASCII was expected
    let _ =
        Document::parse("1..1\n    é\n    \u{FFFD}x\nok 1 # time=1é\nok 2 # time=é\n".as_bytes());
    let _ = Document::parse(b"    \xff\xfe\n\t\xb9\n");
    assert!(!d.summary(None).ok);
}

#[test]
fn exit_code_fails_a_passing_stream() {
    let d = doc("1..1\nok 1\n");
    assert!(d.summary(Some(0)).ok);
    assert_eq!(
        d.summary(Some(2)).reasons,
        vec![Reason::NonZeroExit { code: 2 }]
    );
}

#[test]
fn number_out_of_plan() {
    let s = doc("1..2\nok 1\nok 5\n").summary(None);
    assert_eq!(
        s.reasons,
        vec![Reason::NumberOutOfPlan {
            number: 5,
            start: 1,
            end: 2
        }]
    );
}

#[test]
fn counter_agrees_with_document() {
    let inputs = [
        "1..2\nok 1\nnot ok 2\n",
        "1..1\n# Subtest: s\n    1..1\n    not ok 1\nok 1 - s\n",
        "1..1\n# Subtest: s\n    1..1\n    not ok 1\n",
        "ok 1 - a {\n    ok 1\n}\nBail out! x\n",
        "1..0 # skip\n",
        "",
    ];
    for input in inputs {
        let d = doc(input);
        for opts in [
            Options::default(),
            Options {
                parse_yaml: false,
                keep_text: false,
            },
        ] {
            let mut p = Parser::with_options(opts);
            let mut c = Counter::new();
            p.feed(input.as_bytes(), &mut |e| c.event(&e));
            p.finish(&mut |e| c.event(&e));
            let a = c.finish().summary(Some(0));
            let b = d.summary(Some(0));
            assert_eq!(
                (a.ok, a.count, a.pass, a.fail, a.todo, a.skip),
                (b.ok, b.count, b.pass, b.fail, b.todo, b.skip),
                "{input:?}"
            );
            assert_eq!(
                a.reasons.iter().map(|r| r.kind()).collect::<Vec<_>>(),
                b.reasons.iter().map(|r| r.kind()).collect::<Vec<_>>(),
                "{input:?}"
            );
        }
    }
}
