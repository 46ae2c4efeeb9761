//! The crate's one error type: callers (the CLI, the agent) need to tell "the lab failed"
//! (boot, QEMU, protocol) apart from a test's own failure, which is never an error here.

use std::path::PathBuf;
use std::time::Duration;

use testfarm_guest::protocol::{v1::V1Error, v2::FrameError};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum VmError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} failed: {message}")]
    Tool { program: String, message: String },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("{path}: {message}")]
    ConfigFile { path: PathBuf, message: String },
    #[error("guest protocol error (v2): {0}")]
    Frame(#[from] FrameError),
    #[error("guest protocol error (v1): {0}")]
    Line(#[from] V1Error),
    #[error("guest handshake failed: {0}")]
    Handshake(String),
    #[error("guest connection closed: {0}")]
    Closed(String),
    #[error("guest sent no frame for {0:?} (heartbeats stopped): guest is unresponsive")]
    Unresponsive(Duration),
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout { what: String, after: Duration },
    #[error("guest refused the request: {0}")]
    Guest(String),
    #[error("QMP: {0}")]
    Qmp(String),
    #[error("VM {vm} failed to boot: {message}")]
    Boot { vm: String, message: String },
}

impl VmError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> VmError {
        VmError::Io {
            what: what.into(),
            source,
        }
    }
}

pub type Result<T, E = VmError> = std::result::Result<T, E>;
