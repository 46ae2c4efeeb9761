//! What history the server keeps. Every lease acquired and every state change leaves a
//! row (a lease row, events); a busy lab writes hundreds of thousands a day, and a
//! database that only grows ends up slower (its working set no longer fits in memory)
//! and full. Old history is pruned in the background:
//!
//! - an **event** older than the events' age is deleted, except the newest event, so
//!   event ids keep growing from it and live streams resume without gaps;
//! - an **ended lease** (released or expired) whose end is older than the leases' age is
//!   deleted; an active lease is never deleted, however old.
//!
//! Jobs, their logs and results are not pruned here.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// How long history is kept; `None` keeps it forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    pub events: Option<Duration>,
    pub ended_leases: Option<Duration>,
}

/// Rows of one kind older than this go: events recorded, or leases ended, before it.
pub fn cutoff(now: DateTime<Utc>, keep: Option<Duration>) -> Option<DateTime<Utc>> {
    let keep = chrono::Duration::from_std(keep?).ok()?;
    now.checked_sub_signed(keep)
}

impl Retention {
    /// Ages from configuration, where zero means "keep forever".
    pub fn from_ages(events: Duration, ended_leases: Duration) -> Retention {
        let age = |d: Duration| (!d.is_zero()).then_some(d);
        Retention {
            events: age(events),
            ended_leases: age(ended_leases),
        }
    }

    pub fn events_cutoff(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        cutoff(now, self.events)
    }

    pub fn leases_cutoff(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        cutoff(now, self.ended_leases)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_keeps_forever_and_ages_subtract() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default();
        let r = Retention::from_ages(Duration::ZERO, Duration::from_secs(86_400));
        assert_eq!(r.events_cutoff(now), None);
        assert_eq!(r.leases_cutoff(now), Some(now - chrono::Duration::days(1)));
        // An age beyond what a date can hold keeps everything rather than failing.
        let huge = Retention::from_ages(Duration::from_secs(u64::MAX), Duration::ZERO);
        assert_eq!(huge.events_cutoff(now), None);
    }
}
