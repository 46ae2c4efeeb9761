//! `testfarm board …`: what a lab operator does with a board by hand. Switch its power,
//! see what it runs and what happened to it (power, flash, deploy, recovery, health), put
//! the last known-good build back on it, or run the health check that returns a
//! quarantined board to the pool. The board's agent does the work: the server queues the
//! request and this command waits for the agent's answer.

use std::process::ExitCode;

use clap::Subcommand;
use testfarm_api::Page;
use testfarm_api::board::{
    BoardActionState, BoardActionView, BoardHistoryEntry, BoardView, Deployment, PowerRequest,
    PowerVerb,
};
use testfarm_api::job::Job;

use crate::client::{Client, Connection, enc};
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

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Verb {
    On,
    Off,
    Cycle,
    Status,
}

impl From<Verb> for PowerVerb {
    fn from(v: Verb) -> PowerVerb {
        match v {
            Verb::On => PowerVerb::On,
            Verb::Off => PowerVerb::Off,
            Verb::Cycle => PowerVerb::Cycle,
            Verb::Status => PowerVerb::Status,
        }
    }
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Boards with their state, activity, power and deployed build.
    List,
    /// One board: state, activity, power, current and known-good build, health.
    Show { name: String },
    /// Switch a board's power, or read it (operators, or the holder of its lease).
    Power {
        name: String,
        #[arg(value_enum)]
        action: Verb,
        /// Why (kept in the board's power history).
        #[arg(long)]
        reason: Option<String>,
        /// Seconds to wait for the agent's answer.
        #[arg(long, default_value_t = 30)]
        wait: u64,
    },
    /// Power, flash, deploy, recovery, health and quarantine history, newest first.
    History {
        name: String,
        /// power, flash, deploy, recovery, health or quarantine.
        #[arg(long)]
        kind: Option<String>,
        #[arg(long, default_value_t = 30)]
        limit: u32,
    },
    /// Deploy the board's last known-good build again (the last build that booted and
    /// passed on it).
    Restore {
        name: String,
        /// Follow the restore job's log until it ends (exit code as `submit --wait`).
        #[arg(long)]
        wait: bool,
    },
    /// Power-cycle, boot, probe: a board out of the pool returns when this passes.
    HealthCheck { name: String },
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let client = args.conn.client()?;
    let json = args.format.json;
    match args.cmd {
        Cmd::List => {
            // Every page: a lab's boards fit in a few.
            let mut boards: Vec<BoardView> = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let mut path = "/api/v1/boards?limit=500".to_string();
                if let Some(c) = &cursor {
                    path.push_str(&format!("&cursor={}", enc(c)));
                }
                let page: Page<BoardView> = client.get(&path).await?;
                boards.extend(page.items);
                match page.next_cursor {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
            if json {
                output::json(&boards)?;
                return Ok(ExitCode::SUCCESS);
            }
            let rows = boards.iter().map(list_row).collect();
            output::table(
                &[
                    "name", "state", "activity", "power", "health", "current", "agent",
                ],
                rows,
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Show { name } => {
            let b: BoardView = client
                .get(&format!("/api/v1/boards/{}", enc(&name)))
                .await?;
            if json {
                output::json(&b)?;
            } else {
                show(&b);
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Power {
            name,
            action,
            reason,
            wait,
        } => power(&client, &name, action.into(), reason, wait, json).await,
        Cmd::History { name, kind, limit } => {
            let mut path = format!("/api/v1/boards/{}/history?limit={limit}", enc(&name));
            if let Some(k) = &kind {
                path.push_str(&format!("&kind={}", enc(k)));
            }
            let page: Page<BoardHistoryEntry> = client.get(&path).await?;
            if json {
                output::json(&page)?;
                return Ok(ExitCode::SUCCESS);
            }
            if page.items.is_empty() {
                outln!("no history for {name} yet");
                return Ok(ExitCode::SUCCESS);
            }
            let rows = page
                .items
                .iter()
                .map(|e| {
                    vec![
                        output::when(Some(e.at)),
                        word(&e.kind),
                        e.action.clone(),
                        e.actor.clone(),
                        if e.ok { "ok" } else { "FAILED" }.to_string(),
                        e.job_id.clone().unwrap_or_else(|| "-".into()),
                        e.build_id.clone().unwrap_or_else(|| "-".into()),
                        e.detail.clone(),
                    ]
                })
                .collect();
            output::table(
                &[
                    "when", "kind", "action", "who", "result", "job", "build", "detail",
                ],
                rows,
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Restore { name, wait } => {
            let job: Job = client
                .post(
                    &format!("/api/v1/boards/{}/restore", enc(&name)),
                    &serde_json::json!({}),
                )
                .await?;
            if !wait {
                if json {
                    output::json(&job)?;
                } else {
                    outln!("{}", job.id);
                    eprintln!(
                        "restoring {name} with its known-good build: job {}; follow it with: testfarm logs -f {}",
                        job.id, job.id
                    );
                }
                return Ok(ExitCode::SUCCESS);
            }
            let end = super::job::follow(&client, &job.id, !json).await?;
            if json {
                output::json(&end)?;
            } else {
                eprintln!(
                    "restore job {} {}{}",
                    end.id,
                    end.state,
                    end.reason
                        .as_ref()
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default()
                );
            }
            Ok(super::job::exit_for(end.state))
        }
        Cmd::HealthCheck { name } => {
            let view: BoardActionView = client
                .post(
                    &format!("/api/v1/boards/{}/health-check", enc(&name)),
                    &serde_json::json!({}),
                )
                .await?;
            if json {
                output::json(&view)?;
            } else {
                outln!(
                    "health check of {name} queued ({}); its result goes to `testfarm board history {name} --kind health`",
                    view.id
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn power(
    client: &Client,
    name: &str,
    verb: PowerVerb,
    reason: Option<String>,
    wait_s: u64,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let req = PowerRequest {
        action: verb,
        wait_ms: Some(wait_s.min(120) * 1000),
        reason,
    };
    let view: BoardActionView = client
        .send(
            client
                .request(
                    reqwest::Method::POST,
                    &format!("/api/v1/boards/{}/power", enc(name)),
                )
                .json(&req)
                .timeout(std::time::Duration::from_secs(wait_s.min(120) + 15)),
        )
        .await?;
    if json {
        output::json(&view)?;
    }
    let result = view.result.as_ref();
    match view.state {
        BoardActionState::Done => {
            if !json {
                let state = result.and_then(|r| r.power).map(|p| word(&p));
                match (result, state) {
                    (Some(r), _) if r.operator_action_needed => {
                        outln!("{name}: an operator must do this by hand: {}", r.detail);
                    }
                    (_, Some(s)) => outln!("{name}: power {s}"),
                    _ => outln!("{name}: done"),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        BoardActionState::Failed => {
            if !json {
                eprintln!(
                    "{name}: power {} failed: {}",
                    word(&verb),
                    result.map(|r| r.detail.as_str()).unwrap_or("no detail")
                );
            }
            Ok(ExitCode::FAILURE)
        }
        BoardActionState::Pending | BoardActionState::Sent => {
            if !json {
                eprintln!(
                    "{name}: the board's agent has not answered within {wait_s}s; the request ({}) stays queued",
                    view.id
                );
            }
            Ok(ExitCode::FAILURE)
        }
    }
}

fn list_row(b: &BoardView) -> Vec<String> {
    let r = &b.resource;
    vec![
        r.name.clone(),
        r.state.as_str().to_string(),
        word(&b.activity),
        b.power.map(|p| word(&p)).unwrap_or_else(|| "-".into()),
        b.health_level
            .map(|h| word(&h))
            .unwrap_or_else(|| r.health.status.as_str().to_string()),
        deployment(b.current.as_ref()),
        r.agent.clone().unwrap_or_else(|| "-".into()),
    ]
}

fn show(b: &BoardView) {
    let r = &b.resource;
    let board_type = r
        .board
        .as_ref()
        .and_then(|i| i.board_type.clone())
        .unwrap_or_else(|| "-".into());
    let mut reasons = r.health.reasons.clone();
    reasons.extend(b.health_findings.iter().cloned());
    output::fields(&[
        ("name", r.name.clone()),
        ("type", board_type),
        (
            "arch",
            r.capabilities.arch.clone().unwrap_or_else(|| "-".into()),
        ),
        ("state", r.state.as_str().to_string()),
        ("activity", word(&b.activity)),
        (
            "power",
            b.power.map(|p| word(&p)).unwrap_or_else(|| "-".into()),
        ),
        ("health", r.health.status.as_str().to_string()),
        (
            "findings",
            if reasons.is_empty() {
                "-".into()
            } else {
                reasons.join("; ")
            },
        ),
        ("failed checks", b.consecutive_health_failures.to_string()),
        (
            "out of pool",
            b.quarantine_reason.clone().unwrap_or_else(|| "no".into()),
        ),
        ("current", deployment(b.current.as_ref())),
        ("known good", deployment(b.known_good.as_ref())),
        ("agent", r.agent.clone().unwrap_or_else(|| "-".into())),
        ("console", format!("testfarm console {}", r.name)),
    ]);
}

fn deployment(d: Option<&Deployment>) -> String {
    d.map_or_else(
        || "-".into(),
        |d| {
            format!(
                "build {}{} by job {} at {}",
                d.build_id,
                d.commit
                    .as_deref()
                    .map(|c| format!(" ({})", c.chars().take(12).collect::<String>()))
                    .unwrap_or_default(),
                d.job_id,
                output::when(Some(d.at))
            )
        },
    )
}
