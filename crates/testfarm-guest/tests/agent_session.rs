//! The real agent session code over a socket pair (no VM): the literal v1 table, the upgrade,
//! and what the guest does with garbage and truncated frames from the host.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use testfarm_guest::agent::{self, Options};
use testfarm_guest::protocol::v2::{self, GuestMsg, HostMsg};

fn start() -> (
    UnixStream,
    std::thread::JoinHandle<std::io::Result<agent::SessionEnd>>,
) {
    let (host, guest) = UnixStream::pair().unwrap();
    host.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let port = File::from(OwnedFd::from(guest));
    let opts = Options {
        share_dir: std::env::temp_dir(),
        ..Options::default()
    };
    let h = std::thread::spawn(move || agent::serve(port, &opts));
    (host, h)
}

fn line(r: &mut BufReader<UnixStream>) -> String {
    let mut s = String::new();
    r.read_line(&mut s).unwrap();
    s
}

#[test]
fn v1_table_literally() {
    let (host, h) = start();
    let mut w = host.try_clone().unwrap();
    let mut r = BufReader::new(host);
    assert_eq!(line(&mut r), "HELLO AGENT_v1\n");
    w.write_all(b"PING\n").unwrap();
    assert_eq!(line(&mut r), "PONG\n");
    w.write_all(b"EXEC echo hi; exit 4\n").unwrap();
    assert_eq!(line(&mut r), "--- BEGIN OUTPUT ---\n");
    assert_eq!(line(&mut r), "hi\n");
    assert_eq!(line(&mut r), "--- END OUTPUT (exit=4) ---\n");
    w.write_all(b"FROB\n").unwrap();
    assert!(line(&mut r).starts_with("ERR unknown v1 command"));
    w.write_all(b"EXIT\n").unwrap();
    assert_eq!(line(&mut r), "BYE\n");
    assert!(matches!(h.join().unwrap(), Ok(agent::SessionEnd::Goodbye)));
}

fn upgrade() -> (
    UnixStream,
    std::thread::JoinHandle<std::io::Result<agent::SessionEnd>>,
) {
    let (mut host, h) = start();
    let mut buf = [0u8; 15];
    host.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"HELLO AGENT_v1\n");
    host.write_all(b"UPGRADE v2\n").unwrap();
    let mut ok = [0u8; 14];
    host.read_exact(&mut ok).unwrap();
    assert_eq!(&ok, b"UPGRADE v2 OK\n");
    (host, h)
}

/// Reads frames until one that is not a heartbeat.
fn next_frame(host: &mut UnixStream, pending: &mut Vec<u8>) -> v2::Frame<GuestMsg> {
    let mut buf = [0u8; 4096];
    loop {
        if let Some((f, used)) = v2::decode::<GuestMsg>(pending).unwrap() {
            pending.drain(..used);
            if !matches!(f.msg, GuestMsg::Heartbeat { .. }) {
                return f;
            }
            continue;
        }
        let n = host.read(&mut buf).unwrap();
        assert!(n > 0, "guest closed");
        pending.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn garbage_from_the_host_is_named_and_ends_the_session() {
    let (mut host, h) = upgrade();
    let mut pending = Vec::new();
    host.write_all(&v2::encode(5, &HostMsg::Ping)).unwrap();
    let f = next_frame(&mut host, &mut pending);
    assert_eq!((f.id, f.msg), (5, GuestMsg::Pong));
    host.write_all(b"PING\n").unwrap();
    let f = next_frame(&mut host, &mut pending);
    match f.msg {
        GuestMsg::Error(e) => assert!(e.contains("bad frame magic byte 0x50"), "{e}"),
        other => panic!("{other:?}"),
    }
    let err = h.join().unwrap().unwrap_err();
    assert!(err.to_string().contains("bad frame magic"), "{err}");
}

#[test]
fn truncated_frame_then_eof_is_an_error_not_a_hang() {
    let (host, h) = upgrade();
    let frame = v2::encode(
        9,
        &HostMsg::Pull {
            path: "/etc/hostname".into(),
        },
    );
    (&host).write_all(&frame[..frame.len() - 3]).unwrap();
    host.shutdown(std::net::Shutdown::Both).unwrap();
    let err = h.join().unwrap().unwrap_err();
    assert!(err.to_string().contains("truncated frame"), "{err}");
}
