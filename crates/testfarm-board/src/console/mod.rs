//! A board's console: open it, get timestamped lines, type into it. One [`Console`] type
//! for every driver (serial device, TCP, a process), so the boot watcher, log capture and
//! the interactive console do not care how the board is wired.
//!
//! A reader task turns bytes into lines ([`lines`]) and hands them over a bounded channel;
//! a quiet moment flushes a partial line so prompts without a newline are seen. Dropping the
//! console detaches: its tasks end and a console process is killed.

mod command;
pub mod lines;
mod serial;
mod tcp;

use std::time::{Duration, Instant, SystemTime};

use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub use command::CommandConsoleDriver;
pub use serial::SerialConsoleDriver;
pub use tcp::TcpConsoleDriver;

use crate::config::{BoardConfig, ConsoleConfig};
use crate::error::{BoardError, Result};
use crate::rules::garbage::is_garbage;
use lines::{LineSplitter, RawLine};

/// How long the console may be quiet before a partial line is handed over.
const PARTIAL_FLUSH: Duration = Duration::from_millis(150);
/// Batches (one per read) buffered between the reader and the consumer; a slow consumer
/// slows the reader, never drops a line. Lines travel in batches so a fast console costs
/// one channel hand-over per read, not per line.
const CHANNEL: usize = 256;

#[derive(Debug, Clone, PartialEq)]
pub struct ConsoleLine {
    /// Wall clock, for logs.
    pub at: SystemTime,
    /// Since the console was opened, for rules (monotonic).
    pub since_open: Duration,
    /// Decoded lossily: invalid bytes become U+FFFD.
    pub text: String,
    pub garbage: bool,
    pub truncated: bool,
    pub partial: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ConsoleEvent {
    Line(ConsoleLine),
    /// The console ended (connection closed, process exited, device gone).
    Closed {
        reason: String,
    },
}

/// An open console.
#[derive(Debug)]
pub struct Console {
    lines: mpsc::Receiver<Vec<ConsoleEvent>>,
    ready: std::collections::VecDeque<ConsoleEvent>,
    input: mpsc::Sender<Vec<u8>>,
    opened: Instant,
    closed: Option<String>,
    tasks: Vec<JoinHandle<()>>,
    _guard: Option<Box<dyn std::any::Any + Send + Sync>>,
}

impl Drop for Console {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Console {
    /// Wraps any byte stream pair; `guard` lives as long as the console (a child process).
    pub fn from_io<R, W>(
        reader: R,
        writer: W,
        max_line: usize,
        guard: Option<Box<dyn std::any::Any + Send + Sync>>,
    ) -> Console
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        Console::from_io_flushing(reader, writer, max_line, guard, PARTIAL_FLUSH)
    }

    /// [`Console::from_io`] with its own wait before a partial line is delivered. A
    /// stream fed by another line reader (the agent's console hub hands each subscriber
    /// lines another reader already split and flushed) wants a short one: waiting the
    /// full [`PARTIAL_FLUSH`] again would deliver a prompt 300 ms after the board
    /// printed it.
    pub fn from_io_flushing<R, W>(
        reader: R,
        writer: W,
        max_line: usize,
        guard: Option<Box<dyn std::any::Any + Send + Sync>>,
        partial_flush: Duration,
    ) -> Console
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let opened = Instant::now();
        let (line_tx, line_rx) = mpsc::channel(CHANNEL);
        let (in_tx, in_rx) = mpsc::channel(64);
        let reader = tokio::spawn(read_lines(reader, line_tx, max_line, opened, partial_flush));
        let writer = tokio::spawn(write_input(writer, in_rx));
        Console {
            lines: line_rx,
            ready: std::collections::VecDeque::new(),
            input: in_tx,
            opened,
            closed: None,
            tasks: vec![reader, writer],
            _guard: guard,
        }
    }

    /// The next line, or `Closed` (again and again once closed).
    pub async fn next(&mut self) -> ConsoleEvent {
        if let Some(reason) = &self.closed {
            return ConsoleEvent::Closed {
                reason: reason.clone(),
            };
        }
        while self.ready.is_empty() {
            match self.lines.recv().await {
                Some(batch) => self.ready.extend(batch),
                None => self.ready.push_back(ConsoleEvent::Closed {
                    reason: "console reader ended".into(),
                }),
            }
        }
        let ev = self.ready.pop_front().unwrap_or(ConsoleEvent::Closed {
            reason: "console reader ended".into(),
        });
        if let ConsoleEvent::Closed { reason } = &ev {
            self.closed = Some(reason.clone());
        }
        ev
    }

