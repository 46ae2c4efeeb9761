//! The `board_status`, `board_actions` and `board_history` tables: what a board managed by
//! an agent is doing and holds, the requests queued for its agent, and its history.
//!
//! The status is one JSON document per board ([`BoardStatus`]): it is read and written
//! whole, by one board at a time, and nothing queries inside it; a column per field would
//! only make every new report kind a migration.

use chrono::{DateTime, Utc};
use rusqlite::{Row, params};
use serde::{Deserialize, Serialize};
use testfarm_api::board::{
    BoardAction, BoardActionKind, BoardActionResult, BoardActionState, BoardActionView,
    BoardActivity, BoardHistoryEntry, BoardHistoryKind, Deployment, HealthLevel, PowerState,
    QuarantineSettings,
};
use ulid::Ulid;

use crate::sql::{
    exec, get_json, get_json_opt, get_ts, get_ts_opt, query_all, query_opt, to_json, ts,
};
use crate::{Result, Store, StoreError, Tx};

/// What the server knows about a board beside its resource row.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BoardStatus {
    pub activity: BoardActivity,
    pub activity_job: Option<String>,
    pub power: Option<PowerState>,
    pub current: Option<Deployment>,
    /// Whether the current deployment booted (only a booted one can become known-good).
    pub current_booted: bool,
    pub known_good: Option<Deployment>,
    pub health_level: Option<HealthLevel>,
    pub health_findings: Vec<String>,
    pub consecutive_health_failures: u32,
    /// The maintenance reason the server itself set (quarantine, needs manual
    /// intervention, failed cleanup). A passing health check ends only a maintenance whose
    /// reason is still this one, never an operator's own.
    pub quarantine_reason: Option<String>,
    /// The agent reported the board unreachable at its last registration.
    pub offline_reason: Option<String>,
    /// What the agent checked at registration.
    pub verification: Vec<String>,
    /// The board's own quarantine policy (its `[[board]]` table).
    pub quarantine: Option<QuarantineSettings>,
    /// The agent drives the board (it registered it with its quarantine settings, as
    /// every `[[board]]` table with power, console and flash drivers is), so every lease
    /// end on it is cleaned up by a `release` action to that agent. A board an agent only
    /// runs shell work on is not.
    pub driven: bool,
    /// When its jobs ended with a lab error, newest last (trimmed to the policy's window).
    pub lab_errors: Vec<DateTime<Utc>>,
}

/// An action row: the wire action plus where it stands.
#[derive(Debug, Clone)]
pub struct BoardActionRow {
    pub action: BoardAction,
    pub resource_id: Ulid,
    pub agent: String,
    pub state: BoardActionState,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub result: Option<BoardActionResult>,
}

impl BoardActionRow {
    pub fn view(&self) -> BoardActionView {
        BoardActionView {
            id: self.action.id.clone(),
            board: self.action.board.clone(),
            action: self.action.action,
            state: self.state,
            requested_by: self.action.requested_by.clone(),
            created_at: self.created_at,
            finished_at: self.finished_at,
            result: self.result.clone(),
        }
    }

    pub fn is_finished(&self) -> bool {
        matches!(
            self.state,
            BoardActionState::Done | BoardActionState::Failed
        )
    }
}

fn corrupt(detail: impl ToString) -> StoreError {
    StoreError::Corrupt {
        what: "board",
        detail: detail.to_string(),
    }
}

/// A unit enum's wire spelling (`power_on`, `sent`): one spelling for API and table.
fn word<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn parse_word<T: serde::de::DeserializeOwned>(s: String) -> Result<T> {
    serde_json::from_value(serde_json::Value::String(s)).map_err(corrupt)
}

const ACTION_COLUMNS: &str = "id, resource_id, board, agent, action, state, requested_by, reason, \
     lease_id, session, created_at, sent_at, finished_at, result";

fn action_from_row(r: &Row<'_>) -> Result<BoardActionRow> {
    let resource_id: String = r.get("resource_id")?;
    Ok(BoardActionRow {
        action: BoardAction {
            id: r.get("id")?,
            board: r.get("board")?,
            action: parse_word::<BoardActionKind>(r.get("action")?)?,
            requested_by: r.get("requested_by")?,
            reason: r.get("reason")?,
            lease_id: r.get("lease_id")?,
            session: r.get("session")?,
        },
        resource_id: Ulid::from_string(&resource_id).map_err(corrupt)?,
        agent: r.get("agent")?,
        state: parse_word(r.get("state")?)?,
        created_at: get_ts(r, "created_at")?,
        sent_at: get_ts_opt(r, "sent_at")?,
        finished_at: get_ts_opt(r, "finished_at")?,
        result: get_json_opt(r, "board action result", "result")?,
    })
}

fn history_from_row(r: &Row<'_>) -> Result<(i64, BoardHistoryEntry)> {
    let ok: i64 = r.get("ok")?;
    Ok((
        r.get("id")?,
        BoardHistoryEntry {
            at: get_ts(r, "at")?,
            kind: parse_word(r.get("kind")?)?,
            action: r.get("action")?,
            actor: r.get("actor")?,
            ok: ok != 0,
            job_id: r.get("job_id")?,
            build_id: r.get("build_id")?,
            detail: r.get("detail")?,
        },
    ))
}

fn status_of(conn: &rusqlite::Connection, resource: Ulid) -> Result<Option<BoardStatus>> {
    query_opt(
        conn,
        "SELECT status FROM board_status WHERE resource_id = ?",
        [resource.to_string()],
        |r| get_json(r, "board status", "status"),
    )
}

