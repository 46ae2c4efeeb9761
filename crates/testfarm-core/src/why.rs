//! `testfarm job why ID`: a waiting job explained in words, from the same rules that
//! decide placement (so the explanation cannot drift from the behaviour).
//!
//! The explanation replays the scheduler's pass for the jobs ahead of this one (they take
//! room first), then looks at every resource of the job's kind: which match, and for each
//! match the first reason it cannot take the job now (busy until ~T, maintenance, offline,
//! policy P, no room). The estimated start is when enough matching resources free up for
//! the competing jobs ahead and then this one, each taking the estimated duration of
//! similar jobs ([`crate::estimate`]); a busy resource frees when its holding job is
//! expected to end (its start plus the estimate, [`Snapshot::expected_end`]), else at its
//! lease's end, an upper bound: hence "~".

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use ulid::Ulid;

use crate::estimate::Basis;
use crate::jobspec::Mismatch;
use crate::placement::{BlockReason, Decision, Engine, Snapshot};
use crate::policy::Policies;
use crate::queue::{QueuedJob, order};
use crate::resource::{ResourceKind, ResourceState};

/// Resources that do not match are listed up to this many.
pub const MAX_NOT_MATCHING: usize = 20;

/// One resource as it stands for the job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct ResourceWhy {
    #[cfg_attr(feature = "schema", schema(value_type = String))]
    pub resource: Ulid,
    pub name: String,
    pub state: ResourceState,
    /// Why it cannot take the job now; `None`: it can.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocker: Option<BlockReason>,
    /// Why it never could (only for resources that do not match).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mismatches: Vec<Mismatch>,
}

/// The explanation, as the API returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct WhyReport {
    #[cfg_attr(feature = "schema", schema(value_type = String))]
    pub job: Ulid,
    pub name: String,
    /// 1-based place in the serving order.
    pub position: usize,
    /// Jobs ahead of it that wait for the same kind of resource with the same needs.
    pub competing_ahead: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ResourceKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned: Option<String>,
    /// Set when the next pass would place it, and where.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placeable_on: Option<String>,
    pub matching: Vec<ResourceWhy>,
    pub not_matching: Vec<ResourceWhy>,
    #[serde(default)]
    pub not_matching_more: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_start: Option<DateTime<Utc>>,
    /// The duration assumed for similar jobs, in seconds, and what it is based on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_duration_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimate_basis: Option<Basis>,
    pub now: DateTime<Utc>,
}

