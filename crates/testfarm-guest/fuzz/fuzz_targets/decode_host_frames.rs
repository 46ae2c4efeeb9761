//! The host-side frame decoder (what the guest reads) on arbitrary bytes, fed in
//! arbitrary chunk sizes as a stream: never a panic, and every decoded frame re-encodes to
//! the bytes it came from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use testfarm_guest::protocol::v2::{self, HostMsg};

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, data)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let mut pending: Vec<u8> = Vec::new();
    for piece in data.chunks(chunk) {
        pending.extend_from_slice(piece);
        loop {
            match v2::decode::<HostMsg>(&pending) {
                Ok(Some((frame, used))) => {
                    assert_eq!(v2::encode(frame.id, &frame.msg), pending[..used]);
                    pending.drain(..used);
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    let _ = v2::check_eof(&pending);
});
