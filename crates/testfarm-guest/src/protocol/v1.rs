//! Version 1: the line protocol of the reference design, kept byte for byte so that an agent
//! or a host written to its table interoperates with ours.
//!
//! | command      | response                                                       |
//! |--------------|----------------------------------------------------------------|
//! | (on connect) | `HELLO AGENT_v1`                                               |
//! | `PING`       | `PONG`                                                         |
//! | `EXEC <cmd>` | `--- BEGIN OUTPUT ---` … `--- END OUTPUT (exit=N) ---`         |
//! | `TEST <path>`| `TAP_START <name>` … TAP lines … `TAP_END <name> exit=N`       |
//! | `SHELL`      | interactive shell session                                      |
//! | `EXIT`       | `BYE`, connection closed                                       |
//!
//! Its markers are in band: output that contains `TAP_END` ends the test early as far as the
//! reader can tell. That is version 2's reason to exist; here we only make sure garbage and
//! over-long lines are errors, not hangs.

use thiserror::Error;

pub const HELLO: &str = "HELLO AGENT_v1";
pub const PONG: &str = "PONG";
pub const BYE: &str = "BYE";
pub const BEGIN_OUTPUT: &str = "--- BEGIN OUTPUT ---";
/// Sent by a host that speaks version 2, right after it read [`HELLO`].
pub const UPGRADE_REQUEST: &str = "UPGRADE v2";
/// The guest's answer; framed version 2 starts with the next byte in both directions.
pub const UPGRADE_ACCEPTED: &str = "UPGRADE v2 OK";
/// Prefix of the guest's answer to a line it does not understand (an extension to the table:
/// the reference agent stays silent, which leaves the host waiting).
pub const ERR_PREFIX: &str = "ERR ";

/// Longest command line the guest accepts; longer is a protocol error, not an allocation.
pub const MAX_COMMAND_LINE: usize = 64 * 1024;

/// A v1 command as the host sends it (one line, `\n` terminated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Ping,
    Exec(String),
    Test(String),
    Shell,
    Exit,
    Upgrade(String),
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum V1Error {
    #[error("empty command line")]
    Empty,
    #[error("unknown v1 command {0:?}")]
    Unknown(String),
    #[error("v1 command {0} needs an argument")]
    MissingArgument(&'static str),
    #[error("line is not UTF-8")]
    NotUtf8,
    #[error("line longer than {limit} bytes without a newline")]
    LineTooLong { limit: usize },
    #[error("expected {expected:?}, got {got:?}")]
    Unexpected { expected: String, got: String },
}

impl Command {
    /// Parses one line (without its newline; a trailing `\r` is tolerated).
    pub fn parse(line: &str) -> Result<Command, V1Error> {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            return Err(V1Error::Empty);
        }
        let (word, rest) = match line.split_once(' ') {
            Some((w, r)) => (w, Some(r)),
            None => (line, None),
        };
        let arg = |name: &'static str| match rest {
            Some(r) if !r.trim().is_empty() => Ok(r.to_string()),
            _ => Err(V1Error::MissingArgument(name)),
        };
        match word {
            "PING" => Ok(Command::Ping),
            "EXEC" => Ok(Command::Exec(arg("EXEC")?)),
            "TEST" => Ok(Command::Test(arg("TEST")?.trim().to_string())),
            "SHELL" => Ok(Command::Shell),
            "EXIT" => Ok(Command::Exit),
            "UPGRADE" => Ok(Command::Upgrade(arg("UPGRADE")?.trim().to_string())),
            _ => Err(V1Error::Unknown(truncate_for_message(line))),
        }
    }

    /// The line to send, with its newline.
    pub fn to_line(&self) -> String {
        match self {
            Command::Ping => "PING\n".into(),
            Command::Exec(cmd) => format!("EXEC {cmd}\n"),
            Command::Test(path) => format!("TEST {path}\n"),
            Command::Shell => "SHELL\n".into(),
            Command::Exit => "EXIT\n".into(),
            Command::Upgrade(v) => format!("UPGRADE {v}\n"),
        }
    }
}

/// `--- END OUTPUT (exit=N) ---`
pub fn end_output_line(exit: i32) -> String {
    format!("--- END OUTPUT (exit={exit}) ---")
}

/// The exit code of an `--- END OUTPUT (exit=N) ---` line, `None` for any other line.
pub fn parse_end_output(line: &str) -> Option<i32> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    line.strip_prefix("--- END OUTPUT (exit=")?
        .strip_suffix(") ---")?
        .parse()
        .ok()
}

/// The name a `TEST <path>` run reports in its markers: the script's file name, as the
/// reference design does (`TAP_START sanity_test.sh`).
pub fn test_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

