//! One owner per board console. A serial line has one reader: if a job's capture, a boot
//! watch, a console step and an operator's interactive session each opened the device,
//! they would steal bytes from each other. So the hub opens the console once while
//! anything uses it, hands every line to every subscriber (a [`Console`] of its own, or raw
//! bytes for a WebSocket session), takes input from any of them, and closes the console
//! when the last user lets go ([`Use`]) or when the lease ends ([`Hub::detach`]).
//!
//! A subscriber that cannot take a line within [`SEND_TIMEOUT`] is dropped (a stuck
//! WebSocket must not stall the job's capture); the job's `console.log` capture is kept in
//! the hub itself, bounded, so no subscriber's speed can lose it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use testfarm_board::console::{Console, ConsoleDriver, ConsoleEvent, ConsoleLine};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Longest wait for a console to open (a TCP console server that does not answer, a
/// serial device that blocks).
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a subscriber's line reader waits before passing on a partial line: the hub
/// writes each line whole, so only a prompt (already flushed once) ends without a newline.
const SUBSCRIBER_FLUSH: Duration = Duration::from_millis(10);
/// A subscriber slower than this for one line is dropped.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// Most console text a job's capture keeps (the newest).
pub const CAPTURE_KEEP: usize = 4 * 1024 * 1024;

/// The console of one board, shared.
pub struct Hub {
    board: String,
    driver: Box<dyn ConsoleDriver>,
    max_line: usize,
    /// Serialises opening, so two users at once open the console once.
    opening: tokio::sync::Mutex<()>,
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    live: Option<Live>,
    generation: u64,
    capture: Option<Capture>,
    /// Why the console was last closed by [`Hub::detach_because`] (told to a session).
    detached_because: Option<String>,
}

struct Live {
    generation: u64,
    users: usize,
    input: mpsc::Sender<Vec<u8>>,
    taps: Vec<mpsc::Sender<Bytes>>,
    task: JoinHandle<()>,
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    // Every change under this lock leaves a consistent state: recover from a panic.
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// Keeps the console open while held.
pub struct Use {
    state: Arc<Mutex<State>>,
    generation: u64,
}

impl Drop for Use {
    fn drop(&mut self) {
        let mut s = lock(&self.state);
        let last = match &mut s.live {
            Some(live) if live.generation == self.generation => {
                live.users = live.users.saturating_sub(1);
                live.users == 0
            }
            _ => false,
        };
        if last && let Some(live) = s.live.take() {
            live.task.abort();
        }
    }
}

/// A subscriber's own view of the console, as if it had opened it alone.
pub struct Attached {
    pub console: Console,
    _use: Use,
}

/// Raw bytes both ways (an interactive session).
pub struct Tapped {
    pub output: mpsc::Receiver<Bytes>,
    pub input: mpsc::Sender<Vec<u8>>,
    _use: Use,
}

impl Hub {
    pub fn new(board: &str, driver: Box<dyn ConsoleDriver>, max_line: usize) -> Hub {
        Hub {
            board: board.to_string(),
            driver,
            max_line,
            opening: tokio::sync::Mutex::new(()),
            state: Arc::new(Mutex::new(State::default())),
        }
    }

    /// Whether the console is open now.
    pub fn is_open(&self) -> bool {
        lock(&self.state)
            .live
            .as_ref()
            .is_some_and(|l| !l.task.is_finished())
    }

    /// Opens the console if nothing has, and counts one more user.
    async fn enter(&self) -> Result<Use, String> {
        let _one = self.opening.lock().await;
        {
            let mut s = lock(&self.state);
            if let Some(live) = &mut s.live
                && !live.task.is_finished()
            {
                live.users += 1;
                return Ok(Use {
                    state: self.state.clone(),
                    generation: live.generation,
                });
            }
            s.live = None;
        }
        let console = match tokio::time::timeout(OPEN_TIMEOUT, self.driver.open()).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(format!("console of {}: {e}", self.board)),
            Err(_) => {
                return Err(format!(
                    "console of {}: not open within {OPEN_TIMEOUT:?}",
                    self.board
                ));
            }
        };
        let (in_tx, in_rx) = mpsc::channel(64);
        let mut s = lock(&self.state);
        s.generation += 1;
        s.detached_because = None;
        let generation = s.generation;
        let task = tokio::spawn(pump(console, in_rx, self.state.clone(), generation));
        s.live = Some(Live {
            generation,
            users: 1,
            input: in_tx,
            taps: Vec::new(),
            task,
        });
        Ok(Use {
            state: self.state.clone(),
            generation,
        })
    }

