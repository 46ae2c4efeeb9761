//! Flashing a QEMU board: pause the machine, write the new raw image over the disk file it
//! runs from (in place, so QEMU's open file sees it), and reset it, leaving it paused —
//! off, as a board is while a flasher holds it. The deploy's power cycle then starts it.
//! (Resuming here and cycling right after resets the guest again while its firmware is
//! loading the kernel, which under TCG can leave it hung in the BIOS.) Raw images only: a
//! qcow2 file has metadata QEMU caches, and rewriting it under a running QEMU corrupts it.

use std::path::PathBuf;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use testfarm_vm::qmp::Qmp;
use tokio::io::AsyncWriteExt;

use super::{FlashDriver, FlashReport, FlashRequest};
use crate::error::{BoardError, Result};

pub struct QemuFlashDriver {
    pub board: String,
    pub qmp: PathBuf,
    pub image: PathBuf,
    pub artifact: String,
    pub timeout: Duration,
}

impl QemuFlashDriver {
    async fn flash_inner(&self, request: &FlashRequest) -> Result<FlashReport> {
        let what = format!("flash {}", self.board);
        let src = request.artifacts.get(&self.artifact).ok_or_else(|| {
            BoardError::Unsupported(format!(
                "{what}: the job brought no `{}` artifact (it has: {})",
                self.artifact,
                request
                    .artifacts
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        let qmp_err = |e: testfarm_vm::VmError| BoardError::Qmp {
            what: what.clone(),
            detail: e.to_string(),
        };
        let mut qmp = Qmp::connect(&self.qmp, self.timeout)
            .await
            .map_err(qmp_err)?;
        qmp.stop().await.map_err(qmp_err)?;
        let data = tokio::fs::read(src)
            .await
            .map_err(|e| BoardError::io(format!("{what}: reading {}", src.display()), e))?;
        let mut f = tokio::fs::OpenOptions::new()
            .write(true)
            .truncate(false)
            .open(&self.image)
            .await
            .map_err(|e| BoardError::io(format!("{what}: opening {}", self.image.display()), e))?;
        f.write_all(&data)
            .await
            .map_err(|e| BoardError::io(format!("{what}: writing {}", self.image.display()), e))?;
        f.sync_all()
            .await
            .map_err(|e| BoardError::io(format!("{what}: syncing {}", self.image.display()), e))?;
        qmp.execute("system_reset", None).await.map_err(qmp_err)?;
        Ok(FlashReport {
            output: format!(
                "wrote {} bytes of {} over {}; machine reset, left off",
                data.len(),
                src.display(),
                self.image.display()
            ),
        })
    }
}

impl FlashDriver for QemuFlashDriver {
    fn flash<'a>(&'a self, request: &'a FlashRequest) -> BoxFuture<'a, Result<FlashReport>> {
        let limit = self.timeout;
        async move {
            tokio::time::timeout(limit, self.flash_inner(request))
                .await
                .map_err(|_| BoardError::Timeout {
                    what: format!("flash {}", self.board),
                    after: limit,
                })?
        }
        .boxed()
    }
}
