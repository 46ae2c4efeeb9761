//! `testfarm lease …`: manual leases, and `lease exec`, which holds a lease exactly as
//! long as a command runs.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use testfarm_api::lease::{AcquireLease, LeaseView, RenewLease};

use crate::client::{Client, Connection, enc};
use crate::output::{self, Format};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: Cmd,
    #[command(flatten)]
    conn: Connection,
    #[command(flatten)]
    format: Format,
}

#[derive(Debug, clap::Args)]
struct Want {
    /// Label selector, e.g. 'board_type=rpi4,team=bsp'.
    #[arg(long, short = 's', default_value = "")]
    selector: String,
    /// build-server, qemu-host or board.
    #[arg(long)]
    kind: Option<testfarm_api::resource::ResourceKind>,
    /// How long to wait for a free match (default: do not wait).
    #[arg(long)]
    wait: Option<String>,
    /// Silence after which the lease ends (default: the server's, 30s).
    #[arg(long)]
    heartbeat_ttl: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Take a lease.
    Acquire {
        #[command(flatten)]
        want: Want,
        /// How long at most.
        #[arg(long, default_value = "30m")]
        duration: String,
    },
    /// Renew (heartbeat) a lease, optionally extending it.
    Renew {
        id: String,
        #[arg(long)]
        epoch: Option<u64>,
        #[arg(long)]
        extend: Option<String>,
    },
    /// Release a lease (operators: --force --reason to take someone else's).
    Release {
        id: String,
        #[arg(long)]
        force: bool,
        #[arg(long)]
        reason: Option<String>,
    },
    /// List leases.
    List {
        /// active (default), released, expired or all.
        #[arg(long, default_value = "active")]
        state: String,
    },
    /// Run a command while holding a lease; the lease ends when it ends, whatever the exit.
    Exec {
        #[command(flatten)]
        want: Want,
        /// Longest the command may hold the lease.
        #[arg(long, default_value = "2h")]
        max: String,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
}

async fn acquire(client: &Client, want: &Want, duration: &str) -> anyhow::Result<LeaseView> {
    let req = AcquireLease {
        selector: want.selector.clone(),
        kind: want.kind,
        duration: duration.to_string(),
        wait: want.wait.clone(),
        heartbeat_ttl: want.heartbeat_ttl.clone(),
    };
    // Waiting happens on the server; give the request that long plus a margin.
    let wait = want
        .wait
        .as_deref()
        .map(testfarm_core::duration::parse)
        .transpose()?
        .unwrap_or_default();
    client
        .send(
            client
                .request(reqwest::Method::POST, "/api/v1/leases")
                .json(&req)
                .timeout(wait + Duration::from_secs(30)),
        )
        .await
}

fn print(v: &LeaseView, json: bool) -> anyhow::Result<()> {
    if json {
        output::json(v)
    } else {
        output::fields(&[
            ("lease", v.lease.id.to_string()),
            ("resource", v.resource.clone()),
            ("holder", v.lease.holder.to_string()),
            ("epoch", v.lease.epoch.to_string()),
            ("state", v.lease.state.to_string()),
            ("expires", output::when(Some(v.lease.expires_at))),
            (
                "heartbeat ttl",
                format!("{} s", v.lease.heartbeat_ttl_ms / 1000),
            ),
            (
                "ended",
                v.lease
                    .end_reason
                    .as_ref()
                    .map_or_else(|| "-".into(), |r| r.to_string()),
            ),
        ]);
        Ok(())
    }
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let client = args.conn.client()?;
    let json = args.format.json;
    match args.cmd {
        Cmd::Acquire { want, duration } => {
            let v = acquire(&client, &want, &duration).await?;
            print(&v, json)?;
        }
        Cmd::Renew { id, epoch, extend } => {
            let epoch = match epoch {
                Some(e) => e,
                None => {
                    client
                        .get::<LeaseView>(&format!("/api/v1/leases/{}", enc(&id)))
                        .await?
                        .lease
                        .epoch
                }
            };
            let v: LeaseView = client
                .post(
                    &format!("/api/v1/leases/{}/renew", enc(&id)),
                    &RenewLease { epoch, extend },
                )
                .await?;
            print(&v, json)?;
        }
        Cmd::Release { id, force, reason } => {
            let mut q = vec![("force", force.to_string())];
            if !force {
                let current: LeaseView =
                    client.get(&format!("/api/v1/leases/{}", enc(&id))).await?;
                q.push(("epoch", current.lease.epoch.to_string()));
            }
            q.extend(reason.map(|r| ("reason", r)));
            let v: LeaseView = client
                .send(
                    client
                        .request(
                            reqwest::Method::DELETE,
                            &format!("/api/v1/leases/{}", enc(&id)),
                        )
                        .query(&q),
                )
                .await?;
            print(&v, json)?;
        }
        Cmd::List { state } => {
            let leases: Vec<LeaseView> = client
                .send(
                    client
                        .request(reqwest::Method::GET, "/api/v1/leases")
                        .query(&[("state", state)]),
                )
                .await?;
            if json {
                output::json(&leases)?;
            } else {
                let rows = leases
                    .into_iter()
                    .map(|v| {
                        vec![
                            v.lease.id.to_string(),
                            v.resource,
                            v.lease.holder.to_string(),
                            v.lease.epoch.to_string(),
                            v.lease.state.to_string(),
                            output::when(Some(v.lease.expires_at)),
                            output::when(Some(v.lease.heartbeat_at)),
                        ]
                    })
                    .collect();
                output::table(
                    &[
                        "lease",
                        "resource",
                        "holder",
                        "epoch",
                        "state",
                        "expires",
                        "heartbeat",
                    ],
                    rows,
                );
            }
        }
        Cmd::Exec { want, max, command } => return exec(&client, &want, &max, &command).await,
    }
    Ok(ExitCode::SUCCESS)
}

/// Acquires, runs `command` with the lease in its environment, renews by heartbeat while
/// it runs, and releases when it ends. If this process dies, the heartbeats stop and the
/// server ends the lease within its heartbeat TTL.
async fn exec(
    client: &Client,
    want: &Want,
    max: &str,
    command: &[String],
) -> anyhow::Result<ExitCode> {
    let v = acquire(client, want, max).await?;
    let lease_id = v.lease.id.to_string();
    let epoch = v.lease.epoch;
    eprintln!(
        "testfarm: holding {} (lease {lease_id}, epoch {epoch})",
        v.resource
    );
    let ttl = Duration::from_millis(v.lease.heartbeat_ttl_ms);
    let every = (ttl / 3).max(Duration::from_millis(200));
    let (program, rest) = command.split_first().context("no command given")?;
    let mut child = tokio::process::Command::new(program)
        .args(rest)
        .env("TESTFARM_LEASE_ID", &lease_id)
        .env("TESTFARM_LEASE_EPOCH", epoch.to_string())
        .env("TESTFARM_RESOURCE", &v.resource)
        .spawn();
    let status = match &mut child {
        Ok(child) => {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tokio::select! {
                    status = child.wait() => break status.ok(),
                    _ = tick.tick() => {
                        let renew = client
                            .post::<LeaseView, _>(&format!("/api/v1/leases/{}/renew", enc(&lease_id)), &RenewLease { epoch, extend: None })
                            .await;
                        if let Err(e) = renew {
                            eprintln!("testfarm: lease renewal failed: {e:#}; stopping the command");
                            let _ = child.kill().await;
                            break None;
                        }
                    }
                }
            }
        }
        Err(e) => {
            eprintln!("testfarm: cannot run {program}: {e}");
            None
        }
    };
    let released = client
        .send::<LeaseView>(
            client
                .request(
                    reqwest::Method::DELETE,
                    &format!("/api/v1/leases/{}", enc(&lease_id)),
                )
                .query(&[("epoch", epoch.to_string())]),
        )
        .await;
    if let Err(e) = released {
        eprintln!(
            "testfarm: release failed ({e:#}); the lease ends by itself within {} s",
            ttl.as_secs()
        );
    }
    Ok(match status.and_then(|s| s.code()) {
        Some(0) => ExitCode::SUCCESS,
        Some(c) => ExitCode::from(u8::try_from(c).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}
