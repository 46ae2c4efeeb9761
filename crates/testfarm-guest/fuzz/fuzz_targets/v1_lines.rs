//! v1 line splitting and command/marker parsing on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use testfarm_guest::protocol::v1::{self, Command, LineBuffer};

fuzz_target!(|data: &[u8]| {
    let mut lb = LineBuffer::new(256);
    for piece in data.chunks(7) {
        lb.push(piece);
        loop {
            match lb.next_line() {
                Ok(Some(line)) => {
                    assert!(line.len() <= 256);
                    if let Ok(s) = std::str::from_utf8(&line) {
                        if let Ok(cmd) = Command::parse(s) {
                            let again = cmd.to_line();
                            let reparsed = Command::parse(again.trim_end_matches('\n'));
                            assert!(reparsed.is_ok(), "{again:?}");
                        }
                        let _ = v1::parse_end_output(s);
                        let _ = v1::parse_tap_end(s);
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    lb.take_rest();
                    break;
                }
            }
        }
    }
});
