//! Finding the static `testfarm-guest` binary that goes into the image.
//!
//! The binary must be static (the initramfs has no libc). Every build of this crate embeds
//! one (see `build.rs`), so a `testfarm` binary carries its own guest; a guest on disk
//! (`$TESTFARM_GUEST`, or a static `testfarm-guest` next to the running executable) wins,
//! for someone testing a guest of their own.

use std::path::{Path, PathBuf};

use crate::error::{Result, VmError};

/// The guest embedded at build time, if the build could make one.
pub fn embedded() -> Option<&'static [u8]> {
    static GUEST: &[u8] = include_bytes!(env!("TESTFARM_EMBEDDED_GUEST"));
    (!GUEST.is_empty()).then_some(GUEST)
}

/// The guest binary to put in an image: `$TESTFARM_GUEST`, a static `testfarm-guest` next
/// to the running executable, or the embedded one (written once, content-named, under
/// `cache`). `None` when there is none of these.
pub fn find_guest(cache: &Path) -> Result<Option<PathBuf>> {
    if let Some(p) = std::env::var_os("TESTFARM_GUEST").map(PathBuf::from) {
        return Ok(Some(p));
    }
    if let Some(sibling) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("testfarm-guest")))
        .filter(|p| is_static(p))
    {
        return Ok(Some(sibling));
    }
    match embedded() {
        Some(bytes) => write_embedded(bytes, cache).map(Some),
        None => Ok(None),
    }
}

/// Writes `bytes` to `dir/testfarm-guest-<digest>` unless it is there: an immutable file per
/// content, so processes building images at once never see a half-written guest.
fn write_embedded(bytes: &[u8], dir: &Path) -> Result<PathBuf> {
    use sha2::Digest;
    let digest: String = sha2::Sha256::digest(bytes)
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    let path = dir.join(format!("testfarm-guest-{digest}"));
    if path.is_file() {
        return Ok(path);
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| VmError::io(format!("creating {}", dir.display()), e))?;
    let tmp = tempfile::NamedTempFile::new_in(dir)
        .map_err(|e| VmError::io(format!("creating a file in {}", dir.display()), e))?;
    std::fs::write(tmp.path(), bytes)
        .and_then(|()| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))
        })
        .map_err(|e| VmError::io(format!("writing {}", tmp.path().display()), e))?;
    tmp.persist(&path)
        .map_err(|e| VmError::io(format!("writing {}", path.display()), e.error))?;
    Ok(path)
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
