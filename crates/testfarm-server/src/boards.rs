//! Boards managed by agents, the server's side (the protocol is `testfarm_api::board`):
//! queueing actions for a board's agent and waiting for their answers, applying what
//! agents report (activity, power, flash, deploy, health, recovery) with the quarantine
//! rules of `testfarm_core::board::quarantine`, and the board's history and events.
//! Routes (`routes::boards`) and background tasks (lease-end cleanup, overdue actions)
//! all go through here, so a board changes the same way whoever triggers it.

use std::time::Duration;
use testfarm_api::alert::{RecoveryAttempt, Rule};

use chrono::{DateTime, Utc};
use serde_json::json;
use testfarm_api::board::{
    BoardAction, BoardActionKind, BoardActionResult, BoardActionState, BoardHistoryEntry,
    BoardHistoryKind, BoardReport, Deployment,
};
use testfarm_api::resource::{Resource, ResourceKind};
use testfarm_core::Role;
use testfarm_core::board::quarantine::{
    HealthRecord, PoolChange, PoolState, QuarantinePolicy, failure_rate,
};
use testfarm_core::lease::Holder;
use testfarm_core::resource::{Health, HealthStatus, MaintenanceWindow, ResourceState};
use testfarm_store::boards::{BoardActionRow, BoardStatus};
use testfarm_store::jobs::JobRow;
use testfarm_store::{NewEvent, StoreError, Tx};

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// The actor of the server's own lease-end cleanups.
pub const REAPER: &str = "reaper";

/// The board named `name`: 404 when no resource has that name, 422 when it is not a
/// board.
pub async fn board_named(tx: &mut Tx, name: &str) -> ApiResult<Resource> {
    board_or(name, tx.get_resource(name).await)
}

/// [`board_named`], read outside a transaction.
pub async fn read_board(state: &AppState, name: &str) -> ApiResult<Resource> {
    board_or(name, state.store.get_resource(name).await)
}

fn board_or(name: &str, found: Result<Resource, StoreError>) -> ApiResult<Resource> {
    let r = match found {
        Ok(r) => r,
        Err(StoreError::NotFound { .. }) => {
            return Err(ApiError::NotFound(format!("no board named {name}")));
        }
        Err(e) => return Err(e.into()),
    };
    if r.kind != ResourceKind::Board {
        return Err(ApiError::unprocessable(
            "name",
            format!("resource {name} is a {}, not a board", r.kind),
        ));
    }
    Ok(r)
}

/// The API view of a board.
pub fn view(resource: Resource, status: BoardStatus) -> testfarm_api::board::BoardView {
    testfarm_api::board::BoardView {
        activity: status.activity,
        activity_job: status.activity_job,
        power: status.power,
        current: status.current,
        known_good: status.known_good,
        health_level: status.health_level,
        health_findings: status.health_findings,
        consecutive_health_failures: status.consecutive_health_failures,
        quarantine_reason: status
            .quarantine_reason
            .filter(|q| resource.maintenance.as_ref().map(|m| &m.reason) == Some(q)),
        offline_reason: status.offline_reason,
        verification: status.verification,
        quarantine: status.quarantine,
        resource,
    }
}

/// The agent that manages a board: actions need one (409 for a board added by hand).
pub fn agent_of(r: &Resource) -> ApiResult<String> {
    r.agent.clone().ok_or_else(|| {
        ApiError::conflict(format!(
            "board {} was added by hand; no agent manages it, so it cannot be switched or checked from here",
            r.name
        ))
    })
}

/// Who may drive a board (power, console, restore): operators and admins, and the holder
/// of its active lease: the person of a manual lease, or the submitter of the job holding
/// it (a job's lease is held for its submitter's token name).
pub async fn may_drive(tx: &mut Tx, caller: &Caller, r: &Resource) -> ApiResult<()> {
    if matches!(caller.role, Role::Admin | Role::Operator) {
        return Ok(());
    }
    for lease in tx.active_leases_on(r.id).await? {
        let holder = match &lease.holder {
            Holder::Person(p) => Some(p.clone()),
            Holder::Job(id) => tx
                .get_job(&id.to_string())
                .await
                .ok()
                .map(|j| j.job.submitter),
        };
        if holder.as_deref() == Some(caller.name.as_str()) {
            return Ok(());
        }
    }
    Err(ApiError::Forbidden(format!(
        "token {:?} neither holds the active lease on board {} nor is an operator",
        caller.name, r.name
    )))
}

