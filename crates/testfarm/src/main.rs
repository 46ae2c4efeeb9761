//! `testfarm`: the one host binary. Server, agent, local harnesses (`tap`, `prove`,
//! `vmtest`), benchmarks and the API client commands all live behind one clap tree.
//!
//! Exit codes: 0 success, 1 failure (a failed test, a refused request), 2 usage error.

mod cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// testfarm runs a test lab: build servers, QEMU hosts and boards, shared by people and CI.
#[derive(Debug, Parser)]
#[command(name = "testfarm", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Parse a TAP stream and print a summary, JSON or JUnit XML.
    Tap(cmd::tap::Args),
    /// Run a local tree of TAP-producing tests (`t/**/*_test.sh`), like Perl's `prove`.
    Prove(cmd::prove::Args),
    /// Run a test tree across a pod of QEMU VMs through the in-guest agent.
    Vmtest(cmd::vmtest::Args),
    /// Benchmarks that print JSON figures.
    #[command(subcommand)]
    Bench(cmd::bench::Bench),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Tap(args) => cmd::tap::run(args),
        Command::Prove(args) => cmd::prove::run(args),
        Command::Vmtest(args) => cmd::vmtest::run(args),
        Command::Bench(bench) => cmd::bench::run(bench),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
