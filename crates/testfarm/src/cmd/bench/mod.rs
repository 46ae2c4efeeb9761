//! `testfarm bench …`: each benchmark prints one JSON object (figures plus the baseline it
//! was measured against in the same process), so results can be compared across machines.

use std::process::ExitCode;

pub mod alerts;
pub mod artifacts;
mod conn;
pub mod console;
pub mod dashboard;
pub mod fleet;
pub mod lease;
pub mod logs;
pub mod pipeline;
pub mod placement;
pub mod recovery;
mod spawn;
pub mod tap;
pub mod vm;

#[derive(Debug, clap::Subcommand)]
pub enum Bench {
    /// TAP parser throughput and peak memory on a generated stream.
    Tap(tap::Args),
    /// VM pod figures: boot to HELLO, per-test overhead, reset time, tree wall time.
    Vm(vm::Args),
    /// One scheduler pass over a large queue (in-process, real SQLite): seconds to place all.
    Placement(placement::Args),
    /// Lease acquire+release round trips against a server: p50/p99 vs `/healthz`.
    Lease(lease::Args),
    /// Simulated agents heartbeating against a server: p50/p99 latency and server RSS.
    Fleet(fleet::Args),
    /// Artifact upload/download vs curl to a plain file server; `latest` and retention at 100k builds.
    Artifacts(artifacts::Args),
    /// Pipeline overhead: one stage's end to the next stage's start, vs a client chaining jobs.
    Pipeline(pipeline::Args),
    /// Board console throughput: pty through the serial driver into a sink, vs `head -c` of a pty.
    Console(console::Args),
    /// A hung simulated board back at its prompt after an automatic power cycle: seconds beyond the configured limits.
    Recovery(recovery::Args),
    /// Alert latency: an agent's last heartbeat to the webhook's delivery, vs offline_after + 5 s.
    Alerts(alerts::Args),
    /// Web dashboard: overview and resources page vs `/healthz` at 1,000 resources / 10,000 jobs; live event fan-out to 200 streams.
    Dashboard(dashboard::Args),
    /// Log ingest of one job through the agent's shipper: MB/s vs a local file write.
    Logs(logs::Args),
}

pub fn run(bench: Bench) -> anyhow::Result<ExitCode> {
    match bench {
        Bench::Tap(args) => tap::run(args),
        Bench::Vm(args) => vm::run(args),
        Bench::Placement(args) => placement::run(args),
        Bench::Lease(args) => lease::run(args),
        Bench::Fleet(args) => fleet::run(args),
        Bench::Logs(args) => logs::run(args),
        Bench::Console(args) => console::run(args),
        Bench::Recovery(args) => recovery::run(args),
        Bench::Pipeline(args) => pipeline::run(args),
        Bench::Artifacts(args) => artifacts::run(args),
        Bench::Alerts(args) => alerts::run(args),
        Bench::Dashboard(args) => dashboard::run(args),
    }
}
