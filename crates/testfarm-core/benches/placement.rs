//! Placement of 10 000 queued jobs on 1 000 resources, against a same-run baseline: a
//! naive first-fit (jobs in submission order, every resource scanned for every job, no
//! index, no caching) that gives no reasons and no strategy. The target is the whole pass
//! in ≤ 1 s; the ratio to the baseline shows what the indexing and caching buy.
//!
//! `cargo bench -p testfarm-core --bench placement`

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: a panic is a failure report

use std::hint::black_box;
use std::time::Duration;

use chrono::{DateTime, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use testfarm_core::jobspec::Requirements;
use testfarm_core::labels::Labels;
use testfarm_core::lease::{Holder, LeaseRequest, Share, acquire};
use testfarm_core::placement::{Decision, Snapshot, place, share_for};
use testfarm_core::policy::Policies;
use testfarm_core::priority::Priority;
use testfarm_core::queue::QueuedJob;
use testfarm_core::resource::{Resource, ResourceKind};
use testfarm_core::role::Role;
use testfarm_core::selector::Selector;
use ulid::Ulid;

const BOARD_TYPES: [&str; 5] = ["rpi4", "rpi5", "bbb", "visionfive2", "imx8"];
const TOOLCHAINS: [&str; 3] = ["gcc-aarch64", "gcc-riscv64", "clang-x86_64"];

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-23T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

/// 400 boards, 300 QEMU hosts, 300 build servers; a fifth of the boards already leased.
fn lab(resources: usize) -> Snapshot {
    let mut snap = Snapshot::default();
    for i in 0..resources {
        let kind = match i % 10 {
            0..=3 => ResourceKind::Board,
            4..=6 => ResourceKind::QemuHost,
            _ => ResourceKind::BuildServer,
        };
        let mut r = Resource::new(
            Ulid::from_parts(1, i as u128),
            format!("r{i:04}"),
            kind,
            t0(),
        );
        r.capabilities.arch = Some(if i % 3 == 0 { "riscv64" } else { "arm64" }.into());
        r.labels
            .insert("site", if i % 2 == 0 { "muc" } else { "ber" });
        match kind {
            ResourceKind::Board => {
                r.labels
                    .insert("board_type", BOARD_TYPES[i % BOARD_TYPES.len()]);
                r.capabilities.peripherals = vec!["ethernet".into()];
                if i % 5 == 0 {
                    snap.leases.push(
                        acquire(
                            LeaseRequest {
                                id: Ulid::from_parts(2, i as u128),
                                resource_id: r.id,
                                resource_last_epoch: 0,
                                holder: Holder::Person("ann".into()),
                                share: Share::Whole,
                                duration: Duration::from_secs(3600),
                                heartbeat_ttl: Duration::from_secs(30),
                            },
                            t0(),
                        )
                        .unwrap(),
                    );
                }
            }
            ResourceKind::QemuHost => {
                r.capabilities.cpus = Some(32);
                r.capabilities.memory_mb = Some(128 * 1024);
                r.capabilities.kvm = Some(true);
            }
            ResourceKind::BuildServer => {
                r.capabilities.cpus = Some(16);
                r.capabilities.memory_mb = Some(64 * 1024);
                r.capabilities.toolchains = vec![TOOLCHAINS[i % TOOLCHAINS.len()].into()];
            }
        }
        snap.resources.push(r);
    }
    snap
}

fn queue(jobs: usize) -> Vec<QueuedJob> {
    (0..jobs)
        .map(|i| {
            let mut req = Requirements::default();
            match i % 10 {
                0..=3 => {
                    req.kind = Some(ResourceKind::Board);
                    req.selector = Selector::parse(&format!(
                        "board_type={}",
                        BOARD_TYPES[i % BOARD_TYPES.len()]
                    ))
                    .unwrap();
                    req.peripherals = vec!["ethernet".into()];
                }
                4..=6 => {
                    req.kind = Some(ResourceKind::QemuHost);
                    req.cpus = Some(2 + (i % 4) as u32 * 2);
                    req.memory_mb = Some(2048 * (1 + (i % 4) as u64));
                    req.kvm = true;
                }
                _ => {
                    req.kind = Some(ResourceKind::BuildServer);
                    req.toolchains = vec![TOOLCHAINS[i % TOOLCHAINS.len()].into()];
                    req.cpus = Some(4);
                }
            }
            if i % 7 == 0 {
                req.arch = Some("arm64".into());
            }
            QueuedJob {
                id: Ulid::from_parts(3, i as u128),
                name: format!("job-{}", i % 50),
                requirements: req,
                priority: [Priority::LOW, Priority::NORMAL, Priority::HIGH][i % 3],
                queued_at: t0() - chrono::Duration::seconds((jobs - i) as i64),
                submitter: "ci".into(),
                role: Role::User,
                team: None,
                timeout: None,
                queue_timeout: None,
                avoid: None,
            }
        })
        .collect()
}

/// The baseline: first fit in submission order, everything rescanned for every job.
fn naive_first_fit(snap: &Snapshot, jobs: &[QueuedJob]) -> usize {
    let labels: Vec<Labels> = snap
        .resources
        .iter()
        .map(Resource::selector_labels)
        .collect();
    let mut whole: Vec<bool> = snap
        .resources
        .iter()
        .map(|r| snap.leases.iter().any(|l| l.resource_id == r.id))
        .collect();
    let mut cpus: Vec<u32> = vec![0; snap.resources.len()];
    let mut mem: Vec<u64> = vec![0; snap.resources.len()];
    let mut placed = 0;
    for j in jobs {
        for (i, r) in snap.resources.iter().enumerate() {
            if !r.accepts_new_work() || !j.requirements.fits(r, &labels[i]) {
                continue;
            }
            let share = share_for(&j.requirements, r.kind);
            let ok = match share {
                Share::Whole => !whole[i] && cpus[i] == 0,
                Share::Slice {
                    cpus: c,
                    memory_mb: m,
                } => {
                    !whole[i]
                        && (cpus[i] + c) * 100 <= r.capabilities.cpus.unwrap_or(0) * 85
                        && (mem[i] + m) * 100 <= r.capabilities.memory_mb.unwrap_or(0) * 85
                }
            };
            if ok {
                match share {
                    Share::Whole => whole[i] = true,
                    Share::Slice {
                        cpus: c,
                        memory_mb: m,
                    } => {
                        cpus[i] += c;
                        mem[i] += m;
                    }
                }
                placed += 1;
                break;
            }
        }
    }
    placed
}

fn bench(c: &mut Criterion) {
    let snap = lab(1000);
    let jobs = queue(10_000);
    let policies = Policies::default();
    let placed = place(&snap, &jobs, &policies, t0())
        .iter()
        .filter(|d| matches!(d, Decision::Place { .. }))
        .count();
    eprintln!(
        "place: {placed} of {} jobs placed; naive first-fit: {}",
        jobs.len(),
        naive_first_fit(&snap, &jobs)
    );
    let mut g = c.benchmark_group("placement_10000_jobs_1000_resources");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));
    g.bench_function("place", |b| {
        b.iter(|| black_box(place(black_box(&snap), black_box(&jobs), &policies, t0())))
    });
    g.bench_function("baseline_naive_first_fit", |b| {
        b.iter(|| black_box(naive_first_fit(black_box(&snap), black_box(&jobs))))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
