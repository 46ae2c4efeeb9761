//! Placement: which queued job goes where, now, and why the others wait.
//!
//! `place(&Snapshot, &[QueuedJob], &Policies, now) -> Vec<Decision>` is the whole
//! scheduler. The server loads a snapshot, calls it, and for each `Place` acquires a lease
//! and assigns the job in one transaction; `Wait` decisions carry the reasons `why` shows.
//!
//! Jobs are served in [`queue::order`](crate::queue::order) (priority, aging, FIFO); each
//! takes the best resource that can serve it now, by kind:
//!
//! - **board**: exclusive; the least recently used of the matching boards, so wear and
//!   test coverage spread across identical boards.
//! - **qemu-host**: capacity bins in cpus and memory (a VM's share is the job's `cpus`
//!   and `memory`, default 1 cpu and 1 GiB); never above `max_utilisation_pct` (85%) of
//!   cpus or memory, counting both what leases hold and what the host reports it uses;
//!   at most the `max_vms_per_host` policy's VMs; the least utilised host first.
//! - **build-server**: matching toolchain/arch (from the requirements), then the lowest
//!   load (in 10% steps), then the shortest estimated build time there (from history).
//!
//! Any active lease occupies its share until the reaper ends it, even past its effective
//! end: two holders of a board must never overlap, and the reaper runs within seconds.
//!
//! Cost: resources are indexed by kind and name; static matching (labels, capabilities) is
//! computed once per distinct requirement, not per job; and once a requirement has failed
//! to fit in a pass, later jobs with the same requirement, team and share wait without a
//! second search (within one pass resources only fill up). So a pass is about
//! O(distinct requirements × resources + jobs × matching resources).

use std::collections::HashMap;
use std::fmt;
use std::rc::Rc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use ulid::Ulid;

use crate::estimate::Estimator;
use crate::jobspec::{Mismatch, Requirements};
use crate::labels::Labels;
use crate::lease::{Holder, Lease, LeaseState, Share};
use crate::policy::{Policies, Policy, PolicyNote, PolicyRule, ResourcePolicies};
use crate::queue::{QueuedJob, order};
use crate::resource::{HealthStatus, Resource, ResourceKind, ResourceState};

/// A VM's size when the job does not say.
pub const DEFAULT_VM_CPUS: u32 = 1;
pub const DEFAULT_VM_MEMORY_MB: u64 = 1024;

/// A `Wait` lists at most this many blockers (`more` counts the rest); `why` lists all.
pub const MAX_REASONS: usize = 20;

/// What a host last reported about itself (from agent heartbeats), and when it was last
/// used. All optional: an unmeasured value never blocks, it just is not counted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_pct: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_pct: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_pct: Option<f64>,
    /// 1-minute load average divided by cpus (1.0 = every cpu busy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<f64>,
    /// When its last lease ended (for least-recently-used boards).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used: Option<DateTime<Utc>>,
}

/// What the scheduler reads, loaded by the server in one read transaction.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Every resource that is not deleted (retired ones too: `why` names them).
    pub resources: Vec<Resource>,
    /// Active leases (others are ignored).
    pub leases: Vec<Lease>,
    /// Reported usage by resource id.
    pub usage: HashMap<Ulid, Usage>,
    /// Durations of finished jobs, for build-server ranking and `why`'s estimates.
    pub estimator: Estimator,
    /// The jobs holding leases, by job id: when a resource held by one frees up is
    /// estimated from how long such jobs take, not only from its lease's end (a job's
    /// lease lasts its whole timeout, often hours longer than the job).
    pub running: HashMap<Ulid, RunningJob>,
}

/// A job that holds a lease, as far as estimating its end goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningJob {
    pub name: String,
    /// When it started running (or was assigned, if it has not started yet).
    pub since: DateTime<Utc>,
}

impl Snapshot {
    /// When `lease` is expected to end: for a job, its start plus the estimated duration
    /// of such jobs (on this resource if it ran here before), but never before `now`
    /// (an overrunning job may end any moment) nor after the lease's own end; otherwise
    /// the lease's end.
    pub fn expected_end(
        &self,
        lease: &Lease,
        kind: ResourceKind,
        now: DateTime<Utc>,
    ) -> DateTime<Utc> {
        let Holder::Job(job) = &lease.holder else {
            return lease.expires_at;
        };
        let Some(run) = self.running.get(job) else {
            return lease.expires_at;
        };
        let took = self
            .estimator
            .estimate_on(&run.name, lease.resource_id)
            .or_else(|| {
                self.estimator
                    .estimate(&run.name, Some(kind), None)
                    .map(|(d, _)| d)
            });
        match took.and_then(|d| chrono::Duration::from_std(d).ok()) {
            Some(d) => (run.since + d).max(now).min(lease.expires_at),
            None => lease.expires_at,
        }
    }
}

/// Why a resource cannot take a job now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(tag = "class", rename_all = "snake_case")]
pub enum BlockReason {
    /// Held by someone; `until` is when the holder is expected to let go: a job's
    /// estimated end (from the history of such jobs), else its lease's end.
    Busy {
        holder: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until: Option<DateTime<Utc>>,
    },
    Maintenance {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until: Option<DateTime<Utc>>,
        reason: String,
    },
    Offline {
        reasons: Vec<String>,
    },
    Retired,
    Degraded {
        reasons: Vec<String>,
    },
    /// Not enough free cpus or memory left in the host's bin.
    Capacity {
        need_cpus: u32,
        free_cpus: u32,
        need_memory_mb: u64,
        free_memory_mb: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until: Option<DateTime<Utc>>,
    },
    /// The host reports it uses too much of something already.
    Utilisation {
        what: String,
        pct: u32,
        limit_pct: u32,
    },
    /// A capacity the placement needs has not been measured yet.
    Unmeasured {
        what: String,
    },
    Policy {
        policy: String,
        detail: String,
    },
    /// It does not meet the job's requirements (static).
    Mismatch {
        mismatch: Mismatch,
    },
    /// Nothing to consider at all.
    NoResource {
        detail: String,
    },
}

