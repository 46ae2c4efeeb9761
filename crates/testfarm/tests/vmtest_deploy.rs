//! Deploy and boot on a QEMU host, end to end: a real server, a real `testfarm agent`
//! managing this machine as a qemu-host, and real QEMU VMs (TCG). A kernel and an
//! initramfs built by `testfarm vmtest image build` are uploaded as a build's artifacts;
//! jobs deploy the latest build of the branch, boot it, and run a TAP test in the guest.
//! A boot whose console pattern never shows is retried, then ends `error` with the console
//! log. Every VM is gone after its job.
//!
//! Named `vmtest_*` so nextest runs it in the one-at-a-time `qemu` group. Skips (saying
//! why) where QEMU or a kernel is missing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod agent_support;
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agent_support::*;
use serde_json::json;
use support::{Http, cli, stderr, stdout};

/// Why the test cannot run here, if it cannot.
fn missing() -> Option<String> {
    let qemu = Command::new("qemu-system-x86_64")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !qemu.is_ok_and(|s| s.success()) {
        return Some("qemu-system-x86_64 is not installed".into());
    }
    if let Err(e) = testfarm_vm::image::find_kernel() {
        return Some(e.to_string());
    }
    None
}

/// The guest image (kernel, initramfs with the static guest agent), built once per cache.
fn image() -> (PathBuf, PathBuf) {
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("vmtest-deploy-images");
    let out = Command::new(env!("CARGO_BIN_EXE_testfarm"))
        .args(["vmtest", "image", "build", "--cache"])
        .arg(&cache)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let img: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        PathBuf::from(img["kernel"].as_str().unwrap()),
        PathBuf::from(img["initrd"].as_str().unwrap()),
    )
}

