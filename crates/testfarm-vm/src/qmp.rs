//! A small QMP client (QEMU Machine Protocol): JSON lines over the VM's QMP unix socket.
//! Hand-written on purpose: the few commands we need (`query-status`, `stop`, `cont`,
//! `quit`, `human-monitor-command`) do not justify a generated binding that breaks on new
//! QEMU enums. Asynchronous events are skipped while waiting for a reply.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use crate::error::{Result, VmError};

/// Longest QMP line we accept: replies are small; anything bigger is not QEMU.
const MAX_LINE: usize = 1024 * 1024;

#[derive(Debug)]
pub struct Qmp {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    timeout: Duration,
}

impl Qmp {
    /// Connects, reads the greeting and enters command mode.
    pub async fn connect(path: &Path, timeout: Duration) -> Result<Qmp> {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|e| VmError::io(format!("connecting to QMP at {}", path.display()), e))?;
        let (r, w) = stream.into_split();
        let mut qmp = Qmp {
            reader: BufReader::new(r),
            writer: w,
            timeout,
        };
        let greeting = qmp.read_message().await?;
        if greeting.get("QMP").is_none() {
            return Err(VmError::Qmp(format!("unexpected greeting {greeting}")));
        }
        qmp.execute("qmp_capabilities", None).await?;
        Ok(qmp)
    }

    async fn read_message(&mut self) -> Result<Value> {
        let mut line = String::new();
        let n = tokio::time::timeout(
            self.timeout,
            (&mut self.reader)
                .take(MAX_LINE as u64)
                .read_line(&mut line),
        )
        .await
        .map_err(|_| VmError::Timeout {
            what: "a QMP reply".into(),
            after: self.timeout,
        })?
        .map_err(|e| VmError::io("reading QMP", e))?;
        if n == 0 {
            return Err(VmError::Qmp("connection closed".into()));
        }
        if !line.ends_with('\n') {
            return Err(VmError::Qmp(format!("reply longer than {MAX_LINE} bytes")));
        }
        serde_json::from_str(&line)
            .map_err(|e| VmError::Qmp(format!("bad JSON from QEMU ({e}): {}", line.trim())))
    }

    /// Runs one command and returns its `return` value; a QMP `error` is an error.
    pub async fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value> {
        let mut req = json!({ "execute": command });
        if let Some(args) = arguments {
            req["arguments"] = args;
        }
        let mut bytes = serde_json::to_vec(&req)
            .map_err(|e| VmError::Qmp(format!("encoding {command}: {e}")))?;
        bytes.push(b'\n');
        self.writer
            .write_all(&bytes)
            .await
            .map_err(|e| VmError::io(format!("sending QMP {command}"), e))?;
        loop {
            let msg = self.read_message().await?;
            if msg.get("event").is_some() {
                continue;
            }
            if let Some(ret) = msg.get("return") {
                return Ok(ret.clone());
            }
            if let Some(err) = msg.get("error") {
                return Err(VmError::Qmp(format!("{command}: {err}")));
            }
            return Err(VmError::Qmp(format!("unexpected message {msg}")));
        }
    }

    /// `running`, `paused`, …
    pub async fn status(&mut self) -> Result<String> {
        let r = self.execute("query-status", None).await?;
        Ok(r.get("status")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_string())
    }

    pub async fn stop(&mut self) -> Result<()> {
        self.execute("stop", None).await.map(|_| ())
    }

    pub async fn cont(&mut self) -> Result<()> {
        self.execute("cont", None).await.map(|_| ())
    }

    /// Asks QEMU to exit; the connection closing is the expected answer.
    pub async fn quit(&mut self) -> Result<()> {
        match self.execute("quit", None).await {
            Ok(_) | Err(VmError::Qmp(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// HMP passthrough (`savevm`, `loadvm` have no QMP command in QEMU 7.2).
    pub async fn human(&mut self, command_line: &str) -> Result<String> {
        let r = self
            .execute(
                "human-monitor-command",
                Some(json!({ "command-line": command_line })),
            )
            .await?;
        Ok(r.as_str().unwrap_or_default().to_string())
    }
}
