//! `shell` and `test` steps with `via: console`: the command is typed into the board's
//! shell and its output read back up to a sentinel that carries its exit status
//! (`CMD; echo __TF_<nonce>_$?`: the echo of the typed line shows `$?` unexpanded, so only
//! the shell's answer matches). Output goes to the job log line by line; a test step is
//! framed by the same `TAP_START`/`TAP_END` markers host test steps print
//! (`core::test_step`), so the server parses its TAP the same way.
//!
//! Bounded, named failures: no console output past `recovery.hang_after` (or the step's
//! limit) is a hang — the board is recovered with its policy (`recover::recover`), the
//! Recovery reported, and the step ends `error` so the server retries it as a lab error; a
//! boot banner or login prompt mid-command is a reboot (`error`); a closed console is an
//! `error`; a cancel types Ctrl-C and ends `cancelled`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use regex::Regex;
use testfarm_api::agent::Outcome;
use testfarm_api::board::{BoardActivity, BoardReport};
use testfarm_board::console::{Console, ConsoleEvent};
use testfarm_board::recover::{RecoveryOutcome, recover};
use tokio::time::Instant;

use super::BoardReports;
use super::job::{JobBoard, ViaReporter};
use crate::control::Signal;
use crate::executor::Reporter;
use crate::vm_steps::{Ctx, End};

/// Lines that mean the board started over (bootloader, kernel start).
const REBOOT_BANNER: &str = r"U-Boot|Starting kernel|Booting Linux";
/// A console step's limit when neither it nor its job sets one.
pub const DEFAULT_LIMIT: Duration = Duration::from_secs(3600);

/// Counts unreadable lines in a row: a console that only sends binary garbage (wrong baud
/// rate, a broken cable) never prints the sentinel, and must not run until the deadline.
struct Garbled {
    limit: u32,
    run: u32,
}

impl Garbled {
    fn new(limit: u32) -> Garbled {
        Garbled {
            limit: limit.max(1),
            run: 0,
        }
    }

    fn see(&mut self, garbage: bool) -> Option<End> {
        self.run = if garbage { self.run + 1 } else { 0 };
        (self.run >= self.limit).then(|| {
            End::error(format!(
                "the console sent {} unreadable lines in a row (wrong baud rate or a broken cable?)",
                self.run
            ))
        })
    }
}

/// Logins typed before a console step gives up on getting a shell.
const MAX_LOGINS: u32 = 3;

/// What one step types.
pub struct ConsoleCommand<'a> {
    pub command: &'a str,
    /// A test step: the TAP suite's name (framed by TAP markers).
    pub tap: Option<&'a str>,
}

enum Read {
    /// A line, and whether it was unreadable (garbage: wrong baud rate, noise).
    Line(String, bool),
    Hung(Duration),
    DeadlinePassed,
    Closed(String),
    Cancelled,
    Dropped,
}

/// One line, bounded by the hang limit and the step's deadline, watching the job signal.
async fn read(
    console: &mut Console,
    ctx_control: &crate::control::JobControl,
    hang_after: Duration,
    deadline: Option<Instant>,
) -> Read {
    let silence = Instant::now() + hang_after;
    let until = deadline.map_or(silence, |d| d.min(silence));
    tokio::select! {
        ev = console.next() => match ev {
            ConsoleEvent::Line(l) => Read::Line(
            testfarm_board::console::lines::strip_escapes(&l.text).replace('\r', ""),
            l.garbage,
        ),
            ConsoleEvent::Closed { reason } => Read::Closed(reason),
        },
        _ = tokio::time::sleep_until(until) => {
            if deadline.is_some_and(|d| d <= silence) {
                Read::DeadlinePassed
            } else {
                Read::Hung(hang_after)
            }
        }
        _ = ctx_control.reached(Signal::Cancel) => {
            if ctx_control.get() == Signal::Drop { Read::Dropped } else { Read::Cancelled }
        }
    }
}