fn action_by_id(conn: &rusqlite::Connection, id: &str) -> Result<BoardActionRow> {
    query_opt(
        conn,
        &format!("SELECT {ACTION_COLUMNS} FROM board_actions WHERE id = ?"),
        [id],
        action_from_row,
    )?
    .ok_or_else(|| StoreError::NotFound {
        what: "board action",
        name: id.to_string(),
    })
}

impl Store {
    /// A board's status; the default (idle, nothing known) for a board never reported on.
    pub async fn board_status(&self, resource: Ulid) -> Result<BoardStatus> {
        self.read(|c| Ok(status_of(c, resource)?.unwrap_or_default()))
    }

    pub async fn get_board_action(&self, id: &str) -> Result<BoardActionRow> {
        self.read(|c| action_by_id(c, id))
    }

    /// Whether an action waits for `agent` to take it (the work poll answers at once).
    pub async fn has_pending_board_actions(&self, agent: &str) -> Result<bool> {
        self.read(|c| {
            Ok(c.prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM board_actions WHERE agent = ? AND state = 'pending')",
            )?
            .query_row([agent], |r| r.get::<_, bool>(0))?)
        })
    }

    /// A board's history, newest first; `before` is an entry id (paging), `kind` a filter.
    pub async fn board_history(
        &self,
        resource: Ulid,
        kind: Option<BoardHistoryKind>,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<(i64, BoardHistoryEntry)>> {
        let kind = kind.map(|k| word(&k));
        self.read(|c| {
            query_all(
                c,
                "SELECT id, at, kind, action, actor, ok, job_id, build_id, detail FROM board_history
                 WHERE resource_id = ?1 AND (?2 IS NULL OR kind = ?2) AND (?3 IS NULL OR id < ?3)
                 ORDER BY id DESC LIMIT ?4",
                params![
                    resource.to_string(),
                    kind,
                    before,
                    i64::try_from(limit).unwrap_or(i64::MAX)
                ],
                history_from_row,
            )
        })
    }
}

impl Tx {
    pub async fn board_status(&mut self, resource: Ulid) -> Result<BoardStatus> {
        Ok(status_of(self.conn(), resource)?.unwrap_or_default())
    }

    pub async fn put_board_status(
        &mut self,
        resource: Ulid,
        status: &BoardStatus,
        now: DateTime<Utc>,
    ) -> Result<()> {
        exec(
            self.conn(),
            "INSERT INTO board_status (resource_id, status, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (resource_id) DO UPDATE SET status = excluded.status, updated_at = excluded.updated_at",
            params![resource.to_string(), to_json(status), ts(now)],
        )?;
        Ok(())
    }

    pub async fn insert_board_action(&mut self, a: &BoardActionRow) -> Result<()> {
        exec(
            self.conn(),
            &format!(
                "INSERT INTO board_actions ({ACTION_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, NULL, NULL, NULL)"
            ),
            params![
                a.action.id,
                a.resource_id.to_string(),
                a.action.board,
                a.agent,
                word(&a.action.action),
                word(&a.state),
                a.action.requested_by,
                a.action.reason,
                a.action.lease_id,
                a.action.session,
                ts(a.created_at),
            ],
        )?;
        Ok(())
    }

    pub async fn get_board_action(&mut self, id: &str) -> Result<BoardActionRow> {
        action_by_id(self.conn(), id)
    }

    /// Hands `agent` its pending actions: they are returned and marked `sent`.
    pub async fn take_board_actions(
        &mut self,
        agent: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<BoardAction>> {
        let rows = query_all(
            self.conn(),
            &format!(
                "SELECT {ACTION_COLUMNS} FROM board_actions WHERE agent = ? AND state = 'pending' ORDER BY id"
            ),
            [agent],
            action_from_row,
        )?;
        for r in &rows {
            exec(
                self.conn(),
                "UPDATE board_actions SET state = 'sent', sent_at = ?1 WHERE id = ?2",
                params![ts(now), r.action.id],
            )?;
        }
        Ok(rows.into_iter().map(|r| r.action).collect())
    }

    /// Ends an action with its result (`done` or `failed`).
    pub async fn finish_board_action(
        &mut self,
        id: &str,
        state: BoardActionState,
        result: &BoardActionResult,
        now: DateTime<Utc>,
    ) -> Result<()> {
        exec(
            self.conn(),
            "UPDATE board_actions SET state = ?1, result = ?2, finished_at = ?3 WHERE id = ?4",
            params![word(&state), to_json(result), ts(now), id],
        )?;
        Ok(())
    }

    /// Open actions that waited too long: sent before `sent_before`, or never taken and
    /// queued before `pending_before`. A console action the agent took is not: it answers
    /// when the session ends, which is the person's to decide.
    pub async fn overdue_board_actions(
        &mut self,
        sent_before: DateTime<Utc>,
        pending_before: DateTime<Utc>,
    ) -> Result<Vec<BoardActionRow>> {
        query_all(
            self.conn(),
            &format!(
                "SELECT {ACTION_COLUMNS} FROM board_actions WHERE state IN ('pending', 'sent')
                 AND ((state = 'sent' AND sent_at < ?1 AND action <> 'console')
                      OR (state = 'pending' AND created_at < ?2))"
            ),
            params![ts(sent_before), ts(pending_before)],
            action_from_row,
        )
    }

    pub async fn insert_board_history(
        &mut self,
        resource: Ulid,
        e: &BoardHistoryEntry,
    ) -> Result<()> {
        exec(
            self.conn(),
            "INSERT INTO board_history (resource_id, at, kind, action, actor, ok, job_id, build_id, detail)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            params![
                resource.to_string(),
                ts(e.at),
                word(&e.kind),
                e.action,
                e.actor,
                i64::from(e.ok),
                e.job_id,
                e.build_id,
                e.detail,
            ],
        )?;
        Ok(())
    }
}
