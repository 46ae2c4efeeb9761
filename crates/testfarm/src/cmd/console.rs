//! `testfarm console NAME`: a board's serial console in this terminal, over the server's
//! WebSocket (`GET /api/v1/boards/{name}/console`), for the holder of the board's lease or
//! an operator. The server relays to the board's agent, which owns the console: a job's
//! console capture goes on while someone watches.
//!
//! The terminal is put in raw mode so every key (Ctrl-C included) goes to the board;
//! Ctrl-] leaves, as in telnet. Without a terminal (a script piping commands in), input is
//! sent as it comes and the session ends `--linger` after the input ends.
//!
//! The server ends a session after `boards.console_session_limit` (30 min by default;
//! `--limit` asks for less) and when the board's lease ends; its notice says which.

use std::io::Write;
use std::os::fd::AsFd;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, anyhow};
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::client::{Connection, enc};

/// Ctrl-]: leaves the console.
const ESCAPE: u8 = 0x1d;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The board.
    name: String,
    /// Without a terminal: how long to keep showing output after the input ended.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    linger: Duration,
    /// End the session after this long (at most the server's
    /// `boards.console_session_limit`, 30m by default).
    #[arg(long, value_parser = parse_duration)]
    limit: Option<Duration>,
    #[command(flatten)]
    conn: Connection,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    testfarm_core::duration::parse(s).map_err(|e| e.to_string())
}

/// Restores the terminal's mode when the session ends, however it ends.
struct RawMode {
    saved: nix::sys::termios::Termios,
}

impl RawMode {
    fn enter() -> Option<RawMode> {
        use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
        let stdin = std::io::stdin();
        let saved = tcgetattr(stdin.as_fd()).ok()?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        use nix::sys::termios::{SetArg, tcsetattr};
        let _ = tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, &self.saved);
    }
}

/// `http://host:port` → `ws://host:port/api/v1/boards/NAME/console`.
fn ws_url(base: &str, board: &str) -> anyhow::Result<String> {
    let base = base.trim_end_matches('/');
    let rest = if let Some(r) = base.strip_prefix("http://") {
        format!("ws://{r}")
    } else if let Some(r) = base.strip_prefix("https://") {
        format!("wss://{r}")
    } else {
        return Err(anyhow!(
            "the server URL must start with http:// or https:// (got {base})"
        ));
    };
    Ok(format!("{rest}/api/v1/boards/{}/console", enc(board)))
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let token = args.conn.token()?;
    let mut url = ws_url(&args.conn.url, &args.name)?;
    if let Some(l) = args.limit {
        url.push_str(&format!("?limit_ms={}", l.as_millis()));
    }
    let mut request = url
        .as_str()
        .into_client_request()
        .context("building the console request")?;
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {token}")
            .parse()
            .context("the token is not a valid header value")?,
    );
    let (ws, _) = match tokio::time::timeout(
        Duration::from_secs(30),
        tokio_tungstenite::connect_async(request),
    )
    .await
    {
        Err(_) => return Err(anyhow!("the server did not open the console within 30s")),
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(resp))) => {
            let status = resp.status();
            let body = resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            let detail = serde_json::from_str::<testfarm_api::Problem>(&body)
                .map(|p| p.detail)
                .unwrap_or(body);
            return Err(anyhow!(
                "console of {} refused: {detail} [HTTP {status}]",
                args.name
            ));
        }
        Ok(Err(e)) => return Err(anyhow!("cannot open the console of {}: {e}", args.name)),
        Ok(Ok(ws)) => ws,
    };
    let tty = nix::unistd::isatty(std::io::stdin().as_fd()).unwrap_or(false);
    let raw = if tty { RawMode::enter() } else { None };
    if tty {
        eprint!("[testfarm] console of {} (Ctrl-] to leave)\r\n", args.name);
    }
    let (mut tx, mut rx) = ws.split();
    let mut stdin = stdin_reader();
    let mut input_open = true;
    let mut linger: Option<tokio::time::Instant> = None;
    let mut stdout = std::io::stdout();
    // The server's last `detached: …` notice: why the session ended, when it did.
    let mut detached: Option<String> = None;
    let why = loop {
        let until =
            linger.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            msg = rx.next() => match msg {
                None => break detached.take().unwrap_or_else(|| "the server closed the session".to_string()),
                Some(Err(e)) => break format!("the session failed: {e}"),
                Some(Ok(Message::Binary(b))) => {
                    stdout.write_all(&b)?;
                    stdout.flush()?;
                }
                Some(Ok(Message::Text(t))) => {
                    eprint!("[testfarm] {}\r\n", t.as_str());
                    if let Some(why) = t.as_str().strip_prefix("detached: ") {
                        detached = Some(why.to_string());
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    break frame
                        .map(|f| f.reason.to_string())
                        .filter(|r| !r.is_empty())
                        .or(detached.take())
                        .unwrap_or_else(|| "the session ended".into());
                }
                Some(Ok(_)) => {}
            },
            n = stdin.recv(), if input_open => match n {
                None => {
                    input_open = false;
                    linger = Some(tokio::time::Instant::now() + args.linger);
                }
                Some(bytes) => {
                    let bytes = &bytes[..];
                    let (send, leave) = match bytes.iter().position(|b| *b == ESCAPE) {
                        Some(i) if tty => (&bytes[..i], true),
                        _ => (bytes, false),
                    };
                    if !send.is_empty() {
                        tx.send(Message::Binary(send.to_vec().into())).await
                            .map_err(|e| anyhow!("sending to the console failed: {e}"))?;
                    }
                    if leave {
                        break "left".to_string();
                    }
                }
            },
            _ = tokio::time::sleep_until(until), if linger.is_some() => {
                break "input ended".to_string();
            }
        }
    };
    let _ = tx.send(Message::Close(None)).await;
    drop(raw);
    eprintln!("\r\n[testfarm] console of {} closed: {why}", args.name);
    Ok(ExitCode::SUCCESS)
}

/// Standard input, read on a thread of its own: a session the server ends must end the
/// command at once, and tokio's stdin would hold the runtime's shutdown until the next
/// keystroke (a blocked plain thread does not keep the process alive).
fn stdin_reader() -> tokio::sync::mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    std::thread::spawn(move || {
        use std::io::Read;
        let mut stdin = std::io::stdin();
        let mut buf = vec![0u8; 4096];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                        return;
                    }
                }
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_websocket_url_follows_the_server_url() {
        assert_eq!(
            ws_url("http://127.0.0.1:8080/", "sim-1").unwrap(),
            "ws://127.0.0.1:8080/api/v1/boards/sim-1/console"
        );
        assert_eq!(
            ws_url("https://lab.example", "a b").unwrap(),
            "wss://lab.example/api/v1/boards/a%20b/console"
        );
        assert!(ws_url("lab:8080", "x").is_err());
    }
}
