//! When a board leaves the pool and when it comes back. Hysteresis on purpose: one bad
//! probe should not pull a board (flaky links exist), but N in a row should; and once out,
//! only a passing health check brings it back, never time alone (a board that was broken
//! an hour ago is still broken until shown otherwise). Separately, a board whose jobs keep
//! ending in lab errors leaves the pool even if its probes pass.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuarantinePolicy {
    /// Consecutive failed health checks that take a board out of the pool.
    pub health_failures: u32,
    /// Lab errors (`error`, not `failed`) within `window` that take it out.
    pub lab_errors: u32,
    pub window: Duration,
}

impl Default for QuarantinePolicy {
    fn default() -> Self {
        QuarantinePolicy {
            health_failures: 3,
            lab_errors: 3,
            window: Duration::from_secs(3600),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PoolState {
    #[default]
    InPool,
    Quarantined {
        reason: String,
    },
}

/// A board's health history as far as the pool cares.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HealthRecord {
    pub consecutive_failures: u32,
    pub state: PoolState,
}

/// What changed, for the event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolChange {
    Left { reason: String },
    Returned,
}

impl HealthRecord {
    /// One health check's result.
    pub fn apply(
        &self,
        policy: &QuarantinePolicy,
        passed: bool,
    ) -> (HealthRecord, Option<PoolChange>) {
        match (&self.state, passed) {
            (PoolState::InPool, true) => (HealthRecord::default(), None),
            (PoolState::Quarantined { .. }, true) => {
                (HealthRecord::default(), Some(PoolChange::Returned))
            }
            (state, false) => {
                let n = self.consecutive_failures.saturating_add(1);
                if matches!(state, PoolState::InPool) && n >= policy.health_failures {
                    let reason = format!("{n} health checks failed in a row");
                    (
                        HealthRecord {
                            consecutive_failures: n,
                            state: PoolState::Quarantined {
                                reason: reason.clone(),
                            },
                        },
                        Some(PoolChange::Left { reason }),
                    )
                } else {
                    (
                        HealthRecord {
                            consecutive_failures: n,
                            state: state.clone(),
                        },
                        None,
                    )
                }
            }
        }
    }
}

/// Lab errors at `errors` (times since any fixed origin, any order): does the count in
/// the window ending at `now` reach the limit? The reason is for the board's state.
pub fn failure_rate(
    policy: &QuarantinePolicy,
    errors: &[Duration],
    now: Duration,
) -> Option<String> {
    let since = now.saturating_sub(policy.window);
    let n = errors.iter().filter(|t| **t >= since && **t <= now).count();
    (n as u64 >= u64::from(policy.lab_errors))
        .then(|| format!("{n} jobs ended with a lab error within {:?}", policy.window))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const P: QuarantinePolicy = QuarantinePolicy {
        health_failures: 3,
        lab_errors: 2,
        window: Duration::from_secs(100),
    };

    #[test]
    fn three_failures_out_one_pass_back() {
        let mut r = HealthRecord::default();
        let mut changes = Vec::new();
        for passed in [false, false, true, false, false, false, false, true] {
            let (next, change) = r.apply(&P, passed);
            changes.extend(change);
            r = next;
        }
        assert!(matches!(&changes[0], PoolChange::Left { reason } if reason.contains("3 health")));
        assert_eq!(changes[1], PoolChange::Returned);
        assert_eq!(changes.len(), 2);
        assert_eq!(r.state, PoolState::InPool);
    }

    #[test]
    fn lab_errors_in_the_window_count() {
        let s = Duration::from_secs;
        assert!(failure_rate(&P, &[s(10), s(150)], s(160)).is_none());
        assert!(failure_rate(&P, &[s(70), s(150)], s(160)).is_some());
    }

    proptest! {
        /// A board is out of the pool exactly when its last pass is followed by at least
        /// N failures (or it never passed and failed N times): hysteresis, no flapping.
        #[test]
        fn state_follows_the_history(history in proptest::collection::vec(any::<bool>(), 0..60)) {
            let mut r = HealthRecord::default();
            for passed in &history {
                r = r.apply(&P, *passed).0;
            }
            let trailing = history.iter().rev().take_while(|p| !**p).count() as u32;
            let out = matches!(r.state, PoolState::Quarantined { .. });
            prop_assert_eq!(out, trailing >= P.health_failures);
            prop_assert_eq!(r.consecutive_failures, trailing);
        }
    }
}