impl BlockReason {
    /// Short class name for grouping in `why` and metrics.
    pub fn class(&self) -> &'static str {
        match self {
            BlockReason::Busy { .. } => "busy",
            BlockReason::Maintenance { .. } => "maintenance",
            BlockReason::Offline { .. } => "offline",
            BlockReason::Retired => "retired",
            BlockReason::Degraded { .. } => "degraded",
            BlockReason::Capacity { .. } => "capacity",
            BlockReason::Utilisation { .. } => "utilisation",
            BlockReason::Unmeasured { .. } => "unmeasured",
            BlockReason::Policy { .. } => "policy",
            BlockReason::Mismatch { .. } => "mismatch",
            BlockReason::NoResource { .. } => "no_resource",
        }
    }

    /// When the blocker is expected to clear, if known.
    pub fn until(&self) -> Option<DateTime<Utc>> {
        match self {
            BlockReason::Busy { until, .. }
            | BlockReason::Maintenance { until, .. }
            | BlockReason::Capacity { until, .. } => *until,
            _ => None,
        }
    }
}

fn fmt_time(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

impl fmt::Display for BlockReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlockReason::Busy { holder, until } => {
                write!(f, "busy: held by {holder}")?;
                if let Some(u) = until {
                    write!(f, " until ~{}", fmt_time(u))?;
                }
                Ok(())
            }
            BlockReason::Maintenance { until, reason } => {
                f.write_str("in maintenance")?;
                if !reason.is_empty() {
                    write!(f, " ({reason})")?;
                }
                if let Some(u) = until {
                    write!(f, " until {}", fmt_time(u))?;
                }
                Ok(())
            }
            BlockReason::Offline { reasons } => {
                f.write_str("offline")?;
                if !reasons.is_empty() {
                    write!(f, " ({})", reasons.join("; "))?;
                }
                Ok(())
            }
            BlockReason::Retired => f.write_str("retired"),
            BlockReason::Degraded { reasons } => {
                f.write_str("degraded")?;
                if !reasons.is_empty() {
                    write!(f, " ({})", reasons.join("; "))?;
                }
                Ok(())
            }
            BlockReason::Capacity {
                need_cpus,
                free_cpus,
                need_memory_mb,
                free_memory_mb,
                until,
            } => {
                write!(
                    f,
                    "not enough room: needs {need_cpus} cpus and {}, {free_cpus} cpus and {} free",
                    crate::size::format_mib(*need_memory_mb),
                    crate::size::format_mib(*free_memory_mb)
                )?;
                if let Some(u) = until {
                    write!(f, " (a share frees ~{})", fmt_time(u))?;
                }
                Ok(())
            }
            BlockReason::Utilisation {
                what,
                pct,
                limit_pct,
            } => write!(f, "{what} would be at {pct}%, above the {limit_pct}% limit"),
            BlockReason::Unmeasured { what } => write!(f, "its {what} has not been measured"),
            BlockReason::Policy { policy, detail } => write!(f, "policy {policy}: {detail}"),
            BlockReason::Mismatch { mismatch } => write!(f, "{mismatch}"),
            BlockReason::NoResource { detail } => f.write_str(detail),
        }
    }
}

/// One resource's reason, or a reason not tied to one resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct Blocker {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schema(value_type = Option<String>))]
    pub resource: Option<Ulid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_name: Option<String>,
    #[serde(flatten)]
    pub reason: BlockReason,
}

impl fmt::Display for Blocker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.resource_name {
            Some(n) => write!(f, "{n}: {}", self.reason),
            None => write!(f, "{}", self.reason),
        }
    }
}

/// The scheduler's verdict on one queued job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    /// Lease `share` of `resource` to the job and assign it.
    Place {
        #[cfg_attr(feature = "schema", schema(value_type = String))]
        job: Ulid,
        #[cfg_attr(feature = "schema", schema(value_type = String))]
        resource: Ulid,
        share: Share,
        /// What policies had to say (recorded with the assignment event).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        notes: Vec<PolicyNote>,
    },
    /// Stays queued, for these reasons (at most [`MAX_REASONS`]; `more` are left out).
    Wait {
        #[cfg_attr(feature = "schema", schema(value_type = String))]
        job: Ulid,
        reasons: Vec<Blocker>,
        #[serde(default)]
        more: usize,
    },
    /// Needs no resource (only http/wait_for/sleep steps): the server runs it.
    RunOnServer {
        #[cfg_attr(feature = "schema", schema(value_type = String))]
        job: Ulid,
    },
}

impl Decision {
    pub fn job(&self) -> Ulid {
        match self {
            Decision::Place { job, .. }
            | Decision::Wait { job, .. }
            | Decision::RunOnServer { job } => *job,
        }
    }
}

/// The share a job takes on a resource of `kind`.
pub fn share_for(req: &Requirements, kind: ResourceKind) -> Share {
    match kind {
        ResourceKind::Board => Share::Whole,
        ResourceKind::QemuHost => Share::Slice {
            cpus: req.cpus.unwrap_or(DEFAULT_VM_CPUS),
            memory_mb: req.memory_mb.unwrap_or(DEFAULT_VM_MEMORY_MB),
        },
        ResourceKind::BuildServer => Share::Slice {
            cpus: req.cpus.unwrap_or(1),
            memory_mb: req.memory_mb.unwrap_or(0),
        },
    }
}

