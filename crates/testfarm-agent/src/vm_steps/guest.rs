//! `shell`/`test` steps with `via: guest`: the command runs inside the booted VM through
//! the guest agent (protocol v2), its output streamed into the job's log as it comes. A
//! test step runs the same marked script as on the host (`testfarm_core::test_step`), in
//! the job's work directory shared into the guest, so its TAP becomes the job's results
//! exactly as a host test's does.
//!
//! Outcomes keep the lab/test line: the command's own non-zero exit is `failed`; a guest
//! that cannot run it, dies, or stops answering is `error`, with the console tail.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use testfarm_api::agent::Outcome;
use testfarm_guest::protocol::DEFAULT_SHARE_DIR;
use testfarm_guest::protocol::v2::{Exec, GuestMsg};
use testfarm_vm::VmError;
use testfarm_vm::agent::Agent;
use tokio::time::Instant;

use super::{Ctx, End, State, VmSlot};
use crate::control::Signal;
use crate::executor::Reporter;

/// How long a guest agent that has not greeted yet (a console-verified boot) gets to.
const GREET_WITHIN: Duration = Duration::from_secs(30);
/// After a cancel, how long the guest gets to report the killed command's exit.
const CANCEL_GRACE: Duration = Duration::from_secs(5);

/// The job's `environment.json`: what was deployed and how to reach the VM.
pub fn environment<R: Reporter>(ctx: &Ctx<'_, R>, s: &State) -> Bytes {
    let deployed = s.deployed.as_ref().map(|d| {
        serde_json::json!({
            "build": d.chosen.build_id,
            "commit": d.chosen.commit,
            "branch": d.chosen.branch,
            "arch": d.chosen.arch,
            "deployed_at": d.at,
            "artifacts": d.chosen.artifacts.iter().map(|a| serde_json::json!({
                "kind": a.kind, "name": a.name, "sha256": a.sha256, "size": a.size,
            })).collect::<Vec<_>>(),
            "cpus": d.size.cpus,
            "memory_mb": d.size.memory_mb,
        })
    });
    let vm = s.running.as_ref().map(|r| {
        serde_json::json!({
            "pid": r.vm.pid(),
            "boot_attempt": r.attempt,
            "console_socket": r.vm.paths.console_sock,
            "console_log": r.vm.paths.console_log,
            "qmp_socket": r.vm.paths.qmp_sock,
            "ssh_port": r.ssh_port,
            "ssh": r.ssh_port.map(|p| format!("ssh -p {p} root@127.0.0.1")),
            "guest_agent": r.vm.has_agent(),
        })
    });
    let v = serde_json::json!({
        "job": ctx.job.job_id,
        "resource": ctx.job.resource,
        "deployed": deployed,
        "vm": vm,
    });
    Bytes::from(serde_json::to_vec_pretty(&v).unwrap_or_default())
}

/// Runs `script` with `/bin/sh -e` in the guest, in the shared work directory.
pub async fn run<R: Reporter>(
    ctx: &Ctx<'_, R>,
    slot: &VmSlot,
    script: &str,
    mut env: BTreeMap<String, String>,
    deadline: Option<Instant>,
) -> Option<End> {
    let mut state = slot.state.lock().await;
    let Some(running) = state.running.as_mut() else {
        return Some(End::error(
            "no VM is running: a boot step must come first (and pass)",
        ));
    };
    let tail = |vm: &testfarm_vm::job_vm::JobVm| testfarm_core::boot::tail(&vm.console(), 20);
    let agent = match running.vm.agent(GREET_WITHIN).await {
        Ok(Agent::V2(a)) => a,
        Ok(Agent::V1(_)) => {
            return Some(End::error(
                "the guest agent speaks only protocol v1; guest steps need v2",
            ));
        }
        Err(e) => {
            return Some(End::error(format!(
                "cannot reach the guest agent: {e}\n--- console tail ---\n{}",
                tail(&running.vm)
            )));
        }
    };
    env.insert("TESTFARM_WORK_DIR".into(), DEFAULT_SHARE_DIR.into());
    let timeout_ms = deadline
        .map(|d| {
            d.saturating_duration_since(Instant::now())
                .as_millis()
                .max(1)
        })
        .map(|ms| u64::try_from(ms).unwrap_or(u64::MAX))
        .unwrap_or(0);
    let exec = Exec {
        argv: vec!["/bin/sh".into(), "-ec".into(), script.to_string()],
        env: env.into_iter().collect(),
        cwd: Some(DEFAULT_SHARE_DIR.to_string()),
        timeout_ms,
        isolate: false,
    };
    let mut req = match agent.spawn(exec).await {
        Ok(r) => r,
        Err(e) => {
            return Some(End::error(format!(
                "the guest could not start the command: {e}"
            )));
        }
    };
    let mut stop: Option<(bool, Instant)> = None;
    let result = loop {
        let hard = stop.map(|(_, at)| at);
        tokio::select! {
            m = agent.next(&mut req, hard.map(|h| h.into_std())) => match m {
                Ok(GuestMsg::Stdout(d)) | Ok(GuestMsg::Stderr(d)) => {
                    ctx.log.write(Bytes::from(d)).await;
                }
                Ok(GuestMsg::Exit(s)) => break Ok(s),
                Ok(GuestMsg::Error(e)) => break Err(VmError::Guest(e)),
                Ok(_) => {}
                Err(e) => break Err(e),
            },
            _ = ctx.control.reached(Signal::Cancel), if stop.is_none() => {
                let dropped = ctx.control.get() == Signal::Drop;
                let _ = agent.cancel(req.id).await;
                stop = Some((dropped, Instant::now() + CANCEL_GRACE));
            }
        }
    };
    agent.finish(&req);
    if let Some((dropped, _)) = stop {
        if dropped {
            return None;
        }
        return Some(End {
            outcome: Outcome::Cancelled,
            reason: Some("cancelled".into()),
            exit_code: None,
        });
    }
    Some(match result {
        Ok(s) if s.timed_out => End {
            outcome: Outcome::TimedOut,
            reason: Some("the step's time limit was reached in the guest".into()),
            exit_code: None,
        },
        Ok(s) => match (s.code, s.signal) {
            (Some(0), _) => End::passed(),
            (Some(c), _) => End {
                outcome: Outcome::Failed,
                reason: Some(format!("exit status {c} (in the guest)")),
                exit_code: Some(c),
            },
            (None, Some(sig)) => End {
                outcome: Outcome::Failed,
                reason: Some(format!("killed by signal {sig} (in the guest)")),
                exit_code: None,
            },
            (None, None) => End {
                outcome: Outcome::Failed,
                reason: Some("ended without a status (in the guest)".into()),
                exit_code: None,
            },
        },
        // The guest answered but could not run it.
        Err(VmError::Guest(e)) => End::error(format!("the guest could not run the command: {e}")),
        Err(e) => {
            let running = state.running.as_mut();
            let exited = running.as_ref().map(|r| r.vm.console()).unwrap_or_default();
            End::error(format!(
                "the VM stopped answering: {e}\n--- console tail ---\n{}",
                testfarm_core::boot::tail(&exited, 20)
            ))
        }
    })
}
