//! Count a TAP file with the constant-memory path: `cargo run --release --example count FILE`
//! (handy for profiling the parser without the CLI).

use std::io::Read;

use testfarm_tap::{Counter, Options, Parser};

fn main() -> std::io::Result<()> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "/dev/stdin".into());
    let full = std::env::args().nth(2).is_some_and(|a| a == "full");
    let options = if full {
        Options::default()
    } else {
        Options {
            parse_yaml: false,
            keep_text: false,
        }
    };
    let mut parser = Parser::with_options(options);
    let mut counter = Counter::new();
    let mut file = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 256 * 1024];
    let start = std::time::Instant::now();
    let mut bytes = 0usize;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        bytes += n;
        parser.feed(&buf[..n], &mut |e| counter.event(&e));
    }
    parser.finish(&mut |e| counter.event(&e));
    let s = counter.finish().summary(None);
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{} tests, ok={}, {:.1} MB/s",
        s.count,
        s.ok,
        bytes as f64 / 1e6 / secs
    );
    Ok(())
}
