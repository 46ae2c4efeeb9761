//! `testfarm alerts …`: the alerts the rules raised (an agent unreachable, a build server
//! low on disk, a board out of the pool, a failed build, deploy or cleanup): list them,
//! show one with what was tried and where it was delivered, acknowledge or resolve it.

use std::process::ExitCode;

use clap::Subcommand;
use testfarm_api::Page;
use testfarm_api::alert::{Alert, AlertAction, AlertDetail};

use crate::client::{Connection, enc};
use crate::output::{self, Format, word};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: Cmd,
    #[command(flatten)]
    conn: Connection,
    #[command(flatten)]
    format: Format,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Alerts, newest first (by default the active ones: open and acknowledged).
    List {
        /// open, acknowledged, resolved, active; `all` for every state.
        #[arg(long, default_value = "active")]
        state: String,
        /// info, warning or critical.
        #[arg(long)]
        severity: Option<String>,
        /// unreachable, disk_low, host_resources, board_health, build_failed,
        /// deploy_failed, cleanup_failed.
        #[arg(long)]
        rule: Option<String>,
        /// A resource, board or job name.
        #[arg(long)]
        subject: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// One alert, with its recovery attempts and deliveries.
    Show { id: String },
    /// Acknowledge an alert (seen, being handled); it stays open until it clears.
    Ack {
        id: String,
        #[arg(long)]
        note: Option<String>,
    },
    /// Resolve an alert by hand.
    Resolve {
        id: String,
        #[arg(long)]
        note: Option<String>,
    },
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let client = args.conn.client()?;
    let json = args.format.json;
    match args.cmd {
        Cmd::List {
            state,
            severity,
            rule,
            subject,
            limit,
        } => {
            let mut path = format!("/api/v1/alerts?limit={limit}");
            if state != "all" {
                path.push_str(&format!("&state={}", enc(&state)));
            }
            for (k, v) in [
                ("severity", &severity),
                ("rule", &rule),
                ("subject", &subject),
            ] {
                if let Some(v) = v {
                    path.push_str(&format!("&{k}={}", enc(v)));
                }
            }
            let page: Page<Alert> = client.get(&path).await?;
            if json {
                output::json(&page.items)?;
                return Ok(ExitCode::SUCCESS);
            }
            if page.items.is_empty() {
                outln!("no alerts");
                return Ok(ExitCode::SUCCESS);
            }
            let rows = page
                .items
                .iter()
                .map(|a| {
                    vec![
                        a.id.clone(),
                        word(&a.severity),
                        word(&a.state),
                        word(&a.rule),
                        a.subject.clone(),
                        output::when(Some(a.first_seen)),
                        output::when(Some(a.last_seen)),
                        a.count.to_string(),
                        a.summary.clone(),
                    ]
                })
                .collect();
            output::table(
                &[
                    "id",
                    "severity",
                    "state",
                    "rule",
                    "subject",
                    "first seen",
                    "last seen",
                    "count",
                    "summary",
                ],
                rows,
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Show { id } => {
            let d: AlertDetail = client.get(&format!("/api/v1/alerts/{}", enc(&id))).await?;
            if json {
                output::json(&d)?;
            } else {
                show(&d);
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Ack { id, note } => act(&client, &id, "acknowledge", note, json).await,
        Cmd::Resolve { id, note } => act(&client, &id, "resolve", note, json).await,
    }
}

async fn act(
    client: &crate::client::Client,
    id: &str,
    verb: &str,
    note: Option<String>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let d: AlertDetail = client
        .post(
            &format!("/api/v1/alerts/{}/{verb}", enc(id)),
            &AlertAction { note },
        )
        .await?;
    if json {
        output::json(&d)?;
    } else {
        outln!("alert {} is {}", d.alert.id, word(&d.alert.state));
    }
    Ok(ExitCode::SUCCESS)
}

fn show(d: &AlertDetail) {
    let a = &d.alert;
    output::fields(&[
        ("id", a.id.clone()),
        ("rule", word(&a.rule)),
        ("subject", a.subject.clone()),
        ("severity", word(&a.severity)),
        ("state", word(&a.state)),
        ("summary", a.summary.clone()),
        ("first seen", output::when(Some(a.first_seen))),
        ("last seen", output::when(Some(a.last_seen))),
        ("count", a.count.to_string()),
        (
            "acknowledged",
            a.acknowledged_by
                .as_ref()
                .map(|b| format!("{} by {b}", output::when(a.acknowledged_at)))
                .unwrap_or_else(|| "-".into()),
        ),
        (
            "resolved",
            a.resolved_by
                .as_ref()
                .map(|b| format!("{} by {b}", output::when(a.resolved_at)))
                .unwrap_or_else(|| "-".into()),
        ),
    ]);
    if !d.recovery_attempts.is_empty() {
        outln!("\nrecovery attempts:");
        output::table(
            &["when", "action", "result"],
            d.recovery_attempts
                .iter()
                .map(|r| vec![output::when(Some(r.at)), r.action.clone(), r.result.clone()])
                .collect(),
        );
    }
    if !d.deliveries.is_empty() {
        outln!("\ndeliveries:");
        output::table(
            &[
                "channel",
                "event",
                "state",
                "attempts",
                "next attempt",
                "last error",
            ],
            d.deliveries
                .iter()
                .map(|x| {
                    vec![
                        x.channel.clone(),
                        x.event.clone(),
                        word(&x.state),
                        x.attempts.to_string(),
                        x.next_attempt_at
                            .map(|t| output::when(Some(t)))
                            .unwrap_or_else(|| "-".into()),
                        x.last_error.clone().unwrap_or_else(|| "-".into()),
                    ]
                })
                .collect(),
        );
    }
}
