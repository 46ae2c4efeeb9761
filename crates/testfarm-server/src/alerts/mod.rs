//! Alerts on the server side: writing what `testfarm_core::alert` decided (raise, touch,
//! resolve, acknowledge, recovery attempts) with its events, and the notifier that
//! delivers every raised and resolved alert to the configured channels ([`webhook`],
//! [`email`]).
//!
//! Deliveries are rows (`alert_deliveries`), created by the notifier for every channel an
//! alert has not been sent to yet, and attempted in their own tasks: a slow or dead
//! receiver never holds up the evaluator, a request or another delivery, and a restarted
//! server resumes what was pending. The rules' evaluation loop is `tasks::alerts`.

pub mod email;
pub mod webhook;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use testfarm_api::alert::{
    Alert, AlertNotification, AlertState, Delivery, DeliveryState, RecoveryAttempt, Rule,
};
use testfarm_core::alert::Condition;
use testfarm_store::{NewEvent, StoreError, Tx};
use tokio::sync::watch;

use crate::state::AppState;

/// The event payload every alert event carries: enough for a live view to draw it.
fn event_data(a: &Alert, extra: serde_json::Value) -> serde_json::Value {
    let mut data = json!({
        "id": a.id, "rule": a.rule, "subject": a.subject, "severity": a.severity,
        "state": a.state, "summary": a.summary, "count": a.count,
    });
    if let (Some(d), serde_json::Value::Object(e)) = (data.as_object_mut(), extra) {
        d.extend(e);
    }
    data
}

/// Raises an alert for `c`, or, when one is open for its rule and subject, bumps its
/// `last_seen` and count. `extra` is added to the `alert.raised` event's data. Returns
/// the alert and whether it is new.
pub async fn raise(
    tx: &mut Tx,
    c: &Condition,
    actor: &str,
    extra: serde_json::Value,
    now: DateTime<Utc>,
) -> Result<(Alert, bool), StoreError> {
    if let Some(mut a) = tx.open_alert_for(c.rule.as_str(), &c.subject).await? {
        touch(tx, &mut a, c, now).await?;
        return Ok((a, false));
    }
    let a = Alert {
        id: crate::ids::next().to_string(),
        rule: c.rule,
        subject: c.subject.clone(),
        severity: c.severity,
        state: AlertState::Open,
        summary: c.summary.clone(),
        details: c.details.clone(),
        first_seen: now,
        last_seen: now,
        count: 1,
        acknowledged_at: None,
        acknowledged_by: None,
        resolved_at: None,
        resolved_by: None,
    };
    tx.insert_alert(&a).await?;
    metrics::counter!("testfarm_alerts_raised_total", "rule" => a.rule.as_str()).increment(1);
    tx.record(
        NewEvent::new("alert.raised", "alert", &a.id, actor).with_data(event_data(&a, extra)),
    );
    // Work the lab already moved off this resource shortly before the alert (a lease that
    // expired before the agent was judged offline) is what was done about it.
    if let Some(resource) = resource_named(tx, &a.subject).await? {
        for (job, at) in tx
            .jobs_retried_away_from(&resource.id.to_string(), now - RETRY_LOOKBACK)
            .await?
        {
            recovery_attempt(tx, &a, &retry_attempt(&job, at), actor).await?;
        }
    }
    Ok((a, true))
}

/// The condition still holds: bump `last_seen` and the count (no event: the alert did not
/// change in a way anyone acts on, and one per evaluation would flood the log).
pub async fn touch(
    tx: &mut Tx,
    a: &mut Alert,
    c: &Condition,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    a.last_seen = now;
    a.count += 1;
    a.summary = c.summary.clone();
    a.details = c.details.clone();
    a.severity = c.severity;
    tx.update_alert(a).await
}

/// Resolves an open alert; `by` is `auto` when its condition cleared.
pub async fn resolve(
    tx: &mut Tx,
    a: &mut Alert,
    by: &str,
    note: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    a.state = AlertState::Resolved;
    a.resolved_at = Some(now);
    a.resolved_by = Some(by.to_string());
    tx.update_alert(a).await?;
    tx.record(
        NewEvent::new("alert.resolved", "alert", &a.id, by)
            .with_data(event_data(a, json!({ "note": note }))),
    );
    Ok(())
}

