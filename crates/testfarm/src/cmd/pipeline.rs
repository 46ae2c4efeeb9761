//! `testfarm pipeline run|list|show|cancel|history`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use testfarm_api::Page;
use testfarm_api::pipeline::{
    CancelPipeline, Pipeline, PipelineHistory, PipelineState, StageState, SubmitPipeline,
};

use crate::client::{Client, Connection, enc};
use crate::cmd::job::{locate, parse_var};
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

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Submit a pipeline spec (YAML); `-` reads standard input.
    Run {
        file: PathBuf,
        /// Override a pipeline variable (reaches every stage), repeatable.
        #[arg(long = "var", value_parser = parse_var)]
        vars: Vec<(String, String)>,
        /// Priority of every stage's job: low, normal, high, urgent or 0-1000.
        #[arg(long)]
        priority: Option<String>,
        /// Wait for the pipeline to end, printing each stage as it moves; exit 0 only if
        /// it passed (3 when a lab error halted it).
        #[arg(long)]
        follow: bool,
    },
    /// List pipelines, newest first.
    List {
        #[arg(long)]
        name: Option<String>,
        /// running, passed, failed, error or cancelled.
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Show a pipeline and its stages.
    Show { id: String },
    /// Cancel a pipeline: waiting stages are skipped, running ones cancelled.
    Cancel {
        id: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Runs, success rate and per-stage durations of a named pipeline.
    History { name: String },
}

/// 0 passed; 3 a lab error halted it; 1 anything else.
fn exit_for(state: PipelineState) -> ExitCode {
    match state {
        PipelineState::Passed => ExitCode::SUCCESS,
        PipelineState::Error => ExitCode::from(3),
        _ => ExitCode::FAILURE,
    }
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let client = args.conn.client()?;
    let json = args.format.json;
    match args.cmd {
        Cmd::Run {
            file,
            vars,
            priority,
            follow,
        } => {
            let spec = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())
                    .context("reading the pipeline from standard input")?
            } else {
                std::fs::read_to_string(&file)
                    .with_context(|| format!("cannot read {}", file.display()))?
            };
            let req = SubmitPipeline {
                spec,
                vars: vars.into_iter().collect(),
                priority,
            };
            let p: Pipeline = client
                .post("/api/v1/pipelines", &req)
                .await
                .map_err(|e| locate(e, &file))?;
            if !follow {
                if json {
                    output::json(&p)?;
                } else {
                    outln!("{}", p.id);
                    eprintln!(
                        "submitted pipeline {} ({}); follow it with: testfarm pipeline show {}",
                        p.name, p.id, p.id
                    );
                }
                return Ok(ExitCode::SUCCESS);
            }
            if !json {
                eprintln!(
                    "submitted pipeline {} ({}): {}",
                    p.name,
                    p.id,
                    p.stages
                        .iter()
                        .map(|s| s.name.as_str())
                        .collect::<Vec<_>>()
                        .join(" → ")
                );
            }
            let end = follow_pipeline(&client, &p.id, !json).await?;
            if json {
                output::json(&end)?;
            } else {
                print_pipeline(&end);
            }
            Ok(exit_for(end.state))
        }
        Cmd::List { name, state, limit } => {
            let mut q = vec![("limit", limit.to_string())];
            q.extend(name.map(|n| ("name", n)));
            q.extend(state.map(|s| ("state", s)));
            let page: Page<Pipeline> = client
                .send(
                    client
                        .request(reqwest::Method::GET, "/api/v1/pipelines")
                        .query(&q),
                )
                .await?;
            if json {
                output::json(&page.items)?;
            } else {
                let rows = page
                    .items
                    .into_iter()
                    .map(|p| {
                        let done = p
                            .stages
                            .iter()
                            .filter(|s| s.state == StageState::Passed)
                            .count();
                        vec![
                            p.id,
                            p.name,
                            p.state.as_str().to_string(),
                            format!("{done}/{}", p.stages.len()),
                            p.submitter,
                            output::when(Some(p.created_at)),
                            p.reason.unwrap_or_default(),
                        ]
                    })
                    .collect();
                output::table(
                    &[
                        "ID",
                        "NAME",
                        "STATE",
                        "STAGES",
                        "SUBMITTER",
                        "CREATED",
                        "REASON",
                    ],
                    rows,
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Show { id } => {
            let p: Pipeline = client
                .get(&format!("/api/v1/pipelines/{}", enc(&id)))
                .await?;
            if json {
                output::json(&p)?;
            } else {
                print_pipeline(&p);
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Cancel { id, reason } => {
            let p: Pipeline = client
                .post(
                    &format!("/api/v1/pipelines/{}/cancel", enc(&id)),
                    &CancelPipeline { reason },
                )
                .await?;
            if json {
                output::json(&p)?;
            } else {
                eprintln!(
                    "pipeline {} {}",
                    p.id,
                    if p.state.is_terminal() {
                        p.state.as_str()
                    } else {
                        "cancelling: its running stages are being stopped"
                    }
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::History { name } => {
            let h: PipelineHistory = client
                .send(
                    client
                        .request(reqwest::Method::GET, "/api/v1/pipelines/history")
                        .query(&[("name", name)]),
                )
                .await?;
            if json {
                output::json(&h)?;
            } else {
                output::fields(&[
                    ("pipeline", h.name.clone()),
                    ("runs", h.runs.to_string()),
                    (
                        "outcomes",
                        format!(
                            "{} passed, {} failed, {} error, {} cancelled",
                            h.passed, h.failed, h.error, h.cancelled
                        ),
                    ),
                    ("success", format!("{:.0}%", h.success_rate * 100.0)),
                ]);
                let rows = h
                    .stages
                    .into_iter()
                    .map(|s| {
                        vec![
                            s.name,
                            s.runs.to_string(),
                            format!("{:.0}%", s.success_rate * 100.0),
                            format_ms(s.avg_duration_ms),
                        ]
                    })
                    .collect();
                output::table(&["STAGE", "RUNS", "SUCCESS", "AVG DURATION"], rows);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn format_ms(ms: u64) -> String {
    testfarm_core::duration::format(Duration::from_millis(ms))
}

fn print_pipeline(p: &Pipeline) {
    output::fields(&[
        ("pipeline", format!("{} ({})", p.name, p.id)),
        ("state", p.state.as_str().to_string()),
        ("submitter", p.submitter.clone()),
        ("created", output::when(Some(p.created_at))),
        ("ended", output::when(p.ended_at)),
        (
            "reason",
            p.reason.clone().unwrap_or_else(|| "-".to_string()),
        ),
    ]);
    let rows = p
        .stages
        .iter()
        .map(|s| {
            let took = match (s.started_at, s.ended_at) {
                (Some(a), Some(b)) => {
                    format_ms(u64::try_from((b - a).num_milliseconds()).unwrap_or(0))
                }
                _ => "-".to_string(),
            };
            vec![
                s.name.clone(),
                s.state.as_str().to_string(),
                s.job.clone().unwrap_or_else(|| "-".into()),
                took,
                s.reason.clone().unwrap_or_default(),
            ]
        })
        .collect();
    output::table(&["STAGE", "STATE", "JOB", "TOOK", "REASON"], rows);
    if let Some(job) = p
        .stages
        .iter()
        .rev()
        .find(|s| s.state.is_terminal() && s.state != StageState::Skipped)
        .and_then(|s| s.job.as_ref())
    {
        eprintln!("logs: testfarm logs {job}   results: testfarm results {job}");
    }
}

/// Polls the pipeline until it ends, printing each stage's moves.
async fn follow_pipeline(client: &Client, id: &str, print: bool) -> anyhow::Result<Pipeline> {
    let mut seen: Vec<(String, StageState)> = Vec::new();
    loop {
        let p: Pipeline = client
            .get(&format!("/api/v1/pipelines/{}", enc(id)))
            .await?;
        for s in &p.stages {
            let now = (s.name.clone(), s.state);
            if print && !seen.contains(&now) && s.state != StageState::Waiting {
                eprintln!(
                    "stage {}: {}{}{}",
                    s.name,
                    s.state.as_str(),
                    s.job
                        .as_ref()
                        .map(|j| format!(" (job {j})"))
                        .unwrap_or_default(),
                    s.reason
                        .as_ref()
                        .filter(|_| s.state.is_terminal())
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default()
                );
            }
            seen.retain(|(n, _)| n != &s.name);
            seen.push(now);
        }
        if p.state.is_terminal() {
            return Ok(p);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
