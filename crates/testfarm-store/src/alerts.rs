//! The `alerts`, `alert_recovery` and `alert_deliveries` tables: alerts raised by the rules
//! of `testfarm_core::alert`, what the lab tried about them, and their notifications per
//! channel. Reads here serve the API and the dashboard (lists, counts, details); writes are
//! the evaluator's and the notifier's, inside their transactions.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rusqlite::{Row, params};
use testfarm_api::alert::{Alert, AlertState, Delivery, RecoveryAttempt, Severity};

use crate::sql::{
    exec, get_json, get_ts, get_ts_opt, get_u64, int, query_all, query_opt, to_json, ts, ts_opt,
};
use crate::{Result, Store, StoreError, Tx};

/// Filters for [`Store::list_alerts`]; newest first.
#[derive(Debug, Clone, Default)]
pub struct AlertFilter {
    /// Empty: every state.
    pub states: Vec<AlertState>,
    pub severity: Option<Severity>,
    pub rule: Option<String>,
    pub subject: Option<String>,
    /// Only alerts with an id smaller than this (paging).
    pub before: Option<String>,
    pub limit: u32,
}

/// Open (and acknowledged) alerts by severity, for badges and `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertCounts {
    pub open: u64,
    pub acknowledged: u64,
    pub by_severity: BTreeMap<Severity, u64>,
}

/// A delivery with the alert it belongs to.
#[derive(Debug, Clone)]
pub struct DeliveryRow {
    pub alert_id: String,
    pub delivery: Delivery,
}

fn corrupt(detail: impl ToString) -> StoreError {
    StoreError::Corrupt {
        what: "alert",
        detail: detail.to_string(),
    }
}

fn word<T: serde::de::DeserializeOwned>(s: String) -> Result<T> {
    serde_json::from_value(serde_json::Value::String(s)).map_err(corrupt)
}

const COLUMNS: &str = "id, rule, subject, severity, state, summary, details, first_seen, last_seen, count, \
     acknowledged_at, acknowledged_by, resolved_at, resolved_by";

fn alert_from_row(r: &Row<'_>) -> Result<Alert> {
    Ok(Alert {
        id: r.get("id")?,
        rule: word(r.get("rule")?)?,
        subject: r.get("subject")?,
        severity: word(r.get("severity")?)?,
        state: word(r.get("state")?)?,
        summary: r.get("summary")?,
        details: get_json(r, "alert details", "details")?,
        first_seen: get_ts(r, "first_seen")?,
        last_seen: get_ts(r, "last_seen")?,
        count: get_u64(r, "alert", "count")?,
        acknowledged_at: get_ts_opt(r, "acknowledged_at")?,
        acknowledged_by: r.get("acknowledged_by")?,
        resolved_at: get_ts_opt(r, "resolved_at")?,
        resolved_by: r.get("resolved_by")?,
    })
}

const DELIVERY_COLUMNS: &str = "id, alert_id, channel, event, state, attempts, last_error, next_attempt_at, delivered_at, created_at";

fn delivery_from_row(r: &Row<'_>) -> Result<DeliveryRow> {
    let attempts: i64 = r.get("attempts")?;
    Ok(DeliveryRow {
        alert_id: r.get("alert_id")?,
        delivery: Delivery {
            id: r.get("id")?,
            channel: r.get("channel")?,
            event: r.get("event")?,
            state: word(r.get("state")?)?,
            attempts: u32::try_from(attempts).map_err(corrupt)?,
            last_error: r.get("last_error")?,
            next_attempt_at: get_ts_opt(r, "next_attempt_at")?,
            delivered_at: get_ts_opt(r, "delivered_at")?,
            created_at: get_ts(r, "created_at")?,
        },
    })
}

fn by_id(conn: &rusqlite::Connection, id: &str) -> Result<Alert> {
    query_opt(
        conn,
        &format!("SELECT {COLUMNS} FROM alerts WHERE id = ?"),
        [id],
        alert_from_row,
    )?
    .ok_or_else(|| StoreError::NotFound {
        what: "alert",
        name: id.to_string(),
    })
}

fn open_alerts(conn: &rusqlite::Connection) -> Result<Vec<Alert>> {
    query_all(
        conn,
        &format!("SELECT {COLUMNS} FROM alerts WHERE state <> 'resolved' ORDER BY id"),
        [],
        alert_from_row,
    )
}

