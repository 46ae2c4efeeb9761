//! The board image (`image::build_board`): a QEMU machine booted from it behaves like a
//! device on its serial console — it names the firmware on its disk, offers `login:`, and
//! gives a shell whose exit status can be read back. The QEMU-backed board tests of the
//! agent build on exactly this.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use testfarm_vm::image;

#[test]
fn a_board_image_names_its_disk_firmware_and_gives_a_shell() {
    let ws = support::workspace();
    let guest = testfarm_vm::guest_build::find_guest(&ws.join("target/vmtest-images"))
        .expect("write the embedded guest")
        .expect("this build embeds a guest");
    let inputs = image::host_inputs(guest).expect("host kernel/busybox");
    let img = image::build_board(&inputs, &ws.join("target/vmtest-images")).unwrap();
    assert_ne!(
        img.id,
        support::image().id,
        "a board image is its own image"
    );

    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.raw");
    let mut bytes = b"firmware-v7 built by the test\n".to_vec();
    bytes.resize(1 << 20, 0);
    std::fs::write(&disk, bytes).unwrap();
    let mut qemu = Machine(
        Command::new("qemu-system-x86_64")
            .args([
                "-machine",
                "q35",
                "-m",
                "256",
                "-nodefaults",
                "-display",
                "none",
            ])
            .args(["-serial", "stdio", "-kernel"])
            .arg(&img.kernel)
            .arg("-initrd")
            .arg(&img.initrd)
            .args(["-append", "console=ttyS0 quiet panic=-1", "-no-reboot"])
            .arg("-drive")
            .arg(format!("file={},format=raw,if=virtio", disk.display()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut stdin = qemu.0.stdin.take().unwrap();
    let stdout = qemu.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        let mut r = std::io::BufReader::new(stdout);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            // Prompts end without a newline: hand over what came at each space too.
            match r.read_until(b' ', &mut buf) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    if tx.send(String::from_utf8_lossy(&buf).into_owned()).is_err() {
                        return;
                    }
                }
            }
        }
    });
    let mut seen = String::new();
    let mut expect = |what: &str, secs: u64| {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !seen.contains(what) {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(s) => seen.push_str(&s),
                Err(_) => panic!("`{what}` not seen within {secs}s; console:\n{seen}"),
            }
        }
        // Keep what came after the match: the next prompt may be in the same chunk.
        let at = seen.find(what).unwrap_or(0) + what.len();
        seen = seen[at..].to_string();
    };
    expect("firmware firmware-v7 built by the test", 120);
    expect("qemu-board login: ", 30);
    stdin.write_all(b"root\n").unwrap();
    expect("root@qemu-board:~# ", 30);
    stdin.write_all(b"false; echo status=$?\n").unwrap();
    expect("status=1", 30);
}

/// Kills the machine however the test ends (a failed expectation panics).
struct Machine(std::process::Child);

impl Drop for Machine {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
