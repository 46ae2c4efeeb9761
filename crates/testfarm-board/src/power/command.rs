//! Power through command lines: USB hubs (`uhubctl`), relays, GPIO, any CLI.

use futures::FutureExt;
use futures::future::BoxFuture;
use minijinja::Value;

use super::{PowerAction, PowerDriver, PowerOutcome, PowerState, parse_status};
use crate::config::CommandPower;
use crate::error::Result;
use crate::process::run_shell;
use crate::template::{Context, render};

pub struct CommandPowerDriver {
    board: String,
    config: CommandPower,
    ctx: Context,
}

impl CommandPowerDriver {
    pub fn new(board: &str, config: CommandPower, ctx: Context) -> CommandPowerDriver {
        CommandPowerDriver {
            board: board.to_string(),
            config,
            ctx,
        }
    }

    async fn run(&self, action: PowerAction, template: &str) -> Result<String> {
        let ctx = self
            .ctx
            .clone()
            .with("action", Value::from(action.as_str()));
        let line = render(template, &ctx)?;
        let what = format!("power {} {}", action.as_str(), self.board);
        Ok(run_shell(&what, &line, self.config.timeout).await?.stdout)
    }

    async fn act_inner(&self, action: PowerAction) -> Result<PowerOutcome> {
        let c = &self.config;
        let state = match action {
            PowerAction::On => {
                self.run(action, &c.on).await?;
                PowerState::On
            }
            PowerAction::Off => {
                self.run(action, &c.off).await?;
                PowerState::Off
            }
            PowerAction::Cycle => {
                if let Some(cycle) = &c.cycle {
                    self.run(action, cycle).await?;
                } else {
                    self.run(PowerAction::Off, &c.off).await?;
                    tokio::time::sleep(c.cycle_delay).await;
                    self.run(PowerAction::On, &c.on).await?;
                }
                PowerState::On
            }
            PowerAction::Status => match &c.status {
                Some(status) => {
                    let out = self.run(action, status).await?;
                    parse_status(&out, c.status_on.as_ref())
                }
                None => PowerState::Unknown,
            },
        };
        Ok(PowerOutcome::Done(state))
    }
}

impl PowerDriver for CommandPowerDriver {
    fn act(&self, action: PowerAction) -> BoxFuture<'_, Result<PowerOutcome>> {
        self.act_inner(action).boxed()
    }
}
