//! Model-based property test of the scheduling rules.
//!
//! A small in-memory lab (boards and QEMU hosts) driven only through the core's rules —
//! `place`, `lease::acquire`, `Lease::{renew, release, expire}`, `reap`, `JobState::apply`,
//! `on_lab_error`, `queue_timeouts`, `reconcile` — the way the server drives them, under
//! random sequences of submit, place, start, finish, heartbeat, time passing, reaping,
//! resource loss and return, manual leases, cancels and server restarts. After every step:
//!
//! - no board ever has two active leases;
//! - no QEMU host's active shares exceed 85% of its cpus or memory;
//! - policies hold: at most `MAX_BOARDS_BUSY` boards leased at once (`max_concurrent`),
//!   at most `MAX_VMS` VMs per host (`max_vms_per_host`);
//! - epochs strictly grow per resource;
//! - a job holds exactly one active lease while assigned or running, none otherwise;
//! - a job enters a terminal state at most once and never leaves it; at the end, after
//!   cancelling what is left, every job is in exactly one terminal state.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is a failure report

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use proptest::prelude::*;
use testfarm_core::job::{JobEvent, JobState, LabError, on_lab_error};
use testfarm_core::jobspec::Requirements;
use testfarm_core::lease::{
    DEFAULT_HEARTBEAT_TTL, Holder, Lease, LeaseRequest, LeaseState, Share, acquire, reap,
};
use testfarm_core::placement::{Decision, Snapshot, place};
use testfarm_core::policy::{Policies, Policy, PolicyRule};
use testfarm_core::priority::Priority;
use testfarm_core::queue::{QueuedJob, queue_timeouts};
use testfarm_core::reconcile::{JobRecord, reconcile};
use testfarm_core::resource::{Resource, ResourceKind, ResourceState};
use testfarm_core::role::Role;
use testfarm_core::selector::Selector;
use ulid::Ulid;

const BOARDS: usize = 3;
const HOSTS: usize = 2;
const HOST_CPUS: u32 = 8;
const HOST_MEM: u64 = 8192;
const MAX_BOARDS_BUSY: usize = 2;
const MAX_VMS: usize = 3;

fn policies() -> Policies {
    let mut groups = std::collections::BTreeMap::new();
    groups.insert("boards".to_string(), Selector::parse("kind=board").unwrap());
    Policies {
        policies: vec![
            Policy {
                name: "two-boards".into(),
                priority: 10,
                rule: PolicyRule::MaxConcurrent {
                    group: "boards".into(),
                    max: MAX_BOARDS_BUSY as u32,
                },
            },
            Policy {
                name: "three-vms".into(),
                priority: 5,
                rule: PolicyRule::MaxVmsPerHost {
                    group: None,
                    max: MAX_VMS as u32,
                },
            },
        ],
        groups,
        ..Policies::default()
    }
}

#[derive(Debug, Clone)]
enum Op {
    Submit {
        board: bool,
        cpus: u32,
        mem_gb: u64,
        retry: u32,
        queue_timeout: bool,
        priority: u16,
    },
    Place,
    Start(usize),
    Finish(usize, bool),
    Heartbeat(usize),
    Advance(u32),
    Reap,
    Loss(usize),
    Back(usize),
    Restart(u32),
    /// The server stalls (a paused VM, a starved process) for some seconds.
    Stall(u32),
    Cancel(usize),
    QueueTimeout,
    ManualLease(usize),
    ManualRelease(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<bool>(), 1u32..5, 1u64..4, 0u32..3, any::<bool>(), 0u16..500).prop_map(
            |(board, cpus, mem_gb, retry, queue_timeout, priority)| Op::Submit {
                board,
                cpus,
                mem_gb,
                retry,
                queue_timeout,
                priority
            }
        ),
        4 => Just(Op::Place),
        3 => (0usize..64).prop_map(Op::Start),
        3 => (0usize..64, any::<bool>()).prop_map(|(i, p)| Op::Finish(i, p)),
        3 => (0usize..64).prop_map(Op::Heartbeat),
        3 => (1u32..90).prop_map(Op::Advance),
        2 => Just(Op::Reap),
        1 => (0usize..BOARDS + HOSTS).prop_map(Op::Loss),
        1 => (0usize..BOARDS + HOSTS).prop_map(Op::Back),
        1 => (0u32..120).prop_map(Op::Restart),
        1 => (1u32..90).prop_map(Op::Stall),
        1 => (0usize..64).prop_map(Op::Cancel),
        1 => Just(Op::QueueTimeout),
        1 => (0usize..BOARDS + HOSTS).prop_map(Op::ManualLease),
        1 => (0usize..16).prop_map(Op::ManualRelease),
    ]
}

