//! Parser throughput on a generated stream (the `testfarm bench tap` figure, under criterion).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use testfarm_tap::{Counter, Document, Options, Parser};

fn stream(points: usize) -> Vec<u8> {
    let mut s = String::from("TAP version 14\n");
    for i in 1..=points {
        if i % 50 == 0 {
            s.push_str(&format!("not ok {i} - check number {i} # TODO later\n  ---\n  got: {i}\n  expected: 0\n  ...\n"));
        } else {
            s.push_str(&format!("ok {i} - check number {i} works as expected\n"));
        }
        if i % 100 == 0 {
            s.push_str("# a comment\n");
        }
    }
    s.push_str(&format!("1..{points}\n"));
    s.into_bytes()
}

fn bench(c: &mut Criterion) {
    let data = stream(20_000);
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("counting", |b| {
        b.iter(|| {
            let mut p = Parser::with_options(Options {
                parse_yaml: false,
                keep_text: false,
            });
            let mut counter = Counter::new();
            for chunk in data.chunks(64 * 1024) {
                p.feed(chunk, &mut |e| counter.event(&e));
            }
            p.finish(&mut |e| counter.event(&e));
            counter.finish().summary(None)
        })
    });
    g.bench_function("document", |b| {
        b.iter(|| Document::parse(&data).tests.len())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
