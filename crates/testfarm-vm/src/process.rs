//! The QEMU process guard. QEMU must never outlive us: the child is killed when its guard is
//! dropped (normal end, error, Ctrl-C unwinding the runtime), and it is started through
//! `setpriv --pdeathsig KILL` so the kernel kills it even if we die by SIGKILL. `-no-reboot`
//! with `panic=-1` makes a guest kernel panic end the process, which is how a crash is seen.

use std::ffi::OsString;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::error::{Result, VmError};

#[derive(Debug)]
pub struct QemuProcess {
    child: Child,
    pid: Option<u32>,
    exited: Option<ExitStatus>,
}

fn setpriv() -> Option<&'static Path> {
    static FOUND: OnceLock<Option<&'static Path>> = OnceLock::new();
    *FOUND.get_or_init(|| {
        ["/usr/bin/setpriv", "/bin/setpriv"]
            .into_iter()
            .map(Path::new)
            .find(|p| p.exists())
    })
}

impl QemuProcess {
    /// Starts `argv` with stdout and stderr appended to `log`. Must be called from an async
    /// task (not `spawn_blocking`): the death signal is tied to the spawning thread.
    pub fn spawn(argv: &[OsString], log: &Path) -> Result<QemuProcess> {
        let Some((program, args)) = argv.split_first() else {
            return Err(VmError::Config("empty QEMU command line".into()));
        };
        let mut cmd = match setpriv() {
            Some(sp) => {
                let mut c = Command::new(sp);
                c.args(["--pdeathsig", "KILL", "--"]).arg(program);
                c
            }
            None => Command::new(program),
        };
        let log_file = std::fs::File::options()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| VmError::io(format!("opening {}", log.display()), e))?;
        let log_err = log_file
            .try_clone()
            .map_err(|e| VmError::io("duplicating the log handle", e))?;
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err)
            .kill_on_drop(true);
        let child = cmd.spawn().map_err(|e| {
            VmError::io(
                format!(
                    "starting {} (is QEMU installed?)",
                    program.to_string_lossy()
                ),
                e,
            )
        })?;
        Ok(QemuProcess {
            pid: child.id(),
            child,
            exited: None,
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// The exit status if QEMU has ended (non-blocking).
    pub fn try_exited(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited
    }

    /// Waits for QEMU to end by itself.
    pub async fn wait(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.wait().await.ok();
        }
        self.exited
    }

    /// SIGKILL and reap.
    pub async fn kill(&mut self) {
        if self.try_exited().is_none() {
            let _ = self.child.start_kill();
            let _ = tokio::time::timeout(Duration::from_secs(5), self.wait()).await;
        }
    }
}
