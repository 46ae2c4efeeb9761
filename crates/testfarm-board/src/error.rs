//! Every way a driver can fail, named, so a caller can tell a lab failure (job `error`)
//! from an operator's job (manual power) and report which board and which action failed.

use std::time::Duration;

/// A driver failure. Each carries enough to be shown to an operator as it is.
#[derive(Debug, thiserror::Error)]
pub enum BoardError {
    /// A command did not finish in time; it was killed (its whole process group).
    #[error("{what}: `{command}` did not finish within {after:?} (killed)")]
    CommandTimeout {
        what: String,
        command: String,
        after: Duration,
    },
    /// A command exited non-zero or was killed by a signal.
    #[error("{what}: `{command}` failed ({status}){}", stderr_tail(.stderr))]
    CommandFailed {
        what: String,
        command: String,
        status: String,
        stderr: String,
    },
    /// An operation other than a command ran out of time (HTTP, QMP, connecting).
    #[error("{what}: no answer within {after:?}")]
    Timeout { what: String, after: Duration },
    /// The HTTP PDU answered with an error status or could not be reached.
    #[error("{what}: {detail}")]
    Http { what: String, detail: String },
    /// QEMU's monitor refused or could not be reached.
    #[error("{what}: {detail}")]
    Qmp { what: String, detail: String },
    /// A template could not be rendered with the values given (a missing artifact, …).
    #[error("template `{template}`: {detail}")]
    Template { template: String, detail: String },
    /// The console could not be opened or broke.
    #[error("console {what}: {detail}")]
    Console { what: String, detail: String },
    /// The driver cannot do this at all (a `manual` board cannot flash, …).
    #[error("{0}")]
    Unsupported(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl BoardError {
    pub fn io(what: impl Into<String>, source: std::io::Error) -> BoardError {
        BoardError::Io {
            what: what.into(),
            source,
        }
    }
}

/// The last line or two of stderr, which is where a CLI says what went wrong.
fn stderr_tail(stderr: &str) -> String {
    let tail: Vec<&str> = stderr.trim_end().lines().rev().take(2).collect();
    if tail.is_empty() {
        String::new()
    } else {
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!(": {}", tail.join(" / "))
    }
}

pub type Result<T, E = BoardError> = std::result::Result<T, E>;
