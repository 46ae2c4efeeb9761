//! Finding (or building) the static `testfarm-guest` binary that goes into the image.
//!
//! The binary must be static (the initramfs has no libc), and only the gnu target exists
//! here, so it is built with `-C target-feature=+crt-static` into its own target directory
//! (`target/guest-static`): its flags differ from the workspace's, and sharing the main
//! target directory would throw away everyone's build cache.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Result, VmError};

pub const GUEST_TARGET: &str = "x86_64-unknown-linux-gnu";

/// Where a build from `workspace` leaves the binary.
pub fn built_guest_path(workspace: &Path) -> PathBuf {
    workspace
        .join("target/guest-static")
        .join(GUEST_TARGET)
        .join("release/testfarm-guest")
}

/// The guest binary to put in an image: `$TESTFARM_GUEST`, a `testfarm-guest` next to the
/// running executable, or a source-tree build under `target/guest-static`.
pub fn find_guest() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("TESTFARM_GUEST").map(PathBuf::from) {
        return Some(p);
    }
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    let sibling = dir.join("testfarm-guest");
    if is_static(&sibling) {
        return Some(sibling);
    }
    // target/<profile>/testfarm or target/<profile>/deps/x → target/guest-static/...
    for anc in dir.ancestors().take(4) {
        if anc.file_name().is_some_and(|n| n == "target") {
            let p = anc
                .join("guest-static")
                .join(GUEST_TARGET)
                .join("release/testfarm-guest");
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// Builds the static guest from the workspace at `workspace` (incremental: cheap when
/// nothing changed). Serialised across processes with a lock file, since parallel tests
/// all want it.
pub fn build_static_guest(workspace: &Path) -> Result<PathBuf> {
    let target_dir = workspace.join("target/guest-static");
    std::fs::create_dir_all(&target_dir)
        .map_err(|e| VmError::io(format!("creating {}", target_dir.display()), e))?;
    let lock_path = target_dir.join(".build.lock");
    let lock = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| VmError::io(format!("opening {}", lock_path.display()), e))?;
    lock.lock()
        .map_err(|e| VmError::io(format!("locking {}", lock_path.display()), e))?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(workspace)
        .args([
            "build",
            "--quiet",
            "--release",
            "-p",
            "testfarm-guest",
            "--target",
            GUEST_TARGET,
        ])
        .env("CARGO_TARGET_DIR", &target_dir)
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            "-Ctarget-feature=+crt-static\x1f-Cstrip=symbols",
        )
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .output()
        .map_err(|e| VmError::io("running cargo to build testfarm-guest", e))?;
    if !out.status.success() {
        return Err(VmError::Tool {
            program: "cargo build -p testfarm-guest".into(),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    // Cargo rewrites its output in place on the next rebuild, possibly while another process
    // is reading it for an image: hand out an immutable, content-named copy instead (made
    // while the lock is held).
    let built = built_guest_path(workspace);
    let bytes = std::fs::read(&built)
        .map_err(|e| VmError::io(format!("reading {}", built.display()), e))?;
    let digest: String = {
        use sha2::Digest;
        sha2::Sha256::digest(&bytes)
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let copy = target_dir.join(format!("testfarm-guest-{digest}"));
    if !copy.is_file() {
        let tmp = target_dir.join(format!(".testfarm-guest-{digest}.tmp"));
        std::fs::write(&tmp, &bytes)
            .and_then(|()| {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))
            })
            .and_then(|()| std::fs::rename(&tmp, &copy))
            .map_err(|e| VmError::io(format!("writing {}", copy.display()), e))?;
    }
    Ok(copy)
}

/// A 64-bit ELF executable without a `PT_INTERP` program header (no dynamic loader), which
/// is what can run in an initramfs without a libc (a `target/debug/testfarm-guest` cannot).
pub fn is_static(path: &Path) -> bool {
    let Ok(bytes) = std::fs::read(path) else {
        return false;
    };
    let u16_at = |o: usize| {
        bytes
            .get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let u64_at = |o: usize| {
        bytes.get(o..o + 8).map(|b| {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            u64::from_le_bytes(a) as usize
        })
    };
    if !bytes.starts_with(b"\x7fELF\x02\x01") {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    (0..phnum).all(|i| {
        let o = phoff.saturating_add(i.saturating_mul(phentsize));
        bytes.get(o..o.saturating_add(4)) != Some(&[3, 0, 0, 0][..])
    })
}