fn add(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| t.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Explains `job` (which should be in `queue`; if not, it is treated as last).
pub fn why(
    job: &QueuedJob,
    queue: &[QueuedJob],
    snapshot: &Snapshot,
    policies: &Policies,
    now: DateTime<Utc>,
) -> WhyReport {
    let mut engine = Engine::new(snapshot, policies, now);
    let key = job.requirements.key();
    let mut position = 1;
    let mut competing_ahead = 0;
    for (i, _) in order(queue, policies, now) {
        let other = &queue[i];
        if other.id == job.id {
            break;
        }
        position += 1;
        let d = engine.decide(other);
        if matches!(d, Decision::Wait { .. }) && other.requirements.key() == key {
            competing_ahead += 1;
        }
    }

    let mut matching = Vec::new();
    let mut not_matching = Vec::new();
    let mut not_matching_more = 0;
    for (i, mismatches, blocker) in engine.explain(job) {
        let r = engine.slots[i].r;
        let entry = ResourceWhy {
            resource: r.id,
            name: r.name.clone(),
            state: r.state,
            blocker,
            mismatches,
        };
        if entry.mismatches.is_empty() {
            matching.push(entry);
        } else if not_matching.len() < MAX_NOT_MATCHING {
            not_matching.push(entry);
        } else {
            not_matching_more += 1;
        }
    }
    let placeable_on = match engine.decide(job) {
        Decision::Place { resource, .. } => snapshot
            .resources
            .iter()
            .find(|r| r.id == resource)
            .map(|r| r.name.clone()),
        _ => None,
    };

    let kind = job.requirements.kind.or_else(|| {
        matching.first().and_then(|m| {
            snapshot
                .resources
                .iter()
                .find(|r| r.id == m.resource)
                .map(|r| r.kind)
        })
    });
    let estimate = snapshot.estimator.estimate(&job.name, kind, job.timeout);
    let estimated_start = if placeable_on.is_some() {
        Some(engine.now())
    } else {
        start_estimate(
            &matching,
            competing_ahead,
            estimate.as_ref().map(|e| e.0),
            now,
        )
    };
    WhyReport {
        job: job.id,
        name: job.name.clone(),
        position,
        competing_ahead,
        kind: job.requirements.kind,
        pinned: job.requirements.resource.clone(),
        placeable_on,
        matching,
        not_matching,
        not_matching_more,
        estimated_start,
        estimated_duration_s: estimate.as_ref().map(|e| e.0.as_secs()),
        estimate_basis: estimate.map(|e| e.1),
        now,
    }
}

/// When the job could start: matching resources free at their blockers' ends (a resource
/// taken by a job ahead in this pass frees after one `duration`); the `ahead` competing
/// jobs take the earliest slots first, each for `duration`. `None` when nothing matching
/// has a known end (offline, policy...) or the duration is unknown while jobs are ahead.
fn start_estimate(
    matching: &[ResourceWhy],
    ahead: usize,
    duration: Option<Duration>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let mut free: BinaryHeap<Reverse<DateTime<Utc>>> = BinaryHeap::new();
    for m in matching {
        let t = match &m.blocker {
            None => Some(now),
            Some(b) => match b.until() {
                Some(u) => Some(u.max(now)),
                None if matches!(b, BlockReason::Busy { .. }) => duration.map(|d| add(now, d)),
                None => None,
            },
        };
        if let Some(t) = t {
            free.push(Reverse(t));
        }
    }
    for _ in 0..ahead {
        let Reverse(t) = free.pop()?;
        free.push(Reverse(add(t, duration?)));
    }
    free.pop().map(|Reverse(t)| t)
}

fn fmt_time(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

fn fmt_wait(from: DateTime<Utc>, to: DateTime<Utc>) -> String {
    let secs = (to - from).num_seconds().max(0);
    let d = Duration::from_secs(u64::try_from(secs).unwrap_or(0));
    crate::duration::format(d)
}

/// The words the CLI prints.
impl fmt::Display for WhyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "job {} ({}) is queued", self.name, self.job)?;
        write!(f, ", number {} in the queue", self.position)?;
        if self.competing_ahead > 0 {
            write!(
                f,
                "; {} job(s) ahead of it wait for the same resources",
                self.competing_ahead
            )?;
        }
        writeln!(f, ".")?;
        if let Some(on) = &self.placeable_on {
            writeln!(
                f,
                "It can start now: the next scheduler pass places it on {on}."
            )?;
        }
        let what = match (&self.pinned, self.kind) {
            (Some(p), _) => format!("the pinned resource {p}"),
            (None, Some(k)) => format!("a {k}"),
            (None, None) => "a resource".to_string(),
        };
        if self.matching.is_empty() {
            writeln!(f, "No resource matches its requirements (it needs {what}).")?;
        } else {
            writeln!(
                f,
                "{} resource(s) match (it needs {what}):",
                self.matching.len()
            )?;
            for m in &self.matching {
                match &m.blocker {
                    None => writeln!(f, "  {}: free", m.name)?,
                    Some(b) => writeln!(f, "  {}: {b}", m.name)?,
                }
            }
        }
        if !self.not_matching.is_empty() {
            writeln!(f, "Not matching:")?;
            for m in &self.not_matching {
                let why: Vec<String> = m.mismatches.iter().map(ToString::to_string).collect();
                writeln!(f, "  {}: {}", m.name, why.join("; "))?;
            }
            if self.not_matching_more > 0 {
                writeln!(f, "  … and {} more", self.not_matching_more)?;
            }
        }
        match self.estimated_start {
            Some(t) if t <= self.now => writeln!(f, "Estimated start: now.")?,
            Some(t) => writeln!(
                f,
                "Estimated start: ~{} (in ~{}).",
                fmt_time(&t),
                fmt_wait(self.now, t)
            )?,
            None => writeln!(
                f,
                "Estimated start: unknown (no matching resource has a known time to free up)."
            )?,
        }
        if let (Some(d), Some(b)) = (self.estimated_duration_s, &self.estimate_basis) {
            let basis = match b {
                Basis::SameName { runs } => format!("median of the last {runs} runs of this job"),
                Basis::SameKind { runs } => {
                    format!("median of the last {runs} jobs on this kind of resource")
                }
                Basis::Timeout => "its timeout; no history yet".to_string(),
            };
            writeln!(
                f,
                "Similar jobs take ~{} ({basis}).",
                crate::duration::format(Duration::from_secs(d))
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::estimate::{Estimator, HistoryEntry};
    use crate::lease::Share;
    use crate::placement::tests::{lease_on, qjob, res, t0};
    use crate::policy::{Policy, PolicyRule};
    use crate::resource::{HealthStatus, MaintenanceWindow};
    use crate::selector::Selector;
    use std::collections::BTreeMap;

    fn history() -> Estimator {
        Estimator::new(
            &[HistoryEntry {
                name: "job-9".into(),
                kind: Some(ResourceKind::Board),
                resource: None,
                duration: Duration::from_secs(1200),
            }],
            10,
        )
    }

    #[test]
    fn busy_board_gives_until_and_estimate() {
        let a = res(1, "rpi-a", ResourceKind::Board);
        let snap = Snapshot {
            leases: vec![lease_on(&a, 50, Share::Whole)],
            resources: vec![a],
            estimator: history(),
            ..Snapshot::default()
        };
        let ahead = qjob(1, ResourceKind::Board);
        let me = qjob(9, ResourceKind::Board);
        let queue = vec![ahead, me.clone()];
        let w = why(&me, &queue, &snap, &Policies::default(), t0());
        assert_eq!(w.position, 2);
        assert_eq!(w.competing_ahead, 1);
        assert!(matches!(
            &w.matching[0].blocker,
            Some(BlockReason::Busy { until: Some(_), .. })
        ));
        // Lease ends at t0+10m; the job ahead takes 20m; then this one.
        assert_eq!(
            w.estimated_start,
            Some(t0() + chrono::Duration::minutes(30))
        );
        let text = w.to_string();
        assert!(text.contains("rpi-a: busy: held by job"), "{text}");
        assert!(text.contains("until ~2026-11-23 12:10 UTC"), "{text}");
        assert!(text.contains("in ~30m"), "{text}");
        assert!(
            text.contains("median of the last 1 runs of this job"),
            "{text}"
        );
        let json = serde_json::to_value(&w).unwrap();
        assert_eq!(json["matching"][0]["blocker"]["class"], "busy");
    }

    #[test]
    fn a_busy_board_frees_when_its_job_is_expected_to_end_not_at_its_lease_end() {
        use crate::placement::RunningJob;
        let a = res(1, "rpi-a", ResourceKind::Board);
        let lease = lease_on(&a, 50, Share::Whole); // ends at t0 + 10m
        let holder = Ulid::from_parts(50, 0);
        let estimator = Estimator::new(
            &[HistoryEntry {
                name: "flash".into(),
                kind: Some(ResourceKind::Board),
                resource: None,
                duration: Duration::from_secs(240),
            }],
            10,
        );
        let snapshot = |since| Snapshot {
            leases: vec![lease.clone()],
            resources: vec![a.clone()],
            estimator: estimator.clone(),
            running: [(
                holder,
                RunningJob {
                    name: "flash".into(),
                    since,
                },
            )]
            .into(),
            ..Snapshot::default()
        };
        let me = qjob(9, ResourceKind::Board);
        // Started a minute ago, such jobs take 4 minutes: free in ~3.
        let w = why(
            &me,
            std::slice::from_ref(&me),
            &snapshot(t0() - chrono::Duration::minutes(1)),
            &Policies::default(),
            t0(),
        );
        let until = w.matching[0].blocker.as_ref().and_then(BlockReason::until);
        assert_eq!(until, Some(t0() + chrono::Duration::minutes(3)));
        assert_eq!(w.estimated_start, Some(t0() + chrono::Duration::minutes(3)));
        // Overrunning its estimate: it may end any moment, not "in the past".
        let w = why(
            &me,
            std::slice::from_ref(&me),
            &snapshot(t0() - chrono::Duration::minutes(30)),
            &Policies::default(),
            t0(),
        );
        let until = w.matching[0].blocker.as_ref().and_then(BlockReason::until);
        assert_eq!(until, Some(t0()));
        // A person's lease (or a job with no history) frees at the lease's end.
        let mut manual = snapshot(t0());
        manual.running.clear();
        let w = why(
            &me,
            std::slice::from_ref(&me),
            &manual,
            &Policies::default(),
            t0(),
        );
        let until = w.matching[0].blocker.as_ref().and_then(BlockReason::until);
        assert_eq!(until, Some(lease.expires_at));
    }

    #[test]
    fn maintenance_offline_policy_and_not_matching() {
        let mut m = res(1, "rpi-m", ResourceKind::Board);
        m.maintenance_on(
            MaintenanceWindow {
                start: None,
                end: Some(t0() + chrono::Duration::hours(1)),
                reason: "new sd card".into(),
            },
            t0(),
        )
        .unwrap();
        let mut o = res(2, "rpi-o", ResourceKind::Board);
        o.health.status = HealthStatus::Offline;
        let mut p = res(3, "rpi-p", ResourceKind::Board);
        p.labels.insert("pool", "kernel");
        let mut x = res(4, "rpi-x", ResourceKind::Board);
        x.capabilities.arch = Some("riscv64".into());
        let mut groups = BTreeMap::new();
        groups.insert("k".into(), Selector::parse("pool=kernel").unwrap());
        let policies = Policies {
            policies: vec![Policy {
                name: "kernel-boards".into(),
                priority: 0,
                rule: PolicyRule::ReservedFor {
                    group: "k".into(),
                    team: "kernel".into(),
                },
            }],
            groups,
            ..Policies::default()
        };
        let snap = Snapshot {
            resources: vec![m, o, p, x],
            ..Snapshot::default()
        };
        let mut me = qjob(9, ResourceKind::Board);
        me.requirements.arch = Some("arm64".into());
        let w = why(&me, std::slice::from_ref(&me), &snap, &policies, t0());
        let classes: Vec<&str> = w
            .matching
            .iter()
            .map(|m| m.blocker.as_ref().map_or("free", |b| b.class()))
            .collect();
        assert_eq!(classes, vec!["maintenance", "offline", "policy"]);
        assert_eq!(w.not_matching.len(), 1);
        assert_eq!(w.placeable_on, None);
        // Only the maintenance window has a known end.
        assert_eq!(w.estimated_start, Some(t0() + chrono::Duration::hours(1)));
        let text = w.to_string();
        assert!(
            text.contains("rpi-m: in maintenance (new sd card)"),
            "{text}"
        );
        assert!(text.contains("rpi-o: offline"), "{text}");
        assert!(
            text.contains("rpi-p: policy kernel-boards: reserved for team kernel"),
            "{text}"
        );
        assert!(
            text.contains("rpi-x: has arch riscv64, the job needs arm64"),
            "{text}"
        );
    }

    #[test]
    fn free_resource_means_now() {
        let a = res(1, "rpi-a", ResourceKind::Board);
        let snap = Snapshot {
            resources: vec![a],
            ..Snapshot::default()
        };
        let me = qjob(9, ResourceKind::Board);
        let w = why(&me, &[], &snap, &Policies::default(), t0());
        assert_eq!(w.placeable_on.as_deref(), Some("rpi-a"));
        assert_eq!(w.estimated_start, Some(t0()));
        assert!(w.to_string().contains("It can start now"));
        // No resource of the kind at all.
        let w = why(&me, &[], &Snapshot::default(), &Policies::default(), t0());
        assert!(w.matching.is_empty());
        assert_eq!(w.estimated_start, None);
        assert!(w.to_string().contains("No resource matches"));
    }
}
