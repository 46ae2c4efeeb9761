//! The simulated board's command line, shared by `testfarm sim-board` and the crate's own
//! `testfarm-board-sim` test binary so both accept exactly the same words:
//!
//! ```text
//! sim-board --console tcp:127.0.0.1:PORT|pty --state-dir DIR [--hang-after N] [--no-boot]
//!           [--line-delay MS]
//! sim-board power on|off|status --state-dir DIR
//! sim-board hang --state-dir DIR
//! ```

use std::path::PathBuf;
use std::time::Duration;

use super::{Behaviour, ConsoleSpec, SimOptions, power};

pub const USAGE: &str = "\
usage: sim-board --console tcp:HOST:PORT|pty --state-dir DIR [--hang-after N] [--no-boot] [--line-delay MS]
       sim-board power on|off|status --state-dir DIR
       sim-board hang --state-dir DIR     (the running board stops answering until its next power cycle)

A simulated board: a boot banner, `login:` and a tiny shell (echo, uname, sleep, run-tap [N] [fail K],
hang, reboot, exit) on a TCP or pty console, switched by `sim-board power`. The console's address is
printed and written to DIR/console.";

#[derive(Debug, Clone, PartialEq)]
pub enum SimCommand {
    Run(SimOptionsArgs),
    Power {
        action: String,
        state_dir: PathBuf,
    },
    /// Tells a running board to hang now (until its next power cycle).
    Hang {
        state_dir: PathBuf,
    },
}

/// [`SimOptions`] as parsed (kept separate so it is `PartialEq` for tests).
#[derive(Debug, Clone, PartialEq)]
pub struct SimOptionsArgs {
    pub console: ConsoleSpec,
    pub state_dir: PathBuf,
    pub hang_after: Option<u32>,
    pub no_boot: bool,
    pub line_delay: Duration,
}

pub fn parse(args: &[String]) -> Result<SimCommand, String> {
    let mut it = args.iter().peekable();
    let mut power_action = None;
    let mut hang = false;
    if it.peek().map(|s| s.as_str()) == Some("hang") {
        it.next();
        hang = true;
    } else if it.peek().map(|s| s.as_str()) == Some("power") {
        it.next();
        let a = it.next().ok_or("power: expected on, off or status")?;
        if !["on", "off", "status"].contains(&a.as_str()) {
            return Err(format!("power: `{a}`: expected on, off or status"));
        }
        power_action = Some(a.clone());
    }
    let (mut console, mut state_dir, mut hang_after, mut no_boot) = (None, None, None, false);
    let mut line_delay = Duration::from_millis(10);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match arg.as_str() {
            "--console" => console = Some(value("--console")?.parse::<ConsoleSpec>()?),
            "--state-dir" => state_dir = Some(PathBuf::from(value("--state-dir")?)),
            "--hang-after" => {
                let v = value("--hang-after")?;
                hang_after = Some(
                    v.parse()
                        .map_err(|_| format!("--hang-after `{v}`: not a number"))?,
                );
            }
            "--line-delay" => {
                let v = value("--line-delay")?;
                let ms: u64 = v
                    .parse()
                    .map_err(|_| format!("--line-delay `{v}`: milliseconds"))?;
                line_delay = Duration::from_millis(ms);
            }
            "--no-boot" => no_boot = true,
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unexpected argument `{other}`\n{USAGE}")),
        }
    }
    let state_dir = state_dir.ok_or_else(|| format!("--state-dir is required\n{USAGE}"))?;
    if let Some(action) = power_action {
        return Ok(SimCommand::Power { action, state_dir });
    }
    if hang {
        return Ok(SimCommand::Hang { state_dir });
    }
    Ok(SimCommand::Run(SimOptionsArgs {
        console: console.ok_or_else(|| format!("--console is required\n{USAGE}"))?,
        state_dir,
        hang_after,
        no_boot,
        line_delay,
    }))
}

/// Runs a parsed command; returns the process exit code.
pub async fn main(args: &[String]) -> i32 {
    let cmd = match parse(args) {
        Ok(c) => c,
        Err(e) if e == USAGE => {
            println!("{USAGE}");
            return 0;
        }
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
    match cmd {
        SimCommand::Power { action, state_dir } => {
            let result = match action.as_str() {
                "status" => Ok(power::read(&state_dir)),
                a => power::switch(&state_dir, a == "on"),
            };
            match result {
                Ok(p) => {
                    if action == "status" {
                        println!("{}", if p.on { "on" } else { "off" });
                    }
                    0
                }
                Err(e) => {
                    eprintln!("sim-board power {action}: {e}");
                    1
                }
            }
        }
        SimCommand::Hang { state_dir } => match power::request_hang(&state_dir) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("sim-board hang: {e}");
                1
            }
        },
        SimCommand::Run(a) => {
            let opts = SimOptions {
                console: a.console,
                state_dir: a.state_dir,
                behaviour: Behaviour {
                    hang_after: a.hang_after,
                    no_boot: a.no_boot,
                    line_delay: a.line_delay,
                },
            };
            let ready = |loc: &str| println!("console: {loc}");
            match super::run(opts, ready).await {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("sim-board: {e}");
                    1
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn parses_both_forms() {
        let c = parse(&args(
            "--console tcp:127.0.0.1:0 --state-dir /s --hang-after 2 --no-boot",
        ))
        .unwrap();
        let SimCommand::Run(a) = c else { panic!() };
        assert_eq!(a.console, ConsoleSpec::Tcp("127.0.0.1:0".into()));
        assert_eq!((a.hang_after, a.no_boot), (Some(2), true));
        assert_eq!(
            parse(&args("power on --state-dir /s")).unwrap(),
            SimCommand::Power {
                action: "on".into(),
                state_dir: "/s".into()
            }
        );
        assert!(parse(&args("power up --state-dir /s")).is_err());
        assert_eq!(
            parse(&args("hang --state-dir /s")).unwrap(),
            SimCommand::Hang {
                state_dir: "/s".into()
            }
        );
        assert!(parse(&args("--console serial --state-dir /s")).is_err());
        assert!(
            parse(&args("--console pty"))
                .unwrap_err()
                .contains("--state-dir")
        );
    }
}
