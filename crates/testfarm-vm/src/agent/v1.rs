//! Driving a v1 agent, exactly as the reference table says. In-band markers mean a test that
//! prints `TAP_END` ends early as far as v1 can tell; v1 has no timeout either, so callers
//! bound each call and replace the VM when one expires.

use std::time::Duration;

use testfarm_guest::protocol::v1::{self, Command, LineBuffer, V1Error};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::error::{Result, VmError};

/// Output lines longer than this without a newline are an error (bounded memory).
const MAX_OUTPUT_LINE: usize = 1024 * 1024;

#[derive(Debug)]
pub struct AgentV1 {
    stream: UnixStream,
    lines: LineBuffer,
}

impl AgentV1 {
    pub fn new(stream: UnixStream) -> AgentV1 {
        AgentV1 {
            stream,
            lines: LineBuffer::new(MAX_OUTPUT_LINE),
        }
    }

    /// The next line from the guest (low level: for `SHELL` sessions and tests).
    pub async fn next_line(&mut self) -> Result<String> {
        let mut buf = [0u8; 8192];
        loop {
            if let Some(line) = self.lines.next_line()? {
                let mut s = String::from_utf8_lossy(&line).into_owned();
                if s.ends_with('\r') {
                    s.pop();
                }
                return Ok(s);
            }
            let n = self
                .stream
                .read(&mut buf)
                .await
                .map_err(|e| VmError::io("reading from the guest agent", e))?;
            if n == 0 {
                return Err(VmError::Closed("end of stream from the guest (v1)".into()));
            }
            self.lines.push(&buf[..n]);
        }
    }

    async fn next_line_within(&mut self, within: Duration, what: &str) -> Result<String> {
        tokio::time::timeout(within, self.next_line())
            .await
            .map_err(|_| VmError::Timeout {
                what: what.into(),
                after: within,
            })?
    }

    /// Raw bytes to the guest (low level: input for a `SHELL` session).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream
            .write_all(bytes)
            .await
            .map_err(|e| VmError::io("writing to the guest agent", e))
    }

    async fn send(&mut self, cmd: &Command) -> Result<()> {
        self.stream
            .write_all(cmd.to_line().as_bytes())
            .await
            .map_err(|e| VmError::io("writing to the guest agent", e))
    }

    pub async fn read_hello(&mut self, within: Duration) -> Result<()> {
        let line = self.next_line_within(within, "HELLO AGENT_v1").await?;
        if line != v1::HELLO {
            return Err(VmError::Handshake(format!(
                "expected {:?}, got {line:?}",
                v1::HELLO
            )));
        }
        Ok(())
    }

    /// Offers v2: the raw stream and the bytes already read past the acceptance when the
    /// guest takes it, or this v1 agent back when it answers anything else (v1-only agent).
    pub(crate) async fn try_upgrade(mut self, within: Duration) -> Result<Upgrade> {
        self.send(&Command::Upgrade("v2".into())).await?;
        match self
            .next_line_within(within, "the answer to UPGRADE v2")
            .await
        {
            Ok(l) if l == v1::UPGRADE_ACCEPTED => {
                let rest = self.lines.take_rest();
                Ok(Upgrade::V2(self.stream, rest))
            }
            Ok(_) | Err(VmError::Timeout { .. }) => Ok(Upgrade::Stayed(self)),
            Err(e) => Err(e),
        }
    }

    pub async fn ping(&mut self) -> Result<()> {
        self.send(&Command::Ping).await?;
        let l = self.next_line().await?;
        if l != v1::PONG {
            return Err(V1Error::Unexpected {
                expected: v1::PONG.into(),
                got: l,
            }
            .into());
        }
        Ok(())
    }

    /// `EXEC <cmd>`: the output between the markers (stdout and stderr mixed) and the exit.
    pub async fn exec(&mut self, cmd: &str) -> Result<(String, i32)> {
        if cmd.contains('\n') {
            return Err(VmError::Config(
                "a v1 EXEC command cannot contain a newline".into(),
            ));
        }
        self.send(&Command::Exec(cmd.into())).await?;
        let first = self.next_line().await?;
        if first != v1::BEGIN_OUTPUT {
            return Err(V1Error::Unexpected {
                expected: v1::BEGIN_OUTPUT.into(),
                got: first,
            }
            .into());
        }
        let mut out = String::new();
        loop {
            let l = self.next_line().await?;
            if let Some(code) = v1::parse_end_output(&l) {
                return Ok((out, code));
            }
            out.push_str(&l);
            out.push('\n');
        }
    }

    /// `TEST <path>`: the TAP between the markers and the exit. A line that looks like the
    /// end marker ends it (the v1 ambiguity).
    pub async fn test(&mut self, path: &str) -> Result<(String, i32)> {
        self.send(&Command::Test(path.into())).await?;
        let name = v1::test_name(path).to_string();
        let first = self.next_line().await?;
        if first != v1::tap_start_line(&name) {
            return Err(V1Error::Unexpected {
                expected: v1::tap_start_line(&name),
                got: first,
            }
            .into());
        }
        let mut out = String::new();
        loop {
            let l = self.next_line().await?;
            if let Some((_, code)) = v1::parse_tap_end(&l) {
                return Ok((out, code));
            }
            out.push_str(&l);
            out.push('\n');
        }
    }

    /// `EXIT`, expecting `BYE`.
    pub async fn exit(&mut self) -> Result<()> {
        self.send(&Command::Exit).await?;
        let l = self.next_line_within(Duration::from_secs(5), "BYE").await?;
        if l != v1::BYE {
            return Err(V1Error::Unexpected {
                expected: v1::BYE.into(),
                got: l,
            }
            .into());
        }
        Ok(())
    }
}

pub(crate) enum Upgrade {
    V2(UnixStream, Vec<u8>),
    Stayed(AgentV1),
}
