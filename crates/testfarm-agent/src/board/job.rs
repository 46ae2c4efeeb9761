//! A job's hold on its board. From the job's start to its end the board's console stays
//! open (one [`hub::Use`](super::hub::Use)) and every line is captured with its time; at
//! the end, whatever happened (failure, timeout, cancel, an early return), the capture is
//! stored as the job's `console.log` (the same output name as QEMU jobs, so `testfarm logs
//! ID --console` works), the console is detached and `on_release` applied ([`release`]).
//! The server also sends a `release` action at every lease end; both are idempotent.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use testfarm_api::board::{BoardActivity, BoardReport};
use testfarm_board::config::ReleasePower;
use testfarm_board::power::PowerAction;

use super::{BoardHandle, BoardReports, BoardTarget, PowerEnd};
use crate::executor::Reporter;
use crate::logs::LogWriter;
use crate::vm_steps::CONSOLE_OUTPUT;

/// Reports through an executor's [`Reporter`].
pub struct ViaReporter<'a, R>(pub &'a R);

impl<R: Reporter> BoardReports for ViaReporter<'_, R> {
    async fn board_report(&self, board: &str, report: BoardReport) {
        self.0.board_report(board, report).await;
    }
}

/// The board side of one running job.
pub struct JobBoard {
    pub target: BoardTarget,
    pub job_id: String,
    hold: Mutex<Option<super::hub::Use>>,
    /// The deploy step power-cycled and saw the boot prompt: a `boot` step after it has
    /// nothing left to do.
    pub booted_by_deploy: AtomicBool,
    /// A console step got a shell prompt since the last boot (no login needed again).
    pub logged_in: AtomicBool,
}

impl JobBoard {
    /// The job takes the board: capture starts and the console opens (a console that
    /// cannot open now is tried again by the steps that need it, and fails them).
    pub async fn begin(
        target: BoardTarget,
        job_id: &str,
        lease_id: &str,
        log: &LogWriter,
    ) -> JobBoard {
        let b = &target.0;
        // An idle recovery under way finishes first; holding its lock while taking the
        // board means no new one starts under the job.
        let recovery = b.recovering.lock().await;
        b.set_holder(Some((job_id.to_string(), lease_id.to_string())));
        drop(recovery);
        b.hub.start_capture();
        let hold = match b.hub.hold().await {
            Ok(u) => Some(u),
            Err(e) => {
                log.note(&format!("board {}: {e}", b.name())).await;
                None
            }
        };
        JobBoard {
            target: target.clone(),
            job_id: job_id.to_string(),
            hold: Mutex::new(hold),
            booted_by_deploy: AtomicBool::new(false),
            logged_in: AtomicBool::new(false),
        }
    }

    pub fn board(&self) -> &BoardHandle {
        &self.target.0
    }

    /// Marks a fresh boot: whoever types next must find (or log into) a shell.
    pub fn booted(&self, by_deploy: bool) {
        self.logged_in.store(false, Ordering::SeqCst);
        if by_deploy {
            self.booted_by_deploy.store(true, Ordering::SeqCst);
        }
    }

    /// The job's end: `console.log`, detach, `on_release`, activity idle.
    pub async fn end<R: Reporter>(&self, reporter: &R, log: &LogWriter) {
        let b = self.board();
        drop(self.hold.lock().unwrap_or_else(|e| e.into_inner()).take());
        if b.holder().as_deref() != Some(self.job_id.as_str()) {
            // The lease moved on and another job holds the board now: its capture, its
            // console and its power are not this job's to touch.
            log.note(&format!(
                "board {}: held by another job now; left as it is",
                b.name()
            ))
            .await;
            return;
        }
        if let Some(text) = b.hub.take_capture()
            && !text.is_empty()
            && let Err(e) = reporter.output(CONSOLE_OUTPUT, Bytes::from(text)).await
        {
            tracing::warn!(board = %b.name(), error = %e, "console.log not stored");
        }
        let r = ViaReporter(reporter);
        let said = release(b, Some(&self.job_id), &r).await;
        log.note(&format!("board {}: {said}", b.name())).await;
        b.set_holder(None);
    }
}

/// Leaves the board safe: console detached, power per `on_release` (off by default).
/// Idempotent: switching off an off board changes nothing. Returns what was done, or an
/// error text when the power did not obey.
pub async fn release<B: BoardReports>(
    b: &BoardHandle,
    job_id: Option<&str>,
    reports: &B,
) -> String {
    b.hub.detach_because(&format!(
        "the lease on {} ended: the board was released",
        b.name()
    ));
    let action = match b.config.on_release {
        ReleasePower::Off => Some(PowerAction::Off),
        ReleasePower::On => Some(PowerAction::On),
        ReleasePower::Leave => None,
    };
    let said = match action {
        None => "released: console detached, power left as it is (on_release = leave)".into(),
        Some(a) => match super::power(b, a, job_id, reports).await {
            PowerEnd::Done(_) => format!("released: console detached, power {}", a.as_str()),
            PowerEnd::Operator(i) => {
                format!(
                    "released: console detached; power {} needs an operator: {i}",
                    a.as_str()
                )
            }
            PowerEnd::Failed(e) => {
                format!(
                    "release: console detached, but power {} failed: {e}",
                    a.as_str()
                )
            }
        },
    };
    reports
        .board_report(
            b.name(),
            BoardReport::Activity {
                activity: BoardActivity::Idle,
                job_id: None,
            },
        )
        .await;
    said
}

/// Whether [`release`]'s words say it failed (for action results).
pub fn release_failed(said: &str) -> bool {
    said.starts_with("release:")
}