/// The scheduler pass. Decisions come in serving order; every job in `queue` gets one.
pub fn place(
    snapshot: &Snapshot,
    queue: &[QueuedJob],
    policies: &Policies,
    now: DateTime<Utc>,
) -> Vec<Decision> {
    let mut engine = Engine::new(snapshot, policies, now);
    order(queue, policies, now)
        .into_iter()
        .map(|(i, _)| engine.decide(&queue[i]))
        .collect()
}

/// Who holds a whole resource.
#[derive(Debug, Clone)]
struct Hold {
    holder: String,
    until: Option<DateTime<Utc>>,
}

/// A resource plus what this pass knows and has done to it.
#[derive(Debug, Clone)]
pub(crate) struct Slot<'a> {
    pub(crate) r: &'a Resource,
    pub(crate) labels: Labels,
    pol: ResourcePolicies,
    whole: Option<Hold>,
    slices: u32,
    used_cpus: u32,
    used_memory_mb: u64,
    /// The earliest end of a slice lease (when room frees up).
    first_free: Option<DateTime<Utc>>,
    usage: Usage,
}

/// Static matching of one distinct requirement.
#[derive(Debug)]
struct StaticMatch {
    matches: Vec<usize>,
    /// When nothing matches: why, per resource (capped), and how many more.
    misses: Vec<Blocker>,
    more: usize,
}

type FailKey = (String, Option<String>, Share);

pub(crate) struct Engine<'a> {
    pub(crate) slots: Vec<Slot<'a>>,
    by_kind: [Vec<usize>; 3],
    by_name: HashMap<&'a str, usize>,
    ordered: Vec<&'a Policy>,
    policies: &'a Policies,
    group_active: Vec<u32>,
    statics: HashMap<String, Rc<StaticMatch>>,
    failed: HashMap<FailKey, (Vec<Blocker>, usize)>,
    estimator: &'a Estimator,
    now: DateTime<Utc>,
}

fn kind_index(k: ResourceKind) -> usize {
    match k {
        ResourceKind::BuildServer => 0,
        ResourceKind::QemuHost => 1,
        ResourceKind::Board => 2,
    }
}

fn holder_text(h: &Holder) -> String {
    h.to_string()
}

fn pct(used: u64, total: u64) -> u32 {
    if total == 0 {
        return 100;
    }
    u32::try_from(used.saturating_mul(100).div_ceil(total)).unwrap_or(u32::MAX)
}

/// The order among feasible resources: lower is better, then name.
type Score = (u64, u64);

impl<'a> Engine<'a> {
    pub(crate) fn new(snapshot: &'a Snapshot, policies: &'a Policies, now: DateTime<Utc>) -> Self {
        let ordered = policies.ordered();
        let mut slots: Vec<Slot<'a>> = Vec::with_capacity(snapshot.resources.len());
        let mut by_kind: [Vec<usize>; 3] = Default::default();
        let mut by_name = HashMap::with_capacity(snapshot.resources.len());
        let mut by_id: HashMap<Ulid, usize> = HashMap::with_capacity(snapshot.resources.len());
        for r in &snapshot.resources {
            let labels = r.selector_labels();
            let pol = policies.for_resource(&ordered, r, &labels);
            let i = slots.len();
            by_kind[kind_index(r.kind)].push(i);
            by_name.insert(r.name.as_str(), i);
            by_id.insert(r.id, i);
            slots.push(Slot {
                r,
                labels,
                pol,
                whole: None,
                slices: 0,
                used_cpus: 0,
                used_memory_mb: 0,
                first_free: None,
                usage: snapshot.usage.get(&r.id).cloned().unwrap_or_default(),
            });
        }
        let mut group_active = vec![0u32; ordered.len()];
        for l in &snapshot.leases {
            if l.state != LeaseState::Active {
                continue;
            }
            let Some(&i) = by_id.get(&l.resource_id) else {
                continue;
            };
            let s = &mut slots[i];
            let ends = snapshot.expected_end(l, s.r.kind, now);
            match l.share {
                Share::Whole => {
                    s.whole = Some(Hold {
                        holder: holder_text(&l.holder),
                        until: Some(ends),
                    });
                }
                Share::Slice { cpus, memory_mb } => {
                    s.slices += 1;
                    s.used_cpus = s.used_cpus.saturating_add(cpus);
                    s.used_memory_mb = s.used_memory_mb.saturating_add(memory_mb);
                    s.first_free = Some(s.first_free.map_or(ends, |f| f.min(ends)));
                }
            }
            for &p in &s.pol.max_concurrent {
                group_active[p] += 1;
            }
        }
        Engine {
            slots,
            by_kind,
            by_name,
            ordered,
            policies,
            group_active,
            statics: HashMap::new(),
            failed: HashMap::new(),
            estimator: &snapshot.estimator,
            now,
        }
    }

    fn blocker(&self, i: usize, reason: BlockReason) -> Blocker {
        let r = self.slots[i].r;
        Blocker {
            resource: Some(r.id),
            resource_name: Some(r.name.clone()),
            reason,
        }
    }

    /// The resources to consider for `req`, before static matching.
    fn universe(&self, req: &Requirements) -> Vec<usize> {
        if let Some(name) = &req.resource {
            return self
                .by_name
                .get(name.as_str())
                .copied()
                .into_iter()
                .collect();
        }
        match req.kind {
            Some(k) => self.by_kind[kind_index(k)].clone(),
            None => Vec::new(),
        }
    }