pub async fn acknowledge(
    tx: &mut Tx,
    a: &mut Alert,
    by: &str,
    note: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    a.state = AlertState::Acknowledged;
    a.acknowledged_at = Some(now);
    a.acknowledged_by = Some(by.to_string());
    tx.update_alert(a).await?;
    tx.record(
        NewEvent::new("alert.acknowledged", "alert", &a.id, by)
            .with_data(event_data(a, json!({ "note": note }))),
    );
    Ok(())
}

/// Records what the lab tried about an alert (`alert.updated`).
pub async fn recovery_attempt(
    tx: &mut Tx,
    a: &Alert,
    attempt: &RecoveryAttempt,
    actor: &str,
) -> Result<(), StoreError> {
    tx.add_recovery_attempt(&a.id, attempt).await?;
    tx.record(
        NewEvent::new("alert.updated", "alert", &a.id, actor)
            .with_data(event_data(a, json!({ "recovery_attempt": attempt }))),
    );
    Ok(())
}

/// A job the lab failed on a resource was re-queued to run on another one
/// (`retry_on_error`): a recovery attempt on every unresolved alert about that resource,
/// so the alert shows what the lab did about it. No alert, nothing recorded.
pub async fn retried_elsewhere(
    tx: &mut Tx,
    resource_id: &str,
    job: &str,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let resource = match tx.get_resource_by_id(resource_id).await {
        Ok(r) => r,
        Err(StoreError::NotFound { .. }) => return Ok(()),
        Err(e) => return Err(e),
    };
    let attempt = retry_attempt(job, now);
    for a in tx.active_alerts_for(&resource.name).await? {
        recovery_attempt(tx, &a, &attempt, actor).await?;
    }
    Ok(())
}

/// Re-queues this long before an alert is raised count as its recovery attempts.
const RETRY_LOOKBACK: chrono::Duration = chrono::Duration::minutes(10);

fn retry_attempt(job: &str, at: DateTime<Utc>) -> RecoveryAttempt {
    RecoveryAttempt {
        at,
        action: format!("re-queue job {job}"),
        result: "re-queued to run on another resource (retry_on_error)".into(),
    }
}

/// The resource an alert's subject names, if it is one.
async fn resource_named(
    tx: &mut Tx,
    name: &str,
) -> Result<Option<testfarm_core::resource::Resource>, StoreError> {
    match tx.get_resource(name).await {
        Ok(r) => Ok(Some(r)),
        Err(StoreError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The channel names of the configuration: `webhook:NAME` for each webhook, `email`.
pub fn channels(config: &crate::config::AlertsSection) -> Vec<String> {
    let mut out: Vec<String> = config
        .webhook
        .iter()
        .map(|w| format!("webhook:{}", w.name))
        .collect();
    if config.email.is_some() {
        out.push("email".into());
    }
    out
}

/// Resolved alerts older than this get no `resolved` delivery created any more (a server
/// that was down a day does not send yesterday's news).
const RESOLVED_LOOKBACK: chrono::Duration = chrono::Duration::hours(24);
/// An alert resolved before it was ever sent is still sent (raised, then resolved) if it
/// resolved this recently; older ones (a webhook added to the config later) are not.
const FLAP_LOOKBACK: chrono::Duration = chrono::Duration::minutes(10);
/// How often the notifier looks for work.
const POLL: Duration = Duration::from_millis(250);

/// The notifier: creates the deliveries alerts lack and attempts the due ones.
pub(crate) async fn run(state: AppState, mut stop: watch::Receiver<bool>) {
    let channels = channels(&state.config.alerts);
    if channels.is_empty() || !state.config.alerts.enabled {
        return;
    }
    let in_flight: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let client = webhook::client(state.config.alerts.delivery_timeout.0);
    while crate::tasks::tick(POLL, &mut stop).await {
        let now = Utc::now();
        if let Err(e) = create_deliveries(&state, &channels, now).await {
            tracing::warn!(error = %e, "cannot create alert deliveries");
        }
        let due = match state.store.due_deliveries(now, 64).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read alert deliveries");
                continue;
            }
        };
        for row in due {
            let id = row.delivery.id.clone();
            if !in_flight
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(id.clone())
            {
                continue;
            }
            let (state, in_flight, client) = (state.clone(), in_flight.clone(), client.clone());
            tokio::spawn(async move {
                if let Err(e) = attempt(&state, &client, row.alert_id, row.delivery).await {
                    tracing::warn!(error = %e, delivery = %id, "alert delivery bookkeeping failed");
                }
                in_flight
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&id);
            });
        }
    }
}

