//! The guest agent binary: finds its virtio-serial port and serves the host forever.
//!
//! Usage: `testfarm-guest [--port PATH] [--port-name NAME] [--share DIR]`

use std::process::ExitCode;

use testfarm_guest::agent::{self, Options};

fn main() -> ExitCode {
    let mut opts = Options::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |flag: &str| args.next().ok_or_else(|| format!("{flag} needs a value"));
        let r = match arg.as_str() {
            "--port" => value("--port").map(|v| opts.port = Some(v.into())),
            "--port-name" => value("--port-name").map(|v| opts.port_name = v),
            "--share" => value("--share").map(|v| opts.share_dir = v.into()),
            "--help" | "-h" => {
                println!("usage: testfarm-guest [--port PATH] [--port-name NAME] [--share DIR]");
                return ExitCode::SUCCESS;
            }
            other => Err(format!("unknown argument {other:?}")),
        };
        if let Err(e) = r {
            eprintln!("testfarm-guest: {e}");
            return ExitCode::from(2);
        }
    }
    match agent::run(&opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("testfarm-guest: {e}");
            ExitCode::FAILURE
        }
    }
}