    fn static_match(&mut self, req: &Requirements) -> Rc<StaticMatch> {
        let key = req.key();
        if let Some(m) = self.statics.get(&key) {
            return Rc::clone(m);
        }
        let universe = self.universe(req);
        let mut matches = Vec::new();
        let mut misses = Vec::new();
        let mut more = 0;
        for &i in &universe {
            let s = &self.slots[i];
            if req.fits(s.r, &s.labels) {
                matches.push(i);
            }
        }
        if matches.is_empty() {
            for &i in &universe {
                let s = &self.slots[i];
                for m in req.mismatches(s.r, &s.labels) {
                    if misses.len() < MAX_REASONS {
                        misses.push(self.blocker(i, BlockReason::Mismatch { mismatch: m }));
                    } else {
                        more += 1;
                    }
                }
            }
            if universe.is_empty() {
                let detail = match (&req.resource, req.kind) {
                    (Some(name), _) => format!("no resource is named {name}"),
                    (None, Some(k)) => format!("no {k} is registered"),
                    (None, None) => "the job needs no resource".to_string(),
                };
                misses.push(Blocker {
                    resource: None,
                    resource_name: None,
                    reason: BlockReason::NoResource { detail },
                });
            }
        }
        let m = Rc::new(StaticMatch {
            matches,
            misses,
            more,
        });
        self.statics.insert(key, Rc::clone(&m));
        m
    }

    /// Whether slot `i` can take `job` with `share` now: its score, or the first reason
    /// it cannot, in this order: state, health, policies (in priority order), room.
    pub(crate) fn check(
        &self,
        i: usize,
        job: &QueuedJob,
        share: Share,
    ) -> Result<Score, BlockReason> {
        let s = &self.slots[i];
        let r = s.r;
        match r.state {
            ResourceState::Retired => return Err(BlockReason::Retired),
            ResourceState::Maintenance => {
                let (until, reason) = r
                    .maintenance
                    .as_ref()
                    .map(|m| (m.end, m.reason.clone()))
                    .unwrap_or_default();
                return Err(BlockReason::Maintenance { until, reason });
            }
            ResourceState::Offline => {
                return Err(BlockReason::Offline {
                    reasons: r.health.reasons.clone(),
                });
            }
            ResourceState::Available | ResourceState::Leased => {}
        }
        match r.health.status {
            HealthStatus::Offline => {
                return Err(BlockReason::Offline {
                    reasons: r.health.reasons.clone(),
                });
            }
            HealthStatus::Degraded if !self.policies.place_on_degraded => {
                return Err(BlockReason::Degraded {
                    reasons: r.health.reasons.clone(),
                });
            }
            _ => {}
        }
        if let Some((p, team)) = &s.pol.reserved
            && job.team.as_deref() != Some(team.as_str())
        {
            return Err(BlockReason::Policy {
                policy: self.ordered[*p].name.clone(),
                detail: format!("reserved for team {team}"),
            });
        }
        for &p in &s.pol.max_concurrent {
            if let PolicyRule::MaxConcurrent { group, max } = &self.ordered[p].rule
                && self.group_active[p] >= *max
            {
                return Err(BlockReason::Policy {
                    policy: self.ordered[p].name.clone(),
                    detail: format!(
                        "{} of at most {max} jobs already run in group {group}",
                        self.group_active[p]
                    ),
                });
            }
        }
        if let Some(h) = &s.whole {
            return Err(BlockReason::Busy {
                holder: h.holder.clone(),
                until: h.until,
            });
        }
        match r.kind {
            ResourceKind::Board => {
                if s.slices > 0 {
                    return Err(BlockReason::Busy {
                        holder: format!("{} share(s)", s.slices),
                        until: s.first_free,
                    });
                }
                let last = s
                    .usage
                    .last_used
                    .map_or(0, |t| u64::try_from(t.timestamp_millis()).unwrap_or(0) + 1);
                Ok((last, 0))
            }
            ResourceKind::QemuHost => self.check_qemu(s, share),
            ResourceKind::BuildServer => self.check_build(s, job, share),
        }
    }

    fn totals(s: &Slot<'_>) -> Result<(u32, u64), BlockReason> {
        let cpus =
            s.r.capabilities
                .cpus
                .ok_or_else(|| BlockReason::Unmeasured {
                    what: "cpu count".into(),
                })?;
        let mem =
            s.r.capabilities
                .memory_mb
                .ok_or_else(|| BlockReason::Unmeasured {
                    what: "memory".into(),
                })?;
        Ok((cpus, mem))
    }

    fn check_qemu(&self, s: &Slot<'_>, share: Share) -> Result<Score, BlockReason> {
        if share == Share::Whole {
            if s.slices > 0 {
                return Err(BlockReason::Busy {
                    holder: format!("{} VM(s)", s.slices),
                    until: s.first_free,
                });
            }
            return Ok((0, 0));
        }
        if let Some((p, max)) = s.pol.vm_limit
            && s.slices >= max
        {
            return Err(BlockReason::Policy {
                policy: self.ordered[p].name.clone(),
                detail: format!("{} of at most {max} VMs already run on this host", s.slices),
            });
        }
        let (cpus, mem) = Self::totals(s)?;
        let limit = self.policies.max_utilisation_pct;
        let need_cpus = share.cpus();
        let need_mem = share.memory_mb();
        let cpu_after = u64::from(s.used_cpus) + u64::from(need_cpus);
        let mem_after = s.used_memory_mb.saturating_add(need_mem);
        let cap_cpus = u64::from(cpus) * u64::from(limit) / 100;
        let cap_mem = mem.saturating_mul(u64::from(limit)) / 100;
        if cpu_after > cap_cpus || mem_after > cap_mem {
            return Err(BlockReason::Capacity {
                need_cpus,
                free_cpus: u32::try_from(cap_cpus.saturating_sub(u64::from(s.used_cpus)))
                    .unwrap_or(u32::MAX),
                need_memory_mb: need_mem,
                free_memory_mb: cap_mem.saturating_sub(s.used_memory_mb),
                until: s.first_free,
            });
        }
        // What the host reports already includes the VMs it runs; the new VM adds its share.
        let add_cpu = f64::from(need_cpus) * 100.0 / f64::from(cpus.max(1));
        let add_mem = need_mem as f64 * 100.0 / (mem.max(1) as f64);
        let mut worst = pct(cpu_after, u64::from(cpus)).max(pct(mem_after, mem));
        for (what, reported, add) in [
            ("cpu", s.usage.cpu_pct, add_cpu),
            ("memory", s.usage.memory_pct, add_mem),
            ("disk", s.usage.disk_pct, 0.0),
        ] {
            if let Some(rep) = reported.filter(|v| v.is_finite()) {
                let after = (rep + add).max(0.0);
                let after_pct = after.ceil().min(f64::from(u32::MAX)) as u32;
                // At 100% the limit is off for reported use: a shared machine (CI, a
                // developer's) is often at 100% CPU from other work, and leases alone
                // then keep VMs within the host's cpus and memory.
                if limit < 100 && after_pct > limit {
                    return Err(BlockReason::Utilisation {
                        what: what.into(),
                        pct: after_pct,
                        limit_pct: limit,
                    });
                }
                worst = worst.max(after_pct);
            }
        }
        Ok((u64::from(worst), 0))
    }

