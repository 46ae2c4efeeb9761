//! `testfarm sim-board …`: the simulated board of `testfarm_board::sim`. Its words are
//! parsed there (shared with that crate's test binary), so this only hands them over.

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
#[command(disable_help_flag = true)]
pub struct Args {
    /// `--console tcp:HOST:PORT|pty --state-dir DIR [--hang-after N] [--no-boot]`, or
    /// `power on|off|status --state-dir DIR`; `--help` for more.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let code = rt.block_on(testfarm_board::sim::cli::main(&args.args));
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}
