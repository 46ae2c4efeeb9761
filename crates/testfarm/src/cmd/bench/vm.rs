//! `testfarm bench vm --json`: boot to hello, per-test overhead on a booted (warm) VM against
//! spawning `/bin/sh -c true` in the same guest, and a 40-test tree's wall time at -j 1 and
//! -j 2 — each figure next to its same-run baseline.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;
use testfarm_guest::protocol::v2::Exec;
use testfarm_vm::agent::Agent;
use testfarm_vm::pod::{Pod, PodOptions};
use testfarm_vm::runtime_dir::RuntimeDir;
use testfarm_vm::vm::Vm;

use crate::cmd::vmtest::settings;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the JSON object only (the default output is JSON too, plus progress on stderr).
    #[arg(long)]
    json: bool,
    /// Per-test overhead samples.
    #[arg(long, default_value_t = 100)]
    runs: usize,
    /// Tests in the generated tree.
    #[arg(long, default_value_t = 40)]
    tree: usize,
    #[command(flatten)]
    vm: Box<settings::VmFlags>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let v = rt.block_on(bench(args))?;
    outln!("{}", serde_json::to_string_pretty(&v)?);
    Ok(ExitCode::SUCCESS)
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

async fn bench(args: Args) -> anyhow::Result<serde_json::Value> {
    let tree = tempfile::tempdir()?;
    let mut flags = (*args.vm).clone();
    flags.root = Some(tree.path().to_path_buf());
    std::fs::create_dir_all(tree.path().join("t"))?;
    for i in 0..args.tree {
        std::fs::write(
            tree.path().join(format!("t/noop{i:02}_test.sh")),
            "echo 1..1\necho ok 1\n",
        )?;
    }
    std::fs::write(tree.path().join("t/empty.sh"), "")?;
    let (_root, _file, opts, reason, image_id) = settings::vm_options(&flags).await?;
    eprintln!(
        "bench vm: accel {} ({reason}), image {image_id}",
        opts.accel.name()
    );

    // Boot to HELLO (and the v2 upgrade), one VM.
    let dir = RuntimeDir::new("bench-vm-")?;
    let vm = Vm::boot("bench-1", &opts, &dir.subdir("bench-1")?)
        .await
        .context("booting")?;
    let boot = vm.boot_time;
    let Agent::V2(a) = &vm.agent else {
        anyhow::bail!("the guest did not speak v2");
    };

    // Ping round trip on the open port.
    let mut pings = Vec::new();
    for _ in 0..100 {
        pings.push(a.ping().await?);
    }

    // Per-test overhead: a test script that does nothing, run as vmtest runs it.
    let noop = Exec {
        argv: vec!["/bin/sh".into(), "/mnt/host/t/empty.sh".into()],
        cwd: Some("/mnt/host".into()),
        timeout_ms: 60_000,
        ..Exec::default()
    };
    // Interleaved, so both see the same host load: the empty test as vmtest runs it (host
    // clock, whole round trip), `/bin/sh -c true` through the agent (host clock), and the
    // baseline: that same spawn as the guest timed it (its clock, around fork/exec/wait).
    let sh_true = Exec {
        argv: vec!["/bin/sh".into(), "-c".into(), "true".into()],
        ..Exec::default()
    };
    let (mut per_test, mut exec_true, mut spawn_in_guest) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..args.runs {
        let t = Instant::now();
        a.exec(noop.clone()).await?;
        per_test.push(t.elapsed());
        let t = Instant::now();
        let out = a.exec(sh_true.clone()).await?;
        exec_true.push(t.elapsed());
        spawn_in_guest.push(Duration::from_micros(out.status.duration_us));
    }
    let spawn = median(spawn_in_guest);
    // `--isolate test`: the same empty test in a fresh cgroup and tmpfs overlay namespace.
    let mut isolated = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        a.exec(Exec {
            isolate: true,
            ..noop.clone()
        })
        .await?;
        isolated.push(t.elapsed());
    }
    vm.shutdown().await;
    let per_test_p50 = median(per_test);
    let isolated_p50 = median(isolated);

    // Tree wall time (boot included) at -j 1 and -j 2.
    let paths: Vec<String> = (0..args.tree)
        .map(|i| format!("t/noop{i:02}_test.sh"))
        .collect();
    let mut walls = Vec::new();
    for j in [1usize, 2] {
        let t = Instant::now();
        let mut pod = Pod::start(
            PodOptions::new(j, opts.clone()),
            RuntimeDir::new("bench-pod-")?,
        )
        .await?;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        pod.run(paths.clone(), tx).await;
        pod.shutdown().await;
        let mut passed = 0;
        while let Ok(r) = rx.try_recv() {
            passed += usize::from(r.passed());
        }
        if passed != paths.len() {
            anyhow::bail!("only {passed}/{} bench tests passed at -j {j}", paths.len());
        }
        walls.push(t.elapsed());
    }

    Ok(json!({
        "bench": "vm",
        "accel": opts.accel.name(),
        "accel_reason": reason,
        "image": image_id,
        "boot_to_hello_ms": { opts.accel.name(): ms(boot) },
        "ping_rtt_p50_ms": ms(median(pings)),
        "per_test_overhead": {
            "runs": args.runs,
            "p50_ms": ms(per_test_p50),
            "baseline_sh_c_true_spawn_in_guest_p50_ms": ms(spawn),
            "exec_sh_c_true_via_agent_p50_ms": ms(median(exec_true)),
            "ratio_vs_sh_c_true": per_test_p50.as_secs_f64() / spawn.as_secs_f64().max(1e-9),
            "ratio_vs_fresh_boot": per_test_p50.as_secs_f64() / boot.as_secs_f64().max(1e-9),
            "target": "within 2x of sh -c true",
        },
        "isolate_test": {
            "method": "in-guest reset: own cgroup (cgroup.kill) + private mount namespace over a tmpfs overlay",
            "p50_ms": ms(isolated_p50),
            "reset_cost_ms": ms(isolated_p50.saturating_sub(per_test_p50)),
            "baseline_worker_p50_ms": ms(per_test_p50),
            "ratio_vs_worker": isolated_p50.as_secs_f64() / per_test_p50.as_secs_f64().max(1e-9),
            "ratio_vs_fresh_boot": isolated_p50.as_secs_f64() / boot.as_secs_f64().max(1e-9),
        },
        "tree": {
            "tests": args.tree,
            "wall_j1_ms": ms(walls[0]),
            "wall_j2_ms": ms(walls[1]),
            "speedup_j2_vs_j1": walls[0].as_secs_f64() / walls[1].as_secs_f64().max(1e-9),
        },
    }))
}
