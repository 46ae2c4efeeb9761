//! Flashing with a command line whose template sees `{{ artifacts.NAME }}` and
//! `{{ config }}`; an artifact the job did not bring is a template error before anything
//! runs, not a flasher started with an empty path.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use minijinja::Value;

use super::{FlashDriver, FlashReport, FlashRequest};
use crate::error::Result;
use crate::process::run_shell;
use crate::template::{Context, render};

pub struct CommandFlashDriver {
    pub board: String,
    pub run: String,
    pub timeout: Duration,
    pub ctx: Context,
}

impl FlashDriver for CommandFlashDriver {
    fn flash<'a>(&'a self, request: &'a FlashRequest) -> BoxFuture<'a, Result<FlashReport>> {
        async move {
            let artifacts: BTreeMap<&str, String> = request
                .artifacts
                .iter()
                .map(|(k, v)| (k.as_str(), v.to_string_lossy().into_owned()))
                .collect();
            let mut ctx = self
                .ctx
                .clone()
                .with("artifacts", Value::from_serialize(&artifacts));
            if let Some(config) = &request.config {
                ctx = ctx.with("config", Value::from(config.to_string_lossy().into_owned()));
            }
            let line = render(&self.run, &ctx)?;
            let out = run_shell(&format!("flash {}", self.board), &line, self.timeout).await?;
            Ok(FlashReport {
                output: format!("{}{}", out.stdout, out.stderr),
            })
        }
        .boxed()
    }
}
