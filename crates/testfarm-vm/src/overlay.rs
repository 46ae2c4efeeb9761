//! Per-VM copy-on-write overlays (`qemu-img create -b`), so VMs of a pod never share a
//! writable disk while sharing one base image.

use std::path::Path;
use std::process::Stdio;

use crate::error::{Result, VmError};

/// Guesses the base image format from its first bytes (qcow2 magic), else raw.
pub fn image_format(base: &Path) -> Result<&'static str> {
    use std::io::Read;
    let mut f = std::fs::File::open(base)
        .map_err(|e| VmError::io(format!("opening {}", base.display()), e))?;
    let mut magic = [0u8; 4];
    let n = f.read(&mut magic).unwrap_or(0);
    Ok(if n == 4 && &magic == b"QFI\xfb" {
        "qcow2"
    } else {
        "raw"
    })
}

pub async fn create(base: &Path, overlay: &Path) -> Result<()> {
    let base = std::fs::canonicalize(base)
        .map_err(|e| VmError::io(format!("rootfs {}", base.display()), e))?;
    let fmt = image_format(&base)?;
    let out = tokio::process::Command::new("qemu-img")
        .arg("create")
        .args(["-q", "-f", "qcow2", "-F", fmt, "-b"])
        .arg(&base)
        .arg(overlay)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| VmError::io("running qemu-img (install qemu-utils)", e))?;
    if !out.status.success() {
        return Err(VmError::Tool {
            program: "qemu-img create".into(),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}
