//! Interactive board consoles over WebSocket. Agents pull, so the server cannot dial the
//! board's agent: a person's `GET /boards/{name}/console` creates a session, queues a
//! `console` action naming it, and waits (at most [`AGENT_CONNECT`]) for the agent to
//! open `GET /agents/console/{session}`; then the server relays binary frames (console
//! bytes) both ways and tells the person what happens in text frames (`attached to
//! NAME`, `detached: why`). Either side closing ends both.
//!
//! A session lasts at most `boards.console_session_limit` (30 min by default; a client may
//! ask for less with `?limit_ms=`): a forgotten terminal must not hold a board's console
//! for ever. It then ends with a notice saying so. A lease's end detaches the board's
//! console on the agent, whose notice (`detached: the lease on … ended`) is forwarded.
//!
//! Sessions live in memory only: a console is a live connection, and a server restart
//! ends it anyway.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{
    Message, WebSocket, WebSocketUpgrade, rejection::WebSocketUpgradeRejection,
};
use axum::response::Response;
use chrono::Utc;
use futures::{SinkExt, StreamExt};
use testfarm_api::board::BoardActionKind;
use testfarm_api::problem::Problem;
use tokio::sync::oneshot;

use crate::auth::{Require, perm};
use crate::boards::{self, Ask};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiPath, ApiQuery};
use crate::state::AppState;

/// How long a person's console waits for the board's agent to connect.
pub const AGENT_CONNECT: Duration = Duration::from_secs(15);

/// Sessions waiting for their agent: session id → (the agent that must connect, where
/// to hand its socket).
#[derive(Default)]
pub struct Sessions {
    waiting: Mutex<HashMap<String, (String, oneshot::Sender<WebSocket>)>>,
}

impl Sessions {
    fn insert(&self, session: &str, agent: String, tx: oneshot::Sender<WebSocket>) {
        self.lock().insert(session.to_string(), (agent, tx));
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, (String, oneshot::Sender<WebSocket>)>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn upgrade(ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>) -> ApiResult<WebSocketUpgrade> {
    ws.map_err(|e| {
        ApiError::bad_request(
            "upgrade",
            format!("this route is a WebSocket: connect with `Connection: Upgrade` and `Upgrade: websocket` ({e})"),
        )
    })
}

/// Attach to a board's console (WebSocket): binary frames carry console bytes both
/// ways, text frames are the server's notices.
#[utoipa::path(get, path = "/api/v1/boards/{name}/console", tag = "boards",
    params(("name" = String, Path, description = "Board name"), testfarm_api::board::ConsoleQuery),
    responses((status = 101, description = "switched to the WebSocket console session"),
              (status = 400, body = Problem, description = "not a WebSocket upgrade request, or a zero limit"),
              (status = 403, body = Problem, description = "neither an operator nor the holder of the board's lease"),
              (status = 404, body = Problem),
              (status = 409, body = Problem, description = "no agent manages this board"),
              (status = 422, body = Problem, description = "the resource is not a board")))]
pub async fn board_console(
    State(state): State<AppState>,
    caller: Require<perm::Submit>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<testfarm_api::board::ConsoleQuery>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let max = state.config.boards.console_session_limit.0;
    let limit = match q.limit_ms {
        Some(0) => {
            return Err(ApiError::bad_request(
                "limit_ms",
                "`limit_ms`: a console session limit must be above 0",
            ));
        }
        Some(ms) => Duration::from_millis(ms).min(max),
        None => max,
    };
    let mut tx = state.store.begin().await?;
    let r = boards::board_named(&mut tx, &name).await?;
    boards::may_drive(&mut tx, &caller, &r).await?;
    let agent = boards::agent_of(&r)?;
    let ws = upgrade(ws)?;
    let session = crate::ids::next().to_string();
    let (hand, take) = oneshot::channel();
    state.consoles.insert(&session, agent, hand);
    let action = boards::enqueue(
        &mut tx,
        &r,
        BoardActionKind::Console,
        &caller.name,
        Ask {
            session: Some(session.clone()),
            ..Ask::default()
        },
        Utc::now(),
    )
    .await?;
    tx.commit().await?;
    state.work_changed();
    Ok(ws.on_upgrade(move |person| async move {
        let agent = tokio::time::timeout(AGENT_CONNECT, take).await;
        state.consoles.lock().remove(&session);
        match agent {
            Ok(Ok(agent)) => relay(person, agent, &name, limit).await,
            _ => {
                if let Err(e) = never_connected(&state, &action.action.id).await {
                    tracing::warn!(error = %e, %session, "could not fail the console action");
                }
                let mut person = person;
                let _ = person
                    .send(Message::Text(
                        format!(
                            "detached: the board's agent did not connect within {} s",
                            AGENT_CONNECT.as_secs()
                        )
                        .into(),
                    ))
                    .await;
                let _ = person.send(Message::Close(None)).await;
            }
        }
    }))
}

