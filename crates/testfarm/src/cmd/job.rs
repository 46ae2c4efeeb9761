//! `testfarm submit`, `testfarm jobs`, `testfarm job show|cancel|why`, `testfarm logs`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use testfarm_api::Page;
use testfarm_api::job::{CancelJob, Job, JobState, SubmitJob};

use crate::client::{Client, Connection, enc};
use crate::output::{self, Format};

#[derive(Debug, clap::Args)]
pub struct SubmitArgs {
    /// The job spec (YAML); `-` reads standard input.
    file: PathBuf,
    /// Override a spec variable, repeatable: --var api=http://… --var vin=123
    #[arg(long = "var", value_parser = parse_var)]
    vars: Vec<(String, String)>,
    /// Override the spec's priority: low, normal, high, urgent or 0-1000.
    #[arg(long)]
    priority: Option<String>,
    /// Wait for the job to end, following its log; exit 0 only if it passed.
    #[arg(long)]
    wait: bool,
    #[command(flatten)]
    conn: Connection,
    #[command(flatten)]
    format: Format,
}

pub(crate) fn parse_var(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("{s:?} is not key=value"))
}

pub async fn submit(args: SubmitArgs) -> anyhow::Result<ExitCode> {
    let client = args.conn.client()?;
    let spec = if args.file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading the spec from standard input")?
    } else {
        std::fs::read_to_string(&args.file)
            .with_context(|| format!("cannot read {}", args.file.display()))?
    };
    let req = SubmitJob {
        spec,
        vars: args.vars.into_iter().collect(),
        priority: args.priority,
    };
    let job: Job = client
        .post("/api/v1/jobs", &req)
        .await
        .map_err(|e| locate(e, &args.file))?;
    if !args.wait {
        if args.format.json {
            output::json(&job)?;
        } else {
            outln!("{}", job.id);
            eprintln!(
                "submitted {} ({}){}; follow it with: testfarm logs -f {}",
                job.name,
                job.id,
                job.estimated_start
                    .map(|t| format!(", estimated start {}", output::when(Some(t))))
                    .unwrap_or_default(),
                job.id
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !args.format.json {
        eprintln!("submitted {} ({}), waiting", job.name, job.id);
    }
    let end = follow(&client, &job.id, !args.format.json).await?;
    if args.format.json {
        output::json(&end)?;
    } else {
        eprintln!(
            "job {} {}{}",
            end.id,
            end.state,
            end.reason
                .as_ref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        );
    }
    Ok(exit_for(end.state))
}

/// Prefixes a spec error with the file name, as compilers do (`job.yaml: line 3, …`).
pub(crate) fn locate(e: anyhow::Error, file: &std::path::Path) -> anyhow::Error {
    match e.downcast_ref::<crate::client::Refused>() {
        Some(r)
            if r.problem
                .field
                .as_deref()
                .is_some_and(|f| f.starts_with("spec")) =>
        {
            anyhow::anyhow!("{}: {}", file.display(), r.problem.detail)
        }
        _ => e,
    }
}

/// 0 passed; 1 failed, cancelled or timed out; 3 a lab error (so CI can tell them apart).
pub(crate) fn exit_for(state: JobState) -> ExitCode {
    match state {
        JobState::Passed => ExitCode::SUCCESS,
        JobState::Error => ExitCode::from(3),
        _ => ExitCode::FAILURE,
    }
}

/// Prints the log as it grows until the job ends; returns the ended job.
pub(crate) async fn follow(client: &Client, id: &str, print: bool) -> anyhow::Result<Job> {
    let mut offset = 0u64;
    let mut stdout = std::io::stdout();
    loop {
        let resp = client
            .request(
                reqwest::Method::GET,
                &format!("/api/v1/jobs/{}/log", enc(id)),
            )
            .query(&[("offset", offset.to_string()), ("wait", "20".to_string())])
            .timeout(Duration::from_secs(40))
            .send()
            .await?;
        if !resp.status().is_success() {
            let status = resp.status();
            anyhow::bail!(
                "reading the log failed: HTTP {status}: {}",
                resp.text().await.unwrap_or_default()
            );
        }
        let state = resp
            .headers()
            .get("x-testfarm-job-state")
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.parse::<JobState>().ok());
        let bytes = resp.bytes().await?;
        offset += bytes.len() as u64;
        if print && !bytes.is_empty() {
            stdout.write_all(&bytes)?;
            stdout.flush()?;
        }
        if bytes.is_empty() && state.is_some_and(JobState::is_terminal) {
            return client.get(&format!("/api/v1/jobs/{}", enc(id))).await;
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct JobsArgs {
    /// State filter: a state, or active / ended; comma-separated.
    #[arg(long)]
    state: Option<String>,
    #[arg(long)]
    name: Option<String>,
    #[arg(long)]
    submitter: Option<String>,
    /// At most this many (newest first).
    #[arg(long, default_value_t = 50)]
    limit: u32,
    #[command(flatten)]
    conn: Connection,
    #[command(flatten)]
    format: Format,
}

pub async fn jobs(args: JobsArgs) -> anyhow::Result<ExitCode> {
    let client = args.conn.client()?;
    let mut q = vec![("limit", args.limit.to_string())];
    q.extend(args.state.map(|s| ("state", s)));
    q.extend(args.name.map(|s| ("name", s)));
    q.extend(args.submitter.map(|s| ("submitter", s)));
    let page: Page<Job> = client
        .send(
            client
                .request(reqwest::Method::GET, "/api/v1/jobs")
                .query(&q),
        )
        .await?;
    if args.format.json {
        output::json(&page.items)?;
    } else {
        let rows = page
            .items
            .into_iter()
            .map(|j| {
                vec![
                    j.id,
                    j.name,
                    j.state.to_string(),
                    j.priority.to_string(),
                    j.resource.unwrap_or_else(|| "-".into()),
                    j.submitter,
                    output::when(Some(j.created_at)),
                    j.reason.unwrap_or_default(),
                ]
            })
            .collect();
        output::table(
            &[
                "id",
                "name",
                "state",
                "prio",
                "resource",
                "submitter",
                "created",
                "reason",
            ],
            rows,
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, clap::Args)]
pub struct JobArgs {
    #[command(subcommand)]
    cmd: JobCmd,
    #[command(flatten)]
    conn: Connection,
    #[command(flatten)]
    format: Format,
}

#[derive(Debug, Subcommand)]
enum JobCmd {
    /// Show a job and its steps.
    Show { id: String },
    /// Cancel a job (a running job's `always` steps still run).
    Cancel {
        id: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Explain why a job is waiting: matching resources, what blocks each, estimated start.
    Why { id: String },
}

pub async fn job(args: JobArgs) -> anyhow::Result<ExitCode> {
    let client = args.conn.client()?;
    match args.cmd {
        JobCmd::Show { id } => {
            let j: Job = client.get(&format!("/api/v1/jobs/{}", enc(&id))).await?;
            if args.format.json {
                output::json(&j)?;
            } else {
                output::fields(&[
                    ("id", j.id.clone()),
                    ("name", j.name.clone()),
                    ("state", j.state.to_string()),
                    ("reason", j.reason.clone().unwrap_or_else(|| "-".into())),
                    ("priority", j.priority.to_string()),
                    ("submitter", j.submitter.clone()),
                    ("resource", j.resource.clone().unwrap_or_else(|| "-".into())),
                    ("lease", j.lease_id.clone().unwrap_or_else(|| "-".into())),
                    ("attempt", j.attempt.to_string()),
                    ("created", output::when(Some(j.created_at))),
                    ("started", output::when(j.started_at)),
                    ("ended", output::when(j.ended_at)),
                    ("log", format!("{} bytes", j.log_bytes)),
                ]);
                if !j.steps.is_empty() {
                    outln!();
                    let rows = j
                        .steps
                        .iter()
                        .map(|s| {
                            vec![
                                s.index.to_string(),
                                format!("{}{}", s.kind, if s.always { " (always)" } else { "" }),
                                serde_json::to_value(s.outcome)
                                    .ok()
                                    .and_then(|v| v.as_str().map(str::to_string))
                                    .unwrap_or_default(),
                                s.exit_code.map_or_else(|| "-".into(), |c| c.to_string()),
                                format!("{:.1}s", s.duration_ms as f64 / 1000.0),
                                s.reason.clone().unwrap_or_default(),
                            ]
                        })
                        .collect();
                    output::table(
                        &["step", "kind", "outcome", "exit", "duration", "reason"],
                        rows,
                    );
                    for s in &j.steps {
                        if let Some(b) = &s.build {
                            crate::cmd::builds::print_summary(s.index, b);
                        }
                    }
                }
            }
        }
        JobCmd::Cancel { id, reason } => {
            let j: Job = client
                .post(
                    &format!("/api/v1/jobs/{}/cancel", enc(&id)),
                    &CancelJob { reason },
                )
                .await?;
            if args.format.json {
                output::json(&j)?;
            } else if j.state == JobState::Running {
                outln!(
                    "job {} is being cancelled (its agent stops it and runs `always`)",
                    j.id
                );
            } else {
                outln!("job {} {}", j.id, j.state);
            }
        }
        JobCmd::Why { id } => {
            let why: serde_json::Value = client
                .get(&format!("/api/v1/jobs/{}/why", enc(&id)))
                .await?;
            if args.format.json {
                output::json(&why)?;
            } else {
                outln!("{}", why["text"].as_str().unwrap_or_default());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    id: String,
    /// Keep following the log until the job ends.
    #[arg(long, short = 'f')]
    follow: bool,
    /// Show the serial console of the job's VM instead (every boot attempt's), as the
    /// agent stored it after each boot and at the job's end.
    #[arg(long, conflicts_with = "follow")]
    console: bool,
    #[command(flatten)]
    conn: Connection,
}

pub async fn logs(args: LogsArgs) -> anyhow::Result<ExitCode> {
    let client = args.conn.client()?;
    if args.console {
        let resp = client
            .request(
                reqwest::Method::GET,
                &format!("/api/v1/jobs/{}/outputs/console.log", enc(&args.id)),
            )
            .send()
            .await?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            anyhow::bail!(
                "job {} has no console log (it booted no VM, or its agent has not stored one yet)",
                args.id
            );
        }
        if !status.is_success() {
            anyhow::bail!("HTTP {status}: {}", resp.text().await.unwrap_or_default());
        }
        std::io::stdout().write_all(&resp.bytes().await?)?;
        return Ok(ExitCode::SUCCESS);
    }
    if args.follow {
        let end = follow(&client, &args.id, true).await?;
        eprintln!("job {} {}", end.id, end.state);
        return Ok(exit_for(end.state));
    }
    let mut offset = 0u64;
    let mut stdout = std::io::stdout();
    loop {
        let resp = client
            .request(
                reqwest::Method::GET,
                &format!("/api/v1/jobs/{}/log", enc(&args.id)),
            )
            .query(&[("offset", offset.to_string())])
            .send()
            .await?;
        if !resp.status().is_success() {
            let status = resp.status();
            anyhow::bail!("HTTP {status}: {}", resp.text().await.unwrap_or_default());
        }
        let bytes = resp.bytes().await?;
        if bytes.is_empty() {
            return Ok(ExitCode::SUCCESS);
        }
        offset += bytes.len() as u64;
        stdout.write_all(&bytes)?;
    }
}

#[derive(Debug, clap::Args)]
pub struct ResultsArgs {
    id: String,
    /// Also write the JUnit XML report to this file.
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    #[command(flatten)]
    conn: Connection,
    #[command(flatten)]
    format: Format,
}

/// `testfarm results ID`: the job's TAP results, one line per suite; exit 1 when any
/// suite did not pass.
pub async fn results(args: ResultsArgs) -> anyhow::Result<ExitCode> {
    let client = args.conn.client()?;
    let report: serde_json::Value = client
        .get(&format!("/api/v1/jobs/{}/results", enc(&args.id)))
        .await?;
    if let Some(path) = &args.junit {
        let resp = client
            .request(
                reqwest::Method::GET,
                &format!("/api/v1/jobs/{}/results.xml", enc(&args.id)),
            )
            .send()
            .await?;
        let status = resp.status();
        let xml = resp.text().await?;
        if !status.is_success() {
            anyhow::bail!("HTTP {status}: {xml}");
        }
        std::fs::write(path, xml).with_context(|| format!("cannot write {}", path.display()))?;
    }
    if args.format.json {
        output::json(&report)?;
    } else {
        let runs = report["runs"].as_array().cloned().unwrap_or_default();
        if runs.is_empty() {
            outln!("no TAP results in job {}", args.id);
        }
        let rows = runs
            .iter()
            .map(|r| {
                let s = &r["document"]["summary"];
                vec![
                    r["name"].as_str().unwrap_or_default().to_string(),
                    r["status"].as_str().unwrap_or_default().to_string(),
                    s["count"].to_string(),
                    s["pass"].to_string(),
                    s["fail"].to_string(),
                    s["skip"].to_string(),
                    s["todo"].to_string(),
                    s["reasons"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|v| v.as_str())
                                .collect::<Vec<_>>()
                                .join("; ")
                        })
                        .unwrap_or_default(),
                ]
            })
            .collect();
        output::table(
            &[
                "suite", "status", "tests", "pass", "fail", "skip", "todo", "reasons",
            ],
            rows,
        );
    }
    Ok(if report["ok"].as_bool().unwrap_or(false) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
