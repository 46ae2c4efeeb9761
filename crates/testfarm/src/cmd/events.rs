//! `testfarm events`: the event log, or a live tail of it (`--follow`, over SSE).

use std::process::ExitCode;

use futures::StreamExt;
use testfarm_api::Event;

use crate::client::Connection;
use crate::output::{self, Format};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only events after this id.
    #[arg(long, default_value_t = 0)]
    after: i64,
    /// Only events about this subject type (resource, group, token, job, lease).
    #[arg(long)]
    subject_type: Option<String>,
    /// Only events about this subject (a name or id).
    #[arg(long)]
    subject: Option<String>,
    /// Keep printing new events as they happen.
    #[arg(long, short = 'f')]
    follow: bool,
    #[command(flatten)]
    conn: Connection,
    #[command(flatten)]
    format: Format,
}

fn print(e: &Event, json: bool) -> anyhow::Result<()> {
    if json {
        outln!("{}", serde_json::to_string(e)?);
    } else {
        outln!(
            "{:>6} {} {:<28} {}/{} by {} {}",
            e.id,
            e.at.format("%H:%M:%S%.3f"),
            e.kind,
            e.subject_type,
            e.subject,
            e.actor,
            e.data
        );
    }
    Ok(())
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let client = args.conn.client()?;
    let mut q = vec![("after", args.after.to_string())];
    q.extend(args.subject_type.clone().map(|s| ("subject_type", s)));
    q.extend(args.subject.clone().map(|s| ("subject", s)));
    if !args.follow {
        q.push(("limit", "1000".into()));
        let events: Vec<Event> = client
            .send(
                client
                    .request(reqwest::Method::GET, "/api/v1/events")
                    .query(&q),
            )
            .await?;
        if args.format.json {
            output::json(&events)?;
        } else {
            for e in &events {
                print(e, false)?;
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let resp = client
        .request(reqwest::Method::GET, "/api/v1/events/stream")
        .query(&q)
        .send()
        .await?;
    if !resp.status().is_success() {
        let status = resp.status();
        anyhow::bail!(
            "the server refused the stream: HTTP {status}: {}",
            resp.text().await.unwrap_or_default()
        );
    }
    let mut body = resp.bytes_stream();
    let mut buf = Vec::new();
    while let Some(chunk) = body.next().await {
        buf.extend_from_slice(&chunk?);
        while let Some(pos) = buf.windows(2).position(|w| w == b"\n\n") {
            let frame: Vec<u8> = buf.drain(..pos + 2).collect();
            for line in String::from_utf8_lossy(&frame).lines() {
                if let Some(data) = line.strip_prefix("data:") {
                    let e: Event = serde_json::from_str(data.trim())?;
                    print(&e, args.format.json)?;
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