    /// Keeps the console open (a job holding the board) without reading it.
    pub async fn hold(&self) -> Result<Use, String> {
        self.enter().await
    }

    /// Raw output and input, for a session.
    pub async fn tap(&self) -> Result<Tapped, String> {
        let u = self.enter().await?;
        let (tx, rx) = mpsc::channel(256);
        let mut s = lock(&self.state);
        let Some(live) = s.live.as_mut().filter(|l| l.generation == u.generation) else {
            return Err(format!("console of {}: closed while attaching", self.board));
        };
        live.taps.push(tx);
        let input = live.input.clone();
        drop(s);
        Ok(Tapped {
            output: rx,
            input,
            _use: u,
        })
    }

    /// A [`Console`] of the subscriber's own, fed by the hub (boot watch, console steps,
    /// recovery: they all take a `Console`).
    pub async fn attach(&self) -> Result<Attached, String> {
        let Tapped {
            mut output,
            input,
            _use,
        } = self.tap().await?;
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        let (mut our_r, mut our_w) = tokio::io::split(ours);
        let (their_r, their_w) = tokio::io::split(theirs);
        tokio::spawn(async move {
            while let Some(b) = output.recv().await {
                if our_w.write_all(&b).await.is_err() {
                    return;
                }
            }
            let _ = our_w.shutdown().await;
        });
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                match our_r.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if input.send(buf[..n].to_vec()).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Ok(Attached {
            // The hub's own reader already waited for partial lines (prompts): pass them
            // on at once rather than after a second wait.
            console: Console::from_io_flushing(
                their_r,
                their_w,
                self.max_line,
                None,
                SUBSCRIBER_FLUSH,
            ),
            _use,
        })
    }

    /// Closes the console whoever uses it. Safe to call again.
    pub fn detach(&self) {
        self.detach_because("the console was detached");
    }

    /// Closes the console whoever uses it, and keeps `why` for the subscribers that see
    /// it end (an interactive session tells its person: "the lease ended").
    pub fn detach_because(&self, why: &str) {
        let mut s = lock(&self.state);
        if let Some(live) = s.live.take() {
            s.detached_because = Some(why.to_string());
            live.task.abort();
        }
    }

    /// Why the console was last detached, if it was.
    pub fn detached_because(&self) -> Option<String> {
        lock(&self.state).detached_because.clone()
    }

    /// Starts keeping every line with its time (a job took the board).
    pub fn start_capture(&self) {
        lock(&self.state).capture = Some(Capture::default());
    }

    /// The captured text so far, and capture stops.
    pub fn take_capture(&self) -> Option<String> {
        lock(&self.state).capture.take().map(|c| c.text())
    }
}

