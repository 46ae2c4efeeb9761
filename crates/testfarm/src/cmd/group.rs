//! `testfarm group …`: named label selectors.

use std::process::ExitCode;

use clap::Subcommand;
use testfarm_api::group::{CreateGroup, Group, GroupDetail};

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
    /// Create a group from a label selector.
    Add {
        name: String,
        /// e.g. 'kind=board,team=kernel'.
        #[arg(long, short = 's')]
        selector: String,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List groups.
    List,
    /// Show members and capacity by kind.
    Show { name: String },
    /// Delete a group (members are untouched).
    Delete { name: String },
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let client = args.conn.client()?;
    let json = args.format.json;
    match args.cmd {
        Cmd::Add {
            name,
            selector,
            description,
        } => {
            let g: Group = client
                .post(
                    "/api/v1/groups",
                    &CreateGroup {
                        name,
                        selector,
                        description,
                    },
                )
                .await?;
            if json {
                output::json(&g)?;
            } else {
                outln!("added group {} ({})", g.name, g.selector);
            }
        }
        Cmd::List => {
            let groups: Vec<Group> = client.get("/api/v1/groups").await?;
            if json {
                output::json(&groups)?;
            } else {
                let rows = groups
                    .into_iter()
                    .map(|g| vec![g.name, g.selector, g.description])
                    .collect();
                output::table(&["name", "selector", "description"], rows);
            }
        }
        Cmd::Show { name } => {
            let d: GroupDetail = client
                .get(&format!("/api/v1/groups/{}", enc(&name)))
                .await?;
            if json {
                output::json(&d)?;
            } else {
                output::fields(&[
                    ("name", d.group.name.clone()),
                    ("selector", d.group.selector.clone()),
                    ("description", d.group.description.clone()),
                ]);
                outln!();
                let rows = d
                    .capacity
                    .iter()
                    .map(|c| {
                        vec![
                            c.kind.clone(),
                            c.total.to_string(),
                            c.available.to_string(),
                            c.leased.to_string(),
                            c.maintenance.to_string(),
                            c.offline.to_string(),
                            c.cpus.to_string(),
                            c.memory_mb.to_string(),
                            format!("{:.0}%", c.utilization * 100.0),
                        ]
                    })
                    .collect();
                output::table(
                    &[
                        "kind",
                        "total",
                        "available",
                        "leased",
                        "maintenance",
                        "offline",
                        "cpus",
                        "memory mb",
                        "utilization",
                    ],
                    rows,
                );
                outln!();
                super::resource::list(&d.members);
            }
        }
        Cmd::Delete { name } => {
            let _: serde_json::Value = client
                .delete(&format!("/api/v1/groups/{}", enc(&name)))
                .await?;
            outln!("deleted group {name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
