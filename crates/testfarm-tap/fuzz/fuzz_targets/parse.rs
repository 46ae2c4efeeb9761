//! Any bytes, cut into chunks chosen by the input itself: the parser must not panic, must
//! give the same events whatever the chunking, and every writer must accept the result.
#![no_main]

use libfuzzer_sys::fuzz_target;
use testfarm_tap::report::SuiteRun;
use testfarm_tap::{Counter, Document, DocumentBuilder, Event, Options, Parser};

fn run(data: &[u8], sizes: &[u8], options: Options) -> Vec<Event> {
    let mut out = Vec::new();
    let mut p = Parser::with_options(options);
    let mut rest = data;
    let mut i = 0;
    while !rest.is_empty() {
        let n = if sizes.is_empty() {
            rest.len()
        } else {
            (sizes[i % sizes.len()] as usize).max(1)
        };
        let n = n.min(rest.len());
        p.feed(&rest[..n], &mut |e| out.push(e));
        rest = &rest[n..];
        i += 1;
    }
    p.finish(&mut |e| out.push(e));
    out
}

fuzz_target!(|input: &[u8]| {
    let (sizes, data) = match input.split_first() {
        Some((&k, rest)) => {
            let k = (k as usize % 8).min(rest.len());
            (&rest[..k], &rest[k..])
        }
        None => (&[][..], input),
    };
    let whole = run(data, &[], Options::default());
    let chunked = run(data, sizes, Options::default());
    assert_eq!(whole, chunked);

    let mut builder = DocumentBuilder::new();
    for e in whole {
        builder.event(e);
    }
    let doc: Document = builder.finish();
    assert_eq!(doc, Document::parse(data));

    let fast = run(
        data,
        sizes,
        Options {
            parse_yaml: false,
            keep_text: false,
        },
    );
    let mut counter = Counter::new();
    for e in &fast {
        counter.event(e);
    }
    let a = counter.finish().summary(Some(1));
    let b = doc.summary(Some(1));
    assert_eq!(
        (a.count, a.pass, a.fail, a.todo, a.skip),
        (b.count, b.pass, b.fail, b.todo, b.skip)
    );

    let runs = vec![SuiteRun::new("fuzz", doc)];
    let xml = testfarm_tap::junit::render(&runs);
    assert!(xml.ends_with("</testsuites>\n"));
    let _ = testfarm_tap::json::render(&runs);
    let _ = testfarm_tap::summary::render(&runs);
});
