//! The scheduler: a thin shell around `testfarm_core::placement::place`. Each pass loads
//! one snapshot (resources, active leases, reported usage, history, policies, the queue),
//! asks the core for decisions, and writes the placements (lease + assignment + events)
//! in transactions of [`PLACEMENTS_PER_TRANSACTION`], each re-checked (the job still
//! queued, no lease in the way) against what the snapshot saw.
//!
//! It runs when woken (submit, lease end, resource change) and on `scheduler.tick`.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use testfarm_api::job::JobState;
use testfarm_core::Selector;
use testfarm_core::estimate::{DEFAULT_LAST_N, Estimator, HistoryEntry};
use testfarm_core::job::JobEvent;
use testfarm_core::jobspec::JobSpec;
use testfarm_core::lease::{self, Holder, LeaseRequest, Share};
use testfarm_core::placement::{Decision, RunningJob, Snapshot, Usage, place};
use testfarm_core::policy::{Policies, PolicyNote};
use testfarm_core::queue::{QueuedJob, queue_timeouts};
use testfarm_core::resource::ResourceState;
use testfarm_store::NewEvent;
use testfarm_store::jobs::JobRow;
use testfarm_store::resources::ResourceFilter;
use tokio::sync::watch;
use ulid::Ulid;

use crate::lifecycle::{self, LifecycleError};
use crate::state::AppState;

/// How long a wake-up waits for the ones right behind it. A busy lab sends a wake-up
/// per lease released, job ended or resource changed, thousands a second under load;
/// one pass after a short pause serves them all instead of a pass (and a cross-thread
/// wake-up) for each, and delays a placement by no more than this.
const COALESCE: Duration = Duration::from_millis(2);

pub(crate) async fn run(state: AppState, mut stop: watch::Receiver<bool>) {
    let tick = state.config.scheduler.tick.0;
    loop {
        if let Err(e) = pass(&state, Utc::now()).await {
            tracing::warn!(error = %e, "scheduler pass failed");
        }
        let woken = tokio::select! {
            _ = state.wake.notified() => true,
            _ = tokio::time::sleep(tick) => false,
            _ = stop.wait_for(|s| *s) => return,
        };
        if woken {
            // The pass after the pause serves the wake-ups that came during it (they
            // leave `Notify` one permit, so at most one more pass follows).
            tokio::time::sleep(COALESCE).await;
        }
    }
}

/// Queued jobs from which a pass places them off the runtime's worker ([`compute`]).
const LONG_QUEUE: usize = 256;

/// Runs pure CPU work where it does not hold up the runtime's worker: `block_in_place`
/// hands the worker's other tasks to a new thread meanwhile. A current-thread runtime
/// (some tests) cannot do that, so there it runs inline.
fn compute<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// What a pass (or `why`) reads.
pub(crate) struct World {
    pub snapshot: Snapshot,
    pub queue: Vec<QueuedJob>,
    pub policies: Policies,
    /// The queued jobs' rows as read, so a placement need not read its job again
    /// (it re-checks only the state, which is all that changes while a job is queued).
    pub rows: HashMap<Ulid, JobRow>,
}

/// The scheduler's view of a queued job row.
pub(crate) fn queued_job(row: &JobRow) -> Option<QueuedJob> {
    let spec: JobSpec = serde_json::from_value(row.job.spec.clone()).ok()?;
    let priority = testfarm_core::priority::Priority::new(u64::from(row.job.priority)).ok()?;
    Some(QueuedJob {
        id: Ulid::from_string(&row.job.id).ok()?,
        name: row.job.name.clone(),
        requirements: spec.requirements(),
        priority,
        queued_at: row.job.queued_at,
        submitter: row.job.submitter.clone(),
        role: row.submitter_role,
        team: row.job.vars["team"].as_str().map(str::to_string),
        timeout: spec.timeout.map(|t| t.get()),
        queue_timeout: spec.queue_timeout.map(|t| t.get()),
        avoid: row
            .avoid_resource
            .as_deref()
            .and_then(|r| Ulid::from_string(r).ok()),
    })
}