async fn create_deliveries(
    state: &AppState,
    channels: &[String],
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let since = now - RESOLVED_LOOKBACK;
    let missing = state
        .store
        .missing_deliveries(channels, since, now - FLAP_LOOKBACK)
        .await?;
    if missing.is_empty() {
        return Ok(());
    }
    let mut tx = state.store.begin().await?;
    for (alert, channel, event) in missing {
        let d = Delivery {
            id: crate::ids::next().to_string(),
            channel,
            event,
            state: DeliveryState::Pending,
            attempts: 0,
            last_error: None,
            next_attempt_at: None,
            delivered_at: None,
            created_at: now,
        };
        tx.insert_delivery(&alert, &d).await?;
    }
    tx.commit().await
}

/// One attempt of one delivery, and its bookkeeping.
async fn attempt(
    state: &AppState,
    client: &reqwest::Client,
    alert_id: String,
    mut d: Delivery,
) -> Result<(), StoreError> {
    let alert = state.store.get_alert(&alert_id).await?;
    let note = AlertNotification {
        event: d.event.clone(),
        delivery_id: d.id.clone(),
        alert,
    };
    let cfg = &state.config.alerts;
    let outcome: Result<(), String> = if let Some(name) = d.channel.strip_prefix("webhook:") {
        match cfg.webhook.iter().find(|w| w.name == name) {
            Some(w) => {
                let secret = w.secret.as_ref().and_then(|s| state.secrets.get(s));
                webhook::send(client, w, secret.map(String::as_str), &note).await
            }
            None => Err(format!("webhook {name:?} is no longer configured")),
        }
    } else if d.channel == "email" {
        match &cfg.email {
            Some(e) => {
                let password = e.password.as_ref().and_then(|p| state.secrets.get(p));
                email::send(
                    e,
                    password.map(String::as_str),
                    cfg.delivery_timeout.0,
                    &note,
                )
                .await
            }
            None => Err("email is no longer configured".into()),
        }
    } else {
        Err(format!("unknown channel {:?}", d.channel))
    };
    let now = Utc::now();
    d.attempts += 1;
    let channel_kind = if d.channel == "email" {
        "email"
    } else {
        "webhook"
    };
    let result = if outcome.is_ok() {
        "delivered"
    } else {
        "failed"
    };
    metrics::counter!("testfarm_alert_delivery_attempts_total", "channel" => channel_kind, "result" => result)
        .increment(1);
    match outcome {
        Ok(()) => {
            d.state = DeliveryState::Delivered;
            d.delivered_at = Some(now);
            d.next_attempt_at = None;
            d.last_error = None;
        }
        Err(why) => {
            tracing::info!(delivery = %d.id, channel = %d.channel, attempt = d.attempts, error = %why, "alert delivery failed");
            d.last_error = Some(why);
            match cfg.backoff().after(d.attempts) {
                Some(wait) => {
                    d.next_attempt_at = Some(
                        now + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX),
                    );
                }
                None => {
                    d.state = DeliveryState::Undelivered;
                    d.next_attempt_at = None;
                }
            }
        }
    }
    let mut tx = state.store.begin().await?;
    tx.update_delivery(&d).await?;
    if d.state != DeliveryState::Pending {
        tx.record(
            NewEvent::new("alert.delivery", "alert", &alert_id, "alerts").with_data(json!({
                "delivery": d.id, "channel": d.channel, "event": d.event, "state": d.state,
                "attempts": d.attempts, "error": d.last_error,
            })),
        );
    }
    tx.commit().await
}

/// The rule of an alert raised outside the evaluator (board recovery, offline agent).
pub fn condition(
    state_alerts: &crate::config::AlertsSection,
    rule: Rule,
    subject: &str,
    summary: String,
    details: serde_json::Value,
) -> Option<Condition> {
    let s = state_alerts.thresholds().settings(rule);
    (state_alerts.enabled && s.enabled).then(|| Condition {
        rule,
        subject: subject.to_string(),
        severity: s.severity,
        summary,
        details,
    })
}