/// What the agent of an action is asked, before it is queued.
#[derive(Debug, Clone, Default)]
pub struct Ask {
    pub reason: Option<String>,
    pub lease_id: Option<String>,
    pub session: Option<String>,
}

/// Queues `kind` for the board's agent in `tx`. The caller commits, then calls
/// [`AppState::work_changed`] so the agent's long-poll answers at once.
pub async fn enqueue(
    tx: &mut Tx,
    r: &Resource,
    kind: BoardActionKind,
    requested_by: &str,
    ask: Ask,
    now: DateTime<Utc>,
) -> ApiResult<BoardActionRow> {
    let agent = agent_of(r)?;
    let row = BoardActionRow {
        action: BoardAction {
            id: crate::ids::next().to_string(),
            board: r.name.clone(),
            action: kind,
            requested_by: requested_by.to_string(),
            reason: ask.reason,
            lease_id: ask.lease_id,
            session: ask.session,
        },
        resource_id: r.id,
        agent,
        state: BoardActionState::Pending,
        created_at: now,
        sent_at: None,
        finished_at: None,
        result: None,
    };
    tx.insert_board_action(&row).await?;
    tx.record(
        NewEvent::new("board.action", "resource", &r.name, requested_by).with_data(json!({
            "id": row.action.id, "action": kind, "agent": row.agent, "reason": row.action.reason,
        })),
    );
    Ok(row)
}

/// Waits up to `wait` for action `id` to finish; returns it as it then stands.
pub async fn wait_action(state: &AppState, id: &str, wait: Duration) -> ApiResult<BoardActionRow> {
    let start = tokio::time::Instant::now();
    let deadline = start + wait;
    // An agent in its work poll takes an action within milliseconds of its queueing; one
    // not taken by then has no agent listening (busy, gone, or never polling), so waiting
    // longer only holds the caller's request open. It stays queued either way.
    let pickup = start + PICKUP.min(wait);
    let mut done = state.board_actions.subscribe();
    loop {
        done.borrow_and_update();
        let row = state.store.get_board_action(id).await?;
        let now = tokio::time::Instant::now();
        let untaken = row.view().state == testfarm_api::board::BoardActionState::Pending;
        if row.is_finished() || now >= deadline || (untaken && now >= pickup) {
            return Ok(row);
        }
        let until = if untaken { pickup } else { deadline };
        if tokio::time::timeout_at(until, done.changed())
            .await
            .is_err()
            && until == deadline
        {
            return Ok(state.store.get_board_action(id).await?);
        }
    }
}

/// How long an action may stay untaken before a caller waiting for it is answered
/// `pending` (see [`wait_action`]).
const PICKUP: Duration = Duration::from_secs(5);

/// The history kind of an action's result, for the actions that have one.
fn history_kind(kind: BoardActionKind) -> Option<(BoardHistoryKind, &'static str)> {
    Some(match kind {
        BoardActionKind::PowerOn => (BoardHistoryKind::Power, "on"),
        BoardActionKind::PowerOff => (BoardHistoryKind::Power, "off"),
        BoardActionKind::PowerCycle => (BoardHistoryKind::Power, "cycle"),
        BoardActionKind::PowerStatus => (BoardHistoryKind::Power, "status"),
        BoardActionKind::Release => (BoardHistoryKind::Power, "release"),
        BoardActionKind::HealthCheck => (BoardHistoryKind::Health, "health_check"),
        BoardActionKind::Console => return None,
    })
}