impl Store {
    /// Alerts matching `f`, newest first.
    pub async fn list_alerts(&self, f: &AlertFilter) -> Result<Vec<Alert>> {
        let states = to_json(&f.states.iter().map(|s| s.as_str()).collect::<Vec<_>>());
        let severity = f.severity.map(|s| s.as_str());
        self.read(|c| {
            query_all(
                c,
                &format!(
                    "SELECT {COLUMNS} FROM alerts
                     WHERE (?1 = '[]' OR state IN (SELECT value FROM json_each(?1)))
                       AND (?2 IS NULL OR severity = ?2) AND (?3 IS NULL OR rule = ?3)
                       AND (?4 IS NULL OR subject = ?4) AND (?5 IS NULL OR id < ?5)
                     ORDER BY id DESC LIMIT ?6"
                ),
                params![
                    states,
                    severity,
                    f.rule,
                    f.subject,
                    f.before,
                    i64::from(f.limit)
                ],
                alert_from_row,
            )
        })
    }

    pub async fn get_alert(&self, id: &str) -> Result<Alert> {
        self.read(|c| by_id(c, id))
    }

    /// Every alert not resolved, oldest first.
    pub async fn open_alerts(&self) -> Result<Vec<Alert>> {
        self.read(open_alerts)
    }

    /// How many alerts are open and acknowledged, and the unresolved ones by severity.
    pub async fn count_open_alerts(&self) -> Result<AlertCounts> {
        self.read(|c| {
            let rows = query_all(
                c,
                "SELECT state, severity, COUNT(*) AS n FROM alerts WHERE state <> 'resolved' GROUP BY state, severity",
                [],
                |r| {
                    Ok((
                        word::<AlertState>(r.get("state")?)?,
                        word::<Severity>(r.get("severity")?)?,
                        get_u64(r, "alert count", "n")?,
                    ))
                },
            )?;
            let mut out = AlertCounts::default();
            for (state, sev, n) in rows {
                match state {
                    AlertState::Acknowledged => out.acknowledged += n,
                    _ => out.open += n,
                }
                *out.by_severity.entry(sev).or_default() += n;
            }
            Ok(out)
        })
    }

    /// What was tried about an alert's subject, oldest first.
    pub async fn alert_recovery(&self, id: &str) -> Result<Vec<RecoveryAttempt>> {
        self.read(|c| {
            query_all(
                c,
                "SELECT at, action, result FROM alert_recovery WHERE alert_id = ? ORDER BY id",
                [id],
                |r| {
                    Ok(RecoveryAttempt {
                        at: get_ts(r, "at")?,
                        action: r.get("action")?,
                        result: r.get("result")?,
                    })
                },
            )
        })
    }

    /// An alert's deliveries, oldest first.
    pub async fn alert_deliveries(&self, id: &str) -> Result<Vec<Delivery>> {
        self.read(|c| {
            Ok(query_all(
                c,
                &format!(
                    "SELECT {DELIVERY_COLUMNS} FROM alert_deliveries WHERE alert_id = ? ORDER BY id"
                ),
                [id],
                delivery_from_row,
            )?
            .into_iter()
            .map(|d| d.delivery)
            .collect())
        })
    }

    /// The deliveries alerts lack on `channels`: (alert id, channel, `raised` or
    /// `resolved`). Every unresolved alert is sent as raised once per channel; an alert
    /// resolved since `since` that was sent as raised is sent as resolved. An alert that
    /// was resolved before it was sent at all (a flap shorter than the notifier's poll),
    /// since `flap_since`, is sent as raised too, and so as resolved on the next pass:
    /// receivers hear of every alert, in order.
    pub async fn missing_deliveries(
        &self,
        channels: &[String],
        since: DateTime<Utc>,
        flap_since: DateTime<Utc>,
    ) -> Result<Vec<(String, String, String)>> {
        self.read(|c| {
            let mut out = Vec::new();
            for ch in channels {
                out.extend(query_all(
                    c,
                    "SELECT a.id FROM alerts a WHERE (a.state <> 'resolved' OR a.resolved_at >= ?2) AND NOT EXISTS
                       (SELECT 1 FROM alert_deliveries d WHERE d.alert_id = a.id AND d.channel = ?1 AND d.event = 'raised')
                     ORDER BY a.id",
                    params![ch, ts(flap_since)],
                    |r| Ok((r.get::<_, String>("id")?, ch.clone(), "raised".to_string())),
                )?);
                out.extend(query_all(
                    c,
                    "SELECT a.id FROM alerts a WHERE a.state = 'resolved' AND a.resolved_at >= ?2
                       AND EXISTS (SELECT 1 FROM alert_deliveries d WHERE d.alert_id = a.id AND d.channel = ?1 AND d.event = 'raised')
                       AND NOT EXISTS (SELECT 1 FROM alert_deliveries d WHERE d.alert_id = a.id AND d.channel = ?1 AND d.event = 'resolved')
                     ORDER BY a.id",
                    params![ch, ts(since)],
                    |r| Ok((r.get::<_, String>("id")?, ch.clone(), "resolved".to_string())),
                )?);
            }
            Ok(out)
        })
    }