/// The agent never connected: its console action fails (if the agent did not answer it
/// meanwhile), so the board's actions show it.
async fn never_connected(state: &AppState, id: &str) -> ApiResult<()> {
    let mut tx = state.store.begin().await?;
    let row = tx.get_board_action(id).await?;
    if row.is_finished() {
        return Ok(());
    }
    let result = testfarm_api::board::BoardActionResult {
        ok: false,
        power: None,
        detail: format!(
            "the agent did not connect to the console session within {} s",
            AGENT_CONNECT.as_secs()
        ),
        operator_action_needed: false,
    };
    boards::finish_action(&mut tx, &row, &result, "server", Utc::now()).await?;
    tx.commit().await?;
    state.board_action_done();
    Ok(())
}

/// The agent's side of a console session it was asked for (`console` action).
#[utoipa::path(get, path = "/api/v1/agents/console/{session}", tag = "agents",
    params(("session" = String, Path, description = "The session of the console action")),
    responses((status = 101, description = "switched to the WebSocket console session"),
              (status = 400, body = Problem, description = "not a WebSocket upgrade request"),
              (status = 403, body = Problem, description = "the session is for another agent's board"),
              (status = 404, body = Problem, description = "no session waits by that id")))]
pub async fn agent_console(
    State(state): State<AppState>,
    caller: Require<perm::ActAsAgent>,
    ApiPath(session): ApiPath<String>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let hand = {
        let mut waiting = state.consoles.lock();
        match waiting.get(&session) {
            None => {
                return Err(ApiError::NotFound(format!(
                    "no console session {session} waits for an agent"
                )));
            }
            Some((agent, _)) if *agent != caller.name => {
                return Err(ApiError::Forbidden(format!(
                    "console session {session} is for agent {agent}, not {}",
                    caller.name
                )));
            }
            Some(_) => {}
        }
        let ws = upgrade(ws)?;
        let Some((_, hand)) = waiting.remove(&session) else {
            return Err(ApiError::NotFound(format!("no console session {session}")));
        };
        (ws, hand)
    };
    let (ws, hand) = hand;
    Ok(ws.on_upgrade(move |socket| async move {
        let _ = hand.send(socket);
    }))
}

/// Relays between the person and the agent until either side closes or `limit` passes.
/// The agent's text frames are notices for the person (why it detached), passed on.
async fn relay(person: WebSocket, agent: WebSocket, board: &str, limit: Duration) {
    let (mut to_person, mut from_person) = person.split();
    let (mut to_agent, mut from_agent) = agent.split();
    let _ = to_person
        .send(Message::Text(
            format!(
                "attached to {board} (this session ends after {})",
                testfarm_core::duration::format(limit)
            )
            .into(),
        ))
        .await;
    let end = tokio::time::Instant::now() + limit;
    let limited = format!(
        "the session reached its limit of {} (boards.console_session_limit)",
        testfarm_core::duration::format(limit)
    );
    // The agent said why it detached (the lease ended): that is the person's notice.
    let mut agent_detached = false;
    let why = loop {
        tokio::select! {
            _ = tokio::time::sleep_until(end) => break limited.as_str(),
            m = from_person.next() => match m {
                Some(Ok(Message::Binary(b))) => {
                    if to_agent.send(Message::Binary(b)).await.is_err() {
                        break "the agent's connection broke";
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break "you closed the console",
                Some(Ok(_)) => {}
            },
            m = from_agent.next() => match m {
                Some(Ok(Message::Binary(b))) => {
                    if to_person.send(Message::Binary(b)).await.is_err() {
                        break "your connection broke";
                    }
                }
                Some(Ok(Message::Text(t))) => {
                    agent_detached |= t.as_str().starts_with("detached: ");
                    let _ = to_person.send(Message::Text(t)).await;
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break "the agent closed the console",
                Some(Ok(_)) => {}
            },
        }
    };
    if !agent_detached {
        let _ = to_person
            .send(Message::Text(format!("detached: {why}").into()))
            .await;
    }
    let _ = to_person.send(Message::Close(None)).await;
    let _ = to_agent.send(Message::Close(None)).await;
}