/// Ends an action with `result` in `tx`: its row, the board's power, its history and the
/// `board.power` event. The caller commits and calls [`AppState::board_action_done`].
pub async fn finish_action(
    tx: &mut Tx,
    row: &BoardActionRow,
    result: &BoardActionResult,
    actor: &str,
    now: DateTime<Utc>,
) -> ApiResult<()> {
    let state = if result.ok {
        BoardActionState::Done
    } else {
        BoardActionState::Failed
    };
    tx.finish_board_action(&row.action.id, state, result, now)
        .await?;
    if let Some(power) = result.power {
        let mut status = tx.board_status(row.resource_id).await?;
        status.power = Some(power);
        tx.put_board_status(row.resource_id, &status, now).await?;
    }
    if let Some((kind, verb)) = history_kind(row.action.action) {
        tx.insert_board_history(
            row.resource_id,
            &BoardHistoryEntry {
                at: now,
                kind,
                action: verb.to_string(),
                actor: row.action.requested_by.clone(),
                ok: result.ok,
                job_id: None,
                build_id: None,
                detail: result.detail.clone(),
            },
        )
        .await?;
        if kind == BoardHistoryKind::Power {
            tx.record(
                NewEvent::new("board.power", "resource", &row.action.board, actor).with_data(
                    json!({
                        "action": verb, "ok": result.ok, "power": result.power,
                        "detail": result.detail, "requested_by": row.action.requested_by,
                        "action_id": row.action.id,
                    }),
                ),
            );
        }
    }
    Ok(())
}

/// The result of an action its agent never answered.
pub fn unanswered(timeout: Duration) -> BoardActionResult {
    BoardActionResult {
        ok: false,
        power: None,
        detail: format!(
            "the agent did not answer within {}",
            testfarm_core::duration::format(timeout)
        ),
        operator_action_needed: false,
    }
}

/// The board's quarantine policy: its own from registration, else the default.
fn policy(status: &BoardStatus) -> QuarantinePolicy {
    status
        .quarantine
        .map_or_else(QuarantinePolicy::default, |q| QuarantinePolicy {
            health_failures: q.health_failures.max(1),
            lab_errors: q.lab_errors.max(1),
            window: Duration::from_millis(q.window_ms),
        })
}

/// Whether the board is out of the pool by the server's own doing (a quarantine, a
/// failed recovery or cleanup): only then does a passing health check bring it back.
fn held_by_us(r: &Resource, status: &BoardStatus) -> bool {
    r.state == ResourceState::Maintenance
        && status.quarantine_reason.is_some()
        && r.maintenance.as_ref().map(|m| &m.reason) == status.quarantine_reason.as_ref()
}

/// Takes a board out of the pool with `reason` (its maintenance reason), unless an
/// operator already holds it in maintenance or it is retired: their hold stays.
/// Returns whether it did.
pub async fn take_out(
    tx: &mut Tx,
    r: &mut Resource,
    status: &mut BoardStatus,
    reason: String,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let ours = held_by_us(r, status) || testfarm_core::cleanup::held_for_cleanup(r);
    let free = matches!(
        r.state,
        ResourceState::Available | ResourceState::Leased | ResourceState::Offline
    );
    if !(ours || free) {
        return Ok(false);
    }
    let window = MaintenanceWindow {
        start: None,
        end: None,
        reason: reason.clone(),
    };
    // Refused only for a retired board, which the state check above already left alone.
    if r.maintenance_on(window, now).is_err() {
        return Ok(false);
    }
    status.quarantine_reason = Some(reason);
    tx.update_resource(r).await?;
    Ok(true)
}

/// Brings a board the server took out back to the pool.
async fn put_back(
    tx: &mut Tx,
    r: &mut Resource,
    status: &mut BoardStatus,
    now: DateTime<Utc>,
) -> ApiResult<()> {
    let active = tx.active_lease_count(r.id).await?;
    r.maintenance_off(active, now).map_err(ApiError::conflict)?;
    status.quarantine_reason = None;
    tx.update_resource(r).await?;
    Ok(())
}

