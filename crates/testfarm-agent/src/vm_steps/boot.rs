//! `boot`: start a VM from what `deploy` fetched, and watch it until the boot is proved
//! (console text or the guest agent's hello), fails (timeout, QEMU exit, kernel panic), or
//! the job is cancelled. A failed attempt's VM is killed and a fresh one (new overlay)
//! tried, up to `retries` more times; each attempt's reason is kept, and the last failure
//! ends the step `error` with the console tail: the lab or the image failed, not the test.
//! The rules are `testfarm_core::boot`; this module only observes.

use std::time::Duration;

use testfarm_core::boot::{self as rules, BootCheck, Observed, Verdict};
use testfarm_core::jobspec::BootStep;
use testfarm_vm::config::{ResolvedAccel, VmConfig};
use testfarm_vm::job_vm::{JobVm, Placement};
use testfarm_vm::runtime_dir::RuntimeDir;
use tokio::time::Instant;

use super::{Ctx, Deployed, End, Running, VmSlot, store_console};
use crate::control::Signal;
use crate::executor::Reporter;

/// A boot's time limit per attempt when the step sets none.
pub const DEFAULT_BOOT_TIMEOUT: Duration = Duration::from_secs(300);
/// Time each attempt gets beyond its timeout to start QEMU and stop it again.
pub const START_ALLOWANCE: Duration = Duration::from_secs(15);
/// How often the console and QEMU are looked at.
const POLL: Duration = Duration::from_millis(200);
/// Console lines kept in a failed boot's reason.
const TAIL_LINES: usize = 25;

/// The QEMU configuration of what was deployed, sharing the job's work directory
/// read-only into the guest (at `/mnt/host`), so guest steps see the files host steps made.
fn vm_config(d: &Deployed, ctx_dir: &std::path::Path, ssh_port: Option<u16>) -> VmConfig {
    let mut cfg = VmConfig::new(d.kernel.clone(), d.initrd.clone());
    cfg.cpus = d.size.cpus;
    cfg.memory_mb = u32::try_from(d.size.memory_mb).unwrap_or(u32::MAX);
    cfg.rootfs = d.rootfs.clone();
    cfg.append = d.append.clone();
    cfg.share = Some(ctx_dir.to_path_buf());
    if let Some(port) = ssh_port {
        cfg.extra_args.extend([
            "-netdev".to_string(),
            format!("user,id=tfnet0,hostfwd=tcp:127.0.0.1:{port}-:22"),
            "-device".to_string(),
            "virtio-net-pci,netdev=tfnet0".to_string(),
        ]);
    }
    cfg
}

/// A free loopback port for the SSH forward (QEMU binds it; a race with another process
/// makes QEMU fail at start, which is a failed attempt like any other).
fn free_port() -> Option<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()
        .map(|a| a.port())
}

/// One attempt's end.
enum Attempt {
    Booted(Box<Running>),
    Failed(String),
    /// Cancelled (`true`: dropped, report nothing).
    Stopped(bool),
}