#[derive(Debug, Clone)]
struct MJob {
    q: QueuedJob,
    state: JobState,
    attempt: u32,
    retry: u32,
    last_report: Option<DateTime<Utc>>,
    terminal_entries: u32,
}

struct Model {
    now: DateTime<Utc>,
    /// When the server was last awake again (its start, a restart, the end of a stall).
    awake_since: DateTime<Utc>,
    resources: Vec<Resource>,
    last_epoch: HashMap<Ulid, u64>,
    leases: Vec<Lease>,
    jobs: Vec<MJob>,
    next: u64,
}

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-23T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

impl Model {
    fn new() -> Self {
        let mut resources = Vec::new();
        for i in 0..BOARDS + HOSTS {
            let kind = if i < BOARDS {
                ResourceKind::Board
            } else {
                ResourceKind::QemuHost
            };
            let mut r = Resource::new(Ulid::from_parts(1, i as u128), format!("r{i}"), kind, t0());
            r.capabilities.cpus = Some(HOST_CPUS);
            r.capabilities.memory_mb = Some(HOST_MEM);
            r.capabilities.kvm = Some(true);
            resources.push(r);
        }
        Model {
            now: t0(),
            awake_since: t0(),
            resources,
            last_epoch: HashMap::new(),
            leases: Vec::new(),
            jobs: Vec::new(),
            next: 100,
        }
    }

    fn id(&mut self) -> Ulid {
        self.next += 1;
        Ulid::from_parts(self.next, 0)
    }

    fn active_lease_of(&self, holder: &Holder) -> Option<usize> {
        self.leases
            .iter()
            .position(|l| l.state == LeaseState::Active && l.holder == *holder)
    }

    fn put_lease(&mut self, l: Lease) {
        match self.leases.iter_mut().find(|x| x.id == l.id) {
            Some(slot) => *slot = l,
            None => self.leases.push(l),
        }
    }

    /// Applies a job event through the state machine, and what follows for its lease.
    fn job_event(&mut self, j: usize, ev: JobEvent) {
        let before = self.jobs[j].state;
        match before.apply(&ev) {
            Ok(next) => {
                assert!(!before.is_terminal(), "terminal {before} accepted {ev:?}");
                self.jobs[j].state = next;
                if next.is_terminal() {
                    self.jobs[j].terminal_entries += 1;
                }
                if matches!(ev, JobEvent::Start) {
                    self.jobs[j].attempt += 1;
                    self.jobs[j].last_report = Some(self.now);
                }
                if next == JobState::Queued {
                    self.jobs[j].q.queued_at = self.now;
                }
                if !next.holds_lease() {
                    let holder = Holder::Job(self.jobs[j].q.id);
                    if let Some(li) = self.active_lease_of(&holder) {
                        let l = &self.leases[li];
                        let ended = l.release(&holder, l.epoch, self.now).unwrap();
                        self.leases[li] = ended;
                    }
                }
            }
            Err(_) => assert!(
                before.is_terminal() || !matches!(ev, JobEvent::Cancel { .. }),
                "a live job refused cancel"
            ),
        }
    }

