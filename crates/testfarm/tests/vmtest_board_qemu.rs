//! A QEMU-backed board through the same deploy → boot → test flow as a simulated one: a
//! real server, a real agent with a `[[board]]` whose power, console and flash drivers are
//! the `qemu` ones (QMP `cont`/`stop`/`system_reset`, the raw disk image rewritten in
//! place) and the `serial` console on the machine's pty, and a real QEMU machine booted
//! from `image::build_board` — it prints the firmware its disk holds, so the test sees the
//! flash take effect.
//!
//! Named `vmtest_*` so nextest runs it in the one-at-a-time `qemu` group. Skips (saying
//! why) where QEMU or a kernel is missing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod agent_support;
mod board_support;
mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use agent_support::*;
use board_support::*;
use serde_json::json;

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

/// Kills the QEMU machine when the test ends, however it ends.
struct Machine(std::process::Child);

impl Drop for Machine {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn vmtest_a_qemu_board_is_flashed_booted_and_tested_like_a_simulated_one() {
    if let Some(why) = missing() {
        println!("skipped: {why}");
        return;
    }
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("board-images");
    let guest = testfarm_vm::guest_build::find_guest(&cache)
        .unwrap()
        .expect("this build embeds a guest");
    let inputs = testfarm_vm::image::host_inputs(guest).unwrap();
    let img = testfarm_vm::image::build_board(&inputs, &cache).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.raw");
    let mut bytes = b"factory-firmware\n".to_vec();
    bytes.resize(1 << 20, 0);
    std::fs::write(&disk, bytes).unwrap();
    let qmp = dir.path().join("qmp.sock");
    // Started paused (-S): to the qemu power driver, that is "off".
    let mut _machine = Machine(
        Command::new("qemu-system-x86_64")
            .args([
                "-S",
                "-machine",
                "q35",
                "-m",
                "256",
                "-nodefaults",
                "-display",
                "none",
            ])
            // The serial port on a pty, read through the `serial` console driver as a
            // real USB-serial adapter would be.
            .args(["-serial", "pty"])
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", qmp.display()))
            .arg("-kernel")
            .arg(&img.kernel)
            .arg("-initrd")
            .arg(&img.initrd)
            .args(["-append", "console=ttyS0 quiet"])
            .arg("-drive")
            .arg(format!("file={},format=raw,if=virtio", disk.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // "char device redirected to /dev/pts/N (label serial0)", on its standard output.
    let stderr = _machine.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(at) = line.find("/dev/pts/") {
                let pty: String = line[at..].split_whitespace().next().unwrap_or("").into();
                let _ = tx.send(pty);
            }
        }
    });
    let pty = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("QEMU names the serial port's pty");
    support::wait_for("the QMP socket", Duration::from_secs(20), || {
        qmp.exists().then_some(())
    });
    let table = format!(
        r#"
[[board]]
name = "qemu-board-1"
board_type = "qemu"
arch = "x86_64"
power = {{ driver = "qemu", qmp = "{q}", timeout = "10s" }}
console = {{ driver = "serial", device = "{pty}", baud = 115200 }}
flash = {{ driver = "qemu", qmp = "{q}", image = "{d}", artifact = "firmware", timeout = "60s" }}
boot = {{ expect = "qemu-board login: $", login = "root", timeout = "3m" }}
"#,
        q = qmp.display(),
        d = disk.display()
    );

    let lab = lab("60s", "60s");
    let server = lab.start();
    let http = server.http();
    let t = &lab.token;
    let at = agent_token(&http, t, "qemu-bench");
    let agent = Agent::start_tables(&server.url, &at, "qemu-bench", &table);
    wait_board_state(
        &http,
        t,
        "qemu-board-1",
        "available",
        Duration::from_secs(60),
    );

    let r = http.post(
        "/api/v1/builds",
        t,
        json!({"commit": "feed", "branch": "main", "arch": "x86_64"}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let build = r.body["id"].as_str().unwrap().to_string();
    let r = http.call_with_headers(
        "PUT",
        &format!("/api/v1/builds/{build}/artifacts/fw.img?kind=firmware"),
        t,
        &[("content-type", "application/octet-stream")],
        format!("firmware-of-{build}\n").into_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.text);

    let spec = format!(
        "name: qemu-board\nrequires: {{ kind: board, resource: qemu-board-1 }}\ntimeout: 8m\nsteps:\n  - deploy: {{ artifacts: {{ build: {build}, kinds: [firmware] }} }}\n  - test: {{ run: 'head -c 64 /dev/vda | head -n 1; echo 1..1; echo ok 1 - the board runs', via: console, timeout: 1m }}\n"
    );
    let id = submit(&http, t, &spec);
    let j = support::wait_job(&http, t, &id, Duration::from_secs(480));
    let log = log(&http, t, &id);
    let console = http
        .get(&format!("/api/v1/jobs/{id}/outputs/console.log"), t)
        .text;
    assert_eq!(
        j["state"],
        "passed",
        "{j}\n{log}\nconsole:\n{console}\n{}",
        agent.log()
    );
    // The flash took effect: the machine booted and named the new firmware.
    assert!(
        console.contains(&format!("firmware firmware-of-{build}")),
        "{console}"
    );
    assert!(log.contains(&format!("firmware-of-{build}")), "{log}");
    let view = board(&http, t, "qemu-board-1");
    assert_eq!(view["current"]["build_id"], build.as_str(), "{view}");
    assert_eq!(view["known_good"]["build_id"], build.as_str(), "{view}");
    assert!(!history(&http, t, "qemu-board-1", "flash").is_empty());
    drop(server);
}