fn history(
    kind: BoardHistoryKind,
    action: &str,
    actor: &str,
    ok: bool,
    now: DateTime<Utc>,
) -> BoardHistoryEntry {
    BoardHistoryEntry {
        at: now,
        kind,
        action: action.to_string(),
        actor: actor.to_string(),
        ok,
        job_id: None,
        build_id: None,
        detail: String::new(),
    }
}

/// What applying a report left to do after commit.
#[derive(Debug, Default)]
pub struct Applied {
    /// The board left or returned to the pool: the scheduler should look again.
    pub pool_changed: bool,
}

/// Applies an agent's report about board `r` in `tx`.
pub async fn apply_report(
    tx: &mut Tx,
    r: &mut Resource,
    report: &BoardReport,
    agent: &str,
    alerts: &crate::config::AlertsSection,
    now: DateTime<Utc>,
) -> ApiResult<Applied> {
    let actor = format!("agent:{agent}");
    let mut status = tx.board_status(r.id).await?;
    let mut applied = Applied::default();
    let board = r.name.clone();
    let event = |kind: &str, data: serde_json::Value| {
        NewEvent::new(kind, "resource", &board, agent).with_data(data)
    };
    match report {
        BoardReport::Activity { activity, job_id } => {
            status.activity = *activity;
            status.activity_job = job_id.clone();
            tx.record(event(
                "board.activity",
                json!({ "activity": activity, "job_id": job_id }),
            ));
        }
        BoardReport::Power {
            action,
            ok,
            state,
            detail,
            job_id,
        } => {
            if state.is_some() {
                status.power = *state;
            }
            let mut h = history(BoardHistoryKind::Power, action, &actor, *ok, now);
            h.job_id = job_id.clone();
            h.detail = detail.clone();
            tx.insert_board_history(r.id, &h).await?;
            tx.record(event(
                "board.power",
                json!({ "action": action, "ok": ok, "power": state, "detail": detail, "job_id": job_id }),
            ));
        }
        BoardReport::Flash {
            job_id,
            build_id,
            ok,
            detail,
            duration_ms,
        } => {
            let mut h = history(BoardHistoryKind::Flash, "flash", &actor, *ok, now);
            h.job_id = Some(job_id.clone());
            h.build_id = build_id.clone();
            h.detail = detail.clone();
            tx.insert_board_history(r.id, &h).await?;
            tx.record(event(
                "board.flashed",
                json!({ "job_id": job_id, "build_id": build_id, "ok": ok, "detail": detail, "duration_ms": duration_ms }),
            ));
        }
        BoardReport::Deployed {
            job_id,
            build_id,
            commit,
            booted,
            detail,
        } => {
            status.current = Some(Deployment {
                build_id: build_id.clone(),
                commit: commit.clone(),
                job_id: job_id.clone(),
                at: now,
            });
            status.current_booted = *booted;
            let mut h = history(BoardHistoryKind::Deploy, "deploy", &actor, *booted, now);
            h.job_id = Some(job_id.clone());
            h.build_id = Some(build_id.clone());
            h.detail = detail.clone();
            tx.insert_board_history(r.id, &h).await?;
            tx.record(event(
                "board.deployed",
                json!({ "job_id": job_id, "build_id": build_id, "commit": commit, "booted": booted, "detail": detail }),
            ));
        }
        BoardReport::Health {
            passed,
            level,
            findings,
            values,
            check,
        } => {
            status.health_level = Some(*level);
            status.health_findings = findings.clone();
            let mut h = history(
                BoardHistoryKind::Health,
                if *check { "health_check" } else { "probe" },
                &actor,
                *passed,
                now,
            );
            h.detail = findings.join("; ");
            tx.insert_board_history(r.id, &h).await?;
            let out = held_by_us(r, &status);
            let record = HealthRecord {
                consecutive_failures: status.consecutive_health_failures,
                state: match (&status.quarantine_reason, out) {
                    (Some(reason), true) => PoolState::Quarantined {
                        reason: reason.clone(),
                    },
                    _ => PoolState::InPool,
                },
            };
            // Only a full health check returns a board; an idle probe passing does not.
            if !(out && *passed && !*check) {
                let (next, change) = record.apply(&policy(&status), *passed);
                status.consecutive_health_failures = next.consecutive_failures;
                match change {
                    Some(PoolChange::Left { reason }) => {
                        let reason = format!("quarantined: {reason}");
                        if take_out(tx, r, &mut status, reason.clone(), now).await? {
                            quarantined(tx, r, &reason, &actor, now).await?;
                            applied.pool_changed = true;
                        }
                    }
                    Some(PoolChange::Returned) => {
                        put_back(tx, r, &mut status, now).await?;
                        tx.insert_board_history(
                            r.id,
                            &history(BoardHistoryKind::Quarantine, "returned", &actor, true, now),
                        )
                        .await?;
                        tx.record(event(
                            "board.returned",
                            json!({ "state": r.state, "check": check }),
                        ));
                        applied.pool_changed = true;
                    }
                    None => {}
                }
            }
            tx.record(event(
                "board.health",
                json!({ "passed": passed, "level": level, "findings": findings, "values": values, "check": check,
                        "consecutive_failures": status.consecutive_health_failures }),
            ));
        }
        BoardReport::Recovery {
            job_id,
            recovered,
            attempts,
            detail,
        } => {
            let mut h = history(
                BoardHistoryKind::Recovery,
                "recovery",
                &actor,
                *recovered,
                now,
            );
            h.job_id = job_id.clone();
            h.detail = if attempts.is_empty() {
                detail.clone()
            } else {
                format!("{detail} (attempts: {})", attempts.join("; "))
            };
            tx.insert_board_history(r.id, &h).await?;
            tx.record(event(
                "board.recovery",
                json!({ "job_id": job_id, "recovered": recovered, "attempts": attempts, "detail": detail }),
            ));
            if !*recovered {
                let reason = format!(
                    "needs manual intervention: {}",
                    if detail.is_empty() {
                        "the board did not recover after power cycles"
                    } else {
                        detail
                    }
                );
                if take_out(tx, r, &mut status, reason.clone(), now).await? {
                    applied.pool_changed = true;
                }
                // The board_health alert (the evaluator keeps it open while the board is
                // out, and resolves it when it is back), with the power cycles tried.
                if let Some(c) = crate::alerts::condition(
                    alerts,
                    Rule::BoardHealth,
                    &r.name,
                    format!("board {}: {reason}", r.name),
                    json!({ "reason": reason, "job_id": job_id }),
                ) {
                    let (a, _) = crate::alerts::raise(
                        tx,
                        &c,
                        &actor,
                        json!({ "board": r.name, "reason": reason, "attempts": attempts, "job_id": job_id }),
                        now,
                    )
                    .await?;
                    record_recovery(tx, &a, attempts, detail, *recovered, &actor, now).await?;
                }
            } else if let Some(a) = tx
                .open_alert_for(Rule::BoardHealth.as_str(), &r.name)
                .await?
            {
                record_recovery(tx, &a, attempts, detail, *recovered, &actor, now).await?;
            }
        }
    }
    tx.put_board_status(r.id, &status, now).await?;
    Ok(applied)
}