/// Uploads the image as a build of `branch`; returns the build id.
fn upload_image(http: &Http, token: &str, branch: &str) -> String {
    let (kernel, initrd) = image();
    let r = http.post(
        "/api/v1/builds",
        token,
        json!({"commit": "c0ffee", "branch": branch, "arch": "x86_64"}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let build = r.body["id"].as_str().unwrap().to_string();
    for (file, name, kind) in [
        (kernel, "vmlinuz", "kernel"),
        (initrd, "initrd.img", "initrd"),
    ] {
        let r = http.call_with_headers(
            "PUT",
            &format!("/api/v1/builds/{build}/artifacts/{name}?kind={kind}"),
            token,
            &[("content-type", "application/octet-stream")],
            std::fs::read(&file).unwrap(),
        );
        assert_eq!(r.status, 201, "{}", r.text);
    }
    build
}

/// QEMU processes started for job `id` (their runtime directory names the job).
fn qemus_of(id: &str) -> Vec<String> {
    let needle = format!("job-{id}-");
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

fn assert_vm_gone(id: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !qemus_of(id).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(qemus_of(id).is_empty(), "QEMU of job {id} left running");
}

struct Setup {
    lab: support::Lab,
    server: support::Server,
    agent: Agent,
    http: Http,
}

fn setup(name: &str) -> Setup {
    let lab = lab("30s", "30s");
    let server = lab.start();
    let http = server.http();
    let at = agent_token(&http, &lab.token, name);
    let agent = Agent::start(
        &server.url,
        &at,
        name,
        "[[resource]]\nkind = \"qemu-host\"\n",
    );
    wait_registered(&http, &lab.token, &format!("{name}-qemu"));
    Setup {
        lab,
        server,
        agent,
        http,
    }
}

impl Setup {
    fn wait(&self, id: &str, within: Duration) -> serde_json::Value {
        let j = support::wait_job(&self.http, &self.lab.token, id, within);
        assert_vm_gone(id);
        j
    }
}

#[test]
fn deploy_boot_and_a_guest_tap_test_pass() {
    if let Some(why) = missing() {
        eprintln!("skipped: {why}");
        return;
    }
    let started = Instant::now();
    let s = setup("vmd1");
    let t = &s.lab.token;
    let build = upload_image(&s.http, t, "main");
    let spec = "name: vm-smoke\ntimeout: 8m\n\
        requires: { kind: qemu-host, resource: vmd1-qemu }\n\
        steps:\n\
        \x20 - shell: |\n\
        \x20     mkdir -p t\n\
        \x20     printf '%s\\n' 'echo 1..2' 'echo \"ok 1 - booted $(uname -r)\"' \
        '[ \"$(hostname)\" = testfarm-guest ] && echo \"ok 2 - runs in the guest\" || echo \"not ok 2 - on $(hostname)\"' > t/guest_test.sh\n\
        \x20 - deploy: { artifacts: { branch: main, latest: true }, memory: 256M }\n\
        \x20 - boot: { timeout: 3m }\n\
        \x20 - test: { run: 't/*_test.sh', via: guest, timeout: 2m }\n";
    let id = submit(&s.http, t, spec);
    let j = s.wait(&id, Duration::from_secs(480));
    let log = log(&s.http, t, &id);
    assert_eq!(j["state"], "passed", "{j}\n{log}\n{}", s.agent.log());
    assert!(log.contains(&format!("deploying build {build}")), "{log}");
    assert!(log.contains("sha256"), "{log}");
    assert!(log.contains("console socket"), "{log}");
    assert!(log.contains("ok 2 - runs in the guest"), "{log}");

    // The guest's TAP is the job's results.
    let r = s.http.get(&format!("/api/v1/jobs/{id}/results"), t);
    assert_eq!(r.status, 200, "{}", r.text);
    let runs = r.body["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{}", r.body);
    assert_eq!(runs[0]["name"], "t/guest_test.sh", "{}", r.body);
    assert_eq!(runs[0]["document"]["summary"]["pass"], 2, "{}", r.body);

    // What was deployed and how to reach the VM, kept with the job.
    let env = s
        .http
        .get(&format!("/api/v1/jobs/{id}/outputs/environment.json"), t);
    assert_eq!(env.status, 200, "{}", env.text);
    assert_eq!(
        env.body["deployed"]["build"],
        build.as_str(),
        "{}",
        env.text
    );
    assert_eq!(env.body["deployed"]["commit"], "c0ffee");
    assert!(env.body["vm"]["console_socket"].is_string(), "{}", env.text);
    assert_eq!(env.body["deployed"]["memory_mb"], 256);
    // The console log is there too.
    let out = cli(&s.server.url, t, &["logs", &id, "--console"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("boot attempt 1"), "{}", stdout(&out));
    assert!(started.elapsed() < Duration::from_secs(600));
}

#[test]
fn a_boot_that_never_shows_its_pattern_is_retried_then_ends_error_with_the_console() {
    if let Some(why) = missing() {
        eprintln!("skipped: {why}");
        return;
    }
    let started = Instant::now();
    let s = setup("vmd2");
    let t = &s.lab.token;
    upload_image(&s.http, t, "broken");
    let spec = "name: vm-no-login\ntimeout: 8m\n\
        requires: { kind: qemu-host, resource: vmd2-qemu }\n\
        steps:\n\
        \x20 - deploy: { artifacts: { branch: broken, latest: true }, memory: 256M, append: 'loglevel=6' }\n\
        \x20 - boot: { expect: 'login-that-never-comes:', timeout: 25s, retries: 1 }\n\
        \x20 - test: { run: 'true', via: guest }\n";
    let id = submit(&s.http, t, spec);
    let j = s.wait(&id, Duration::from_secs(300));
    let out = cli(&s.server.url, t, &["logs", &id, "--console"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let console = stdout(&out);
    assert_eq!(j["state"], "error", "{j}\n{}", s.agent.log());
    let boot = &j["steps"][1];
    assert_eq!(boot["outcome"], "error", "{j}");
    let reason = boot["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("the boot failed 2 times"), "{reason}");
    assert!(
        reason.contains("attempt 1: no \"login-that-never-comes:\" on the console within 25s"),
        "{reason}"
    );
    assert!(
        reason.contains("--- console tail ---"),
        "{reason}\n{console}\n{}",
        log(&s.http, t, &id)
    );
    assert_eq!(j["steps"][2]["outcome"], "skipped", "{j}");
    // Both attempts' consoles, with what the kernel printed.
    assert!(console.contains("boot attempt 1"), "{console}");
    assert!(console.contains("boot attempt 2"), "{console}");
    assert!(console.contains("Linux version"), "{console}");
    // The log says what happened to each attempt.
    let log = log(&s.http, t, &id);
    assert!(log.contains("boot attempt 1 failed"), "{log}");
    assert!(started.elapsed() < Duration::from_secs(400));
}

#[test]
fn a_cancelled_job_and_a_missing_build_leave_no_vm() {
    if let Some(why) = missing() {
        eprintln!("skipped: {why}");
        return;
    }
    let s = setup("vmd3");
    let t = &s.lab.token;
    // Nothing was built for this branch: the deploy step says so, `error`.
    let id = submit(
        &s.http,
        t,
        "name: vm-nothing\nrequires: { kind: qemu-host, resource: vmd3-qemu }\nsteps:\n  - deploy: { artifacts: { branch: nowhere, latest: true } }\n",
    );
    let j = s.wait(&id, Duration::from_secs(120));
    assert_eq!(j["state"], "error", "{j}");
    let reason = j["steps"][0]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("nowhere"), "{reason}");

    // A job cancelled while its VM runs a guest command: the VM goes with it.
    upload_image(&s.http, t, "main");
    let id = submit(
        &s.http,
        t,
        "name: vm-cancel\nrequires: { kind: qemu-host, resource: vmd3-qemu }\nsteps:\n  - deploy: { artifacts: { branch: main, latest: true }, memory: 256M }\n  - boot: { timeout: 3m }\n  - shell: { run: 'echo guest-sleeping; sleep 600', via: guest }\n",
    );
    support::wait_for("the guest command", Duration::from_secs(240), || {
        let l = log(&s.http, t, &id);
        (l.contains("guest-sleeping")).then_some(())
    });
    assert!(!qemus_of(&id).is_empty(), "the VM runs while the job does");
    let r = s.http.post(
        &format!("/api/v1/jobs/{id}/cancel"),
        t,
        json!({"reason": "test"}),
    );
    assert!(r.status < 300, "{}", r.text);
    let j = s.wait(&id, Duration::from_secs(60));
    assert_eq!(j["state"], "cancelled", "{j}");
}
