//! What to do with a board that stopped answering: power-cycle it, waiting longer before
//! each try, and after `tries` cycles stop and ask for a person (seed 004 R18.3–4). Cycling
//! a board forever hides a broken board and wears out relays; giving up at once wastes a
//! board that a cycle would have fixed.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryPolicy {
    /// Power cycles before giving up.
    pub tries: u32,
    /// Wait before the first cycle; doubled for each further try.
    pub backoff: Duration,
    pub backoff_max: Duration,
    /// No console output for this long while a job runs: the board hangs.
    pub hang_after: Duration,
}

impl Default for RecoveryPolicy {
    fn default() -> Self {
        RecoveryPolicy {
            tries: 2,
            backoff: Duration::from_secs(5),
            backoff_max: Duration::from_secs(60),
            hang_after: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryStep {
    /// Wait, then cycle the power; `attempt` counts from 1.
    PowerCycle { attempt: u32, wait: Duration },
    /// Tries used up: the board goes to maintenance with this reason and an alert.
    NeedsManualIntervention { reason: String },
}

impl RecoveryPolicy {
    /// The next step after `failed_attempts` cycles that did not bring the board back.
    pub fn next(&self, failed_attempts: u32) -> RecoveryStep {
        if failed_attempts >= self.tries {
            return RecoveryStep::NeedsManualIntervention {
                reason: format!(
                    "needs manual intervention: {} power cycle{} did not recover the board",
                    failed_attempts,
                    if failed_attempts == 1 { "" } else { "s" }
                ),
            };
        }
        let factor = 1u32.checked_shl(failed_attempts).unwrap_or(u32::MAX);
        let wait = self
            .backoff
            .checked_mul(factor)
            .unwrap_or(self.backoff_max)
            .min(self.backoff_max);
        RecoveryStep::PowerCycle {
            attempt: failed_attempts + 1,
            wait,
        }
    }

    /// Has a board that last printed at `last_output` hung by `now`?
    pub fn hung(&self, last_output: Duration, now: Duration) -> bool {
        now.saturating_sub(last_output) >= self.hang_after
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn backs_off_then_gives_up() {
        let p = RecoveryPolicy {
            tries: 3,
            backoff: Duration::from_secs(5),
            backoff_max: Duration::from_secs(15),
            hang_after: Duration::from_secs(30),
        };
        let waits: Vec<RecoveryStep> = (0..4).map(|n| p.next(n)).collect();
        assert_eq!(
            waits[..3],
            [
                RecoveryStep::PowerCycle {
                    attempt: 1,
                    wait: Duration::from_secs(5)
                },
                RecoveryStep::PowerCycle {
                    attempt: 2,
                    wait: Duration::from_secs(10)
                },
                RecoveryStep::PowerCycle {
                    attempt: 3,
                    wait: Duration::from_secs(15)
                },
            ]
        );
        assert!(
            matches!(&waits[3], RecoveryStep::NeedsManualIntervention { reason }
            if reason.contains("3 power cycles"))
        );
        assert!(p.hung(Duration::from_secs(1), Duration::from_secs(31)));
        assert!(!p.hung(Duration::from_secs(2), Duration::from_secs(31)));
    }

    proptest! {
        /// Waits never shrink and never pass the cap, and the number of cycles is `tries`.
        #[test]
        fn waits_grow_bounded(tries in 0u32..40, base in 0u64..100, cap in 0u64..1000) {
            let p = RecoveryPolicy {
                tries,
                backoff: Duration::from_secs(base),
                backoff_max: Duration::from_secs(cap),
                hang_after: Duration::from_secs(1),
            };
            let mut last = Duration::ZERO;
            let mut cycles = 0;
            for n in 0..50 {
                match p.next(n) {
                    RecoveryStep::PowerCycle { attempt, wait } => {
                        prop_assert_eq!(attempt, n + 1);
                        prop_assert!(wait >= last && wait <= Duration::from_secs(cap));
                        last = wait;
                        cycles += 1;
                    }
                    RecoveryStep::NeedsManualIntervention { .. } => {
                        prop_assert!(n >= tries);
                    }
                }
            }
            prop_assert_eq!(cycles, tries);
        }
    }
}
