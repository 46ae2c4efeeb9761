//! `testfarm builds …`: what build jobs did. `history` shows, per build server, how many
//! builds ended, how many passed and how long they take, then the most recent runs.

use std::process::ExitCode;

use clap::Subcommand;
use testfarm_api::build::{BuildHistory, BuildSummary};

use crate::client::{Connection, enc};
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
    /// Per build server: builds, success rate, average duration; then recent builds.
    History {
        /// Only this build server.
        #[arg(long)]
        server: Option<String>,
        /// How many recent builds to list.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let client = args.conn.client()?;
    match args.cmd {
        Cmd::History { server, limit } => {
            let mut path = format!("/api/v1/builds/history?limit={limit}");
            if let Some(s) = &server {
                path.push_str(&format!("&server={}", enc(s)));
            }
            let h: BuildHistory = client.get(&path).await?;
            if args.format.json {
                output::json(&h)?;
                return Ok(ExitCode::SUCCESS);
            }
            if h.servers.is_empty() {
                outln!("no finished builds yet");
                return Ok(ExitCode::SUCCESS);
            }
            let rows = h
                .servers
                .iter()
                .map(|s| {
                    vec![
                        s.server.clone(),
                        s.count.to_string(),
                        s.passed.to_string(),
                        format!("{:.0}%", s.success_rate * 100.0),
                        format!("{:.1}s", s.average_duration_s),
                    ]
                })
                .collect();
            output::table(
                &["server", "builds", "passed", "success", "avg duration"],
                rows,
            );
            if !h.recent.is_empty() {
                outln!();
                let rows = h
                    .recent
                    .iter()
                    .map(|r| {
                        vec![
                            r.job_id.clone(),
                            r.summary.server.clone(),
                            serde_json::to_value(r.outcome)
                                .ok()
                                .and_then(|v| v.as_str().map(str::to_string))
                                .unwrap_or_default(),
                            short(r.summary.commit.as_deref()),
                            r.summary.branch.clone().unwrap_or_else(|| "-".into()),
                            format!("{:.1}s", r.summary.duration_ms as f64 / 1000.0),
                            r.summary.artifacts.len().to_string(),
                        ]
                    })
                    .collect();
                output::table(
                    &[
                        "job",
                        "server",
                        "outcome",
                        "commit",
                        "branch",
                        "duration",
                        "artifacts",
                    ],
                    rows,
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn short(commit: Option<&str>) -> String {
    commit.map_or_else(|| "-".into(), |c| c.chars().take(12).collect())
}

/// Bytes in the largest unit that keeps a digit before the point (`12.3 MiB`).
fn human_bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

/// A build step's summary as `job show` prints it under the steps.
pub fn print_summary(index: u32, b: &BuildSummary) {
    outln!();
    outln!("build (step {index})");
    output::fields(&[
        ("server", b.server.clone()),
        ("source", b.source.clone()),
        ("ref", b.git_ref.clone().unwrap_or_else(|| "-".into())),
        ("commit", b.commit.clone().unwrap_or_else(|| "-".into())),
        ("branch", b.branch.clone().unwrap_or_else(|| "-".into())),
        ("arch", b.arch.clone().unwrap_or_else(|| "-".into())),
        ("config", b.config.clone().unwrap_or_else(|| "-".into())),
        (
            "toolchain",
            b.toolchain.clone().unwrap_or_else(|| "-".into()),
        ),
        ("duration", format!("{:.1}s", b.duration_ms as f64 / 1000.0)),
        (
            "peak cpu",
            b.peak_cpu_pct
                .map_or_else(|| "-".into(), |c| format!("{c:.0}% of one cpu")),
        ),
        (
            "peak memory",
            b.peak_memory_bytes.map_or_else(|| "-".into(), human_bytes),
        ),
        ("build id", b.build_id.clone().unwrap_or_else(|| "-".into())),
    ]);
    if !b.artifacts.is_empty() {
        let rows = b
            .artifacts
            .iter()
            .map(|a| {
                vec![
                    a.name.clone(),
                    a.kind.to_string(),
                    a.size.to_string(),
                    a.sha256.clone(),
                ]
            })
            .collect();
        output::table(&["artifact", "kind", "size", "sha256"], rows);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_well() {
        assert_eq!(human_bytes(12), "12 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }
}