pub(crate) async fn load_world(state: &AppState) -> Result<World, testfarm_store::StoreError> {
    let store = &state.store;
    let mut resources = store.list_resources(&ResourceFilter::default()).await?;
    // Resources whose agent is silent past the lease TTL take no new work, though the
    // health monitor has not called them offline yet (core::liveness).
    let now = Utc::now();
    let awake_since = state.awake.since();
    for r in resources.iter_mut().filter(|r| r.agent.is_some()) {
        let heard = r.last_seen.unwrap_or(r.created_at).max(awake_since);
        if let Some(why) = testfarm_core::liveness::too_silent_for_work(
            heard,
            now,
            state.config.leases.heartbeat_ttl.0,
        ) {
            r.health.status = testfarm_core::resource::HealthStatus::Offline;
            r.health.reasons.insert(0, why);
        }
    }
    let leases = store.active_leases().await?;
    let mut usage: HashMap<Ulid, Usage> = HashMap::new();
    for (id, _, m) in store.latest_metrics().await? {
        usage.insert(
            id,
            Usage {
                cpu_pct: Some(m.cpu_pct),
                memory_pct: Some(m.memory_pct),
                disk_pct: Some(m.disk_pct),
                load: None,
                last_used: None,
            },
        );
    }
    for (id, at) in store.last_lease_ends().await? {
        usage.entry(id).or_default().last_used = Some(at);
    }
    let mut history: Vec<HistoryEntry> = store
        .job_history(2000)
        .await?
        .into_iter()
        .map(|(name, kind, resource, ms)| HistoryEntry {
            name,
            kind: kind.and_then(|k| k.parse().ok()),
            resource: resource.and_then(|r| Ulid::from_string(&r).ok()),
            duration: Duration::from_millis(u64::try_from(ms).unwrap_or(0)),
        })
        .collect();
    history.reverse(); // the estimator wants oldest first
    let mut queue = Vec::new();
    let mut rows = HashMap::new();
    for row in store.jobs_in(&[JobState::Queued]).await? {
        if let Some(q) = queued_job(&row) {
            rows.insert(q.id, row);
            queue.push(q);
        }
    }
    let running = store
        .jobs_in(&[JobState::Assigned, JobState::Running])
        .await?
        .into_iter()
        .filter_map(|row| {
            let id = Ulid::from_string(&row.job.id).ok()?;
            let since = row
                .job
                .started_at
                .or(row.job.assigned_at)
                .unwrap_or(row.job.queued_at);
            Some((
                id,
                RunningJob {
                    name: row.job.name,
                    since,
                },
            ))
        })
        .collect();
    let groups: BTreeMap<String, Selector> = store
        .list_groups()
        .await?
        .into_iter()
        .filter_map(|g| Some((g.name, Selector::parse(&g.selector).ok()?)))
        .collect();
    let policies = Policies {
        policies: store.list_policies().await?,
        groups,
        max_utilisation_pct: state.config.health.max_utilization_pct,
        ..Policies::default()
    };
    Ok(World {
        snapshot: Snapshot {
            resources,
            leases,
            usage,
            estimator: Estimator::new(&history, DEFAULT_LAST_N),
            running,
        },
        queue,
        policies,
        rows,
    })
}