    fn check_build(
        &self,
        s: &Slot<'_>,
        job: &QueuedJob,
        share: Share,
    ) -> Result<Score, BlockReason> {
        let (cpus, mem) = Self::totals(s)?;
        if share == Share::Whole {
            if s.slices > 0 {
                return Err(BlockReason::Busy {
                    holder: format!("{} job(s)", s.slices),
                    until: s.first_free,
                });
            }
            return Ok((0, 0));
        }
        let need_cpus = share.cpus();
        let need_mem = share.memory_mb();
        let cpu_after = s.used_cpus.saturating_add(need_cpus);
        let mem_after = s.used_memory_mb.saturating_add(need_mem);
        if cpu_after > cpus || mem_after > mem {
            return Err(BlockReason::Capacity {
                need_cpus,
                free_cpus: cpus.saturating_sub(s.used_cpus),
                need_memory_mb: need_mem,
                free_memory_mb: mem.saturating_sub(s.used_memory_mb),
                until: s.first_free,
            });
        }
        let allocated = f64::from(s.used_cpus) / f64::from(cpus.max(1));
        let load = s
            .usage
            .load
            .filter(|l| l.is_finite())
            .unwrap_or(0.0)
            .max(allocated);
        let estimate = self.estimator.estimate_on(&job.name, s.r.id);
        Ok(crate::build::auto_score(load, estimate))
    }

    fn notes(&self, i: usize, job: &QueuedJob) -> Vec<PolicyNote> {
        let s = &self.slots[i];
        let mut notes = Vec::new();
        let (_, cap) = self.policies.cap_priority(job.priority, job.role);
        notes.extend(cap);
        if let Some((p, team)) = &s.pol.reserved {
            notes.push(PolicyNote {
                policy: self.ordered[*p].name.clone(),
                note: format!("{} is reserved for team {team}, the job's team", s.r.name),
            });
        }
        for &p in &s.pol.max_concurrent {
            if let PolicyRule::MaxConcurrent { group, max } = &self.ordered[p].rule {
                notes.push(PolicyNote {
                    policy: self.ordered[p].name.clone(),
                    note: format!(
                        "{} of at most {max} in group {group}",
                        self.group_active[p] + 1
                    ),
                });
            }
        }
        if s.r.kind == ResourceKind::QemuHost
            && let Some((p, max)) = s.pol.vm_limit
        {
            notes.push(PolicyNote {
                policy: self.ordered[p].name.clone(),
                note: format!("VM {} of at most {max} on {}", s.slices + 1, s.r.name),
            });
        }
        notes
    }

    /// Records a placement so later jobs in the pass see the room it took.
    fn take(&mut self, i: usize, job: &QueuedJob, share: Share) {
        let pol = self.slots[i].pol.max_concurrent.clone();
        for p in pol {
            self.group_active[p] += 1;
        }
        let s = &mut self.slots[i];
        match share {
            Share::Whole => {
                s.whole = Some(Hold {
                    holder: format!("job {} ({}, placed ahead in this pass)", job.id, job.name),
                    until: None,
                });
            }
            Share::Slice { cpus, memory_mb } => {
                s.slices += 1;
                s.used_cpus = s.used_cpus.saturating_add(cpus);
                s.used_memory_mb = s.used_memory_mb.saturating_add(memory_mb);
            }
        }
    }

    /// The share `job` takes on slot `i`. A pinned job without a kind takes the pinned
    /// resource's kind of share.
    pub(crate) fn share_on(&self, i: usize, job: &QueuedJob) -> Share {
        share_for(&job.requirements, self.slots[i].r.kind)
    }

