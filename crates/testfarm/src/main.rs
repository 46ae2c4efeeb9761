//! `testfarm`: the one host binary. Server, agent, local harnesses (`tap`, `prove`,
//! `vmtest`), benchmarks and the API client commands all live behind one clap tree.
//!
//! Exit codes: 0 success, 1 failure (a failed test, a refused request), 2 usage error.

#[macro_use]
mod output;
mod client;
mod cmd;
mod local_agent;
mod logging;

use std::process::ExitCode;

/// mimalloc instead of glibc's malloc: the server allocates and frees small buffers on
/// every request (headers, JSON, rows), and glibc's malloc/free were ~7% of its CPU in
/// the lease round trip (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};

/// testfarm runs a test lab: build servers, QEMU hosts and boards, shared by people and CI.
#[derive(Debug, Parser)]
#[command(
    name = "testfarm",
    version,
    about,
    long_about = None,
    propagate_version = true,
    after_help = "Start with `testfarm demo` (a whole lab on this machine), or `testfarm init --base-dir DIR` \
                  then `testfarm server -f DIR/config.toml`.\n\
                  Client commands take --url/TESTFARM_URL and --token-file/TESTFARM_TOKEN_FILE.\n\
                  Exit codes: 0 success, 1 failure, 2 usage error (3: `submit --wait` saw a lab error)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Set up a lab's base directory: config.toml, work/, and an admin token.
    Init(cmd::init::Args),
    /// Run the server (API, scheduler, background tasks) from a config file.
    Server(cmd::server::Args),
    /// Run an agent: register this host's resources, heartbeat, pull and run work.
    Agent(cmd::agent::Args),
    /// Run a whole lab on this machine: server, SQLite, local resources, simulated boards.
    Demo(cmd::demo::Args),
    /// Manage resources: build servers, QEMU hosts and boards.
    Resource(cmd::resource::Args),
    /// Boards: power, history, restore the known-good build, health check.
    Board(cmd::board::Args),
    /// Alerts: list, show, acknowledge, resolve.
    Alerts(cmd::alerts::Args),
    /// A board's serial console in this terminal (Ctrl-] leaves).
    Console(cmd::console::Args),
    /// Manage resource groups (named label selectors).
    Group(cmd::group::Args),
    /// testfarm as a buildomat factory: setup, its instances.
    Buildomat(cmd::buildomat::Args),
    /// Manage API tokens (admins).
    Token(cmd::token::Args),
    /// Submit a job spec (YAML).
    Submit(cmd::job::SubmitArgs),
    /// List jobs.
    Jobs(cmd::job::JobsArgs),
    /// Show, cancel or explain one job.
    Job(cmd::job::JobArgs),
    /// Print a job's log (-f follows it until the job ends).
    Logs(cmd::job::LogsArgs),
    /// Show a job's test results (TAP → table, JSON, JUnit XML).
    Results(cmd::job::ResultsArgs),
    /// Run, list, show, cancel pipelines (stages of jobs), and their history.
    Pipeline(cmd::pipeline::Args),
    /// Take, renew, release and list leases; run a command under one.
    Lease(cmd::lease::Args),
    /// Manage scheduling policies (admins).
    Policy(cmd::policy::Args),
    /// The artifact repository: builds, uploads, downloads, pins, tags, retention.
    Artifacts(cmd::artifacts::Args),
    /// Build jobs: history per build server (count, success rate, average duration).
    Builds(cmd::builds::Args),
    /// Show the event log, or follow it live.
    Events(cmd::events::Args),
    /// Parse a TAP stream and print a summary, JSON or JUnit XML.
    Tap(cmd::tap::Args),
    /// Run a local tree of TAP-producing tests (`t/**/*_test.sh`), like Perl's `prove`.
    Prove(cmd::prove::Args),
    /// Run a test tree across a pod of QEMU VMs through the in-guest agent.
    Vmtest(cmd::vmtest::Args),
    /// A simulated board (console on TCP or a pty, power by `sim-board power`) for tests and demos.
    SimBoard(cmd::sim_board::Args),
    /// Benchmarks that print JSON figures.
    #[command(subcommand)]
    Bench(cmd::bench::Bench),
}

/// Runs a client command on a small runtime.
fn block_on(
    fut: impl std::future::Future<Output = anyhow::Result<ExitCode>>,
) -> anyhow::Result<ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(fut)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Init(args) => cmd::init::run(args),
        Command::Server(args) => cmd::server::run(args),
        Command::Demo(args) => cmd::demo::run(args),
        Command::Agent(args) => cmd::agent::run(args),
        Command::Resource(args) => block_on(cmd::resource::run(args)),
        Command::Board(args) => block_on(cmd::board::run(args)),
        Command::Alerts(args) => block_on(cmd::alerts::run(args)),
        Command::Console(args) => block_on(cmd::console::run(args)),
        Command::Group(args) => block_on(cmd::group::run(args)),
        Command::Buildomat(args) => block_on(cmd::buildomat::run(args)),
        Command::Token(args) => block_on(cmd::token::run(args)),
        Command::Events(args) => block_on(cmd::events::run(args)),
        Command::Artifacts(args) => block_on(cmd::artifacts::run(args)),
        Command::Builds(args) => block_on(cmd::builds::run(args)),
        Command::Submit(args) => block_on(cmd::job::submit(args)),
        Command::Pipeline(args) => block_on(cmd::pipeline::run(args)),
        Command::Jobs(args) => block_on(cmd::job::jobs(args)),
        Command::Job(args) => block_on(cmd::job::job(args)),
        Command::Logs(args) => block_on(cmd::job::logs(args)),
        Command::Lease(args) => block_on(cmd::lease::run(args)),
        Command::Results(args) => block_on(cmd::job::results(args)),
        Command::Policy(args) => block_on(cmd::policy::run(args)),
        Command::Tap(args) => cmd::tap::run(args),
        Command::Prove(args) => cmd::prove::run(args),
        Command::Vmtest(args) => cmd::vmtest::run(args),
        Command::SimBoard(args) => cmd::sim_board::run(args),
        Command::Bench(bench) => cmd::bench::run(bench),
    };
    match result {
        Ok(code) => code,
        // The reader of our output went away (`testfarm logs ID | head`): not an error.
        Err(err) if output::is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            // A refusal from the server prints its problem detail (and field).
            match err.downcast_ref::<client::Refused>() {
                Some(refused) => eprintln!("error: {refused}"),
                None => eprintln!("error: {err:#}"),
            }
            ExitCode::FAILURE
        }
    }
}