/// Runs one console step. `None`: the job was dropped.
pub async fn run<R: Reporter>(
    ctx: &Ctx<'_, R>,
    jb: &JobBoard,
    cmd: ConsoleCommand<'_>,
    deadline: Option<Instant>,
) -> Option<End> {
    let b = jb.board();
    if cmd.command.trim().contains(['\n', '\r']) {
        // Each typed line would get its own prompt and `$?` only the last one's status.
        return Some(End::error(
            "a `via: console` command is one line (join commands with `;` or `&&`)",
        ));
    }
    let mut attached = match b.hub.attach().await {
        Ok(a) => a,
        Err(e) => return Some(End::error(e)),
    };
    let console = &mut attached.console;
    let hang_after = b.config.recovery.hang_after;
    // A step with no limit of its own (nor the job's) still ends.
    let deadline = deadline.or_else(|| Some(Instant::now() + DEFAULT_LIMIT));
    let mut garbled = Garbled::new(b.config.boot.max_garbage_lines);
    let boot = &b.config.boot;
    let banner = Regex::new(REBOOT_BANNER).ok();
    let rebooted =
        |l: &str| boot.expect.is_match(l) || banner.as_ref().is_some_and(|r| r.is_match(l));

    // A shell prompt first: press Enter (a carriage return, as a terminal sends; a lone
    // newline may be taken as the tail of a CR LF), log in when asked.
    if console.write(b"\r").await.is_err() {
        return Some(End::error("the board's console is closed"));
    }
    let mut logins = 0;
    loop {
        match read(console, ctx.control, hang_after, deadline).await {
            Read::Line(l, _) if boot.prompt.is_match(&l) => break,
            Read::Line(l, _) if boot.expect.is_match(&l) => match &boot.login {
                Some(user) if logins < MAX_LOGINS => {
                    logins += 1;
                    if console.write(format!("{user}\n").as_bytes()).await.is_err() {
                        return Some(End::error("the board's console is closed"));
                    }
                }
                Some(user) => {
                    return Some(End::error(format!(
                        "logging into {} as `{user}` did not give a shell prompt (`{}`)",
                        b.name(),
                        boot.prompt.as_str()
                    )));
                }
                None => {
                    return Some(End::error(format!(
                        "the console shows a login prompt (`{l}`) and board {} has no `boot.login`",
                        b.name()
                    )));
                }
            },
            Read::Line(_, garbage) => {
                if let Some(e) = garbled.see(garbage) {
                    return Some(e);
                }
            }
            Read::Hung(after) => {
                return Some(hung(ctx, jb, console, after, "waiting for a shell prompt").await);
            }
            Read::DeadlinePassed => return Some(timed_out("waiting for a shell prompt")),
            Read::Closed(r) => {
                return Some(End::error(format!("the board's console closed: {r}")));
            }
            Read::Cancelled => return Some(cancelled()),
            Read::Dropped => return None,
        }
    }
    jb.logged_in.store(true, Ordering::SeqCst);

    let nonce = format!("{:08x}", rand_nonce());
    let sentinel = format!("__TF_{nonce}_");
    let done = match Regex::new(&format!("{sentinel}([0-9]+)")) {
        Ok(r) => r,
        Err(e) => return Some(End::error(format!("internal: sentinel pattern: {e}"))),
    };
    let line = format!("{}; echo {sentinel}$?\n", cmd.command.trim_end());
    if let Some(name) = cmd.tap {
        ctx.log
            .write(bytes::Bytes::from(format!("TAP_START {name}\n")))
            .await;
    }
    if console.write(line.as_bytes()).await.is_err() {
        return Some(End::error("the board's console is closed"));
    }
    let code = loop {
        match read(console, ctx.control, hang_after, deadline).await {
            Read::Line(l, garbage) => {
                if let Some(e) = garbled.see(garbage) {
                    return Some(e);
                }
                if let Some(c) = done.captures(&l) {
                    break c
                        .get(1)
                        .and_then(|m| m.as_str().parse::<i32>().ok())
                        .unwrap_or(255);
                }
                if l.contains(&sentinel) {
                    continue; // the echo of what was typed
                }
                if rebooted(&l) {
                    jb.booted(false);
                    return Some(End::error(format!(
                        "the board rebooted during the step (console: `{}`)",
                        l.trim()
                    )));
                }
                ctx.log.write(bytes::Bytes::from(format!("{l}\n"))).await;
            }
            Read::Hung(after) => {
                return Some(hung(ctx, jb, console, after, "running the command").await);
            }
            Read::DeadlinePassed => {
                let _ = console.write(b"\x03").await;
                return Some(timed_out("running the command"));
            }
            Read::Closed(r) => return Some(End::error(format!("the board's console closed: {r}"))),
            Read::Cancelled => {
                let _ = console.write(b"\x03").await;
                return Some(cancelled());
            }
            Read::Dropped => return None,
        }
    };
    if let Some(name) = cmd.tap {
        ctx.log
            .write(bytes::Bytes::from(format!("TAP_END {name} exit={code}\n")))
            .await;
    }
    Some(if code == 0 {
        End::passed()
    } else {
        End {
            outcome: Outcome::Failed,
            reason: Some(format!("exit status {code}")),
            exit_code: Some(code),
        }
    })
}

