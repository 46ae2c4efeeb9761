//! Putting an image on a board: one trait, a command-line driver (vendor flashers,
//! `sp-runner … flash`, `dd` to an SD mux) and a QEMU driver. Every flash is bounded by the
//! board's flash timeout; a flasher that never ends is killed and named.

mod command;
mod qemu;

use std::collections::BTreeMap;
use std::path::PathBuf;

use futures::future::BoxFuture;

pub use command::CommandFlashDriver;
pub use qemu::QemuFlashDriver;

use crate::config::{BoardConfig, FlashDriverConfig};
use crate::error::Result;
use crate::template::Context;

/// What the deploy step hands to a flash: local paths of the fetched artifacts by name
/// (`firmware`, `kernel`, `disk`), and the job's config file if any.
#[derive(Debug, Clone, Default)]
pub struct FlashRequest {
    pub artifacts: BTreeMap<String, PathBuf>,
    pub config: Option<PathBuf>,
}

#[derive(Debug, Clone, Default)]
pub struct FlashReport {
    /// The flasher's output (bounded), for the job log.
    pub output: String,
}

pub trait FlashDriver: Send + Sync {
    fn flash<'a>(&'a self, request: &'a FlashRequest) -> BoxFuture<'a, Result<FlashReport>>;
}

/// The driver a board's `flash` table asks for; `None` when the board has none.
pub fn flash_driver(board: &BoardConfig) -> Option<Box<dyn FlashDriver>> {
    let flash = board.flash.as_ref()?;
    let ctx = Context::for_board(&board.name, &board.board_type, &board.arch);
    Some(match &flash.driver {
        FlashDriverConfig::Command { run } => Box::new(CommandFlashDriver {
            board: board.name.clone(),
            run: run.clone(),
            timeout: flash.timeout,
            ctx,
        }),
        FlashDriverConfig::Qemu {
            qmp,
            image,
            artifact,
        } => Box::new(QemuFlashDriver {
            board: board.name.clone(),
            qmp: qmp.clone(),
            image: image.clone(),
            artifact: artifact.clone(),
            timeout: flash.timeout,
        }),
    })
}
