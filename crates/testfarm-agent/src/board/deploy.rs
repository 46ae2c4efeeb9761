//! `deploy` and `boot` on a board. Deploy: choose the build's artifacts as a VM deploy
//! does (`core::deploy`, any kinds: firmware, rootfs, …), for the board's arch, download
//! and check them (the VM deploy's machinery), flash them with the board's flash driver
//! (`{{ artifacts.KIND }}` = local paths), power-cycle, and watch the console for the boot
//! prompt. Boot without a deploy: power-cycle and watch. Every part is bounded (flash and
//! power by their drivers' timeouts, the watch by the boot timeout); each outcome is
//! reported for the board's history (Activity, Flash, Power, Deployed), and a failed boot
//! ends the step `error` with the console tail in the log and how to restore the board.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use testfarm_api::board::{BoardActivity, BoardReport};
use testfarm_board::boot::watch_boot_since;
use testfarm_board::flash::FlashRequest;
use testfarm_board::power::PowerAction;
use testfarm_core::artifact::ArtifactKind;
use testfarm_core::board::boot::BootRules;
use testfarm_core::deploy as choice;
use testfarm_core::jobspec::{BootStep, DeployStep, Step};

use super::job::{JobBoard, ViaReporter};
use super::{BoardReports, PowerEnd, restore_hint};
use crate::executor::Reporter;
use crate::vm_steps::{Ctx, End, deploy as vm_deploy};

/// Console lines kept for a failed boot's log.
const TAIL_LINES: usize = 25;
/// Time beyond the flash driver's own timeout before the agent gives up on it.
const FLASH_SLACK: Duration = Duration::from_secs(30);

/// The boot rules for this job: the board's, with a job's `boot:` step's `expect` (plain
/// text) and `timeout` over them.
pub fn boot_rules(jb: &JobBoard, step: Option<&BootStep>) -> BootRules {
    let mut rules = BootRules::from(&jb.board().config.boot);
    if let Some(b) = step {
        if let Some(e) = &b.expect
            && let Ok(r) = regex::Regex::new(&regex::escape(e))
        {
            rules.expect = r;
        }
        if let Some(t) = b.timeout {
            rules.timeout = t.get();
        }
    }
    rules
}

/// The job's first `boot` step, whose expect/timeout the deploy's boot watch uses.
pub fn job_boot_step(spec: &testfarm_core::JobSpec) -> Option<&BootStep> {
    spec.steps.iter().find_map(|s| match s {
        Step::Boot(b) => Some(b),
        _ => None,
    })
}

async fn activity<R: Reporter>(ctx: &Ctx<'_, R>, jb: &JobBoard, a: BoardActivity) {
    ViaReporter(ctx.reporter)
        .board_report(
            jb.board().name(),
            BoardReport::Activity {
                activity: a,
                job_id: Some(jb.job_id.clone()),
            },
        )
        .await;
}

/// The `deploy` step on a board.
pub async fn deploy<R: Reporter>(ctx: &Ctx<'_, R>, jb: &JobBoard, d: &DeployStep) -> End {
    let b = jb.board();
    let name = b.name().to_string();
    let Some(client) = ctx.reporter.client() else {
        return End::error("this agent has no server connection to fetch artifacts through");
    };
    let Some(flash) = &b.flash else {
        return End::error(format!(
            "board {name} has no flash driver configured (`flash` in its [[board]] table)"
        ));
    };
    let mut q = d.artifacts.clone();
    match &q.arch {
        Some(a) if *a != b.config.arch => {
            return End::error(format!(
                "board {name} is {}; the deploy asks for arch {a}",
                b.config.arch
            ));
        }
        Some(_) => {}
        None => q.arch = Some(b.config.arch.clone()),
    }
    let list = match vm_deploy::listing(client, &q).await {
        Ok(l) => l,
        Err(e) => return End::error(e.to_string()),
    };
    if q.kinds.is_empty() {
        // A board takes every kind its build has (its flasher knows what to do with them).
        q.kinds = all_kinds(&q, &list);
    }
    let chosen = match choice::choose(&q, &list) {
        Ok(c) => c,
        Err(e) => return End::error(e.to_string()),
    };
    let files = match vm_deploy::download_chosen(ctx, client, &chosen).await {
        Ok(f) => f,
        Err(e) => return End::error(e.to_string()),
    };
    // Each file by its kind (`{{ artifacts.firmware }}`) and by its name in the build (what
    // the qemu flash driver's `artifact` names, e.g. `disk`); a kind wins a clash.
    let mut by_name: BTreeMap<String, std::path::PathBuf> = chosen
        .artifacts
        .iter()
        .zip(&files)
        .map(|(a, (_, p))| (a.name.clone(), p.clone()))
        .collect();
    for (k, p) in &files {
        by_name.insert(k.as_str().to_string(), p.clone());
    }
    let request = FlashRequest {
        artifacts: by_name,
        config: ctx
            .job
            .vars
            .get("config")
            .and_then(|v| v.as_str())
            .map(std::path::PathBuf::from),
    };
    activity(ctx, jb, BoardActivity::Flashing).await;
    ctx.log
        .note(&format!("flashing build {} onto {name}", chosen.build_id))
        .await;
    let limit = b
        .config
        .flash
        .as_ref()
        .map(|f| f.timeout)
        .unwrap_or_default()
        + FLASH_SLACK;
    let t0 = Instant::now();
    let flashed = match tokio::time::timeout(limit, flash.flash(&request)).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!("flash {name}: no end within {limit:?}")),
    };
    let took = u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX);
    let (ok, detail) = match &flashed {
        Ok(r) => (
            true,
            r.output
                .chars()
                .rev()
                .take(2000)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect(),
        ),
        Err(e) => (false, e.clone()),
    };
    ViaReporter(ctx.reporter)
        .board_report(
            &name,
            BoardReport::Flash {
                job_id: jb.job_id.clone(),
                build_id: Some(chosen.build_id.clone()),
                ok,
                detail: detail.clone(),
                duration_ms: took,
            },
        )
        .await;
    for line in detail.lines() {
        ctx.log.note(&format!("flash: {line}")).await;
    }
    if let Err(e) = flashed {
        activity(ctx, jb, BoardActivity::Idle).await;
        return End::error(format!("flashing failed: {e}; {}", restore_hint(&name)));
    }
    let rules = boot_rules(jb, job_boot_step(&ctx.job.spec));
    let booted = power_cycle_and_watch(ctx, jb, rules).await;
    let (ok, why) = match &booted {
        Ok(line) => (true, line.clone()),
        Err(e) => (false, e.clone()),
    };
    ViaReporter(ctx.reporter)
        .board_report(
            &name,
            BoardReport::Deployed {
                job_id: jb.job_id.clone(),
                build_id: chosen.build_id.clone(),
                commit: Some(chosen.commit.clone()),
                booted: ok,
                detail: why.clone(),
            },
        )
        .await;
    if ok {
        jb.booted(true);
        End::passed()
    } else {
        End::error(format!("{why}; {}", restore_hint(&name)))
    }
}

