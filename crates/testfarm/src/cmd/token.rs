//! `testfarm token …`: API tokens (admins only).

use std::process::ExitCode;

use clap::Subcommand;
use testfarm_api::token::{CreateToken, CreatedToken, Role, TokenInfo};

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
    /// Create a token; its secret is printed once.
    Create {
        #[arg(long)]
        name: String,
        /// admin, operator, user or agent.
        #[arg(long)]
        role: Role,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke a token by name or id; takes effect at once.
    Revoke { name: String },
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let client = args.conn.client()?;
    let json = args.format.json;
    match args.cmd {
        Cmd::Create { name, role } => {
            let t: CreatedToken = client
                .post("/api/v1/tokens", &CreateToken { name, role })
                .await?;
            if json {
                output::json(&t)?;
            } else {
                eprintln!(
                    "created {} token {:?}; it is shown only this once:",
                    t.info.role, t.info.name
                );
                outln!("{}", t.token);
            }
        }
        Cmd::List => {
            let tokens: Vec<TokenInfo> = client.get("/api/v1/tokens").await?;
            if json {
                output::json(&tokens)?;
            } else {
                let rows = tokens
                    .into_iter()
                    .map(|t| {
                        vec![
                            t.name,
                            t.role.to_string(),
                            t.id,
                            output::when(Some(t.created_at)),
                            output::when(t.last_used_at),
                            output::when(t.revoked_at),
                        ]
                    })
                    .collect();
                output::table(
                    &["name", "role", "id", "created", "last used", "revoked"],
                    rows,
                );
            }
        }
        Cmd::Revoke { name } => {
            let t: TokenInfo = client
                .delete(&format!("/api/v1/tokens/{}", enc(&name)))
                .await?;
            if json {
                output::json(&t)?;
            } else {
                outln!("revoked token {:?}", t.name);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
