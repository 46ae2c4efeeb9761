//! An agent job's VM (TCG): its guest agent can be greeted long after it said hello (a
//! boot proved on the console needs the agent later), it runs a command, and dropping the
//! value kills QEMU and removes the overlay, as a job's end does whatever path it took.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use testfarm_guest::protocol::v2::Exec;
use testfarm_vm::agent::Agent;
use testfarm_vm::config::{ResolvedAccel, VmConfig};
use testfarm_vm::job_vm::{JobVm, Placement};

/// Alive and not a zombie.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().next())
            != Some("Z")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_greeting_a_command_and_death_with_the_guard() {
    tokio::time::timeout(Duration::from_secs(150), run())
        .await
        .expect("test timed out");
}

async fn run() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.img");
    std::fs::write(&base, vec![0u8; 1 << 20]).unwrap();
    let img = support::image();
    let mut cfg = VmConfig::new(img.kernel, Some(img.initrd));
    cfg.rootfs = Some(base.clone());
    let overlay = dir.path().join("overlay.qcow2");
    let vm_dir = dir.path().join("vm");
    std::fs::create_dir(&vm_dir).unwrap();
    let placement = Placement {
        overlay: Some(overlay.clone()),
    };
    let mut vm = JobVm::start(&cfg, ResolvedAccel::Tcg, &vm_dir, &placement)
        .await
        .unwrap();
    assert!(overlay.is_file(), "an overlay over the rootfs");
    let pid = vm.pid().unwrap();
    assert!(alive(pid));
    // Nobody reads the agent socket while the guest boots and says hello.
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert!(vm.exited().is_none(), "{}", vm.qemu_log_tail(10));
    let Agent::V2(a) = vm.agent(Duration::from_secs(90)).await.unwrap() else {
        panic!("expected a v2 guest")
    };
    let out = a
        .exec(Exec {
            argv: vec![
                "/bin/sh".into(),
                "-c".into(),
                "echo hi from $(hostname)".into(),
            ],
            env: Vec::new(),
            cwd: None,
            timeout_ms: 10_000,
            isolate: false,
        })
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hi from testfarm-guest\n"
    );
    assert!(vm.has_agent());
    drop(vm);
    let start = std::time::Instant::now();
    while alive(pid) && start.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!alive(pid), "QEMU outlived its guard");
    assert!(!overlay.exists(), "the overlay outlived the VM");
    assert!(base.is_file(), "the base image is never touched");
}