/// Reads the real console and fans it out until it closes or the hub stops it.
async fn pump(
    mut console: Console,
    mut input: mpsc::Receiver<Vec<u8>>,
    state: Arc<Mutex<State>>,
    generation: u64,
) {
    loop {
        tokio::select! {
            ev = console.next() => {
                let line = match ev {
                    ConsoleEvent::Line(l) => l,
                    ConsoleEvent::Closed { reason } => {
                        let mut s = lock(&state);
                        if let Some(c) = &mut s.capture {
                            c.note(&format!("console closed: {reason}"));
                        }
                        if let Some(live) = &mut s.live && live.generation == generation {
                            // Subscribers see the end; the next user opens it again.
                            live.taps.clear();
                        }
                        return;
                    }
                };
                let taps = {
                    let mut s = lock(&state);
                    if let Some(c) = &mut s.capture {
                        c.push(&line);
                    }
                    match &s.live {
                        Some(live) if live.generation == generation => live.taps.clone(),
                        _ => Vec::new(),
                    }
                };
                let bytes = Bytes::from(if line.partial {
                    line.text.clone()
                } else {
                    format!("{}\n", line.text)
                });
                let mut gone = Vec::new();
                for (i, t) in taps.iter().enumerate() {
                    let sent = tokio::time::timeout(SEND_TIMEOUT, t.send(bytes.clone())).await;
                    if !matches!(sent, Ok(Ok(()))) {
                        gone.push(i);
                    }
                }
                if !gone.is_empty() {
                    let mut s = lock(&state);
                    if let Some(live) = &mut s.live && live.generation == generation {
                        live.taps.retain(|t| !gone.iter().any(|i| taps[*i].same_channel(t)));
                    }
                }
            }
            Some(bytes) = input.recv() => {
                if console.write(&bytes).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// A job's `console.log`: one line per console line with its wall-clock time, the newest
/// [`CAPTURE_KEEP`] bytes kept.
#[derive(Default)]
struct Capture {
    lines: VecDeque<String>,
    bytes: usize,
    dropped: u64,
}

impl Capture {
    fn push(&mut self, line: &ConsoleLine) {
        let at = chrono::DateTime::<chrono::Utc>::from(line.at);
        let mut text = line.text.replace('\r', "");
        if line.truncated {
            text.push_str(" [cut]");
        }
        self.keep(format!(
            "{} {text}\n",
            testfarm_core::timestamp::rfc3339(&at, true)
        ));
    }

    fn note(&mut self, what: &str) {
        let now = chrono::Utc::now();
        self.keep(format!(
            "{} [testfarm] {what}\n",
            testfarm_core::timestamp::rfc3339(&now, true)
        ));
    }

    fn keep(&mut self, s: String) {
        self.bytes += s.len();
        self.lines.push_back(s);
        while self.bytes > CAPTURE_KEEP {
            match self.lines.pop_front() {
                Some(old) => {
                    self.bytes -= old.len();
                    self.dropped += 1;
                }
                None => break,
            }
        }
    }

    fn text(&self) -> String {
        let mut out = String::with_capacity(self.bytes + 64);
        if self.dropped > 0 {
            out.push_str(&format!(
                "[testfarm] {} earlier console lines dropped (the capture keeps the last {CAPTURE_KEEP} bytes)\n",
                self.dropped
            ));
        }
        for l in &self.lines {
            out.push_str(l);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn line(c: &mut Console) -> String {
        match tokio::time::timeout(Duration::from_secs(5), c.next()).await {
            Ok(ConsoleEvent::Line(l)) => l.text,
            other => panic!("no line: {other:?}"),
        }
    }

    #[tokio::test]
    async fn one_console_fanned_out_input_from_any_closed_by_the_last_user() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let toml = format!(
            "[[board]]\nname = \"h1\"\nboard_type = \"t\"\narch = \"arm\"\npower = {{ driver = \"command\", on = \"true\", off = \"true\" }}\nconsole = {{ driver = \"tcp\", address = \"{addr}\" }}\n"
        );
        let cfg = testfarm_board::parse_boards(&toml).unwrap().remove(0);
        let hub = Hub::new("h1", testfarm_board::console::console_driver(&cfg), 4096);
        hub.start_capture();
        let mut a = hub.attach().await.unwrap();
        let mut b = hub.attach().await.unwrap();
        // One connection for both subscribers.
        let (mut board, _) = tokio::time::timeout(Duration::from_secs(5), listener.accept())
            .await
            .unwrap()
            .unwrap();
        board.write_all(b"hello\r\n").await.unwrap();
        assert_eq!(line(&mut a.console).await, "hello");
        assert_eq!(line(&mut b.console).await, "hello");
        b.console.write(b"from b\n").await.unwrap();
        a.console.write(b"from a\n").await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        while !String::from_utf8_lossy(&got).contains("from a") {
            let n = tokio::time::timeout(Duration::from_secs(5), board.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        assert!(String::from_utf8_lossy(&got).contains("from b"));
        assert!(
            tokio::time::timeout(Duration::from_millis(300), listener.accept())
                .await
                .is_err()
        );
        drop(a);
        assert!(hub.is_open(), "b still uses it");
        drop(b);
        assert!(!hub.is_open(), "the last user closed it");
        // The board side sees the connection end.
        let n = tokio::time::timeout(Duration::from_secs(5), board.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0);
        let capture = hub.take_capture().unwrap();
        assert!(
            capture
                .lines()
                .any(|l| l.starts_with("20") && l.ends_with(" hello")),
            "{capture}"
        );
        assert_eq!(hub.take_capture(), None);
    }

    #[test]
    fn the_capture_keeps_the_newest_bytes() {
        let mut c = Capture::default();
        let line = ConsoleLine {
            at: std::time::SystemTime::now(),
            since_open: Duration::ZERO,
            text: "x".repeat(1000),
            garbage: false,
            truncated: false,
            partial: false,
        };
        for _ in 0..(CAPTURE_KEEP / 1000 + 100) {
            c.push(&line);
        }
        let t = c.text();
        assert!(t.len() <= CAPTURE_KEEP + 200, "{}", t.len());
        assert!(t.starts_with("[testfarm]") && t.contains("earlier console lines dropped"));
    }
}