/// One scheduling pass.
pub(crate) async fn pass(state: &AppState, now: DateTime<Utc>) -> Result<(), LifecycleError> {
    // Most wake-ups (a lease released, a resource changed) find nothing queued: answer
    // that with one indexed count instead of loading the whole world.
    if !state.store.any_job_in(JobState::Queued).await? {
        return Ok(());
    }
    let world = load_world(state).await?;
    if world.queue.is_empty() {
        return Ok(());
    }
    for (job, event) in queue_timeouts(&world.queue, now) {
        let mut tx = state.store.begin().await?;
        let mut row = tx.get_job(&job.to_string()).await?;
        if row.job.state != JobState::Queued {
            continue;
        }
        let after =
            lifecycle::apply_job_event(&mut tx, &mut row, event, "scheduler", now, false).await?;
        tx.commit().await?;
        state.after_commit(after);
    }
    // Placing a long queue is pure CPU (tens of ms for 10 000 jobs): off the worker, so
    // a one-thread server keeps answering meanwhile. A short one is quicker inline.
    let decide = || place(&world.snapshot, &world.queue, &world.policies, now);
    let decisions = if world.queue.len() >= LONG_QUEUE {
        compute(decide)
    } else {
        decide()
    };
    let by_id: HashMap<Ulid, (&QueuedJob, &JobRow)> = world
        .queue
        .iter()
        .filter_map(|q| Some((q.id, (q, world.rows.get(&q.id)?))))
        .collect();
    let mut assigned = false;
    let mut placements = Vec::new();
    for d in decisions {
        match d {
            Decision::Place {
                job,
                resource,
                share,
                notes,
            } => {
                if let Some((q, row)) = by_id.get(&job) {
                    placements.push((*q, *row, resource, share, notes));
                }
            }
            Decision::RunOnServer { job } => {
                if let Err(e) = crate::server_jobs::start(state, job, now).await {
                    tracing::warn!(error = %e, %job, "could not start a server-side job");
                }
            }
            Decision::Wait { .. } => {}
        }
    }
    // Placements are written in batches: each is still re-checked and all-or-nothing
    // with its lease and events, but a batch shares one transaction's cost.
    for batch in placements.chunks(PLACEMENTS_PER_TRANSACTION) {
        let mut tx = state.store.begin().await?;
        let mut after = lifecycle::After::default();
        let mut failed = false;
        let mut placed_here = false;
        for (q, row, resource, share, notes) in batch {
            match assign(&mut tx, q, row, *resource, *share, notes, now, state).await {
                Ok(Some(a)) => {
                    after.merge(a);
                    placed_here = true;
                }
                Ok(None) => {}
                Err(e) => {
                    // The transaction is abandoned whole; the next pass retries.
                    tracing::warn!(error = %e, job = %q.id, "assignment failed");
                    failed = true;
                    break;
                }
            }
        }
        if failed {
            continue;
        }
        tx.commit().await?;
        assigned |= placed_here;
        state.after_commit(after);
    }
    if assigned {
        state.work_changed();
    }
    Ok(())
}

/// How many placements share a transaction (and hold the write lock together).
const PLACEMENTS_PER_TRANSACTION: usize = 64;

/// Places one job inside `tx`: a lease on the resource and the assignment. `None` when
/// the world moved since the snapshot (the next pass retries).
#[allow(clippy::too_many_arguments)]
async fn assign(
    tx: &mut testfarm_store::Tx,
    q: &QueuedJob,
    row: &JobRow,
    resource_id: Ulid,
    share: Share,
    notes: &[PolicyNote],
    now: DateTime<Utc>,
    state: &AppState,
) -> Result<Option<lifecycle::After>, LifecycleError> {
    if tx.job_state(&row.job.id).await? != JobState::Queued {
        return Ok(None);
    }
    let mut job = row.clone();
    let resource = tx.get_resource_by_id(&resource_id.to_string()).await?;
    if !resource.accepts_new_work() {
        return Ok(None);
    }
    if tx.share_blocked(resource_id, share).await? {
        return Ok(None);
    }
    let epoch = tx.last_epoch(resource_id).await?;
    let timeout = q
        .timeout
        .unwrap_or(state.config.scheduler.default_job_timeout.0);
    let lease = match lease::acquire(
        LeaseRequest {
            id: crate::ids::next(),
            resource_id,
            resource_last_epoch: epoch,
            holder: Holder::Job(q.id),
            share,
            duration: lease::job_lease_duration(Some(timeout)),
            heartbeat_ttl: state.config.leases.heartbeat_ttl.0,
        },
        now,
    ) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "lease refused");
            return Ok(None);
        }
    };
    // A whole lease (or the first share) takes the resource out of the pool, in the
    // statement that advances its epoch.
    let taken = (resource.state == ResourceState::Available).then_some(ResourceState::Leased);
    tx.insert_lease(&lease, taken).await?;
    job.job.lease_id = Some(lease.id.to_string());
    job.job.resource = Some(resource.name.clone());
    job.resource_id = Some(resource_id.to_string());
    tx.record(
        NewEvent::new("lease.acquired", "lease", lease.id.to_string(), "scheduler").with_data(json!({
            "resource": resource.name, "holder": lease.holder, "epoch": lease.epoch, "share": lease.share,
            "policies": notes,
        })),
    );
    let after = lifecycle::apply_job_event(
        tx,
        &mut job,
        JobEvent::Assign {
            resource: resource_id,
            lease: lease.id,
        },
        "scheduler",
        now,
        false,
    )
    .await?;
    Ok(Some(after))
}