    /// Decides one job and, when placed, takes its room.
    pub(crate) fn decide(&mut self, job: &QueuedJob) -> Decision {
        let req = &job.requirements;
        if !req.needs_resource() {
            return Decision::RunOnServer { job: job.id };
        }
        let stat = self.static_match(req);
        if stat.matches.is_empty() {
            return Decision::Wait {
                job: job.id,
                reasons: stat.misses.clone(),
                more: stat.more,
            };
        }
        let share = self.share_on(stat.matches[0], job);
        let fail_key: FailKey = (req.key(), job.team.clone(), share);
        if let Some((reasons, more)) = self.failed.get(&fail_key) {
            return Decision::Wait {
                job: job.id,
                reasons: reasons.clone(),
                more: *more,
            };
        }
        // A retry after a lab error prefers any other resource to the one it erred on.
        let mut best: Option<((bool, Score), &str, usize)> = None;
        let mut reasons = Vec::new();
        let mut more = 0;
        for &i in &stat.matches {
            match self.check(i, job, share) {
                Ok(score) => {
                    let name = self.slots[i].r.name.as_str();
                    let score = (job.avoid == Some(self.slots[i].r.id), score);
                    if best.is_none_or(|(bs, bn, _)| (score, name) < (bs, bn)) {
                        best = Some((score, name, i));
                    }
                }
                Err(reason) => {
                    if best.is_none() {
                        if reasons.len() < MAX_REASONS {
                            reasons.push(self.blocker(i, reason));
                        } else {
                            more += 1;
                        }
                    }
                }
            }
        }
        match best {
            Some((_, _, i)) => {
                let notes = self.notes(i, job);
                self.take(i, job, share);
                Decision::Place {
                    job: job.id,
                    resource: self.slots[i].r.id,
                    share,
                    notes,
                }
            }
            None => {
                self.failed.insert(fail_key, (reasons.clone(), more));
                Decision::Wait {
                    job: job.id,
                    reasons,
                    more,
                }
            }
        }
    }

    /// Every resource of the job's kind with its state for this job: matches or not, and
    /// the first reason it cannot take it now (`None`: it could). For `why`.
    pub(crate) fn explain(
        &mut self,
        job: &QueuedJob,
    ) -> Vec<(usize, Vec<Mismatch>, Option<BlockReason>)> {
        let req = &job.requirements;
        let universe = self.universe(req);
        universe
            .into_iter()
            .map(|i| {
                let s = &self.slots[i];
                let mism = req.mismatches(s.r, &s.labels);
                let block = if mism.is_empty() {
                    let share = self.share_on(i, job);
                    self.check(i, job, share).err()
                } else {
                    None
                };
                (i, mism, block)
            })
            .collect()
    }

    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.now
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::lease::{LeaseRequest, acquire};
    use crate::policy::Policy;
    use crate::priority::Priority;
    use crate::resource::{HealthStatus, MaintenanceWindow};
    use crate::role::Role;
    use crate::selector::Selector;
    use std::collections::BTreeMap;
    use std::time::Duration;

    pub(crate) fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-23T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    pub(crate) fn res(n: u128, name: &str, kind: ResourceKind) -> Resource {
        let mut r = Resource::new(Ulid(n), name.into(), kind, t0());
        r.capabilities.arch = Some("arm64".into());
        r.capabilities.cpus = Some(8);
        r.capabilities.memory_mb = Some(8192);
        r
    }

    pub(crate) fn qjob(n: u64, kind: ResourceKind) -> QueuedJob {
        QueuedJob {
            id: Ulid::from_parts(n, 0),
            name: format!("job-{n}"),
            requirements: Requirements {
                kind: Some(kind),
                ..Requirements::default()
            },
            priority: Priority::NORMAL,
            queued_at: t0() - chrono::Duration::seconds(i64::try_from(1000 - n).unwrap()),
            submitter: "ann".into(),
            role: Role::User,
            team: None,
            timeout: None,
            queue_timeout: None,
            avoid: None,
        }
    }

    pub(crate) fn lease_on(r: &Resource, holder: u64, share: Share) -> Lease {
        acquire(
            LeaseRequest {
                id: Ulid::from_parts(holder, 9),
                resource_id: r.id,
                resource_last_epoch: 0,
                holder: Holder::Job(Ulid::from_parts(holder, 0)),
                share,
                duration: Duration::from_secs(600),
                heartbeat_ttl: Duration::from_secs(30),
            },
            t0(),
        )
        .unwrap()
    }

    fn placed(d: &Decision) -> Option<Ulid> {
        match d {
            Decision::Place { resource, .. } => Some(*resource),
            _ => None,
        }
    }

    #[test]
    fn a_retry_after_a_lab_error_prefers_another_board_but_takes_the_only_one() {
        let a = res(1, "rpi-a", ResourceKind::Board);
        let b = res(2, "rpi-b", ResourceKind::Board);
        let snap = Snapshot {
            resources: vec![a.clone(), b.clone()],
            ..Snapshot::default()
        };
        let mut job = qjob(1, ResourceKind::Board);
        // Without the rule rpi-a (first by name, never used) would be chosen.
        assert_eq!(
            placed(
                &place(
                    &snap,
                    std::slice::from_ref(&job),
                    &Policies::default(),
                    t0()
                )[0]
            ),
            Some(a.id)
        );
        job.avoid = Some(a.id);
        assert_eq!(
            placed(
                &place(
                    &snap,
                    std::slice::from_ref(&job),
                    &Policies::default(),
                    t0()
                )[0]
            ),
            Some(b.id)
        );
        // The one it erred on is still used when nothing else can take it.
        let only = Snapshot {
            resources: vec![a.clone()],
            ..Snapshot::default()
        };
        assert_eq!(
            placed(&place(&only, &[job], &Policies::default(), t0())[0]),
            Some(a.id)
        );
    }

