//! A one-VM pod (TCG) through the library: a guest that stops answering is detected by its
//! missing heartbeats, killed and replaced; a test that fails once and passes on retry is
//! flaky; per-test kernel log lines are captured.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use testfarm_vm::pod::{Pod, PodOptions, TestOutcome};
use testfarm_vm::runtime_dir::RuntimeDir;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_guest_is_replaced_and_retries_mark_flaky() {
    tokio::time::timeout(Duration::from_secs(150), run())
        .await
        .expect("test timed out");
}

async fn run() {
    let tree = tempfile::tempdir().unwrap();
    let t = tree.path().join("t");
    std::fs::create_dir_all(&t).unwrap();
    // Freezes the agent itself: no more frames, not even heartbeats.
    std::fs::write(
        t.join("a_freeze_test.sh"),
        "echo 1..1\nkill -STOP $(pidof testfarm-guest)\nsleep 60\n",
    )
    .unwrap();
    std::fs::write(
        t.join("b_flaky_test.sh"),
        "echo 1..1\nif [ -e /tmp/seen ]; then echo ok 1; else touch /tmp/seen; echo not ok 1; fi\n",
    )
    .unwrap();
    std::fs::write(
        t.join("c_kmsg_test.sh"),
        "echo 1..2\necho '<2>testfarm: hello from the test' > /dev/kmsg\nsleep 0.5\necho ok 1\n\
         echo scribble > /dev/vda && echo ok 2 - wrote the overlay disk || echo not ok 2\n",
    )
    .unwrap();
    // Every VM boots a private qcow2 overlay of this base disk; the base must stay untouched.
    let base = tree.path().join("base.qcow2");
    let made = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&base)
        .arg("8M")
        .status()
        .expect("qemu-img (qemu-utils) is needed");
    assert!(made.success());
    let base_before = std::fs::read(&base).unwrap();
    let mut vm = support::vm_options(Some(tree.path()));
    vm.config.rootfs = Some(base.clone());
    vm.heartbeat_timeout = Duration::from_secs(4);
    let mut opts = PodOptions::new(1, vm);
    opts.retries = 1;
    opts.timeout = Duration::from_secs(60);
    let mut pod = Pod::start(opts, RuntimeDir::new("vm-pod-").unwrap())
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let paths = vec![
        "t/a_freeze_test.sh".to_string(),
        "t/b_flaky_test.sh".into(),
        "t/c_kmsg_test.sh".into(),
    ];
    pod.run(paths, tx).await;
    let mut results = Vec::new();
    while let Ok(r) = rx.try_recv() {
        results.push(r);
    }
    results.sort_by(|a, b| a.path.cmp(&b.path));
    assert_eq!(results.len(), 3);
    let frozen = results.iter().find(|r| r.path.contains("freeze")).unwrap();
    match &frozen.outcome {
        // It failed, was retried on a fresh VM, and froze that one too.
        TestOutcome::Error(m) => assert!(m.contains("unresponsive"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(frozen.console_tail.is_some());
    let flaky = results.iter().find(|r| r.path.contains("flaky")).unwrap();
    assert!(
        flaky.passed() && flaky.flaky && flaky.attempts == 2,
        "{flaky:?}"
    );
    let kmsg = results.iter().find(|r| r.path.contains("kmsg")).unwrap();
    assert!(
        kmsg.kernel_log.contains("hello from the test"),
        "{:?}",
        kmsg.kernel_log
    );
    assert!(kmsg.passed(), "{}", String::from_utf8_lossy(&kmsg.stdout));
    assert_eq!(
        std::fs::read(&base).unwrap(),
        base_before,
        "the base image was written"
    );
    // vm-1 froze, vm-2 (its replacement) froze on the retry, vm-3 ran the rest.
    assert_eq!(pod.vm_names(), vec!["vm-3".to_string()]);
    pod.shutdown().await;
}
