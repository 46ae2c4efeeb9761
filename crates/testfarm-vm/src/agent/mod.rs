//! The host side of the guest protocol: connect to a VM's agent socket, read the v1 hello,
//! upgrade to v2 when the guest knows it, and otherwise drive it with the literal v1 table.

pub mod v1;
pub mod v2;

use std::time::Duration;

use tokio::net::UnixStream;

use crate::error::{Result, VmError};
pub use v1::AgentV1;
pub use v2::{AgentV2, ExecOutput};

/// Which protocol the host offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProtocolChoice {
    /// v2 when the guest accepts the upgrade, else v1.
    #[default]
    Auto,
    /// Never upgrade (as a host written to the v1 table).
    V1,
}

#[derive(Debug)]
pub enum Agent {
    V1(AgentV1),
    V2(AgentV2),
}

impl Agent {
    pub fn version(&self) -> u8 {
        match self {
            Agent::V1(_) => 1,
            Agent::V2(_) => 2,
        }
    }
}

/// Greets the agent on `stream` (waiting up to `hello_timeout` for `HELLO AGENT_v1`, which
/// covers the guest's boot) and negotiates the protocol.
pub async fn connect(
    stream: UnixStream,
    hello_timeout: Duration,
    choice: ProtocolChoice,
    heartbeat_timeout: Duration,
) -> Result<Agent> {
    let mut a = AgentV1::new(stream);
    a.read_hello(hello_timeout).await?;
    negotiate(a, choice, heartbeat_timeout).await
}

/// After a hello was read: offer v2 (unless `choice` is v1) and return the agent to use.
pub async fn negotiate(
    a: AgentV1,
    choice: ProtocolChoice,
    heartbeat_timeout: Duration,
) -> Result<Agent> {
    if choice == ProtocolChoice::V1 {
        return Ok(Agent::V1(a));
    }
    match a.try_upgrade(Duration::from_secs(5)).await? {
        v1::Upgrade::V2(stream, rest) => {
            Ok(Agent::V2(AgentV2::start(stream, rest, heartbeat_timeout)))
        }
        v1::Upgrade::Stayed(a) => Ok(Agent::V1(a)),
    }
}

/// Connects to a socket that QEMU may not have created yet.
pub async fn connect_socket(path: &std::path::Path, within: Duration) -> Result<UnixStream> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match UnixStream::connect(path).await {
            Ok(s) => return Ok(s),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(VmError::io(format!("connecting to {}", path.display()), e));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}
