//! Serving version 1: one command at a time, output streamed straight to the port.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;
use std::process::{Command as Process, Stdio};

use super::{Options, SessionEnd};
use crate::protocol::v1::{self, Command, LineBuffer, V1Error};

pub(crate) enum V1End {
    Ended(SessionEnd),
    /// The host asked for v2; carries the bytes already read past the upgrade line.
    Upgrade(Vec<u8>),
}

pub(crate) fn serve(port: &File, opts: &Options) -> io::Result<V1End> {
    let mut out = port;
    writeln!(out, "{}", v1::HELLO)?;
    let mut lines = LineBuffer::new(v1::MAX_COMMAND_LINE);
    let mut buf = [0u8; 4096];
    let mut reader = port;
    loop {
        loop {
            let line = match lines.next_line() {
                Ok(Some(l)) => l,
                Ok(None) => break,
                Err(e) => {
                    lines.take_rest();
                    writeln!(out, "{}{e}", v1::ERR_PREFIX)?;
                    break;
                }
            };
            let Ok(line) = String::from_utf8(line) else {
                writeln!(out, "{}{}", v1::ERR_PREFIX, V1Error::NotUtf8)?;
                continue;
            };
            match Command::parse(&line) {
                Ok(Command::Ping) => writeln!(out, "{}", v1::PONG)?,
                Ok(Command::Exec(cmd)) => {
                    writeln!(out, "{}", v1::BEGIN_OUTPUT)?;
                    let exit = run_to_port(port, "/bin/sh", &["-c", &cmd], None)?;
                    writeln!(out, "{}", v1::end_output_line(exit))?;
                }
                Ok(Command::Test(path)) => {
                    let name = v1::test_name(&path).to_string();
                    let script = opts.share_dir.join(&path);
                    writeln!(out, "{}", v1::tap_start_line(&name))?;
                    let script = script.to_string_lossy().into_owned();
                    let exit = run_to_port(port, "/bin/sh", &[&script], Some(&opts.share_dir))?;
                    writeln!(out, "{}", v1::tap_end_line(&name, exit))?;
                }
                Ok(Command::Shell) => {
                    let mut child = Process::new("/bin/sh")
                        .arg("-i")
                        .stdin(Stdio::from(port.try_clone()?))
                        .stdout(Stdio::from(port.try_clone()?))
                        .stderr(Stdio::from(port.try_clone()?))
                        .spawn()?;
                    child.wait()?;
                }
                Ok(Command::Exit) => {
                    writeln!(out, "{}", v1::BYE)?;
                    return Ok(V1End::Ended(SessionEnd::Goodbye));
                }
                Ok(Command::Upgrade(v)) if v == "v2" => {
                    writeln!(out, "{}", v1::UPGRADE_ACCEPTED)?;
                    return Ok(V1End::Upgrade(lines.take_rest()));
                }
                Ok(Command::Upgrade(v)) => {
                    writeln!(out, "{}unsupported protocol version {v:?}", v1::ERR_PREFIX)?
                }
                Err(e) => writeln!(out, "{}{e}", v1::ERR_PREFIX)?,
            }
        }
        let n = reader.read(&mut buf)?;
        if n == 0 {
            return Ok(V1End::Ended(SessionEnd::HostGone));
        }
        lines.push(&buf[..n]);
    }
}

/// Runs a program with stdout and stderr on the port (v1 does not separate them) in its own
/// process group, which is killed when the program exits so nothing it started outlives it.
fn run_to_port(port: &File, program: &str, args: &[&str], cwd: Option<&Path>) -> io::Result<i32> {
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    let mut cmd = Process::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(port.try_clone()?))
        .stderr(Stdio::from(port.try_clone()?))
        .process_group(0);
    if let Some(dir) = cwd.filter(|d| d.is_dir()) {
        cmd.current_dir(dir);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let mut out = port;
            writeln!(out, "testfarm-guest: cannot run {program}: {e}")?;
            return Ok(127);
        }
    };
    let pid = child.id();
    let status = child.wait()?;
    super::exec::kill_group(pid);
    Ok(v1::exit_code_of(status.code(), status.signal()))
}