    /// Pending deliveries whose next attempt is due by `now`, oldest first.
    pub async fn due_deliveries(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<DeliveryRow>> {
        self.read(|c| {
            query_all(
                c,
                &format!(
                    "SELECT {DELIVERY_COLUMNS} FROM alert_deliveries
                     WHERE state = 'pending' AND (next_attempt_at IS NULL OR next_attempt_at <= ?1)
                     ORDER BY id LIMIT ?2"
                ),
                params![ts(now), i64::from(limit)],
                delivery_from_row,
            )
        })
    }
}

impl Tx {
    pub async fn get_alert(&mut self, id: &str) -> Result<Alert> {
        by_id(self.conn(), id)
    }

    pub async fn open_alerts(&mut self) -> Result<Vec<Alert>> {
        open_alerts(self.conn())
    }

    /// The open alert of (rule, subject), if any.
    pub async fn open_alert_for(&mut self, rule: &str, subject: &str) -> Result<Option<Alert>> {
        query_opt(
            self.conn(),
            &format!(
                "SELECT {COLUMNS} FROM alerts WHERE rule = ? AND subject = ? AND state <> 'resolved'"
            ),
            [rule, subject],
            alert_from_row,
        )
    }

    /// Every alert about `subject` (a resource name) that is not resolved.
    pub async fn active_alerts_for(&mut self, subject: &str) -> Result<Vec<Alert>> {
        query_all(
            self.conn(),
            &format!(
                "SELECT {COLUMNS} FROM alerts WHERE subject = ? AND state <> 'resolved' ORDER BY first_seen"
            ),
            [subject],
            alert_from_row,
        )
    }

    pub async fn insert_alert(&mut self, a: &Alert) -> Result<()> {
        let res = exec(
            self.conn(),
            &format!(
                "INSERT INTO alerts ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
            ),
            params![
                a.id,
                a.rule.as_str(),
                a.subject,
                a.severity.as_str(),
                a.state.as_str(),
                a.summary,
                to_json(&a.details),
                ts(a.first_seen),
                ts(a.last_seen),
                int(a.count),
                ts_opt(a.acknowledged_at),
                a.acknowledged_by,
                ts_opt(a.resolved_at),
                a.resolved_by,
            ],
        );
        crate::sql::unique(res, "open alert", &format!("{}/{}", a.rule, a.subject))
    }

    /// Writes an alert's changed fields back (state, severity, summary, seen, count, who).
    pub async fn update_alert(&mut self, a: &Alert) -> Result<()> {
        exec(
            self.conn(),
            "UPDATE alerts SET severity = ?2, state = ?3, summary = ?4, details = ?5, last_seen = ?6, count = ?7,
               acknowledged_at = ?8, acknowledged_by = ?9, resolved_at = ?10, resolved_by = ?11 WHERE id = ?1",
            params![
                a.id,
                a.severity.as_str(),
                a.state.as_str(),
                a.summary,
                to_json(&a.details),
                ts(a.last_seen),
                int(a.count),
                ts_opt(a.acknowledged_at),
                a.acknowledged_by,
                ts_opt(a.resolved_at),
                a.resolved_by,
            ],
        )?;
        Ok(())
    }

    pub async fn add_recovery_attempt(&mut self, alert: &str, r: &RecoveryAttempt) -> Result<()> {
        exec(
            self.conn(),
            "INSERT INTO alert_recovery (alert_id, at, action, result) VALUES (?, ?, ?, ?)",
            params![alert, ts(r.at), r.action, r.result],
        )?;
        Ok(())
    }

    pub async fn insert_delivery(&mut self, alert: &str, d: &Delivery) -> Result<()> {
        exec(
            self.conn(),
            &format!(
                "INSERT INTO alert_deliveries ({DELIVERY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
            ),
            params![
                d.id,
                alert,
                d.channel,
                d.event,
                d.state.as_str(),
                i64::from(d.attempts),
                d.last_error,
                ts_opt(d.next_attempt_at),
                ts_opt(d.delivered_at),
                ts(d.created_at),
            ],
        )?;
        Ok(())
    }

    /// Records an attempt's outcome.
    pub async fn update_delivery(&mut self, d: &Delivery) -> Result<()> {
        exec(
            self.conn(),
            "UPDATE alert_deliveries SET state = ?2, attempts = ?3, last_error = ?4, next_attempt_at = ?5,
               delivered_at = ?6 WHERE id = ?1",
            params![
                d.id,
                d.state.as_str(),
                i64::from(d.attempts),
                d.last_error,
                ts_opt(d.next_attempt_at),
                ts_opt(d.delivered_at),
            ],
        )?;
        Ok(())
    }
}
