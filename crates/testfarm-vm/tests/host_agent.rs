//! The host side against scripted guests over socket pairs (no VM): an agent written only to
//! the v1 table, and a guest that sends garbage or a truncated frame.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use testfarm_guest::protocol::v2::{self, GuestMsg};
use testfarm_vm::VmError;
use testfarm_vm::agent::{self, Agent, ProtocolChoice};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// A minimal agent written to the v1 table only: it ignores lines it does not know.
async fn v1_only_agent(s: UnixStream) {
    let (r, mut w) = s.into_split();
    w.write_all(b"HELLO AGENT_v1\n").await.unwrap();
    let mut lines = BufReader::new(r).lines();
    while let Ok(Some(l)) = lines.next_line().await {
        let reply = match l.as_str() {
            "PING" => "PONG\n".to_string(),
            "EXIT" => "BYE\n".to_string(),
            l if l.starts_with("EXEC ") => {
                "--- BEGIN OUTPUT ---\nran\n--- END OUTPUT (exit=0) ---\n".to_string()
            }
            l if l.starts_with("TEST ") => {
                "TAP_START x_test.sh\n1..1\nok 1\nTAP_END x_test.sh exit=0\n".to_string()
            }
            _ => continue,
        };
        w.write_all(reply.as_bytes()).await.unwrap();
    }
}

#[tokio::test]
async fn our_host_drives_a_v1_only_agent() {
    let (host, guest) = UnixStream::pair().unwrap();
    tokio::spawn(v1_only_agent(guest));
    let a = tokio::time::timeout(
        Duration::from_secs(20),
        agent::connect(
            host,
            Duration::from_secs(5),
            ProtocolChoice::Auto,
            Duration::from_secs(5),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    let Agent::V1(mut a) = a else {
        panic!("a v1-only agent cannot be v2")
    };
    a.ping().await.unwrap();
    assert_eq!(a.exec("true").await.unwrap(), ("ran\n".to_string(), 0));
    assert_eq!(
        a.test("t/x_test.sh").await.unwrap(),
        ("1..1\nok 1\n".to_string(), 0)
    );
    a.exit().await.unwrap();
}

async fn upgraded_with(guest_bytes: Vec<u8>) -> VmError {
    let (host, mut guest) = UnixStream::pair().unwrap();
    tokio::spawn(async move {
        guest.write_all(b"HELLO AGENT_v1\n").await.unwrap();
        let mut r = BufReader::new(&mut guest);
        let mut l = String::new();
        r.read_line(&mut l).await.unwrap();
        guest.write_all(b"UPGRADE v2 OK\n").await.unwrap();
        guest.write_all(&guest_bytes).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(guest);
    });
    let a = agent::connect(
        host,
        Duration::from_secs(5),
        ProtocolChoice::Auto,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let Agent::V2(a) = a else {
        panic!("expected v2")
    };
    tokio::time::timeout(Duration::from_secs(10), a.ping())
        .await
        .expect("a broken guest must not hang the host")
        .unwrap_err()
}

#[tokio::test]
async fn garbage_from_the_guest_is_named() {
    let e = upgraded_with(b"Segmentation fault\n".to_vec())
        .await
        .to_string();
    assert!(e.contains("bad frame magic byte 0x53"), "{e}");
}

#[tokio::test]
async fn truncated_frame_from_the_guest_is_named() {
    let f = v2::encode(0, &GuestMsg::Heartbeat { uptime_ms: 1 });
    let e = upgraded_with(f[..7].to_vec()).await.to_string();
    assert!(
        e.contains("truncated frame: stream ended with 7 of 10 bytes"),
        "{e}"
    );
}

#[tokio::test]
async fn silent_guest_is_unresponsive() {
    let (host, mut guest) = UnixStream::pair().unwrap();
    tokio::spawn(async move {
        guest.write_all(b"HELLO AGENT_v1\n").await.unwrap();
        let mut l = String::new();
        BufReader::new(&mut guest).read_line(&mut l).await.unwrap();
        guest.write_all(b"UPGRADE v2 OK\n").await.unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(guest);
    });
    let a = agent::connect(
        host,
        Duration::from_secs(5),
        ProtocolChoice::Auto,
        Duration::from_secs(1),
    )
    .await
    .unwrap();
    let Agent::V2(a) = a else {
        panic!("expected v2")
    };
    let e = tokio::time::timeout(Duration::from_secs(10), a.ping())
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(e, VmError::Unresponsive(_)), "{e}");
}
