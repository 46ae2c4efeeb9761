//! The dashboard's aggregates against a real SQLite file: resources by kind and state,
//! the queue and its oldest wait, utilization per kind from the newest heartbeat, recent
//! jobs by state (old ones left out), what runs where, jobs per resource and maintenance
//! windows.

use chrono::{TimeDelta, Utc};
use testfarm_api::agent::ResourceMetrics;
use testfarm_api::job::{Job, JobState};
use testfarm_core::Role;
use testfarm_core::resource::{MaintenanceWindow, Resource, ResourceKind, ResourceState};
use testfarm_store::Store;
use testfarm_store::jobs::JobRow;
use ulid::Ulid;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn job(state: JobState, on: Option<&Resource>, age: TimeDelta) -> JobRow {
    let at = Utc::now() - age;
    JobRow {
        job: Job {
            id: Ulid::new().to_string(),
            name: "j".into(),
            state,
            priority: 200,
            submitter: "t".into(),
            resource: on.map(|r| r.name.clone()),
            lease_id: None,
            attempt: 1,
            reason: None,
            created_at: at,
            queued_at: at,
            assigned_at: None,
            started_at: on.map(|_| at),
            ended_at: state.is_terminal().then(|| at + TimeDelta::seconds(30)),
            log_bytes: 0,
            spec: serde_json::json!({}),
            vars: serde_json::json!({}),
            steps: Vec::new(),
            estimated_start: None,
        },
        submitter_role: Role::User,
        resource_id: on.map(|r| r.id.to_string()),
        last_report_at: None,
        log_chunks: 0,
        cancel_requested: None,
        avoid_resource: None,
    }
}

fn metrics(name: &str, cpu: f64) -> ResourceMetrics {
    ResourceMetrics {
        resource: name.into(),
        cpu_pct: cpu,
        memory_pct: 50.0,
        disk_pct: 10.0,
        disk_free_gb: 100.0,
        active_compilations: 0,
        running_jobs: 1,
    }
}

#[tokio::test]
async fn overview_aggregates_in_sql() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Store::open(&dir.path().join("d.db")).await?;
    let now = Utc::now();
    let bs1 = Resource::new(Ulid::new(), "bs-1".into(), ResourceKind::BuildServer, now);
    let bs2 = Resource::new(Ulid::new(), "bs-2".into(), ResourceKind::BuildServer, now);
    let mut q1 = Resource::new(Ulid::new(), "q-1".into(), ResourceKind::QemuHost, now);
    q1.state = ResourceState::Maintenance;
    q1.capabilities.cpus = Some(64);
    q1.maintenance = Some(MaintenanceWindow {
        start: Some(now + TimeDelta::hours(2)),
        end: None,
        reason: "disk swap".into(),
    });
    let mut tx = store.begin().await?;
    for r in [&bs1, &bs2, &q1] {
        tx.insert_resource(r).await?;
    }
    // Two heartbeats for bs-1: only the newest counts.
    tx.record_metrics(bs1.id, now - TimeDelta::seconds(10), &metrics("bs-1", 90.0))
        .await?;
    tx.record_metrics(bs1.id, now, &metrics("bs-1", 30.0))
        .await?;
    tx.record_metrics(bs2.id, now, &metrics("bs-2", 50.0))
        .await?;
    tx.insert_job(&job(JobState::Queued, None, TimeDelta::minutes(30)))
        .await?;
    tx.insert_job(&job(JobState::Queued, None, TimeDelta::minutes(5)))
        .await?;
    tx.insert_job(&job(JobState::Running, Some(&bs1), TimeDelta::minutes(1)))
        .await?;
    tx.insert_job(&job(JobState::Passed, Some(&bs1), TimeDelta::hours(2)))
        .await?;
    tx.insert_job(&job(JobState::Failed, Some(&bs2), TimeDelta::hours(3)))
        .await?;
    tx.insert_job(&job(JobState::Passed, Some(&bs2), TimeDelta::hours(30)))
        .await?;
    tx.commit().await?;

    let o = store.dashboard_overview(now - TimeDelta::hours(24)).await?;
    assert_eq!(
        o.resources,
        vec![
            ("build-server".to_string(), "available".to_string(), 2),
            ("qemu-host".to_string(), "maintenance".to_string(), 1),
        ]
    );
    assert_eq!(o.queued, 2);
    let oldest = o.oldest_queued.ok_or("no oldest wait")?;
    assert!((now - oldest) >= TimeDelta::minutes(29), "{oldest}");
    assert_eq!(o.active_leases, 0);
    let bs = &o.utilization[0];
    assert_eq!(
        (bs.kind.as_str(), bs.total, bs.busy),
        ("build-server", 2, 0)
    );
    assert_eq!(bs.cpu_pct, Some(40.0), "the mean of the newest heartbeats");
    assert_eq!(o.utilization[1].cpu_pct, None, "no heartbeat from q-1");
    let recent: u64 = o.jobs_recent.iter().map(|(_, n)| n).sum();
    assert_eq!(
        recent, 5,
        "the job queued 30 h ago is left out: {:?}",
        o.jobs_recent
    );
    assert!(o.jobs_recent.contains(&("passed".into(), 1)));

    let act = store.resource_activity().await?;
    let on_bs1 = act.get(&bs1.id.to_string()).ok_or("bs-1 runs a job")?;
    assert_eq!(on_bs1.jobs.len(), 1);
    assert!(!act.contains_key(&bs2.id.to_string()));

    let jobs = store.jobs_on_resource(&bs2.id.to_string(), 10).await?;
    assert_eq!(jobs.len(), 2);
    assert!(
        jobs.iter().all(|j| j.duration_ms == Some(30_000)),
        "{jobs:?}"
    );

    let w = store.maintenance_windows().await?;
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].name, "q-1");
    assert_eq!(w[0].capabilities.cpus, Some(64));
    assert_eq!(store.build_average("bs-1").await?, (0, None));
    Ok(())
}
