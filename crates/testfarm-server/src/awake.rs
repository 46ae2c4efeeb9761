//! The server's own liveness, observed: the clock side of `testfarm_core::liveness`.
//! The rule (what a stall is, what it credits) is the core's; this keeps the state and
//! reads the clocks, from a watchdog task and before every judgement of silence.

use std::sync::Mutex;
use std::time::Instant;

use chrono::{DateTime, Utc};
use testfarm_core::liveness::{Liveness, OBSERVE_EVERY};
use tokio::sync::watch;

/// When the server was last awake; shared by handlers and background tasks.
#[derive(Debug)]
pub struct Awake {
    state: Mutex<(Liveness, Instant)>,
    stalls: std::sync::atomic::AtomicU64,
}

impl Awake {
    pub fn new(started_at: DateTime<Utc>) -> Awake {
        Awake {
            state: Mutex::new((Liveness::new(started_at), Instant::now())),
            stalls: Default::default(),
        }
    }

    /// Looks at both clocks: the stall just ended, if any, and when silence counts from.
    fn observe(&self) -> (Option<std::time::Duration>, DateTime<Utc>) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (liveness, last) = &mut *s;
        let now = Instant::now();
        let stall = liveness.observe(Utc::now(), now.duration_since(*last));
        *last = now;
        (stall, liveness.since())
    }

    /// Silence counts from no earlier than this. Looks at the clocks first, so the first
    /// judgement after a stall already knows about it, whichever task runs first.
    pub fn since(&self) -> DateTime<Utc> {
        let (stall, since) = self.observe();
        if let Some(gap) = stall {
            tracing::warn!(
                stalled_ms = u64::try_from(gap.as_millis()).unwrap_or(u64::MAX),
                "the server was stalled (paused, stopped or starved); lease holders and agents \
                 are not blamed for the silence"
            );
            metrics::counter!("testfarm_server_stalls_total").increment(1);
            self.stalls
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        since
    }

    /// Stalls seen so far.
    pub fn stalls(&self) -> u64 {
        self.stalls.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The server starts serving: the time since [`Awake::new`] was start-up (the
    /// built-in agent probing the host, say), not a stall. It is credited to holders the
    /// same way, without a warning.
    pub fn begin(&self) {
        self.observe();
    }
}

/// Observes the clocks every [`OBSERVE_EVERY`] until the stop signal.
pub(crate) async fn watchdog(awake: std::sync::Arc<Awake>, mut stop: watch::Receiver<bool>) {
    while crate::tasks::tick(OBSERVE_EVERY, &mut stop).await {
        awake.since();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_up_is_credited_but_is_not_a_stall() {
        let started = Utc::now();
        let a = Awake::new(started);
        // Start-up work between binding and serving (the built-in agent probing the host).
        std::thread::sleep(std::time::Duration::from_millis(1_100));
        a.begin();
        let since = a.since();
        assert_eq!(a.stalls(), 0, "start-up was reported as a stall");
        assert!(
            since > started,
            "start-up silence is credited to holders too"
        );
        // A real stall after that is seen and counted.
        std::thread::sleep(std::time::Duration::from_millis(1_100));
        assert!(a.since() > since);
        assert_eq!(a.stalls(), 1);
    }
}
