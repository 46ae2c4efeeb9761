//! The factory loop: every few seconds, one pass over the server and the lab.
//!
//! A pass, in the order buildomat's own factories use:
//! 1. every live instance is checked against the server's view of its worker and the rule
//!    [`testfarm_core::factory::decide`] says what to do (destroy, associate, renew the job
//!    lease, keep); console lines are appended to the job;
//! 2. workers the server lists that no live instance has are deleted (detritus of a crash
//!    between creating a worker and recording its instance), unless held;
//! 3. for targets with a free board, a job is leased, a worker created, the instance
//!    recorded, associated and started.
//!
//! Why this never leaks a board: an instance is recorded before its board is leased, and
//! a recorded instance only leaves the live set through [`Lab::destroy`] (lease ended)
//! then [`Lab::finish`]. Why it never duplicates a worker after a buildomat-server restart
//! (leases are kept in memory there): a worker is created at most once per leased job and
//! is tied to the job, and the server does not lease a job that has a worker; a refused
//! renewal is logged and otherwise harmless.
//!
//! A failed pass is logged once per distinct cause, counted in `/metrics`
//! (`testfarm_buildomat_call_failures_total{call,cause}`), and retried with backoff.

use std::collections::HashSet;
use std::time::Duration;

use chrono::Utc;
use testfarm_core::factory::{
    Action, InstanceView, OrphanAction, StuckLimits, decide, decide_orphan,
};
use tokio::sync::watch;

use crate::client::{Client, ClientError};
use crate::lab::{Instance, InstanceState, Lab, LabError, NewInstance};

/// What the loop needs to know.
#[derive(Debug, Clone)]
pub struct FactoryConfig {
    /// Target ids this factory serves (names already resolved).
    pub targets: Vec<String>,
    /// Time between passes.
    pub poll: Duration,
    /// When an instance counts as stuck.
    pub limits: StuckLimits,
    /// Longest wait between passes after failures.
    pub max_backoff: Duration,
}

impl Default for FactoryConfig {
    fn default() -> Self {
        FactoryConfig {
            targets: Vec::new(),
            poll: Duration::from_secs(5),
            limits: StuckLimits::default(),
            max_backoff: Duration::from_secs(60),
        }
    }
}

/// Why a pass stopped early.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Lab(#[from] LabError),
}

impl PassError {
    /// A short key for "is this the same failure as last time" (logged once).
    fn key(&self) -> String {
        match self {
            PassError::Client(e) => format!("{}:{}", e.call(), e.cause()),
            PassError::Lab(e) => format!("lab:{}", e.0),
        }
    }
}

/// What a pass did, for logs and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PassReport {
    pub created: Vec<String>,
    pub destroyed: Vec<(String, String)>,
    pub associated: Vec<String>,
    pub renewed: Vec<String>,
    pub held: Vec<String>,
    pub orphans_deleted: Vec<String>,
}

/// Counts a failed call under its cause.
fn count_failure(e: &PassError) {
    let (call, cause) = match e {
        PassError::Client(c) => (c.call(), c.cause()),
        PassError::Lab(_) => ("lab", "lab"),
    };
    metrics::counter!("testfarm_buildomat_call_failures_total", "call" => call, "cause" => cause)
        .increment(1);
}

