//! The server's own liveness: when it was last awake.
//!
//! A holder proves it is alive by being heard (lease renewals, agent heartbeats). While
//! the server itself is not listening, nobody can be heard: when it is down (a restart),
//! and when it is stalled (its VM paused or migrated, the process stopped or starved for
//! CPU, the host suspended). Counting that silence against the holders ends every lease
//! and takes every agent offline the moment the server resumes, and the lab's work dies
//! for the server's fault. So silence is measured from no earlier than
//! [`Liveness::since`]: the server's start or the end of its last stall
//! ([`crate::lease::Lease::credit`]).
//!
//! A stall is seen as a gap between two observations of the clocks larger than
//! [`STALL_AFTER`]: the server observes every fraction of a second, and before every
//! judgement of silence. Both the wall clock (which keeps running while a VM is
//! suspended) and the monotonic clock (which keeps running while a process is stopped)
//! are consulted; a wall clock stepped forward counts as a stall too, which only credits
//! holders with at most one more heartbeat bound.
//!
//! What this costs: a dead holder's lease ends within the heartbeat bound of its death
//! *or of the server's last stall*, whichever is later. A server that stalls again and
//! again defers that end; the lease's duration still bounds it.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// A gap between observations longer than this is a stall. The server observes every
/// quarter second, so a busy but healthy server stays far below it.
pub const STALL_AFTER: Duration = Duration::from_secs(1);

/// How often the server should observe the clocks ([`Liveness::observe`]).
pub const OBSERVE_EVERY: Duration = Duration::from_millis(250);

/// When the server was last awake, and when it last looked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    since: DateTime<Utc>,
    last_seen: DateTime<Utc>,
}

impl Liveness {
    /// A server that started at `started_at`: nothing before it was heard.
    pub fn new(started_at: DateTime<Utc>) -> Liveness {
        Liveness {
            since: started_at,
            last_seen: started_at,
        }
    }

    /// Silence counts from no earlier than this.
    pub fn since(&self) -> DateTime<Utc> {
        self.since
    }

    /// The server looks at the clocks at `now`, `monotonic_gap` after it last looked.
    /// Returns the length of the stall it was in, if it was.
    pub fn observe(&mut self, now: DateTime<Utc>, monotonic_gap: Duration) -> Option<Duration> {
        let wall_gap = (now - self.last_seen).to_std().unwrap_or_default();
        let gap = wall_gap.max(monotonic_gap);
        self.last_seen = self.last_seen.max(now);
        if gap > STALL_AFTER {
            self.since = self.since.max(now);
            Some(gap)
        } else {
            None
        }
    }
}

/// Whether an agent last heard at `heard` (already no earlier than [`Liveness::since`])
/// is too silent to be given new work: silent longer than `heartbeat_ttl`, its leases
/// have expired (or are about to), so a job placed on its resource now would only be
/// lost again. The health monitor calls such an agent offline only after
/// `health.offline_after`, usually the same bound or longer; until then the scheduler
/// must not hand its resources the very jobs that were just re-queued off them. The
/// reason, for `why`, if so.
pub fn too_silent_for_work(
    heard: DateTime<Utc>,
    now: DateTime<Utc>,
    heartbeat_ttl: Duration,
) -> Option<String> {
    let silent = (now - heard).to_std().ok()?;
    (silent >= heartbeat_ttl).then(|| {
        format!(
            "its agent has been silent for {}s (its leases expire after {}s)",
            silent.as_secs(),
            heartbeat_ttl.as_secs()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap_or_default()
    }

    #[test]
    fn regular_observations_keep_the_start() {
        let mut l = Liveness::new(t(0));
        for i in 1..20 {
            let now = t(0) + chrono::Duration::milliseconds(250 * i);
            assert_eq!(l.observe(now, Duration::from_millis(250)), None);
        }
        assert_eq!(l.since(), t(0));
    }

    #[test]
    fn a_stall_by_either_clock_moves_since() {
        // Process stopped: the monotonic clock ran, the wall clock too.
        let mut l = Liveness::new(t(0));
        assert_eq!(
            l.observe(t(5), Duration::from_secs(5)),
            Some(Duration::from_secs(5))
        );
        assert_eq!(l.since(), t(5));
        // VM suspended: the monotonic clock stood still, the wall clock moved.
        assert_eq!(
            l.observe(t(65), Duration::from_millis(10)),
            Some(Duration::from_secs(60))
        );
        assert_eq!(l.since(), t(65));
        // Starved: the wall clock was read late and the monotonic gap says so.
        let now = t(65) + chrono::Duration::milliseconds(300);
        assert!(l.observe(now, Duration::from_secs(2)).is_some());
        assert_eq!(l.since(), now);
    }

    #[test]
    fn a_clock_stepped_back_is_not_a_stall_and_since_never_goes_back() {
        let mut l = Liveness::new(t(100));
        assert_eq!(l.observe(t(40), Duration::from_millis(250)), None);
        assert_eq!(l.since(), t(100));
        assert!(l.observe(t(200), Duration::from_millis(250)).is_some());
        assert_eq!(l.since(), t(200));
    }

    #[test]
    fn an_agent_silent_past_the_lease_ttl_gets_no_work() {
        let ttl = Duration::from_secs(30);
        assert_eq!(too_silent_for_work(t(0), t(29), ttl), None);
        let why = too_silent_for_work(t(0), t(31), ttl).unwrap();
        assert!(why.contains("silent for 31s"), "{why}");
        // Heard "in the future" (clock skew between writes): not silent.
        assert_eq!(too_silent_for_work(t(10), t(5), ttl), None);
    }
}