/// Every kind the newest matching build of the listing has (for a board deploy that
/// names none).
fn all_kinds(
    q: &testfarm_core::jobspec::ArtifactQuery,
    list: &[choice::Listed],
) -> Vec<ArtifactKind> {
    let first = list
        .iter()
        .find(|a| q.arch.as_ref().is_none_or(|x| *x == a.arch));
    let Some(first) = first else {
        return Vec::new();
    };
    let mut kinds: Vec<ArtifactKind> = list
        .iter()
        .filter(|a| a.build_id == first.build_id)
        .map(|a| a.kind)
        .collect();
    kinds.sort();
    kinds.dedup();
    kinds
}

/// The `boot` step on a board: nothing to do after a deploy that booted it; otherwise a
/// power cycle and a watch.
pub async fn boot<R: Reporter>(ctx: &Ctx<'_, R>, jb: &JobBoard, step: &BootStep) -> End {
    if jb
        .booted_by_deploy
        .swap(false, std::sync::atomic::Ordering::SeqCst)
    {
        ctx.log
            .note("the deploy step booted the board and saw its prompt: nothing more to do")
            .await;
        return End::passed();
    }
    match power_cycle_and_watch(ctx, jb, boot_rules(jb, Some(step))).await {
        Ok(_) => {
            jb.booted(false);
            End::passed()
        }
        Err(e) => End::error(format!("{e}; {}", restore_hint(jb.board().name()))),
    }
}

/// Attaches to the console (before the cycle, so the banner is seen), power-cycles, and
/// watches for the verdict. Ok: the line that proved the boot; Err: why not, with the
/// console tail written to the job log.
pub async fn power_cycle_and_watch<R: Reporter>(
    ctx: &Ctx<'_, R>,
    jb: &JobBoard,
    rules: BootRules,
) -> Result<String, String> {
    let b = jb.board();
    let mut attached = b.hub.attach().await?;
    activity(ctx, jb, BoardActivity::Booting).await;
    let reports = ViaReporter(ctx.reporter);
    // What the board said before the cycle (a prompt still in flight) is not its boot.
    let cycled_at = std::time::SystemTime::now();
    match super::power(b, PowerAction::Cycle, Some(&jb.job_id), &reports).await {
        PowerEnd::Done(_) => {}
        PowerEnd::Operator(i) => {
            return Err(format!(
                "board {} has manual power; an operator must cycle it: {i}",
                b.name()
            ));
        }
        PowerEnd::Failed(e) => return Err(format!("power cycle failed: {e}")),
    }
    ctx.log
        .note(&format!(
            "power-cycled {}; watching the console for `{}` (up to {})",
            b.name(),
            rules.expect.as_str(),
            testfarm_core::duration::format(rules.timeout)
        ))
        .await;
    let report = watch_boot_since(
        &mut attached.console,
        rules,
        TAIL_LINES,
        &mut |_| {},
        cycled_at,
    )
    .await;
    if let testfarm_core::board::boot::BootVerdict::Booted { line, after } = &report.verdict {
        b.set_booted(true);
        activity(ctx, jb, BoardActivity::Testing).await;
        let said = format!(
            "booted after {:.1}s: `{}`",
            after.as_secs_f64(),
            line.trim()
        );
        ctx.log.note(&said).await;
        return Ok(said);
    }
    activity(ctx, jb, BoardActivity::Idle).await;
    ctx.log.note("--- console tail ---").await;
    for l in &report.tail {
        ctx.log.note(&format!("console: {l}")).await;
    }
    let mut why = format!(
        "board {} did not boot: {}",
        b.name(),
        report.verdict.describe()
    );
    if let Some(c) = report.console_closed {
        why.push_str(&format!(" (the console closed: {c})"));
    }
    Err(why)
}