/// The power cycles a recovery tried, on the board's alert.
async fn record_recovery(
    tx: &mut Tx,
    a: &testfarm_api::alert::Alert,
    attempts: &[String],
    detail: &str,
    recovered: bool,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let mut tried: Vec<RecoveryAttempt> = attempts
        .iter()
        .map(|t| RecoveryAttempt {
            at: now,
            action: "power cycle".into(),
            result: t.clone(),
        })
        .collect();
    tried.push(RecoveryAttempt {
        at: now,
        action: "recovery".into(),
        result: format!(
            "{}{}",
            if recovered {
                "recovered"
            } else {
                "not recovered"
            },
            if detail.is_empty() {
                String::new()
            } else {
                format!(": {detail}")
            }
        ),
    });
    for t in &tried {
        crate::alerts::recovery_attempt(tx, a, t, actor).await?;
    }
    Ok(())
}

/// Records a quarantine that just happened: history and the `board.quarantined` event.
async fn quarantined(
    tx: &mut Tx,
    r: &Resource,
    reason: &str,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let mut h = history(
        BoardHistoryKind::Quarantine,
        "quarantined",
        actor,
        false,
        now,
    );
    h.detail = reason.to_string();
    tx.insert_board_history(r.id, &h).await?;
    tx.record(
        NewEvent::new("board.quarantined", "resource", &r.name, actor)
            .with_data(json!({ "reason": reason, "state": r.state })),
    );
    Ok(())
}