fn timed_out(while_: &str) -> End {
    End {
        outcome: Outcome::TimedOut,
        reason: Some(format!("the step's time limit was reached {while_}")),
        exit_code: None,
    }
}

fn cancelled() -> End {
    End {
        outcome: Outcome::Cancelled,
        reason: Some("cancelled".into()),
        exit_code: None,
    }
}

/// The board stopped answering: recover it with its policy, report the Recovery, and end
/// the step `error` either way (the test did not fail; the lab did).
async fn hung<R: Reporter>(
    ctx: &Ctx<'_, R>,
    jb: &JobBoard,
    console: &mut Console,
    after: Duration,
    while_: &str,
) -> End {
    let b = jb.board();
    let name = b.name().to_string();
    let reports = ViaReporter(ctx.reporter);
    ctx.log
        .note(&format!(
            "board {name} hung: no console output for {} while {while_}; recovering (up to {} power cycles)",
            testfarm_core::duration::format(after),
            b.config.recovery.tries
        ))
        .await;
    reports
        .board_report(
            &name,
            BoardReport::Activity {
                activity: BoardActivity::Recovering,
                job_id: Some(jb.job_id.clone()),
            },
        )
        .await;
    let rules = testfarm_core::board::boot::BootRules::from(&b.config.boot);
    let outcome = recover(
        b.power.as_ref(),
        console,
        &rules,
        &b.config.recovery,
        &mut |_| {},
    )
    .await;
    jb.booted(false);
    b.set_booted(matches!(outcome, RecoveryOutcome::Recovered { .. }));
    let hang = format!(
        "the board hung (no console output for {} while {while_})",
        testfarm_core::duration::format(after)
    );
    let (recovered, attempts, detail) = outcome.describe(&hang);
    reports
        .board_report(
            &name,
            BoardReport::Recovery {
                job_id: Some(jb.job_id.clone()),
                recovered,
                attempts,
                detail: detail.clone(),
            },
        )
        .await;
    reports
        .board_report(
            &name,
            BoardReport::Activity {
                activity: if recovered {
                    BoardActivity::Testing
                } else {
                    BoardActivity::Idle
                },
                job_id: Some(jb.job_id.clone()),
            },
        )
        .await;
    ctx.log.note(&detail).await;
    End::error(detail)
}

/// A nonce for the sentinel: unguessable enough that no test prints it by chance.
fn rand_nonce() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish() as u32
}