async fn attempt<R: Reporter>(
    ctx: &Ctx<'_, R>,
    d: &Deployed,
    check: &BootCheck,
    number: u32,
    timeout: Duration,
) -> (Attempt, String) {
    let prefix = format!("job-{}-", ctx.job.job_id);
    let dir = match RuntimeDir::new(&prefix) {
        Ok(d) => d,
        Err(e) => {
            return (
                Attempt::Failed(format!("no runtime directory: {e}")),
                String::new(),
            );
        }
    };
    let ssh_port = if d.ssh { free_port() } else { None };
    let cfg = vm_config(d, ctx.work_dir, ssh_port);
    let accel = if d.kvm {
        ResolvedAccel::Kvm
    } else {
        ResolvedAccel::Tcg
    };
    let placement = Placement {
        overlay: Some(ctx.work_dir.join(".testfarm").join("overlay.qcow2")),
    };
    let mut vm = match JobVm::start(&cfg, accel, dir.path(), &placement).await {
        Ok(vm) => vm,
        Err(e) => {
            return (
                Attempt::Failed(format!("QEMU did not start: {e}")),
                String::new(),
            );
        }
    };
    ctx.log
        .note(&format!(
            "boot attempt {number}: QEMU pid {} ({}, {} cpus, {}M), console socket {}, waiting up to {} for {}",
            vm.pid().map(|p| p.to_string()).unwrap_or_else(|| "?".into()),
            accel.name(),
            cfg.cpus,
            cfg.memory_mb,
            vm.paths.console_sock.display(),
            testfarm_core::duration::format(timeout),
            check.describe()
        ))
        .await;
    let start = Instant::now();
    let mut greeting = match check {
        BootCheck::Hello => vm
            .take_pending()
            .map(|s| Box::pin(JobVm::greet(s, timeout))),
        BootCheck::Console(_) => None,
    };
    let mut hello = false;
    let end: Option<Attempt> = loop {
        let greet_done = async {
            match greeting.as_mut() {
                Some(g) => g.await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = greet_done => {
                greeting = None;
                match r {
                    Ok(agent) => {
                        hello = true;
                        vm.set_guest(Ok(agent));
                    }
                    // A timeout is the verdict's to word; anything else ends the attempt.
                    Err(testfarm_vm::VmError::Timeout { .. }) => {}
                    Err(e) => break Some(Attempt::Failed(format!("the guest agent did not greet: {e}"))),
                }
            }
            _ = tokio::time::sleep(POLL) => {}
            _ = ctx.control.reached(Signal::Cancel) => {
                break Some(Attempt::Stopped(ctx.control.get() == Signal::Drop));
            }
        }
        let console = vm.console();
        let exited = vm.exited();
        let seen = Observed {
            console: &console,
            hello,
            exited: exited.as_deref(),
            elapsed: start.elapsed(),
            timeout,
        };
        match rules::verdict(check, &seen) {
            Verdict::Waiting => {}
            Verdict::Booted => break None,
            Verdict::Failed(why) => {
                let q = vm.qemu_log_tail(5);
                let why = if exited.is_some() && !q.trim().is_empty() {
                    format!("{why}: {}", q.trim())
                } else {
                    why
                };
                break Some(Attempt::Failed(why));
            }
        }
    };
    match end {
        None => (
            Attempt::Booted(Box::new(Running {
                vm,
                attempt: number,
                ssh_port,
                dir,
            })),
            String::new(),
        ),
        Some(other) => {
            // A failed attempt's VM goes now; only its console stays.
            let text = vm.console();
            vm.kill().await;
            drop(dir);
            (other, text)
        }
    }
}

/// The `boot` step.
pub async fn run<R: Reporter>(
    ctx: &Ctx<'_, R>,
    slot: &VmSlot,
    b: &BootStep,
    deadline: Option<Instant>,
) -> Option<End> {
    let mut state = slot.state.lock().await;
    let Some(deployed) = state.deployed.clone() else {
        return Some(End::error(
            "nothing was deployed: a deploy step must come first",
        ));
    };
    // A second boot is a reboot: the old VM goes first.
    state.stop_vm().await;
    let check = BootCheck::of(b);
    let per_attempt = b.timeout.map(|t| t.get()).unwrap_or(DEFAULT_BOOT_TIMEOUT);
    let mut failures: Vec<String> = Vec::new();
    let mut number = 1;
    loop {
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let timeout = left.map_or(per_attempt, |l| l.min(per_attempt));
        let (end, console) = attempt(ctx, &deployed, &check, number, timeout).await;
        match end {
            Attempt::Booted(r) => {
                ctx.log
                    .note(&format!(
                        "booted on attempt {number}: {}; console: socat - UNIX-CONNECT:{}{}",
                        check.describe(),
                        r.vm.paths.console_sock.display(),
                        r.ssh_port
                            .map(|p| format!("; ssh: ssh -p {p} root@127.0.0.1"))
                            .unwrap_or_default()
                    ))
                    .await;
                state.running = Some(*r);
                let env = super::guest::environment(ctx, &state);
                let _ = ctx.reporter.output(super::ENVIRONMENT_OUTPUT, env).await;
                let _ = store_console(ctx.reporter, &state.console_text()).await;
                return Some(End::passed());
            }
            Attempt::Stopped(true) => return None,
            Attempt::Stopped(false) => {
                state.keep_console(number, &console);
                return Some(End {
                    outcome: testfarm_api::agent::Outcome::Cancelled,
                    reason: Some("cancelled while booting".into()),
                    exit_code: None,
                });
            }
            Attempt::Failed(why) => {
                ctx.log
                    .note(&format!("boot attempt {number} failed: {why}"))
                    .await;
                state.keep_console(number, &console);
                failures.push(why);
                let out_of_time = deadline.is_some_and(|d| Instant::now() >= d);
                if !rules::retry(number, b.retries) || out_of_time {
                    let _ = store_console(ctx.reporter, &state.console_text()).await;
                    // The last attempt's console; if it printed nothing, all of them.
                    let source = if console.trim().is_empty() {
                        &state.console
                    } else {
                        &console
                    };
                    let tail = rules::tail(source, TAIL_LINES);
                    return Some(End::error(rules::final_reason(&failures, &tail)));
                }
                number += 1;
            }
        }
    }
}