pub fn tap_start_line(name: &str) -> String {
    format!("TAP_START {name}")
}

pub fn tap_end_line(name: &str, exit: i32) -> String {
    format!("TAP_END {name} exit={exit}")
}

/// `(name, exit)` of a `TAP_END <name> exit=N` line, `None` for any other line.
pub fn parse_tap_end(line: &str) -> Option<(&str, i32)> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    let rest = line.strip_prefix("TAP_END ")?;
    let (name, exit) = rest.rsplit_once(" exit=")?;
    Some((name, exit.parse().ok()?))
}

/// Shell convention for a process killed by a signal, so v1 always has a number to print.
pub fn exit_code_of(code: Option<i32>, signal: Option<i32>) -> i32 {
    match (code, signal) {
        (Some(c), _) => c,
        (None, Some(s)) => 128 + s,
        (None, None) => -1,
    }
}

fn truncate_for_message(line: &str) -> String {
    line.chars().take(80).collect()
}

/// Splits a byte stream into lines with a bound on their length, so a peer that never sends a
/// newline costs at most `limit` bytes of memory and then an error.
#[derive(Debug)]
pub struct LineBuffer {
    buf: Vec<u8>,
    limit: usize,
}

impl LineBuffer {
    pub fn new(limit: usize) -> LineBuffer {
        LineBuffer {
            buf: Vec::new(),
            limit,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete line (without `\n`), `Ok(None)` if more bytes are needed.
    pub fn next_line(&mut self) -> Result<Option<Vec<u8>>, V1Error> {
        match self.buf.iter().position(|&b| b == b'\n') {
            Some(i) if i <= self.limit => {
                let mut line: Vec<u8> = self.buf.drain(..=i).collect();
                line.pop();
                Ok(Some(line))
            }
            Some(_) => Err(V1Error::LineTooLong { limit: self.limit }),
            None if self.buf.len() > self.limit => Err(V1Error::LineTooLong { limit: self.limit }),
            None => Ok(None),
        }
    }

    /// Bytes received after the last complete line (what a v2 decoder must start from after
    /// the upgrade line).
    pub fn take_rest(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_as_tabled() {
        assert_eq!(Command::parse("PING"), Ok(Command::Ping));
        assert_eq!(
            Command::parse("EXEC ip addr"),
            Ok(Command::Exec("ip addr".into()))
        );
        assert_eq!(
            Command::parse("TEST t/01-sanity/sanity_test.sh\r"),
            Ok(Command::Test("t/01-sanity/sanity_test.sh".into()))
        );
        assert_eq!(Command::parse("SHELL"), Ok(Command::Shell));
        assert_eq!(Command::parse("EXIT"), Ok(Command::Exit));
        assert_eq!(
            Command::parse("EXEC"),
            Err(V1Error::MissingArgument("EXEC"))
        );
        assert!(matches!(
            Command::parse("FOO bar"),
            Err(V1Error::Unknown(_))
        ));
        assert_eq!(Command::parse(""), Err(V1Error::Empty));
    }

    #[test]
    fn markers_round_trip() {
        assert_eq!(parse_end_output(&end_output_line(3)), Some(3));
        assert_eq!(parse_end_output("--- END OUTPUT (exit=x) ---"), None);
        assert_eq!(
            parse_tap_end(&tap_end_line("a b_test.sh", 1)),
            Some(("a b_test.sh", 1))
        );
        assert_eq!(parse_tap_end("TAP_END x"), None);
        assert_eq!(test_name("t/01-sanity/api_test.sh"), "api_test.sh");
    }

    #[test]
    fn line_buffer_bounds_lines() {
        let mut lb = LineBuffer::new(4);
        lb.push(b"ab\ncd");
        assert_eq!(lb.next_line().unwrap(), Some(b"ab".to_vec()));
        assert_eq!(lb.next_line().unwrap(), None);
        lb.push(b"efg");
        assert_eq!(lb.next_line(), Err(V1Error::LineTooLong { limit: 4 }));
    }

    proptest::proptest! {
        #[test]
        fn command_parser_never_panics(s in ".{0,200}") {
            let _ = Command::parse(&s);
            let _ = parse_end_output(&s);
            let _ = parse_tap_end(&s);
        }

        #[test]
        fn line_buffer_never_panics(chunks in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..64), 0..16)) {
            let mut lb = LineBuffer::new(32);
            for c in chunks {
                lb.push(&c);
                loop {
                    match lb.next_line() {
                        Ok(Some(l)) => proptest::prop_assert!(l.len() <= 32),
                        Ok(None) => break,
                        Err(_) => { lb.take_rest(); break; }
                    }
                }
            }
        }
    }
}
