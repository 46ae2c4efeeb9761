//! One real VM (TCG) driven first with the literal v1 table, then, on the same guest after
//! `EXIT`, with framed v2: output split, in-band markers, timeouts, cancel, files.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use testfarm_guest::protocol::v2::Exec;
use testfarm_vm::agent::{self, Agent, ProtocolChoice};
use testfarm_vm::runtime_dir::RuntimeDir;
use testfarm_vm::vm::Vm;

fn sh(cmd: &str) -> Exec {
    Exec {
        argv: vec!["/bin/sh".into(), "-c".into(), cmd.into()],
        ..Exec::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_then_v2_on_a_real_guest() {
    tokio::time::timeout(Duration::from_secs(120), run())
        .await
        .expect("test timed out");
}

async fn run() {
    let share = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(share.path().join("t")).unwrap();
    std::fs::write(
        share.path().join("t/a_test.sh"),
        "echo 1..2\necho ok 1 - one\necho ok 2 - two\nexit 0\n",
    )
    .unwrap();
    eprintln!("image {:?}", support::image());
    let run_dir = RuntimeDir::new("vmtest-proto-").unwrap();
    let mut opts = support::vm_options(Some(share.path()));
    opts.protocol = ProtocolChoice::V1;
    let mut vm = Vm::boot("vm-1", &opts, &run_dir.subdir("vm-1").unwrap())
        .await
        .unwrap();
    let Agent::V1(a) = &mut vm.agent else {
        panic!("asked for v1")
    };

    eprintln!("step 1: v1, as tabled.");
    // v1, as tabled.
    a.ping().await.unwrap();
    let (out, code) = a.exec("echo hello; echo oops >&2; exit 3").await.unwrap();
    assert_eq!((out.as_str(), code), ("hello\noops\n", 3));
    let (tap, code) = a.test("t/a_test.sh").await.unwrap();
    assert_eq!(code, 0);
    assert_eq!(tap, "1..2\nok 1 - one\nok 2 - two\n");

    eprintln!("step 2: SHELL: an interactive shell on the po");
    // SHELL: an interactive shell on the port until it exits, then back to commands.
    a.send_raw(b"SHELL\n").await.unwrap();
    // Input sent before the shell starts would be read by the agent's command loop.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    a.send_raw(b"echo shell-$((1+2)); exit\n").await.unwrap();
    loop {
        if a.next_line().await.unwrap().contains("shell-3") {
            break;
        }
    }
    // Let the shell exit before the next command, or it would read it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    a.send_raw(b"PING\n").await.unwrap();
    loop {
        if a.next_line().await.unwrap().ends_with("PONG") {
            break;
        }
    }
    a.exit().await.unwrap();

    eprintln!("step 3: After EXIT the guest greets again; th");
    // After EXIT the guest greets again; this time upgrade on the same connection.
    let old = std::mem::replace(&mut vm.agent, Agent::V1(dummy()));
    let Agent::V1(mut a) = old else {
        unreachable!()
    };
    a.read_hello(Duration::from_secs(10)).await.unwrap();
    let agent = agent::negotiate(a, ProtocolChoice::Auto, Duration::from_secs(15))
        .await
        .unwrap();
    let Agent::V2(a) = &agent else {
        panic!("guest did not upgrade")
    };

    a.ping().await.unwrap();
    let out = a.exec(sh("echo out; echo err >&2; exit 7")).await.unwrap();
    assert_eq!(out.stdout, b"out\n");
    assert_eq!(out.stderr, b"err\n");
    assert_eq!(out.status.code, Some(7));

    eprintln!("step 4: In-band markers mean nothing to v2.");
    // In-band markers mean nothing to v2.
    let out = a
        .exec(sh(
            "echo TAP_END a_test.sh exit=0; echo '--- END OUTPUT (exit=0) ---'; echo after",
        ))
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "TAP_END a_test.sh exit=0\n--- END OUTPUT (exit=0) ---\nafter\n"
    );

    eprintln!("step 5: A timeout kills the whole process gro");
    // A timeout kills the whole process group, background children included.
    let mut e = sh("sleep 300 & echo $! > /tmp/bg.pid; sleep 300");
    e.timeout_ms = 1000;
    let out = a.exec(e).await.unwrap();
    assert!(out.status.timed_out, "{:?}", out.status);
    let check = a
        .exec(sh(
            "sleep 0.2; kill -0 $(cat /tmp/bg.pid) 2>/dev/null && echo alive || echo gone",
        ))
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&check.stdout), "gone\n");

    eprintln!("step 6: Cancel.");
    // Cancel.
    let mut req = a.spawn(sh("sleep 300")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.cancel(req.id).await.unwrap();
    let status = loop {
        match a.next(&mut req, None).await.unwrap() {
            testfarm_guest::protocol::v2::GuestMsg::Exit(s) => break s,
            _ => continue,
        }
    };
    assert!(status.cancelled && status.signal == Some(9), "{status:?}");

    eprintln!("step 7: Environment, working directory, files");
    // Environment, working directory, files.
    let mut e = sh("echo $FOO; pwd");
    e.env = vec![("FOO".into(), "bar".into())];
    e.cwd = Some("/tmp".into());
    let out = a.exec(e).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "bar\n/tmp\n");
    a.push(
        "/tmp/x/pushed.sh",
        0o755,
        b"#!/bin/sh\necho pushed\n".to_vec(),
    )
    .await
    .unwrap();
    let out = a
        .exec(Exec {
            argv: vec!["/tmp/x/pushed.sh".into()],
            ..Exec::default()
        })
        .await
        .unwrap();
    assert_eq!(out.stdout, b"pushed\n");
    assert_eq!(
        a.pull("/tmp/x/pushed.sh").await.unwrap(),
        b"#!/bin/sh\necho pushed\n"
    );
    assert!(a.pull("/nonexistent").await.is_err());

    eprintln!("step 8: Per-request timing on the open port.");
    // Per-request timing on the open port.
    let rtt = a.ping().await.unwrap();
    assert!(rtt < Duration::from_secs(1));
    vm.agent = agent;
    vm.shutdown().await;
}

fn dummy() -> testfarm_vm::agent::AgentV1 {
    let (s, _) = tokio::net::UnixStream::pair().unwrap();
    testfarm_vm::agent::AgentV1::new(s)
}
