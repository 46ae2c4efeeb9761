//! `testfarm vmtest` end to end with real QEMU VMs (TCG) over `examples/vmtest`: two VMs,
//! pass/fail/skip/TODO/hang/crash, reports, crash replacement, parallel runs, Ctrl-C, and
//! nothing left behind. Each run gets its own XDG_RUNTIME_DIR so leftovers are visible.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn vmtest(runtime: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_testfarm"));
    c.arg("vmtest")
        .current_dir(workspace().join("examples/vmtest"))
        .env("XDG_RUNTIME_DIR", runtime)
        .env("XDG_CACHE_HOME", workspace().join("target/vmtest-cache"))
        .args(["--accel", "tcg"])
        .stdin(Stdio::null());
    c
}

/// The README's vmtest tour is two commands: the binary carries its static guest, so an
/// image builds with no separate `cargo build` and no `$TESTFARM_GUEST`.
#[test]
fn image_build_needs_no_separate_guest_build() {
    let cache = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_testfarm"))
        .args(["vmtest", "image", "build", "--cache"])
        .arg(cache.path())
        .env_remove("TESTFARM_GUEST")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let img: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let initrd = PathBuf::from(img["initrd"].as_str().unwrap());
    assert!(initrd.starts_with(cache.path()), "{img}");
    assert!(std::fs::metadata(&initrd).unwrap().len() > 0);
    // The guest it used is the embedded one, written once under the cache, and static.
    let guests: Vec<_> = std::fs::read_dir(cache.path().join("guests"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(guests.len(), 1, "{guests:?}");
    assert!(testfarm_vm::guest_build::is_static(&guests[0]));
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// QEMU processes whose command line mentions `dir`.
fn qemus_under(dir: &Path) -> Vec<String> {
    let needle = dir.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains("qemu-system") && cmd.contains(&needle) {
                found.push(cmd);
            }
        }
    }
    found
}

fn assert_clean(runtime: &Path) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !qemus_under(runtime).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(qemus_under(runtime).is_empty(), "QEMU left running");
    let base = runtime.join("testfarm");
    let left: Vec<_> = std::fs::read_dir(&base)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "files left behind: {left:?}");
}

#[test]
fn example_tree_on_two_vms() {
    let runtime = tempfile::tempdir().unwrap();
    let reports = tempfile::tempdir().unwrap();
    let junit = reports.path().join("junit.xml");
    let json = reports.path().join("report.json");
    let start = Instant::now();
    let out = vmtest(runtime.path())
        .args(["-j", "2", "--keep-going", "--timeout", "4s"])
        .arg("--junit")
        .arg(&junit)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let s = text(&out);
    eprintln!("{s}");
    assert!(start.elapsed() < Duration::from_secs(150));
    assert_eq!(out.status.code(), Some(1), "{s}");
    let line = |name: &str| {
        s.lines()
            .find(|l| l.starts_with('[') && l.contains(name))
            .unwrap_or_else(|| panic!("no line for {name}"))
            .to_string()
    };
    assert!(line("pass_test.sh").contains("... ok"));
    assert!(
        line("markers_test.sh").contains("... ok"),
        "v2 confused by TAP_END"
    );
    assert!(line("skip_test.sh").contains("skipped: needs a real board"));
    assert!(line("todo_test.sh").contains("1 todo"));
    assert!(line("fail_test.sh").contains("Failed 1/2"));
    assert!(line("hang_test.sh").contains("timed out after 4s"));
    assert!(line("panic_test.sh").contains("guest crashed"));
    // Two VMs served tests, and the crashed one was replaced by a third when needed.
    assert!(s.contains("(vm-1,") && s.contains("(vm-2,"), "{s}");
    assert!(s.contains("accel tcg"));
    assert!(s.contains("Rerun the failed tests with:\n  testfarm vmtest t/02-failing/fail_test.sh t/03-hanging/hang_test.sh t/04-crashing/panic_test.sh"));

    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("<testsuites") && xml.contains("hang_test.sh"));
    assert!(
        xml.contains("Kernel panic") || xml.contains("sysrq"),
        "console tail in JUnit"
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(v.to_string().contains("panic_test.sh"));
    assert_clean(runtime.path());
}

