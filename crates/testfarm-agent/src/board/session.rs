//! An interactive console session: the agent dials the server's side of the session
//! (`GET /api/v1/agents/console/{session}`, a WebSocket with the agent's bearer token) and
//! relays the board's console through the hub both ways — console bytes out as binary
//! frames, binary (or text) frames in as typed input — until either side closes. The
//! server's text frames are notices, not keystrokes... unless they are all there is, so
//! text frames are typed too (a terminal client may send text).

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::BoardHandle;
use crate::client::Client;

/// Longest wait for the WebSocket handshake.
const DIAL_TIMEOUT: Duration = Duration::from_secs(15);

/// Relays until either side ends; Ok says how it ended.
pub async fn relay(board: &BoardHandle, client: &Client, session: &str) -> Result<String, String> {
    let (url, token) = client.console_session(session);
    let mut req = url
        .as_str()
        .into_client_request()
        .map_err(|e| format!("console session {session}: {e}"))?;
    let auth = format!("Bearer {token}")
        .parse()
        .map_err(|_| "the agent's token is not a valid header value".to_string())?;
    req.headers_mut().insert("authorization", auth);
    let (ws, _) = tokio::time::timeout(DIAL_TIMEOUT, tokio_tungstenite::connect_async(req))
        .await
        .map_err(|_| format!("console session {session}: no handshake within {DIAL_TIMEOUT:?}"))?
        .map_err(|e| format!("console session {session}: {e}"))?;
    let mut tapped = board.hub.tap().await?;
    let (mut tx, mut rx) = ws.split();
    let why = loop {
        tokio::select! {
            out = tapped.output.recv() => match out {
                Some(bytes) => {
                    if tx.send(Message::Binary(bytes)).await.is_err() {
                        break "the session closed".to_string();
                    }
                }
                None => {
                    let why = board
                        .hub
                        .detached_because()
                        .unwrap_or_else(|| "the board's console closed".to_string());
                    // A notice for the person before the close (the server forwards it).
                    let _ = tx.send(Message::Text(format!("detached: {why}").into())).await;
                    break why;
                }
            },
            msg = rx.next() => match msg {
                Some(Ok(Message::Binary(b))) => {
                    if tapped.input.send(b.to_vec()).await.is_err() {
                        break "the board's console closed".to_string();
                    }
                }
                Some(Ok(Message::Text(t))) => {
                    if tapped.input.send(t.as_bytes().to_vec()).await.is_err() {
                        break "the board's console closed".to_string();
                    }
                }
                Some(Ok(Message::Close(_))) | None => break "the session closed".to_string(),
                Some(Ok(_)) => {}
                Some(Err(e)) => break format!("the session broke: {e}"),
            },
        }
    };
    let _ = tx.send(Message::Close(None)).await;
    Ok(format!(
        "console session {session} on {} ended: {why}",
        board.name()
    ))
}
