//! Properties of one scheduler pass over random labs and queues:
//!
//! - every queued job gets exactly one decision;
//! - a job is placed only on a resource that matches it and takes new work;
//! - boards are never given twice, hosts never above 85% of cpus or memory;
//! - `why` agrees with `place`: a job `why` calls placeable is the one `place` places,
//!   and a waiting job is never called placeable.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is a failure report

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use proptest::prelude::*;
use testfarm_core::jobspec::Requirements;
use testfarm_core::lease::{Holder, LeaseRequest, Share, acquire};
use testfarm_core::placement::{Decision, Snapshot, place};
use testfarm_core::policy::Policies;
use testfarm_core::priority::Priority;
use testfarm_core::queue::QueuedJob;
use testfarm_core::resource::{HealthStatus, Resource, ResourceKind, ResourceState};
use testfarm_core::role::Role;
use testfarm_core::selector::Selector;
use testfarm_core::why::why;
use ulid::Ulid;

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-23T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

#[derive(Debug, Clone)]
struct R {
    kind: u8,
    arch: bool,
    cpus: u32,
    state: u8,
    degraded: bool,
    leased: bool,
}

#[derive(Debug, Clone)]
struct J {
    kind: u8,
    arch: Option<bool>,
    cpus: u32,
    priority: u16,
    age: u32,
}

fn resource() -> impl Strategy<Value = R> {
    (
        0u8..3,
        any::<bool>(),
        1u32..16,
        0u8..8,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(kind, arch, cpus, state, degraded, leased)| R {
            kind,
            arch,
            cpus,
            state,
            degraded,
            leased,
        })
}

fn job() -> impl Strategy<Value = J> {
    (
        0u8..3,
        proptest::option::of(any::<bool>()),
        1u32..8,
        0u16..500,
        0u32..5000,
    )
        .prop_map(|(kind, arch, cpus, priority, age)| J {
            kind,
            arch,
            cpus,
            priority,
            age,
        })
}

fn kind(k: u8) -> ResourceKind {
    ResourceKind::ALL[usize::from(k) % 3]
}

