//! `testfarm resource …`: the inventory, through the API.

use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::Subcommand;
use testfarm_api::Page;
use testfarm_api::resource::{
    BoardInfo, Capabilities, CreateResource, Labels, MaintenanceRequest, MetricSample, Resource,
    ResourceKind, RetireRequest, UpdateLabels,
};

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
    /// Register a resource.
    Add {
        /// Unique name (lowercase letters, digits, - . _).
        name: String,
        /// build-server, qemu-host or board.
        #[arg(long)]
        kind: ResourceKind,
        /// A label, repeatable: --label arch=arm64 --label team=kernel
        #[arg(long = "label", short = 'l', value_parser = parse_label)]
        labels: Vec<(String, String)>,
        #[arg(long)]
        cpus: Option<u32>,
        #[arg(long)]
        memory_mb: Option<u64>,
        #[arg(long)]
        disk_gb: Option<u64>,
        #[arg(long)]
        arch: Option<String>,
        /// Toolchain available, repeatable (e.g. aarch64-linux-gnu-gcc).
        #[arg(long = "toolchain")]
        toolchains: Vec<String>,
        /// Peripheral wired to it, repeatable (e.g. ethernet, can0).
        #[arg(long = "peripheral")]
        peripherals: Vec<String>,
        /// Build or test target it serves, repeatable (e.g. sp-grapefruit).
        #[arg(long = "target")]
        targets: Vec<String>,
        /// Board type (boards only), e.g. rpi4.
        #[arg(long)]
        board_type: Option<String>,
        /// Board serial number (boards only).
        #[arg(long)]
        serial_number: Option<String>,
        /// How the board is powered (pdu, relay, usb-hub, manual, process).
        #[arg(long)]
        power_method: Option<String>,
        /// Host that flashes the board.
        #[arg(long)]
        flash_station: Option<String>,
    },
    /// List resources.
    List {
        #[arg(long)]
        kind: Option<String>,
        #[arg(long)]
        state: Option<String>,
        /// Label selector, e.g. 'arch=arm64,team in (a,b)'.
        #[arg(long, short = 's')]
        selector: Option<String>,
    },
    /// Show one resource.
    Show { name: String },
    /// Set labels (k=v) and remove them (k-).
    Label {
        name: String,
        /// `key=value` to set, `key-` to remove.
        #[arg(required = true)]
        changes: Vec<String>,
    },
    /// Switch maintenance on or off.
    Maintenance {
        name: String,
        /// on or off.
        #[arg(value_parser = ["on", "off"])]
        switch: String,
        #[arg(long, default_value = "")]
        reason: String,
        /// Window start (RFC 3339); default now.
        #[arg(long)]
        start: Option<DateTime<Utc>>,
        /// Window end (RFC 3339); default until switched off.
        #[arg(long)]
        end: Option<DateTime<Utc>>,
    },
    /// Retire a resource for good (refused while work runs on it, unless --force).
    Retire {
        name: String,
        #[arg(long)]
        force: bool,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Delete a retired resource.
    Delete { name: String },
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    Labels::parse_pair(s).map_err(|e| e.to_string())
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let client = args.conn.client()?;
    let json = args.format.json;
    match args.cmd {
        Cmd::Add {
            name,
            kind,
            labels,
            cpus,
            memory_mb,
            disk_gb,
            arch,
            toolchains,
            peripherals,
            targets,
            board_type,
            serial_number,
            power_method,
            flash_station,
        } => {
            let board = BoardInfo {
                board_type,
                serial_number,
                power_method,
                flash_station,
            };
            let req = CreateResource {
                name,
                kind,
                labels: labels.into_iter().collect(),
                capabilities: Capabilities {
                    cpus,
                    memory_mb,
                    disk_gb,
                    arch,
                    kvm: None,
                    toolchains,
                    peripherals,
                    targets,
                },
                board: (board != BoardInfo::default()).then_some(board),
            };
            let r: Resource = client.post("/api/v1/resources", &req).await?;
            if json {
                output::json(&r)?;
            } else {
                outln!("added {} {} ({})", r.kind, r.name, r.id);
            }
        }
        Cmd::List {
            kind,
            state,
            selector,
        } => {
            let mut items = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let mut q = vec![("limit", "1000".to_string())];
                q.extend(kind.clone().map(|k| ("kind", k)));
                q.extend(state.clone().map(|s| ("state", s)));
                q.extend(selector.clone().map(|s| ("selector", s)));
                q.extend(cursor.clone().map(|c| ("cursor", c)));
                let page: Page<Resource> = client
                    .send(
                        client
                            .request(reqwest::Method::GET, "/api/v1/resources")
                            .query(&q),
                    )
                    .await?;
                items.extend(page.items);
                match page.next_cursor {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
            if json {
                output::json(&items)?;
            } else {
                list(&items);
            }
        }
        Cmd::Show { name } => {
            let r: Resource = client
                .get(&format!("/api/v1/resources/{}", enc(&name)))
                .await?;
            if json {
                output::json(&r)?;
            } else {
                show(&r);
                let samples: Vec<MetricSample> = client
                    .get(&format!("/api/v1/resources/{}/metrics", enc(&name)))
                    .await?;
                if let Some(s) = samples.first() {
                    let m = &s.metrics;
                    output::fields(&[(
                        "load",
                        format!(
                            "cpu {:.0}%, memory {:.0}%, disk {:.0}% ({:.1} GB free), {} compilations, {} jobs (at {})",
                            m.cpu_pct,
                            m.memory_pct,
                            m.disk_pct,
                            m.disk_free_gb,
                            m.active_compilations,
                            m.running_jobs,
                            output::when(Some(s.at))
                        ),
                    )]);
                }
                if r.kind == ResourceKind::BuildServer {
                    let h: testfarm_api::build::BuildHistory = client
                        .get(&format!(
                            "/api/v1/builds/history?limit=1&server={}",
                            enc(&name)
                        ))
                        .await?;
                    if let Some(s) = h.servers.first() {
                        output::fields(&[(
                            "builds",
                            format!(
                                "{} ended, {:.0}% passed, {:.1}s on average (testfarm builds history --server {name})",
                                s.count,
                                s.success_rate * 100.0,
                                s.average_duration_s
                            ),
                        )]);
                    }
                }
            }
        }
        Cmd::Label { name, changes } => {
            let mut req = UpdateLabels::default();
            for c in changes {
                if let Some(key) = c.strip_suffix('-').filter(|_| !c.contains('=')) {
                    req.remove.push(key.to_string());
                } else {
                    let (k, v) = parse_label(&c).map_err(anyhow::Error::msg)?;
                    req.set.insert(k, v);
                }
            }
            let r: Resource = client
                .patch(&format!("/api/v1/resources/{}/labels", enc(&name)), &req)
                .await?;
            if json {
                output::json(&r)?;
            } else {
                outln!("{}: {}", r.name, r.labels);
            }
        }
        Cmd::Maintenance {
            name,
            switch,
            reason,
            start,
            end,
        } => {
            let req = MaintenanceRequest {
                enabled: switch == "on",
                start,
                end,
                reason,
            };
            let r: Resource = client
                .post(
                    &format!("/api/v1/resources/{}/maintenance", enc(&name)),
                    &req,
                )
                .await?;
            if json {
                output::json(&r)?;
            } else {
                outln!("{} is {}", r.name, r.state);
            }
        }
        Cmd::Retire {
            name,
            force,
            reason,
        } => {
            let r: Resource = client
                .post(
                    &format!("/api/v1/resources/{}/retire", enc(&name)),
                    &RetireRequest { force, reason },
                )
                .await?;
            if json {
                output::json(&r)?;
            } else {
                outln!("{} is {}", r.name, r.state);
            }
        }
        Cmd::Delete { name } => {
            let _: serde_json::Value = client
                .delete(&format!("/api/v1/resources/{}", enc(&name)))
                .await?;
            if json {
                output::json(&serde_json::json!({ "deleted": name }))?;
            } else {
                outln!("deleted {name}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn list(items: &[Resource]) {
    let rows = items
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                r.kind.to_string(),
                r.state.to_string(),
                r.health.status.as_str().to_string(),
                r.capabilities.arch.clone().unwrap_or_else(|| "-".into()),
                r.labels.to_string(),
                output::when(r.last_seen),
            ]
        })
        .collect();
    output::table(
        &[
            "name",
            "kind",
            "state",
            "health",
            "arch",
            "labels",
            "last seen",
        ],
        rows,
    );
}

fn show(r: &Resource) {
    let c = &r.capabilities;
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let mut f = vec![
        ("name", r.name.clone()),
        ("id", r.id.to_string()),
        ("kind", r.kind.to_string()),
        ("state", r.state.to_string()),
        (
            "health",
            format!(
                "{} {}",
                r.health.status.as_str(),
                r.health.reasons.join("; ")
            ),
        ),
        ("labels", r.labels.to_string()),
        ("cpus", opt(c.cpus.map(|v| v.to_string()))),
        ("memory", opt(c.memory_mb.map(|v| format!("{v} MB")))),
        ("disk", opt(c.disk_gb.map(|v| format!("{v} GB")))),
        ("arch", opt(c.arch.clone())),
        ("kvm", opt(c.kvm.map(|v| v.to_string()))),
        ("toolchains", c.toolchains.join(", ")),
        ("peripherals", c.peripherals.join(", ")),
        ("targets", c.targets.join(", ")),
    ];
    if let Some(b) = &r.board {
        f.push(("board type", opt(b.board_type.clone())));
        f.push(("serial", opt(b.serial_number.clone())));
        f.push(("power", opt(b.power_method.clone())));
        f.push(("flash station", opt(b.flash_station.clone())));
    }
    if let Some(m) = &r.maintenance {
        f.push((
            "maintenance",
            format!(
                "{} (from {} to {})",
                m.reason,
                output::when(m.start),
                output::when(m.end)
            ),
        ));
    }
    if let Some(reason) = &r.retired_reason {
        f.push(("retired", reason.clone()));
    }
    f.push(("agent", opt(r.agent.clone())));
    f.push(("created", output::when(Some(r.created_at))));
    f.push(("updated", output::when(Some(r.updated_at))));
    f.push(("last seen", output::when(r.last_seen)));
    output::fields(&f);
}
