//! The one signal a running job listens to: keep going, cancel cleanly, or drop at once.
//!
//! Cancel and drop differ on purpose (see `HeartbeatResponse`): a cancel kills the step,
//! runs `always` and reports `cancelled`; a drop means the lease is gone (stale epoch), so
//! nothing more may be written for the job: kill everything, report nothing. A drop
//! overrides a cancel, never the other way round.

use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Signal {
    Run,
    Cancel,
    Drop,
}

/// Shared by the job's task, its log shipper and the heartbeat loop.
#[derive(Debug, Clone)]
pub struct JobControl {
    tx: watch::Sender<Signal>,
}

impl Default for JobControl {
    fn default() -> Self {
        Self::new()
    }
}

impl JobControl {
    pub fn new() -> JobControl {
        JobControl {
            tx: watch::Sender::new(Signal::Run),
        }
    }

    pub fn cancel(&self) {
        self.raise(Signal::Cancel);
    }

    pub fn drop_job(&self) {
        self.raise(Signal::Drop);
    }

    fn raise(&self, s: Signal) {
        self.tx.send_if_modified(|cur| {
            if s > *cur {
                *cur = s;
                true
            } else {
                false
            }
        });
    }

    pub fn get(&self) -> Signal {
        *self.tx.borrow()
    }

    pub fn subscribe(&self) -> watch::Receiver<Signal> {
        self.tx.subscribe()
    }

    /// Resolves once the signal is at least `level`.
    pub async fn reached(&self, level: Signal) {
        let mut rx = self.tx.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = rx.wait_for(|s| *s >= level).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drop_overrides_cancel_not_the_reverse() {
        let c = JobControl::new();
        c.drop_job();
        c.cancel();
        assert_eq!(c.get(), Signal::Drop);
        c.reached(Signal::Cancel).await;
        let c = JobControl::new();
        c.cancel();
        assert_eq!(c.get(), Signal::Cancel);
    }
}
