//! Alerts against a real SQLite file: one open alert per rule and subject, list filters
//! and pages, counts by severity, and the deliveries an alert still lacks per channel.

use chrono::Utc;
use testfarm_api::alert::{Alert, AlertState, Delivery, DeliveryState, Rule, Severity};
use testfarm_store::Store;
use testfarm_store::alerts::AlertFilter;
use ulid::Ulid;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn alert(n: u64, rule: Rule, subject: &str, severity: Severity) -> Alert {
    let now = Utc::now();
    Alert {
        id: Ulid::from_parts(1_800_000_000_000 + n, u128::from(n)).to_string(),
        rule,
        subject: subject.into(),
        severity,
        state: AlertState::Open,
        summary: format!("{rule} {subject}"),
        details: serde_json::json!({}),
        first_seen: now,
        last_seen: now,
        count: 1,
        acknowledged_at: None,
        acknowledged_by: None,
        resolved_at: None,
        resolved_by: None,
    }
}

#[tokio::test]
async fn one_open_alert_per_key_filters_counts_and_missing_deliveries() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Store::open(&dir.path().join("a.db")).await?;
    let mut tx = store.begin().await?;
    tx.insert_alert(&alert(1, Rule::Unreachable, "r1", Severity::Critical))
        .await?;
    tx.insert_alert(&alert(2, Rule::DiskLow, "r1", Severity::Critical))
        .await?;
    tx.insert_alert(&alert(3, Rule::BuildFailed, "k", Severity::Warning))
        .await?;
    tx.commit().await?;
    // A second open alert for the same rule and subject is refused.
    let mut tx = store.begin().await?;
    let dup = tx
        .insert_alert(&alert(4, Rule::Unreachable, "r1", Severity::Critical))
        .await;
    assert!(dup.is_err());
    drop(tx);

    let counts = store.count_open_alerts().await?;
    assert_eq!(counts.open, 3);
    assert_eq!(counts.by_severity.get(&Severity::Critical), Some(&2));
    let crit = store
        .list_alerts(&AlertFilter {
            severity: Some(Severity::Critical),
            limit: 10,
            ..Default::default()
        })
        .await?;
    assert_eq!(crit.len(), 2);
    assert!(crit[0].id > crit[1].id, "newest first");
    let page = store
        .list_alerts(&AlertFilter {
            before: Some(crit[0].id.clone()),
            limit: 10,
            ..Default::default()
        })
        .await?;
    // Older than the newest critical one (alert 2): alert 1 only.
    assert_eq!(page.len(), 1);

    let channels = vec!["email".to_string()];
    let since = Utc::now() - chrono::Duration::hours(1);
    assert_eq!(
        store
            .missing_deliveries(&channels, since, since)
            .await?
            .len(),
        3
    );
    // Delivered as raised, then resolved: only the resolution is missing.
    let mut tx = store.begin().await?;
    let mut a = tx
        .get_alert(&alert(1, Rule::Unreachable, "r1", Severity::Critical).id)
        .await?;
    tx.insert_delivery(
        &a.id,
        &Delivery {
            id: Ulid::new().to_string(),
            channel: "email".into(),
            event: "raised".into(),
            state: DeliveryState::Delivered,
            attempts: 1,
            last_error: None,
            next_attempt_at: None,
            delivered_at: Some(Utc::now()),
            created_at: Utc::now(),
        },
    )
    .await?;
    a.state = AlertState::Resolved;
    a.resolved_at = Some(Utc::now());
    a.resolved_by = Some("auto".into());
    tx.update_alert(&a).await?;
    // Its key is free again.
    tx.insert_alert(&alert(5, Rule::Unreachable, "r1", Severity::Critical))
        .await?;
    tx.commit().await?;
    let missing = store.missing_deliveries(&channels, since, since).await?;
    assert!(missing.contains(&(a.id.clone(), "email".into(), "resolved".into())));
    assert!(
        !missing
            .iter()
            .any(|(id, _, e)| *id == a.id && e == "raised")
    );
    // Resolved before it was ever sent (a flap): sent as raised, if recent enough.
    let mut tx = store.begin().await?;
    let mut flap = alert(6, Rule::DiskLow, "r9", Severity::Warning);
    tx.insert_alert(&flap).await?;
    flap.state = AlertState::Resolved;
    flap.resolved_at = Some(Utc::now());
    tx.update_alert(&flap).await?;
    tx.commit().await?;
    let missing = store.missing_deliveries(&channels, since, since).await?;
    assert!(missing.contains(&(flap.id.clone(), "email".into(), "raised".into())));
    assert!(
        !missing
            .iter()
            .any(|(id, _, e)| *id == flap.id && e == "resolved")
    );
    let later = Utc::now() + chrono::Duration::minutes(1);
    let missing = store.missing_deliveries(&channels, since, later).await?;
    assert!(
        !missing.iter().any(|(id, _, _)| *id == flap.id),
        "an old flap is not sent"
    );
    assert_eq!(store.alert_deliveries(&a.id).await?.len(), 1);
    assert!(store.due_deliveries(Utc::now(), 10).await?.is_empty());
    Ok(())
}
