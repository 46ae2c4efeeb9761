//! No remote power: the answer is always "a person must do this", never a fake success.

use futures::future::BoxFuture;

use super::{PowerAction, PowerDriver, PowerOutcome};
use crate::config::ManualPower;
use crate::error::Result;

pub struct ManualPowerDriver {
    board: String,
    config: ManualPower,
}

impl ManualPowerDriver {
    pub fn new(board: &str, config: ManualPower) -> ManualPowerDriver {
        ManualPowerDriver {
            board: board.to_string(),
            config,
        }
    }
}

impl PowerDriver for ManualPowerDriver {
    fn act(&self, action: PowerAction) -> BoxFuture<'_, Result<PowerOutcome>> {
        let outcome = PowerOutcome::OperatorActionNeeded {
            board: self.board.clone(),
            action,
            instructions: self.config.instructions.clone(),
        };
        Box::pin(async move { Ok(outcome) })
    }
}