#[test]
fn parallel_runs_do_not_collide_and_ctrl_c_cleans_up() {
    let runtime = tempfile::tempdir().unwrap();
    // Two runs side by side in the same runtime base.
    let spawn = || {
        vmtest(runtime.path())
            .args(["-j", "1", "--filter", "pass_test"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success(), "{}", text(&a));
    assert!(b.status.success(), "{}", text(&b));
    assert_clean(runtime.path());

    // Ctrl-C while a test hangs: QEMU and the run directory go away.
    let mut child = vmtest(runtime.path())
        .args(["--filter", "hang_test", "--timeout", "120s"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while qemus_under(runtime.path()).is_empty() {
        assert!(Instant::now() < deadline, "QEMU never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "vmtest ignored Ctrl-C");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status.code(), Some(130));
    assert_clean(runtime.path());
}

#[test]
fn isolate_test_gives_each_test_a_clean_guest() {
    let runtime = tempfile::tempdir().unwrap();
    let tree = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tree.path().join("t")).unwrap();
    // a leaves a file and a process that escaped its process group; b must see neither.
    std::fs::write(
        tree.path().join("t/a_test.sh"),
        "echo 1..1\necho dirty > /root/marker\nsetsid sleep 1000 >/dev/null 2>&1 </dev/null &\necho ok 1 - left a mess\n",
    )
    .unwrap();
    std::fs::write(
        tree.path().join("t/b_test.sh"),
        "echo 1..2\n[ ! -e /root/marker ] && echo ok 1 - no file || echo not ok 1 - file survived\n\
         [ -z \"$(ps | grep '[s]leep 1000')\" ] && echo ok 2 - no process || echo not ok 2 - process survived\n",
    )
    .unwrap();
    let out = vmtest(runtime.path())
        .arg("--root")
        .arg(tree.path())
        .args(["-j", "1", "--isolate", "test", "--keep-going"])
        .output()
        .unwrap();
    let s = text(&out);
    assert!(out.status.success(), "{s}");
    assert!(s.contains("isolate test"), "{s}");
    assert_clean(runtime.path());
}

#[test]
fn warm_pod_up_run_status_down() {
    let runtime = tempfile::tempdir().unwrap();
    let pod = |args: &[&str]| {
        let mut d = Command::new(env!("CARGO_BIN_EXE_testfarm"));
        d.args(["vmtest", "pod"])
            .args(args)
            .args(["--accel", "tcg"])
            .current_dir(workspace().join("examples/vmtest"))
            .env("XDG_RUNTIME_DIR", runtime.path())
            .env("XDG_CACHE_HOME", workspace().join("target/vmtest-cache"))
            .stdin(Stdio::null());
        d.output().unwrap()
    };
    /// Stops the pod even when an assertion fails half way.
    struct Down<'a>(&'a dyn Fn(&[&str]) -> Output);
    impl Drop for Down<'_> {
        fn drop(&mut self) {
            let _ = (self.0)(&["down", "--all"]);
        }
    }
    let _down = Down(&pod);
    let up = pod(&["up", "-j", "2"]);
    assert!(up.status.success(), "{}", text(&up));
    assert!(text(&up).contains("up: 2 VMs"), "{}", text(&up));

    // A run on the warm pod pays no boot.
    let start = Instant::now();
    let out = vmtest(runtime.path())
        .args(["--filter", "sanity"])
        .output()
        .unwrap();
    let s = text(&out);
    assert!(out.status.success(), "{s}");
    assert!(s.contains("using warm pod"), "{s}");
    assert!(start.elapsed() < Duration::from_secs(20), "{s}");

    // A crash on the warm pod: replaced, and the pod keeps two VMs.
    let out = vmtest(runtime.path())
        .args(["--filter", "panic"])
        .output()
        .unwrap();
    assert!(text(&out).contains("guest crashed"), "{}", text(&out));
    let out = vmtest(runtime.path())
        .args(["--filter", "pass_test"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let st = pod(&["status"]);
    let st = text(&st);
    assert!(st.contains("(current)") && st.contains("vm-3"), "{st}");

    // Different VM settings: a different pod key, so the warm pod is not used.
    let out = vmtest(runtime.path())
        .args(["--filter", "pass_test", "--memory", "300M"])
        .output()
        .unwrap();
    assert!(out.status.success() && !text(&out).contains("using warm pod"));

    let down = pod(&["down"]);
    assert!(text(&down).contains("stopped 1 pod"), "{}", text(&down));
    assert_clean(runtime.path());
}

#[test]
fn sigkill_takes_qemu_along_and_the_next_run_reaps_the_files() {
    let runtime = tempfile::tempdir().unwrap();
    let mut child = vmtest(runtime.path())
        .args(["--filter", "hang_test", "--timeout", "120s"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while qemus_under(runtime.path()).is_empty() {
        assert!(Instant::now() < deadline, "QEMU never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().unwrap(); // SIGKILL: no cleanup code runs.
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !qemus_under(runtime.path()).is_empty() {
        assert!(
            Instant::now() < deadline,
            "QEMU outlived a SIGKILLed testfarm"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The next run removes the dead run's directory.
    let out = vmtest(runtime.path())
        .args(["--filter", "skip_test"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_clean(runtime.path());

    // And the image command prints where the image is.
    let cache = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_testfarm"))
        .args(["vmtest", "image", "build", "--cache"])
        .arg(cache.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let initrd = v["initrd"].as_str().unwrap();
    assert!(Path::new(initrd).is_file() && initrd.starts_with(&*cache.path().to_string_lossy()));
}

#[test]
fn protocol_v1_runs_tests_as_the_reference_host_would() {
    let runtime = tempfile::tempdir().unwrap();
    let out = vmtest(runtime.path())
        .args([
            "--protocol",
            "v1",
            "--filter",
            "pass_test",
            "--filter",
            "fail_test",
        ])
        .args(["--keep-going", "-j", "1"])
        .output()
        .unwrap();
    let s = text(&out);
    assert_eq!(out.status.code(), Some(1), "{s}");
    assert!(s.contains("protocol v1"), "{s}");
    assert!(
        s.contains("pass_test.sh ... ok") || s.contains("pass_test.sh .... ok"),
        "{s}"
    );
    assert!(s.contains("Failed 1/2"), "{s}");
    assert_clean(runtime.path());
}
