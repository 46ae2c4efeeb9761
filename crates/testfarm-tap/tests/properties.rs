//! Property tests: the parser never panics, and chunking never changes what it emits.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use testfarm_tap::{Event, Parser};

fn parse_in_chunks(data: &[u8], sizes: &[usize]) -> Vec<Event> {
    let mut out = Vec::new();
    let mut p = Parser::new();
    let mut rest = data;
    let mut i = 0;
    while !rest.is_empty() {
        let n = if sizes.is_empty() {
            rest.len()
        } else {
            sizes[i % sizes.len()].max(1)
        };
        let n = n.min(rest.len());
        p.feed(&rest[..n], &mut |e| out.push(e));
        rest = &rest[n..];
        i += 1;
    }
    p.finish(&mut |e| out.push(e));
    out
}

/// Lines that look like TAP (so the interesting paths are reached), mixed with noise.
fn tap_line() -> impl Strategy<Value = String> {
    let indent = prop_oneof![
        Just(""),
        Just("  "),
        Just("    "),
        Just("        "),
        Just("\t"),
        Just("   ")
    ];
    let body = prop_oneof![
        Just("TAP version 14".to_string()),
        Just("TAP_START s".to_string()),
        Just("TAP_END s exit=1".to_string()),
        (0u64..5, 0u64..5).prop_map(|(a, b)| format!("{a}..{b}")),
        Just("1..0 # SKIP all".to_string()),
        "(not )?ok( [0-9]{1,3})?( - [a-z\\\\# ]{0,12})?( # (SKIP|todo|time=1ms)[a-z ]{0,5})?( \\{)?",
        Just("---".to_string()),
        Just("...".to_string()),
        "[a-z]{1,5}: [a-z0-9\\[\\]{}]{0,6}",
        Just("# Subtest: x".to_string()),
        Just("# comment".to_string()),
        Just("}".to_string()),
        Just("{".to_string()),
        Just("pragma -strict".to_string()),
        Just("Bail out! why".to_string()),
        Just("pragma +strict".to_string()),
        ".{0,20}",
    ];
    (indent, body).prop_map(|(i, b)| format!("{i}{b}"))
}

fn tap_stream() -> impl Strategy<Value = Vec<u8>> {
    (
        proptest::collection::vec(tap_line(), 0..40),
        prop_oneof![Just("\n"), Just("\r\n")],
    )
        .prop_map(|(lines, nl)| lines.join(nl).into_bytes())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, timeout: 10_000, .. ProptestConfig::default() })]

    #[test]
    fn never_panics_on_bytes(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = testfarm_tap::Document::parse(&data);
    }

    #[test]
    fn chunking_invariance(data in tap_stream(), sizes in proptest::collection::vec(1usize..17, 0..6)) {
        let whole = parse_in_chunks(&data, &[]);
        let chunked = parse_in_chunks(&data, &sizes);
        prop_assert_eq!(whole, chunked);
    }

    #[test]
    fn chunking_invariance_bytes(data in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b' '), Just(b'o'), Just(b'k'), any::<u8>()], 0..512),
                                 sizes in proptest::collection::vec(1usize..9, 1..6)) {
        prop_assert_eq!(parse_in_chunks(&data, &[]), parse_in_chunks(&data, &sizes));
    }

    /// The counting path (no text, no YAML parsing) and the document reach the same counts
    /// and, unless a YAML block is invalid (only the full parse can tell), the same verdict.
    #[test]
    fn counting_agrees_with_document(data in tap_stream()) {
        let doc = testfarm_tap::Document::parse(&data);
        let mut p = testfarm_tap::Parser::with_options(testfarm_tap::Options { parse_yaml: false, keep_text: false });
        let mut c = testfarm_tap::Counter::new();
        p.feed(&data, &mut |e| c.event(&e));
        p.finish(&mut |e| c.event(&e));
        let fast = c.finish().summary(None);
        let full = doc.summary(None);
        prop_assert_eq!((fast.count, fast.pass, fast.fail, fast.todo, fast.skip),
                        (full.count, full.pass, full.fail, full.todo, full.skip));
        // Under `pragma +strict` an invalid YAML block is non-TAP, which only the full parse
        // sees (docs/tap.md, Parser behaviour 12).
        let text = String::from_utf8_lossy(&data);
        if !(text.contains("pragma +strict") && text.contains("---")) {
            prop_assert_eq!(fast.ok, full.ok, "{:?} vs {:?}", fast.reasons, full.reasons);
        }
    }

    #[test]
    fn writers_accept_any_stream(data in tap_stream()) {
        let run = testfarm_tap::report::SuiteRun::new("p", testfarm_tap::Document::parse(&data));
        let runs = [run];
        let xml = testfarm_tap::junit::render(&runs);
        prop_assert!(xml.starts_with("<?xml"));
        let _ = testfarm_tap::json::render(&runs);
        let _ = testfarm_tap::summary::render(&runs);
    }
}
