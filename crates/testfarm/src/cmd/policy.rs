//! `testfarm policy …`: scheduling policies (admins).

use std::process::ExitCode;

use clap::Subcommand;
use testfarm_core::policy::Policy;

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
    /// Add a policy, given as JSON, e.g.
    /// '{"name":"kernel-boards","priority":10,"rule":"reserved_for","group":"rpi","team":"kernel"}'
    Add { json: String },
    /// List policies in evaluation order.
    List,
    /// Delete a policy.
    Delete { name: String },
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let client = args.conn.client()?;
    match args.cmd {
        Cmd::Add { json } => {
            let p: Policy = serde_json::from_str(&json)
                .map_err(|e| anyhow::anyhow!("invalid policy JSON: {e}"))?;
            let p: Policy = client.post("/api/v1/policies", &p).await?;
            outln!("added policy {}", p.name);
        }
        Cmd::List => {
            let ps: Vec<Policy> = client.get("/api/v1/policies").await?;
            if args.format.json {
                output::json(&ps)?;
            } else {
                let rows = ps
                    .into_iter()
                    .map(|p| {
                        vec![
                            p.name.clone(),
                            p.priority.to_string(),
                            serde_json::to_string(&p.rule).unwrap_or_default(),
                        ]
                    })
                    .collect();
                output::table(&["name", "priority", "rule"], rows);
            }
        }
        Cmd::Delete { name } => {
            let _: serde_json::Value = client
                .delete(&format!("/api/v1/policies/{}", enc(&name)))
                .await?;
            outln!("deleted policy {name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