fn build(rs: &[R], js: &[J]) -> (Snapshot, Vec<QueuedJob>) {
    let mut snap = Snapshot::default();
    for (i, r) in rs.iter().enumerate() {
        let mut res = Resource::new(
            Ulid::from_parts(1, i as u128),
            format!("r{i:03}"),
            kind(r.kind),
            t0(),
        );
        res.capabilities.arch = Some(if r.arch { "arm64" } else { "x86_64" }.into());
        res.capabilities.cpus = Some(r.cpus);
        res.capabilities.memory_mb = Some(u64::from(r.cpus) * 2048);
        res.state = match r.state {
            0 => ResourceState::Maintenance,
            1 => ResourceState::Offline,
            2 => ResourceState::Retired,
            _ => ResourceState::Available,
        };
        if r.degraded {
            res.health.status = HealthStatus::Degraded;
        }
        if r.leased && res.state == ResourceState::Available {
            res.state = ResourceState::Leased;
            let share = if res.kind == ResourceKind::Board {
                Share::Whole
            } else {
                Share::Slice {
                    cpus: 1,
                    memory_mb: 1024,
                }
            };
            snap.leases.push(
                acquire(
                    LeaseRequest {
                        id: Ulid::from_parts(2, i as u128),
                        resource_id: res.id,
                        resource_last_epoch: 0,
                        holder: Holder::Person("p".into()),
                        share,
                        duration: Duration::from_secs(600),
                        heartbeat_ttl: Duration::from_secs(30),
                    },
                    t0(),
                )
                .unwrap(),
            );
        }
        snap.resources.push(res);
    }
    let jobs = js
        .iter()
        .enumerate()
        .map(|(i, j)| QueuedJob {
            id: Ulid::from_parts(3, i as u128),
            name: format!("j{}", i % 4),
            requirements: Requirements {
                kind: Some(kind(j.kind)),
                arch: j.arch.map(|a| if a { "arm64" } else { "x86_64" }.into()),
                cpus: Some(j.cpus),
                selector: Selector::default(),
                ..Requirements::default()
            },
            priority: Priority::new(u64::from(j.priority)).unwrap(),
            queued_at: t0() - chrono::Duration::seconds(i64::from(j.age)),
            submitter: "ci".into(),
            role: Role::User,
            team: None,
            timeout: Some(Duration::from_secs(600)),
            queue_timeout: None,
            avoid: None,
        })
        .collect();
    (snap, jobs)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, timeout: 10_000, ..ProptestConfig::default() })]

    #[test]
    fn one_pass_respects_capacity_and_matching(
        rs in proptest::collection::vec(resource(), 0..30),
        js in proptest::collection::vec(job(), 0..60),
    ) {
        let (snap, jobs) = build(&rs, &js);
        let decisions = place(&snap, &jobs, &Policies::default(), t0());
        prop_assert_eq!(decisions.len(), jobs.len());
        let ids: HashSet<Ulid> = decisions.iter().map(Decision::job).collect();
        prop_assert_eq!(ids.len(), jobs.len());

        let by_id: HashMap<Ulid, &Resource> = snap.resources.iter().map(|r| (r.id, r)).collect();
        let mut whole: HashSet<Ulid> = snap.leases.iter().filter(|l| l.share == Share::Whole).map(|l| l.resource_id).collect();
        let mut used: HashMap<Ulid, (u64, u64)> = HashMap::new();
        for l in &snap.leases {
            let e = used.entry(l.resource_id).or_default();
            e.0 += u64::from(l.share.cpus());
            e.1 += l.share.memory_mb();
        }
        for d in &decisions {
            if let Decision::Place { job, resource, share, .. } = d {
                let r = by_id[resource];
                let j = jobs.iter().find(|j| j.id == *job).unwrap();
                prop_assert!(j.requirements.fits(r, &r.selector_labels()));
                prop_assert!(r.accepts_new_work());
                prop_assert_eq!(r.health.status, HealthStatus::Ok);
                match share {
                    Share::Whole => {
                        prop_assert!(whole.insert(r.id), "board given twice");
                        prop_assert!(!used.contains_key(&r.id));
                    }
                    Share::Slice { cpus, memory_mb } => {
                        prop_assert!(!whole.contains(&r.id));
                        let e = used.entry(r.id).or_default();
                        e.0 += u64::from(*cpus);
                        e.1 += memory_mb;
                        let total_cpus = u64::from(r.capabilities.cpus.unwrap());
                        let total_mem = r.capabilities.memory_mb.unwrap();
                        if r.kind == ResourceKind::QemuHost {
                            prop_assert!(e.0 * 100 <= total_cpus * 85);
                            prop_assert!(e.1 * 100 <= total_mem * 85);
                        } else {
                            prop_assert!(e.0 <= total_cpus);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn why_agrees_with_place(
        rs in proptest::collection::vec(resource(), 0..12),
        js in proptest::collection::vec(job(), 1..20),
        pick in 0usize..20,
    ) {
        let (snap, jobs) = build(&rs, &js);
        let policies = Policies::default();
        let decisions = place(&snap, &jobs, &policies, t0());
        let me = &jobs[pick % jobs.len()];
        let w = why(me, &jobs, &snap, &policies, t0());
        let d = decisions.iter().find(|d| d.job() == me.id).unwrap();
        match d {
            Decision::Place { resource, .. } => {
                let name = &snap.resources.iter().find(|r| r.id == *resource).unwrap().name;
                prop_assert_eq!(w.placeable_on.as_ref(), Some(name));
            }
            _ => {
                prop_assert_eq!(w.placeable_on, None);
                // Every matching resource has a reason.
                prop_assert!(w.matching.iter().all(|m| m.blocker.is_some()), "{:?}", w.matching);
            }
        }
        prop_assert_eq!(
            w.position,
            decisions.iter().position(|d| d.job() == me.id).unwrap() + 1
        );
    }
}
