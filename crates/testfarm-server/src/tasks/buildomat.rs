//! Runs the buildomat factory loop when `[buildomat]` is configured.
//!
//! Target names are resolved first (retried with backoff until they resolve: an unknown
//! name is an operator's fix, logged once per distinct cause and counted), then the loop
//! of `testfarm-buildomat` runs over [`ServerLab`]. Instances are store rows, so after a
//! restart the first pass picks them up again.

use std::time::Duration;

use testfarm_buildomat::client::Client;
use testfarm_buildomat::factory::{self, FactoryConfig};
use testfarm_core::factory::StuckLimits;
use tokio::sync::watch;

use crate::buildomat::lab::ServerLab;
use crate::buildomat::targets;
use crate::state::AppState;

/// The secrets read at start (so a missing token file stops the server at once).
#[derive(Clone)]
pub struct Tokens {
    pub factory: String,
    pub admin: Option<String>,
}

const MAX_BACKOFF: Duration = Duration::from_secs(60);

pub(crate) async fn run(state: AppState, tokens: Tokens, mut stop: watch::Receiver<bool>) {
    let Some(section) = state.config.buildomat.clone() else {
        return;
    };
    let client = match Client::new(&section.url.0, &tokens.factory, Duration::from_secs(30)) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "buildomat factory not started");
            return;
        }
    };
    let mut wait = section.poll.0;
    let mut last: Option<targets::ResolveError> = None;
    let resolved = loop {
        match targets::resolve(&section, tokens.admin.as_deref()).await {
            Ok(t) => {
                if last.is_some() {
                    tracing::info!("buildomat targets resolved");
                }
                break t;
            }
            Err(e) => {
                metrics::counter!("testfarm_buildomat_call_failures_total",
                    "call" => "resolve targets", "cause" => e.cause())
                .increment(1);
                if last.as_ref() != Some(&e) {
                    tracing::error!(error = %e, "cannot resolve buildomat targets; retrying with backoff");
                    last = Some(e);
                }
                if !super::tick(wait, &mut stop).await {
                    return;
                }
                wait = (wait * 2).min(MAX_BACKOFF);
            }
        }
    };
    tracing::info!(url = %section.url.0, targets = ?resolved.keys().collect::<Vec<_>>(),
        "buildomat factory started");
    let config = FactoryConfig {
        targets: resolved.keys().cloned().collect(),
        poll: section.poll.0,
        limits: StuckLimits {
            boot: section.boot_limit.0,
            silent: section.silent(),
        },
        max_backoff: MAX_BACKOFF,
    };
    let lab = ServerLab::new(
        state.clone(),
        section.url.0.clone(),
        resolved,
        section.agent_command.clone(),
        section.max_runtime.0,
    );
    factory::run(client, lab, config, stop).await;
}