    /// Types into the console (interactive input, a login name, a command).
    pub async fn write(&self, bytes: &[u8]) -> Result<()> {
        self.input
            .send(bytes.to_vec())
            .await
            .map_err(|_| BoardError::Console {
                what: "write".into(),
                detail: "the console is closed".into(),
            })
    }

    /// Time since the console was opened (the clock lines' `since_open` use).
    pub fn elapsed(&self) -> Duration {
        self.opened.elapsed()
    }
}

/// Lines from one read share its time stamps: they arrived together.
fn to_line(raw: RawLine, (at, since_open): (SystemTime, Duration)) -> ConsoleLine {
    ConsoleLine {
        at,
        since_open,
        garbage: is_garbage(&raw.bytes),
        text: String::from_utf8_lossy(&raw.bytes).into_owned(),
        truncated: raw.truncated,
        partial: raw.partial,
    }
}

async fn read_lines<R: AsyncRead + Unpin>(
    mut reader: R,
    tx: mpsc::Sender<Vec<ConsoleEvent>>,
    max_line: usize,
    opened: Instant,
    partial_flush: Duration,
) {
    let mut splitter = LineSplitter::new(max_line);
    let mut buf = vec![0u8; 64 * 1024];
    let mut out = Vec::new();
    let reason = loop {
        let read = tokio::time::timeout(partial_flush, reader.read(&mut buf)).await;
        match read {
            Err(_) => out.extend(splitter.flush()),
            Ok(Ok(0)) => break "end of console stream".to_string(),
            Ok(Ok(n)) => splitter.push(&buf[..n], &mut out),
            // A pty whose other side closed reads EIO: that is an end, not a failure.
            Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => {
                break "console device closed".to_string();
            }
            Ok(Err(e)) => break format!("read error: {e}"),
        }
        if !out.is_empty() {
            let stamp = (SystemTime::now(), opened.elapsed());
            let batch = out
                .drain(..)
                .map(|raw| ConsoleEvent::Line(to_line(raw, stamp)));
            if tx.send(batch.collect()).await.is_err() {
                return;
            }
        }
    };
    let stamp = (SystemTime::now(), opened.elapsed());
    let mut last: Vec<ConsoleEvent> = splitter
        .flush()
        .map(|raw| ConsoleEvent::Line(to_line(raw, stamp)))
        .into_iter()
        .collect();
    last.push(ConsoleEvent::Closed { reason });
    let _ = tx.send(last).await;
}

async fn write_input<W: AsyncWrite + Unpin>(mut writer: W, mut rx: mpsc::Receiver<Vec<u8>>) {
    while let Some(bytes) = rx.recv().await {
        if writer.write_all(&bytes).await.is_err() || writer.flush().await.is_err() {
            return;
        }
    }
}

pub trait ConsoleDriver: Send + Sync {
    fn open(&self) -> BoxFuture<'_, Result<Console>>;
}

/// The driver a board's `console` table asks for.
pub fn console_driver(board: &BoardConfig) -> Box<dyn ConsoleDriver> {
    let max_line = board.console.max_line();
    match &board.console {
        ConsoleConfig::Serial {
            device,
            baud,
            parity,
            data_bits,
            stop_bits,
            ..
        } => Box::new(SerialConsoleDriver {
            device: device.clone(),
            baud: *baud,
            parity: *parity,
            data_bits: *data_bits,
            stop_bits: *stop_bits,
            max_line,
        }),
        ConsoleConfig::Tcp {
            address,
            connect_timeout,
            ..
        } => Box::new(TcpConsoleDriver {
            address: address.clone(),
            connect_timeout: *connect_timeout,
            max_line,
        }),
        ConsoleConfig::Command { command, .. } => Box::new(CommandConsoleDriver {
            command: command.clone(),
            ctx: crate::template::Context::for_board(&board.name, &board.board_type, &board.arch),
            max_line,
        }),
    }
}