    fn lab_error(&mut self, j: usize, reason: LabError) {
        let s = &self.jobs[j];
        let ev = on_lab_error(s.state, s.attempt, s.retry, reason);
        self.job_event(j, ev);
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            resources: self.resources.clone(),
            leases: self
                .leases
                .iter()
                .filter(|l| l.state == LeaseState::Active)
                .cloned()
                .collect(),
            ..Snapshot::default()
        }
    }

    fn grant(&mut self, resource: Ulid, holder: Holder, share: Share, secs: u64) {
        let last = self.last_epoch.get(&resource).copied().unwrap_or(0);
        let id = self.id();
        let l = acquire(
            LeaseRequest {
                id,
                resource_id: resource,
                resource_last_epoch: last,
                holder,
                share,
                duration: Duration::from_secs(secs),
                heartbeat_ttl: DEFAULT_HEARTBEAT_TTL,
            },
            self.now,
        )
        .unwrap();
        assert!(l.epoch > last, "epoch must grow per resource");
        self.last_epoch.insert(resource, l.epoch);
        self.leases.push(l);
    }

    fn step(&mut self, op: &Op) {
        let n = self.jobs.len();
        let pick = |i: usize| if n == 0 { None } else { Some(i % n) };
        match op {
            Op::Submit {
                board,
                cpus,
                mem_gb,
                retry,
                queue_timeout,
                priority,
            } => {
                let id = self.id();
                let kind = if *board {
                    ResourceKind::Board
                } else {
                    ResourceKind::QemuHost
                };
                let q = QueuedJob {
                    id,
                    name: format!("job-{}", id.timestamp_ms()),
                    requirements: Requirements {
                        kind: Some(kind),
                        cpus: (!board).then_some(*cpus),
                        memory_mb: (!board).then_some(mem_gb * 1024),
                        kvm: !board,
                        ..Requirements::default()
                    },
                    priority: Priority::new(u64::from(*priority)).unwrap(),
                    queued_at: self.now,
                    submitter: "ci".into(),
                    role: Role::User,
                    team: None,
                    timeout: Some(Duration::from_secs(600)),
                    queue_timeout: queue_timeout.then_some(Duration::from_secs(300)),
                    avoid: None,
                };
                self.jobs.push(MJob {
                    q,
                    state: JobState::Queued,
                    attempt: 0,
                    retry: *retry,
                    last_report: None,
                    terminal_entries: 0,
                });
            }
            Op::Place => {
                let queued: Vec<QueuedJob> = self
                    .jobs
                    .iter()
                    .filter(|j| j.state == JobState::Queued)
                    .map(|j| j.q.clone())
                    .collect();
                let decisions = place(&self.snapshot(), &queued, &policies(), self.now);
                assert_eq!(decisions.len(), queued.len());
                for d in decisions {
                    if let Decision::Place {
                        job,
                        resource,
                        share,
                        ..
                    } = d
                    {
                        let j = self.jobs.iter().position(|x| x.q.id == job).unwrap();
                        self.grant(resource, Holder::Job(job), share, 600);
                        let lease = self.leases.last().unwrap().id;
                        self.job_event(j, JobEvent::Assign { resource, lease });
                    }
                }
            }
            Op::Start(i) => {
                if let Some(j) = pick(*i)
                    && self.jobs[j].state == JobState::Assigned
                {
                    self.job_event(j, JobEvent::Start);
                    self.heartbeat(j);
                }
            }
            Op::Finish(i, pass) => {
                if let Some(j) = pick(*i)
                    && self.jobs[j].state == JobState::Running
                {
                    let ev = if *pass {
                        JobEvent::Pass
                    } else {
                        JobEvent::Fail {
                            reason: "test 3 failed".into(),
                        }
                    };
                    self.job_event(j, ev);
                }
            }
            Op::Heartbeat(i) => {
                if let Some(j) = pick(*i) {
                    self.heartbeat(j);
                }
            }
            Op::Advance(s) => self.now += chrono::Duration::seconds(i64::from(*s)),
            Op::Stall(s) => {
                self.now += chrono::Duration::seconds(i64::from(*s));
                self.awake_since = self.now;
            }
            Op::Reap => {
                let active: Vec<Lease> = self
                    .leases
                    .iter()
                    .filter(|l| l.state == LeaseState::Active)
                    .cloned()
                    .collect();
                for ended in reap(&active, self.now, self.awake_since) {
                    let holder = ended.holder.clone();
                    let detail = ended.end_reason.as_ref().map(ToString::to_string);
                    self.put_lease(ended);
                    if let Holder::Job(id) = holder {
                        let j = self.jobs.iter().position(|x| x.q.id == id).unwrap();
                        if self.jobs[j].state.holds_lease() {
                            self.lab_error(
                                j,
                                LabError::LeaseExpired {
                                    detail: detail.unwrap_or_default(),
                                },
                            );
                        }
                    }
                }
            }
            Op::Loss(r) => {
                let rid = self.resources[*r].id;
                self.resources[*r].state = ResourceState::Offline;
                let hit: Vec<usize> = (0..self.leases.len())
                    .filter(|&i| {
                        self.leases[i].state == LeaseState::Active
                            && self.leases[i].resource_id == rid
                    })
                    .collect();
                for li in hit {
                    let ended = self.leases[li]
                        .end_reconciled("resource offline", self.now)
                        .unwrap();
                    let holder = ended.holder.clone();
                    self.leases[li] = ended;
                    if let Holder::Job(id) = holder {
                        let j = self.jobs.iter().position(|x| x.q.id == id).unwrap();
                        self.lab_error(
                            j,
                            LabError::ResourceLost {
                                resource: format!("r{r}"),
                                detail: "offline".into(),
                            },
                        );
                    }
                }
            }
            Op::Back(r) => {
                if self.resources[*r].state == ResourceState::Offline {
                    self.resources[*r].state = ResourceState::Available;
                }
            }
            Op::Restart(grace) => {
                let active: Vec<Lease> = self
                    .leases
                    .iter()
                    .filter(|l| l.state == LeaseState::Active)
                    .cloned()
                    .collect();
                let records: Vec<JobRecord> = self
                    .jobs
                    .iter()
                    .map(|j| JobRecord {
                        id: j.q.id,
                        state: j.state,
                        attempt: j.attempt,
                        retry_on_error: j.retry,
                        last_report_at: j.last_report,
                    })
                    .collect();
                // The server came back after some downtime.
                let restarted = self.now;
                self.awake_since = restarted;
                let r = reconcile(
                    &active,
                    &records,
                    restarted,
                    self.now,
                    Duration::from_secs(u64::from(*grace)),
                );
                for l in r.leases {
                    self.put_lease(l);
                }
                for (id, ev) in r.jobs {
                    let j = self.jobs.iter().position(|x| x.q.id == id).unwrap();
                    let before = self.jobs[j].state;
                    assert!(
                        before.apply(&ev).is_ok(),
                        "reconcile gave {ev:?} to {before}"
                    );
                    self.job_event(j, ev);
                }
            }
            Op::Cancel(i) => {
                if let Some(j) = pick(*i) {
                    self.job_event(
                        j,
                        JobEvent::Cancel {
                            by: "ann".into(),
                            reason: "not needed".into(),
                        },
                    );
                }
            }
            Op::QueueTimeout => {
                let queued: Vec<QueuedJob> = self
                    .jobs
                    .iter()
                    .filter(|j| j.state == JobState::Queued)
                    .map(|j| j.q.clone())
                    .collect();
                for (id, ev) in queue_timeouts(&queued, self.now) {
                    let j = self.jobs.iter().position(|x| x.q.id == id).unwrap();
                    self.job_event(j, ev);
                }
            }
            Op::ManualLease(r) => {
                // `lease acquire --selector name=rN`: the server asks the scheduler too.
                let res = &self.resources[*r];
                let q = QueuedJob {
                    id: Ulid::from_parts(9, *r as u128),
                    name: "manual".into(),
                    requirements: Requirements {
                        kind: Some(res.kind),
                        selector: Selector::parse(&format!("name={}", res.name)).unwrap(),
                        ..Requirements::default()
                    },
                    priority: Priority::URGENT,
                    queued_at: self.now,
                    submitter: "ann".into(),
                    role: Role::Operator,
                    team: None,
                    timeout: None,
                    queue_timeout: None,
                    avoid: None,
                };
                let rid = res.id;
                let d = place(&self.snapshot(), &[q], &policies(), self.now);
                if let Decision::Place {
                    resource, share, ..
                } = &d[0]
                {
                    assert_eq!(*resource, rid);
                    self.grant(rid, Holder::Person(format!("ann-{r}")), *share, 120);
                }
            }
            Op::ManualRelease(i) => {
                let manual: Vec<usize> = (0..self.leases.len())
                    .filter(|&k| {
                        self.leases[k].state == LeaseState::Active
                            && matches!(self.leases[k].holder, Holder::Person(_))
                    })
                    .collect();
                if !manual.is_empty() {
                    let li = manual[i % manual.len()];
                    let l = &self.leases[li];
                    // A stale epoch is refused; the right one releases.
                    assert!(
                        l.release(&l.holder, l.epoch.wrapping_sub(1), self.now)
                            .is_err()
                    );
                    self.leases[li] = l.release(&l.holder, l.epoch, self.now).unwrap();
                }
            }
        }
    }

    fn heartbeat(&mut self, j: usize) {
        let holder = Holder::Job(self.jobs[j].q.id);
        if let Some(li) = self.active_lease_of(&holder) {
            // As the server judges it: its own silence is credited to the holder.
            let mut l = self.leases[li].clone();
            l.credit(self.awake_since);
            if let Ok(next) = l.renew(l.epoch, None, self.now) {
                self.leases[li] = next;
                self.jobs[j].last_report = Some(self.now);
            }
        }
    }

    fn check(&self) {
        let busy_boards = self
            .leases
            .iter()
            .filter(|l| {
                l.state == LeaseState::Active
                    && self
                        .resources
                        .iter()
                        .any(|r| r.id == l.resource_id && r.kind == ResourceKind::Board)
            })
            .count();
        assert!(busy_boards <= MAX_BOARDS_BUSY, "{busy_boards} boards busy");
        for r in &self.resources {
            let active: Vec<&Lease> = self
                .leases
                .iter()
                .filter(|l| l.state == LeaseState::Active && l.resource_id == r.id)
                .collect();
            match r.kind {
                ResourceKind::Board => {
                    assert!(
                        active.len() <= 1,
                        "board {} has {} active leases",
                        r.name,
                        active.len()
                    );
                }
                _ => {
                    let whole = active.iter().filter(|l| l.share == Share::Whole).count();
                    assert!(
                        whole == 0 || active.len() == 1,
                        "whole lease shared on {}",
                        r.name
                    );
                    let cpus: u32 = active.iter().map(|l| l.share.cpus()).sum();
                    let mem: u64 = active.iter().map(|l| l.share.memory_mb()).sum();
                    assert!(cpus * 100 <= HOST_CPUS * 85, "{} cpus on {}", cpus, r.name);
                    assert!(mem * 100 <= HOST_MEM * 85, "{} MiB on {}", mem, r.name);
                    assert!(
                        active.len() <= MAX_VMS,
                        "{} VMs on {}",
                        active.len(),
                        r.name
                    );
                }
            }
            // Epochs strictly grow in grant order.
            let epochs: Vec<u64> = self
                .leases
                .iter()
                .filter(|l| l.resource_id == r.id)
                .map(|l| l.epoch)
                .collect();
            assert!(epochs.windows(2).all(|w| w[0] < w[1]), "epochs {epochs:?}");
        }
        for j in &self.jobs {
            let n = self
                .leases
                .iter()
                .filter(|l| l.state == LeaseState::Active && l.holder == Holder::Job(j.q.id))
                .count();
            let want = usize::from(j.state.holds_lease());
            assert_eq!(n, want, "job in {} holds {n} active leases", j.state);
            assert!(j.terminal_entries <= 1);
            assert_eq!(j.terminal_entries == 1, j.state.is_terminal());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, timeout: 10_000, ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold_under_random_operations(ops in proptest::collection::vec(op(), 1..120)) {
        let mut m = Model::new();
        for op in &ops {
            m.step(op);
            m.check();
        }
        // Drain: cancel whatever is left; then every job is in exactly one terminal state.
        for j in 0..m.jobs.len() {
            if !m.jobs[j].state.is_terminal() {
                m.job_event(j, JobEvent::Cancel { by: "end".into(), reason: "drain".into() });
            }
        }
        m.check();
        for j in &m.jobs {
            prop_assert!(j.state.is_terminal());
            prop_assert_eq!(j.terminal_entries, 1);
        }
        prop_assert!(m.leases.iter().all(|l| l.state != LeaseState::Active
            || matches!(l.holder, Holder::Person(_))));
    }
}
