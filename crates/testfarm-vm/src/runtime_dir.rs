//! Private runtime directories. Nothing lives at a fixed path: every run (and every warm pod)
//! gets a fresh 0700 directory under the user's base, so two runs side by side never collide,
//! and dropping it removes every socket, overlay and log it held.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Result, VmError};

/// `$XDG_RUNTIME_DIR/testfarm`, else `$TMPDIR/testfarm-<uid>`; created 0700 and checked to be
/// ours and private (a directory another user could write to is refused).
pub fn base() -> Result<PathBuf> {
    let uid = nix::unistd::getuid().as_raw();
    let dir = match std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from) {
        Some(x) if x.is_dir() => x.join("testfarm"),
        _ => std::env::temp_dir().join(format!("testfarm-{uid}")),
    };
    ensure_private_dir(&dir, uid)?;
    Ok(dir)
}

fn ensure_private_dir(dir: &Path, uid: u32) -> Result<()> {
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(VmError::io(format!("creating {}", dir.display()), e)),
    }
    let meta = std::fs::symlink_metadata(dir)
        .map_err(|e| VmError::io(format!("checking {}", dir.display()), e))?;
    if !meta.is_dir() || meta.uid() != uid || meta.permissions().mode() & 0o077 != 0 {
        return Err(VmError::Config(format!(
            "{} is not a private directory owned by uid {uid}",
            dir.display()
        )));
    }
    Ok(())
}

/// Names the process that owns a run directory.
const OWNER_FILE: &str = "owner.pid";

/// Removes run directories whose owner process is gone. Its QEMUs died with it (death
/// signal), so only files are left. A directory without an owner file is not ours to judge.
fn reap_stale(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for e in entries.flatten() {
        let dir = e.path();
        let Ok(pid) = std::fs::read_to_string(dir.join(OWNER_FILE)) else {
            continue;
        };
        let Ok(pid) = pid.trim().parse::<i32>() else {
            continue;
        };
        let gone = matches!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
            Err(nix::errno::Errno::ESRCH)
        );
        if gone {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

/// A run's directory, removed with everything in it on drop.
#[derive(Debug)]
pub struct RuntimeDir {
    dir: tempfile::TempDir,
}

impl RuntimeDir {
    /// A fresh directory, marked with our pid; directories of runs that died without cleaning
    /// up (SIGKILL) are removed on the way.
    pub fn new(prefix: &str) -> Result<RuntimeDir> {
        let base = base()?;
        reap_stale(&base);
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(&base)
            .map_err(|e| VmError::io(format!("creating a directory in {}", base.display()), e))?;
        let owner = dir.path().join(OWNER_FILE);
        std::fs::write(&owner, std::process::id().to_string())
            .map_err(|e| VmError::io(format!("writing {}", owner.display()), e))?;
        Ok(RuntimeDir { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A fresh subdirectory (one per VM).
    pub fn subdir(&self, name: &str) -> Result<PathBuf> {
        let p = self.dir.path().join(name);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&p)
            .map_err(|e| VmError::io(format!("creating {}", p.display()), e))?;
        Ok(p)
    }
}
