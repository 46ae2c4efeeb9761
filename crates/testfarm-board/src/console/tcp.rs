//! ser2net-style consoles: the board's serial line as a raw TCP stream.

use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::net::TcpStream;

use super::{Console, ConsoleDriver};
use crate::error::{BoardError, Result};

pub struct TcpConsoleDriver {
    pub address: String,
    pub connect_timeout: Duration,
    pub max_line: usize,
}

impl ConsoleDriver for TcpConsoleDriver {
    fn open(&self) -> BoxFuture<'_, Result<Console>> {
        async move {
            let what = format!("connect to {}", self.address);
            let stream =
                tokio::time::timeout(self.connect_timeout, TcpStream::connect(&self.address))
                    .await
                    .map_err(|_| BoardError::Timeout {
                        what: what.clone(),
                        after: self.connect_timeout,
                    })?
                    .map_err(|e| BoardError::Console {
                        what,
                        detail: e.to_string(),
                    })?;
            let _ = stream.set_nodelay(true);
            let (r, w) = stream.into_split();
            Ok(Console::from_io(r, w, self.max_line, None))
        }
        .boxed()
    }
}