/// One pass. Stops at the first failure; the next pass picks up where it stopped, since
/// every step is idempotent.
pub async fn pass<L: Lab>(
    client: &Client,
    lab: &L,
    config: &FactoryConfig,
) -> Result<PassReport, PassError> {
    let mut report = PassReport::default();
    let now = Utc::now();
    let live = lab.live_instances().await?;

    for i in &live {
        if i.state == InstanceState::Destroying {
            finish_destroy(
                client,
                lab,
                i,
                i.destroy_reason.as_deref().unwrap_or("resumed"),
            )
            .await?;
            report.destroyed.push((i.id.clone(), "resumed".into()));
            continue;
        }
        let status = lab.status(i).await?;
        let worker = client.worker(&i.worker).await?;
        let mut progress = None;
        if let Some(w) = &worker {
            for (stream, time, line) in &status.output {
                // `retry` means the job has no log to take it yet: the line is dropped
                // rather than held, as boot output before the job starts is advisory.
                let _retry = client.append(&w.id, stream, *time, line).await?;
                progress = Some(*time);
            }
        }
        let last_progress = progress.map_or(i.last_progress, |p| p.max(i.last_progress));
        let view = InstanceView {
            id: i.id.clone(),
            created_at: i.created_at,
            last_progress,
            lab_ended: status.ended,
        };
        let action = decide(
            &view,
            worker.as_ref().map(|w| w.view()).as_ref(),
            config.limits,
            now,
        );
        let hold = worker.as_ref().is_some_and(|w| w.hold);
        if hold != i.hold || progress.is_some() {
            lab.note(i, hold, progress).await?;
        }
        match action {
            Action::Destroy(reason) => {
                tracing::warn!(instance = %i.id, worker = %i.worker, board = %i.board,
                    reason = reason.as_str(), "destroying buildomat instance");
                lab.destroy(i, reason.as_str()).await?;
                finish_destroy(client, lab, i, reason.as_str()).await?;
                report
                    .destroyed
                    .push((i.id.clone(), reason.as_str().into()));
            }
            Action::KeepHeld => {
                if !i.hold {
                    tracing::info!(instance = %i.id, worker = %i.worker, board = %i.board,
                        "worker held; keeping its board until the hold is released");
                }
                report.held.push(i.id.clone());
            }
            Action::Associate => {
                client.associate(&i.worker, &i.id).await?;
                renew(client, i).await?;
                report.associated.push(i.id.clone());
            }
            Action::RenewLease => {
                renew(client, i).await?;
                report.renewed.push(i.id.clone());
            }
            Action::Keep => {}
        }
    }

    // Workers the server lists that no live instance has.
    let live_after = lab.live_instances().await?;
    let ids: HashSet<&str> = live_after.iter().map(|i| i.id.as_str()).collect();
    let workers: HashSet<&str> = live_after.iter().map(|i| i.worker.as_str()).collect();
    for w in client.workers().await? {
        let ours = workers.contains(w.id.as_str())
            || w.private.as_deref().is_some_and(|p| ids.contains(p));
        if decide_orphan(w.hold, ours) == OrphanAction::Delete {
            tracing::warn!(worker = %w.id, private = ?w.private, "deleting worker with no live instance");
            client.delete_worker(&w.id).await?;
            report.orphans_deleted.push(w.id);
        }
    }

    // New work, one target at a time, only where a board is free.
    let mut asked = false;
    for target in &config.targets {
        let Some(board) = lab.free_board(target).await? else {
            continue;
        };
        asked = true;
        let Some(lease) = client.lease(std::slice::from_ref(target)).await? else {
            continue;
        };
        if &lease.target != target {
            tracing::error!(
                ?lease,
                "server leased a target we did not ask for; leaving it"
            );
            continue;
        }
        let w = client.create_worker(&lease.target, &lease.job).await?;
        let i = lab
            .record(NewInstance {
                job: lease.job.clone(),
                worker: w.id.clone(),
                target: lease.target.clone(),
                board,
            })
            .await?;
        client.associate(&w.id, &i.id).await?;
        tracing::info!(instance = %i.id, worker = %w.id, job = %lease.job, board = %i.board,
            "starting buildomat agent");
        if let Err(e) = lab.start(&i, &w.bootstrap).await {
            tracing::error!(instance = %i.id, error = %e, "could not start the agent; destroying");
            lab.destroy(&i, "start_failed").await?;
            finish_destroy(client, lab, &i, "start_failed").await?;
            report.destroyed.push((i.id.clone(), "start_failed".into()));
            continue;
        }
        report.created.push(i.id);
    }
    if !asked {
        client.ping().await?;
    }
    Ok(report)
}

async fn renew(client: &Client, i: &Instance) -> Result<(), ClientError> {
    if !client.renew(&i.job).await? {
        // The server forgot the lease (it restarted) or gave the job away: our worker
        // is tied to the job, so the server will not create a second one for it.
        tracing::info!(instance = %i.id, job = %i.job, "job lease renewal refused");
    }
    Ok(())
}

async fn finish_destroy<L: Lab>(
    client: &Client,
    lab: &L,
    i: &Instance,
    reason: &str,
) -> Result<(), PassError> {
    lab.destroy(i, reason).await?;
    match client.delete_worker(&i.worker).await {
        Ok(()) => {}
        // The server no longer has it: that is what we wanted.
        Err(ClientError::Refused { status: 404, .. }) => {}
        Err(e) => return Err(e.into()),
    }
    lab.finish(i).await?;
    Ok(())
}

/// Runs passes until `stop` turns true. Failures are logged once per distinct cause and
/// retried with doubling backoff up to [`FactoryConfig::max_backoff`].
pub async fn run<L: Lab>(
    client: Client,
    lab: L,
    config: FactoryConfig,
    mut stop: watch::Receiver<bool>,
) {
    let mut last_error: Option<String> = None;
    let mut wait = config.poll;
    loop {
        match pass(&client, &lab, &config).await {
            Ok(r) => {
                if last_error.take().is_some() {
                    tracing::info!("buildomat factory pass succeeded again");
                }
                if r != PassReport::default() {
                    tracing::debug!(report = ?r, "buildomat factory pass");
                }
                wait = config.poll;
            }
            Err(e) => {
                count_failure(&e);
                let key = e.key();
                if last_error.as_deref() != Some(key.as_str()) {
                    tracing::warn!(error = %e, "buildomat factory pass failed; retrying with backoff");
                    last_error = Some(key);
                }
                wait = (wait * 2).min(config.max_backoff).max(config.poll);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            return;
        }
    }
}
