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
}

impl Awake {
    pub fn new(started_at: DateTime<Utc>) -> Awake {
        Awake {
            state: Mutex::new((Liveness::new(started_at), Instant::now())),
        }
    }

    /// Silence counts from no earlier than this. Looks at the clocks first, so the first
    /// judgement after a stall already knows about it, whichever task runs first.
    pub fn since(&self) -> DateTime<Utc> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (liveness, last) = &mut *s;
        let now = Instant::now();
        if let Some(gap) = liveness.observe(Utc::now(), now.duration_since(*last)) {
            tracing::warn!(
                stalled_ms = u64::try_from(gap.as_millis()).unwrap_or(u64::MAX),
                "the server was stalled (paused, stopped or starved); lease holders and agents \
                 are not blamed for the silence"
            );
            metrics::counter!("testfarm_server_stalls_total").increment(1);
        }
        *last = now;
        liveness.since()
    }
}

/// Observes the clocks every [`OBSERVE_EVERY`] until the stop signal.
pub(crate) async fn watchdog(awake: std::sync::Arc<Awake>, mut stop: watch::Receiver<bool>) {
    while crate::tasks::tick(OBSERVE_EVERY, &mut stop).await {
        awake.since();
    }
}
