//! The `qemu` power and flash drivers against a real QEMU, kept tiny (`-machine none`:
//! no CPU, no guest, under TCG in a few milliseconds) since only the QMP control path is
//! under test. Skipped, with the reason printed, where `qemu-system-x86_64` is missing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::bounded;
use testfarm_board::flash::{FlashRequest, flash_driver};
use testfarm_board::parse_boards;
use testfarm_board::power::{PowerOutcome, PowerState, power_driver};

fn qemu() -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join("qemu-system-x86_64"))
        .find(|p| p.exists())
}

#[tokio::test]
async fn qmp_power_and_flash_drive_a_real_qemu() {
    let Some(qemu) = qemu() else {
        println!("skipped: qemu-system-x86_64 is not installed");
        return;
    };
    bounded(60, async {
        let dir = tempfile::tempdir().unwrap();
        let qmp = dir.path().join("qmp.sock");
        let disk = dir.path().join("disk.raw");
        std::fs::write(&disk, vec![0u8; 64 * 1024]).unwrap();
        let _qemu = tokio::process::Command::new(qemu)
            .args(["-machine", "none", "-S", "-display", "none", "-nodefaults"])
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", qmp.display()))
            .arg("-drive")
            .arg(format!(
                "file={},format=raw,if=none,id=disk0",
                disk.display()
            ))
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        for _ in 0..500 {
            if qmp.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let toml = format!(
            r#"
[[board]]
name = "qemu-1"
board_type = "qemu-none"
arch = "x86_64"
power = {{ driver = "qemu", qmp = "{q}", timeout = "5s" }}
console = {{ driver = "tcp", address = "127.0.0.1:1" }}
flash = {{ driver = "qemu", qmp = "{q}", image = "{d}", timeout = "10s" }}
"#,
            q = qmp.display(),
            d = disk.display()
        );
        let board = parse_boards(&toml).unwrap().remove(0);
        let power = power_driver(&board);
        // Started with -S: paused before the first instruction, which is "off".
        assert_eq!(
            power.status().await.unwrap(),
            PowerOutcome::Done(PowerState::Off)
        );
        assert_eq!(
            power.on().await.unwrap(),
            PowerOutcome::Done(PowerState::On)
        );
        assert_eq!(
            power.status().await.unwrap(),
            PowerOutcome::Done(PowerState::On)
        );
        assert_eq!(
            power.off().await.unwrap(),
            PowerOutcome::Done(PowerState::Off)
        );
        assert_eq!(
            power.status().await.unwrap(),
            PowerOutcome::Done(PowerState::Off)
        );
        assert_eq!(
            power.cycle().await.unwrap(),
            PowerOutcome::Done(PowerState::On)
        );

        let image = dir.path().join("new.raw");
        std::fs::write(&image, b"new firmware image").unwrap();
        let req = FlashRequest {
            artifacts: BTreeMap::from([("disk".to_string(), image)]),
            config: None,
        };
        let report = flash_driver(&board).unwrap().flash(&req).await.unwrap();
        assert!(report.output.contains("18 bytes"), "{}", report.output);
        let data = std::fs::read(&disk).unwrap();
        assert!(data.starts_with(b"new firmware image"));
        assert_eq!(data.len(), 64 * 1024, "the image was rewritten in place");
        // Left off, as a board under a flasher is; the deploy's power cycle starts it.
        assert_eq!(
            power.status().await.unwrap(),
            PowerOutcome::Done(PowerState::Off)
        );
        assert_eq!(
            power.cycle().await.unwrap(),
            PowerOutcome::Done(PowerState::On)
        );
        let e = flash_driver(&board)
            .unwrap()
            .flash(&FlashRequest::default())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("no `disk` artifact"), "{e}");
    })
    .await;
}

#[tokio::test]
async fn qmp_power_to_a_missing_socket_is_a_named_error() {
    bounded(20, async {
        let toml = r#"
[[board]]
name = "qemu-gone"
board_type = "q"
arch = "x86_64"
power = { driver = "qemu", qmp = "/nonexistent/qmp.sock", timeout = "1s" }
console = { driver = "tcp", address = "127.0.0.1:1" }
"#;
        let board = parse_boards(toml).unwrap().remove(0);
        let e = power_driver(&board).on().await.unwrap_err();
        assert!(e.to_string().contains("power on qemu-gone"), "{e}");
    })
    .await;
}