/// A job on a board ended with a lab error: counts it in the board's window and takes
/// the board out of the pool when the count reaches the board's limit
/// (`core::board::quarantine::failure_rate`). Returns whether the pool changed.
pub async fn lab_error(
    tx: &mut Tx,
    resource_id: &str,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let Ok(id) = ulid::Ulid::from_string(resource_id) else {
        return Ok(false);
    };
    let mut r = tx.get_resource_by_id(resource_id).await?;
    if r.kind != ResourceKind::Board || r.agent.is_none() {
        return Ok(false);
    }
    let mut status = tx.board_status(id).await?;
    let policy = policy(&status);
    let since = |t: &DateTime<Utc>| {
        t.signed_duration_since(DateTime::UNIX_EPOCH)
            .to_std()
            .unwrap_or_default()
    };
    status.lab_errors.push(now);
    let window_start = since(&now).saturating_sub(policy.window);
    status.lab_errors.retain(|t| since(t) >= window_start);
    let times: Vec<Duration> = status.lab_errors.iter().map(since).collect();
    let mut changed = false;
    if let Some(why) = failure_rate(&policy, &times, since(&now)) {
        let reason = format!("quarantined: {why}");
        if take_out(tx, &mut r, &mut status, reason.clone(), now).await? {
            quarantined(tx, &r, &reason, "scheduler", now).await?;
            status.lab_errors.clear();
            changed = true;
        }
    }
    tx.put_board_status(id, &status, now).await?;
    Ok(changed)
}

/// A job passed: when its board's current deployment came from it and booted, that
/// build becomes the board's known-good one. A no-op for anything but agent boards.
pub async fn job_passed(tx: &mut Tx, job: &JobRow, now: DateTime<Utc>) -> Result<(), StoreError> {
    let Some(id) = job
        .resource_id
        .as_deref()
        .and_then(|r| ulid::Ulid::from_string(r).ok())
    else {
        return Ok(());
    };
    let mut status = tx.board_status(id).await?;
    let Some(current) = status.current.clone() else {
        return Ok(());
    };
    if current.job_id == job.job.id && status.current_booted {
        status.known_good = Some(current);
        tx.put_board_status(id, &status, now).await?;
    }
    Ok(())
}

/// Registration: keeps what the agent found at start (verification, its quarantine
/// policy, and whether it could reach the board), and returns the state the board should
/// be in: `offline` with the reason while the agent cannot reach it.
pub async fn registered(
    tx: &mut Tx,
    r: &mut Resource,
    ar: &testfarm_api::agent::AgentResource,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let mut status = tx.board_status(r.id).await?;
    status.verification = ar.verification.clone();
    status.quarantine = ar.quarantine;
    status.offline_reason = ar.offline_reason.clone();
    // A `[[board]]` table (drivers for power, console, flash) always carries its
    // quarantine policy; a `[[resource]] kind = "board"` the agent only runs shell work
    // on does not.
    status.driven = ar.quarantine.is_some();
    if let Some(reason) = &ar.offline_reason
        && matches!(
            r.state,
            ResourceState::Available | ResourceState::Leased | ResourceState::Offline
        )
    {
        r.state = ResourceState::Offline;
        r.health = Health {
            status: HealthStatus::Offline,
            reasons: vec![reason.clone()],
        };
    }
    tx.put_board_status(r.id, &status, now).await?;
    Ok(())
}
