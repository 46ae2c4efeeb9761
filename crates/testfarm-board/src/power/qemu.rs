//! A QEMU machine as the board, over its QMP socket: on = running, off = paused (the
//! machine keeps its memory, as a board on a relay does not, but the console goes quiet
//! and no test can run), cycle = a system reset, so the guest boots again from the disk
//! or kernel it has. The machine is started elsewhere (e.g. with `-S`, paused = off).

use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use testfarm_vm::qmp::Qmp;

use super::{PowerAction, PowerDriver, PowerOutcome, PowerState};
use crate::config::QemuPower;
use crate::error::{BoardError, Result};

pub struct QemuPowerDriver {
    board: String,
    config: QemuPower,
}

impl QemuPowerDriver {
    pub fn new(board: &str, config: QemuPower) -> QemuPowerDriver {
        QemuPowerDriver {
            board: board.to_string(),
            config,
        }
    }

    async fn act_inner(&self, action: PowerAction) -> Result<PowerOutcome> {
        let what = format!("power {} {}", action.as_str(), self.board);
        let qmp_err = |e: testfarm_vm::VmError| BoardError::Qmp {
            what: what.clone(),
            detail: e.to_string(),
        };
        let mut qmp = Qmp::connect(&self.config.qmp, self.config.timeout)
            .await
            .map_err(qmp_err)?;
        let state = match action {
            PowerAction::On => {
                qmp.cont().await.map_err(qmp_err)?;
                PowerState::On
            }
            PowerAction::Off => {
                qmp.stop().await.map_err(qmp_err)?;
                PowerState::Off
            }
            PowerAction::Cycle => {
                qmp.execute("system_reset", None).await.map_err(qmp_err)?;
                qmp.cont().await.map_err(qmp_err)?;
                PowerState::On
            }
            PowerAction::Status => match qmp.status().await.map_err(qmp_err)?.as_str() {
                "running" => PowerState::On,
                "paused" | "prelaunch" | "shutdown" => PowerState::Off,
                _ => PowerState::Unknown,
            },
        };
        Ok(PowerOutcome::Done(state))
    }
}

impl PowerDriver for QemuPowerDriver {
    fn act(&self, action: PowerAction) -> BoxFuture<'_, Result<PowerOutcome>> {
        let limit = self.config.timeout + Duration::from_secs(1);
        let what = format!("power {} {} over QMP", action.as_str(), self.board);
        async move {
            tokio::time::timeout(limit, self.act_inner(action))
                .await
                .map_err(|_| BoardError::Timeout { what, after: limit })?
        }
        .boxed()
    }
}