    #[test]
    fn boards_exclusive_least_recently_used() {
        let a = res(1, "rpi-a", ResourceKind::Board);
        let b = res(2, "rpi-b", ResourceKind::Board);
        let c = res(3, "rpi-c", ResourceKind::Board);
        let mut snap = Snapshot {
            resources: vec![a.clone(), b.clone(), c.clone()],
            ..Snapshot::default()
        };
        snap.usage.insert(
            a.id,
            Usage {
                last_used: Some(t0() - chrono::Duration::minutes(5)),
                ..Usage::default()
            },
        );
        snap.usage.insert(
            b.id,
            Usage {
                last_used: Some(t0() - chrono::Duration::hours(5)),
                ..Usage::default()
            },
        );
        snap.leases.push(lease_on(&c, 77, Share::Whole));
        let jobs: Vec<QueuedJob> = (1..=3).map(|n| qjob(n, ResourceKind::Board)).collect();
        let d = place(&snap, &jobs, &Policies::default(), t0());
        assert_eq!(placed(&d[0]), Some(b.id), "least recently used first");
        assert_eq!(placed(&d[1]), Some(a.id));
        match &d[2] {
            Decision::Wait { reasons, .. } => {
                assert_eq!(reasons.len(), 3, "{reasons:?}");
                assert!(reasons.iter().any(|b| b.resource == Some(c.id)
                    && matches!(&b.reason, BlockReason::Busy { until: Some(_), .. })));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn qemu_capacity_85_percent_and_least_utilised() {
        let h1 = res(1, "qemu-1", ResourceKind::QemuHost); // 8 cpus: 85% = 6 cpus
        let h2 = res(2, "qemu-2", ResourceKind::QemuHost);
        let mut snap = Snapshot {
            resources: vec![h1.clone(), h2.clone()],
            ..Snapshot::default()
        };
        snap.leases.push(lease_on(
            &h1,
            50,
            Share::Slice {
                cpus: 2,
                memory_mb: 1024,
            },
        ));
        let mut jobs: Vec<QueuedJob> = (1..=5).map(|n| qjob(n, ResourceKind::QemuHost)).collect();
        for j in &mut jobs {
            j.requirements.cpus = Some(2);
        }
        let d = place(&snap, &jobs, &Policies::default(), t0());
        // qemu-2 is emptier: it gets the first; then they alternate by utilisation.
        assert_eq!(placed(&d[0]), Some(h2.id));
        let on = |id| d.iter().filter(|x| placed(x) == Some(id)).count();
        // 6 cpus per host at most: h1 has 2 used → 2 more VMs; h2 → 3 VMs.
        assert_eq!(on(h1.id), 2);
        assert_eq!(on(h2.id), 3);
        // Reported utilisation blocks too.
        snap.leases.clear();
        snap.usage.insert(
            h1.id,
            Usage {
                memory_pct: Some(90.0),
                ..Usage::default()
            },
        );
        snap.usage.insert(
            h2.id,
            Usage {
                cpu_pct: Some(70.0),
                ..Usage::default()
            },
        );
        let d = place(&snap, &jobs[..1], &Policies::default(), t0());
        match &d[0] {
            Decision::Wait { reasons, .. } => {
                assert!(
                    reasons.iter().all(|b| b.reason.class() == "utilisation"),
                    "{reasons:?}"
                );
            }
            other => panic!("{other:?}"),
        }
        // A 100% limit leaves reported use out: only leases count.
        let all = Policies {
            max_utilisation_pct: 100,
            ..Policies::default()
        };
        assert!(placed(&place(&snap, &jobs[..1], &all, t0())[0]).is_some());
    }

    #[test]
    fn vm_limit_policy() {
        let h = res(1, "qemu-1", ResourceKind::QemuHost);
        let snap = Snapshot {
            resources: vec![h.clone()],
            ..Snapshot::default()
        };
        let policies = Policies {
            policies: vec![Policy {
                name: "two-vms".into(),
                priority: 0,
                rule: PolicyRule::MaxVmsPerHost {
                    group: None,
                    max: 2,
                },
            }],
            ..Policies::default()
        };
        let jobs: Vec<QueuedJob> = (1..=3).map(|n| qjob(n, ResourceKind::QemuHost)).collect();
        let d = place(&snap, &jobs, &policies, t0());
        assert!(placed(&d[0]).is_some() && placed(&d[1]).is_some());
        match &d[1] {
            Decision::Place { notes, .. } => assert!(notes[0].note.contains("VM 2 of at most 2")),
            other => panic!("{other:?}"),
        }
        match &d[2] {
            Decision::Wait { reasons, .. } => assert!(
                matches!(&reasons[0].reason, BlockReason::Policy { policy, .. } if policy == "two-vms")
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn build_servers_toolchain_then_load_then_estimate() {
        let mut a = res(1, "build-a", ResourceKind::BuildServer);
        let mut b = res(2, "build-b", ResourceKind::BuildServer);
        let mut c = res(3, "build-c", ResourceKind::BuildServer);
        a.capabilities.toolchains = vec!["gcc-aarch64".into()];
        b.capabilities.toolchains = vec!["gcc-aarch64".into()];
        c.capabilities.toolchains = vec!["gcc-riscv".into()];
        let mut snap = Snapshot {
            resources: vec![a.clone(), b.clone(), c.clone()],
            ..Snapshot::default()
        };
        snap.estimator = Estimator::new(
            &[
                crate::estimate::HistoryEntry {
                    name: "job-1".into(),
                    kind: Some(ResourceKind::BuildServer),
                    resource: Some(a.id),
                    duration: Duration::from_secs(900),
                },
                crate::estimate::HistoryEntry {
                    name: "job-1".into(),
                    kind: Some(ResourceKind::BuildServer),
                    resource: Some(b.id),
                    duration: Duration::from_secs(300),
                },
            ],
            10,
        );
        let mut j = qjob(1, ResourceKind::BuildServer);
        j.requirements.toolchains = vec!["gcc-aarch64".into()];
        let d = place(&snap, std::slice::from_ref(&j), &Policies::default(), t0());
        assert_eq!(placed(&d[0]), Some(b.id), "same load: the faster one");
        snap.usage.insert(
            b.id,
            Usage {
                load: Some(0.9),
                ..Usage::default()
            },
        );
        let d = place(&snap, std::slice::from_ref(&j), &Policies::default(), t0());
        assert_eq!(placed(&d[0]), Some(a.id), "lower load wins over speed");
    }

    #[test]
    fn policies_reserved_and_max_concurrent() {
        let mut a = res(1, "rpi-a", ResourceKind::Board);
        a.labels.insert("pool", "kernel");
        let b = res(2, "rpi-b", ResourceKind::Board);
        let c = res(3, "rpi-c", ResourceKind::Board);
        let mut groups = BTreeMap::new();
        groups.insert(
            "kernel-boards".into(),
            Selector::parse("pool=kernel").unwrap(),
        );
        groups.insert("boards".into(), Selector::parse("kind=board").unwrap());
        let policies = Policies {
            policies: vec![
                Policy {
                    name: "kernel-only".into(),
                    priority: 10,
                    rule: PolicyRule::ReservedFor {
                        group: "kernel-boards".into(),
                        team: "kernel".into(),
                    },
                },
                Policy {
                    name: "two-boards".into(),
                    priority: 5,
                    rule: PolicyRule::MaxConcurrent {
                        group: "boards".into(),
                        max: 2,
                    },
                },
            ],
            groups,
            ..Policies::default()
        };
        let snap = Snapshot {
            resources: vec![a.clone(), b.clone(), c.clone()],
            ..Snapshot::default()
        };
        let jobs: Vec<QueuedJob> = (1..=3).map(|n| qjob(n, ResourceKind::Board)).collect();
        let d = place(&snap, &jobs, &policies, t0());
        assert_eq!(placed(&d[0]), Some(b.id));
        assert_eq!(placed(&d[1]), Some(c.id));
        match &d[2] {
            Decision::Wait { reasons, .. } => {
                let a_reason = reasons.iter().find(|r| r.resource == Some(a.id)).unwrap();
                assert!(
                    matches!(&a_reason.reason, BlockReason::Policy { policy, .. } if policy == "kernel-only")
                );
            }
            other => panic!("{other:?}"),
        }
        let mut k = qjob(1, ResourceKind::Board);
        k.team = Some("kernel".into());
        let d = place(&snap, &[k], &policies, t0());
        assert_eq!(
            placed(&d[0]),
            Some(a.id),
            "the team may use its reserved board"
        );
        let mut k = qjob(1, ResourceKind::Board);
        k.team = Some("kernel".into());
        k.requirements.selector = Selector::parse("pool=kernel").unwrap();
        let d = place(&snap, &[k], &policies, t0());
        match &d[0] {
            Decision::Place {
                resource, notes, ..
            } => {
                assert_eq!(*resource, a.id);
                assert!(notes.iter().any(|n| n.policy == "kernel-only"));
                assert!(notes.iter().any(|n| n.policy == "two-boards"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn state_health_and_mismatch_reasons() {
        let mut m = res(1, "rpi-m", ResourceKind::Board);
        m.maintenance_on(
            MaintenanceWindow {
                start: None,
                end: Some(t0() + chrono::Duration::hours(2)),
                reason: "reflash".into(),
            },
            t0(),
        )
        .unwrap();
        let mut o = res(2, "rpi-o", ResourceKind::Board);
        o.health.status = HealthStatus::Offline;
        o.health.reasons = vec!["agent silent 40s".into()];
        let mut g = res(3, "rpi-g", ResourceKind::Board);
        g.health.status = HealthStatus::Degraded;
        let mut x = res(4, "rpi-x", ResourceKind::Board);
        x.capabilities.arch = Some("riscv64".into());
        let snap = Snapshot {
            resources: vec![m, o, g, x],
            ..Snapshot::default()
        };
        let mut j = qjob(1, ResourceKind::Board);
        j.requirements.arch = Some("arm64".into());
        let d = place(&snap, &[j.clone()], &Policies::default(), t0());
        let Decision::Wait { reasons, .. } = &d[0] else {
            panic!("{d:?}")
        };
        let classes: Vec<&str> = reasons.iter().map(|r| r.reason.class()).collect();
        assert_eq!(classes, vec!["maintenance", "offline", "degraded"]);
        assert!(reasons[0].to_string().contains("reflash"), "{}", reasons[0]);
        // Nothing matching at all: the mismatches are the reasons.
        j.requirements.arch = Some("mips".into());
        let d = place(&snap, &[j], &Policies::default(), t0());
        let Decision::Wait { reasons, .. } = &d[0] else {
            panic!("{d:?}")
        };
        assert!(reasons.iter().all(|r| r.reason.class() == "mismatch"));
        assert_eq!(reasons.len(), 4);
    }

    #[test]
    fn pinned_and_server_jobs() {
        let a = res(1, "rpi-a", ResourceKind::Board);
        let b = res(2, "rpi-b", ResourceKind::Board);
        let snap = Snapshot {
            resources: vec![a, b.clone()],
            ..Snapshot::default()
        };
        let mut j = qjob(1, ResourceKind::Board);
        j.requirements.kind = None;
        j.requirements.resource = Some("rpi-b".into());
        let mut s = qjob(2, ResourceKind::Board);
        s.requirements = Requirements::server();
        let d = place(&snap, &[j, s], &Policies::default(), t0());
        assert_eq!(placed(&d[0]), Some(b.id));
        assert!(matches!(d[1], Decision::RunOnServer { .. }));
    }

    #[test]
    fn serde_of_decisions() {
        let d = Decision::Wait {
            job: Ulid::nil(),
            reasons: vec![Blocker {
                resource: None,
                resource_name: Some("rpi-1".into()),
                reason: BlockReason::Retired,
            }],
            more: 0,
        };
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!(v["decision"], "wait");
        assert_eq!(v["reasons"][0]["class"], "retired");
        let back: Decision = serde_json::from_value(v).unwrap();
        assert_eq!(back, d);
    }
}
