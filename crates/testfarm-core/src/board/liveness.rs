//! Console liveness as a health input. An idle board that is powered on and booted should
//! answer on its console when poked (a newline brings a prompt back); one that says
//! nothing has hung as surely as one whose probe fails, so its silence is counted exactly
//! like a failed probe, and the quarantine rules ([`super::quarantine`]) give it the same
//! hysteresis: one silent poke is a finding, N in a row take the board out of the pool.
//!
//! A board that is off, not known to have booted, or held by a job is not poked: silence
//! is expected there (or the job's own hang detection watches it).

use std::time::Duration;

/// What the agent knows about the board when its idle probe comes round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LivenessContext {
    /// `Some(false)` when the power reads off; `None` when it cannot be read.
    pub powered: Option<bool>,
    /// The last thing it did after a power change was to boot (the prompt was seen).
    pub booted: bool,
    /// A job holds the board.
    pub held: bool,
}

/// Whether the console should answer now; `Err` says why it is not checked.
pub fn expected(c: &LivenessContext) -> Result<(), &'static str> {
    if c.held {
        return Err("held by a job");
    }
    if c.powered == Some(false) {
        return Err("powered off");
    }
    if !c.booted {
        return Err("not known to have booted since its last power change");
    }
    Ok(())
}

/// The console's answer to a poke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    /// Something came back after this long.
    Alive { after: Duration },
    /// Nothing within the limit.
    Silent { limit: Duration },
    /// The console could not be opened at all.
    Unreachable { why: String },
}

impl Liveness {
    /// From when the first output came after the poke (if it did) and the limit.
    pub fn judge(answered_after: Option<Duration>, limit: Duration) -> Liveness {
        match answered_after {
            Some(after) if after <= limit => Liveness::Alive { after },
            _ => Liveness::Silent { limit },
        }
    }

    pub fn alive(&self) -> bool {
        matches!(self, Liveness::Alive { .. })
    }

    /// The finding for the board's health (and its history).
    pub fn finding(&self) -> String {
        match self {
            Liveness::Alive { after } => format!("console answers (after {after:?})"),
            Liveness::Silent { limit } => format!(
                "console silent for {limit:?} while powered on and booted (the board hangs?)"
            ),
            Liveness::Unreachable { why } => format!("console unreachable: {why}"),
        }
    }

    /// The `console` value among the health values (`alive`, `silent`, `unreachable`).
    pub fn value(&self) -> &'static str {
        match self {
            Liveness::Alive { .. } => "alive",
            Liveness::Silent { .. } => "silent",
            Liveness::Unreachable { .. } => "unreachable",
        }
    }
}

/// One idle health result from the probe (if the board has one and it ran) and the
/// console (if it was checked): passed only when every part that ran passed. `None` when
/// neither ran (nothing to report).
pub fn combine(probe_passed: Option<bool>, console: Option<&Liveness>) -> Option<bool> {
    match (probe_passed, console) {
        (None, None) => None,
        (p, c) => Some(p.unwrap_or(true) && c.is_none_or(Liveness::alive)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::board::quarantine::{HealthRecord, PoolState, QuarantinePolicy};
    use proptest::prelude::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn only_a_powered_booted_idle_board_is_poked() {
        let ok = LivenessContext {
            powered: Some(true),
            booted: true,
            held: false,
        };
        assert_eq!(expected(&ok), Ok(()));
        assert_eq!(
            expected(&LivenessContext {
                powered: None,
                ..ok
            }),
            Ok(())
        );
        for c in [
            LivenessContext { held: true, ..ok },
            LivenessContext {
                powered: Some(false),
                ..ok
            },
            LivenessContext {
                booted: false,
                ..ok
            },
        ] {
            assert!(expected(&c).is_err(), "{c:?}");
        }
    }

    #[test]
    fn an_answer_past_the_limit_is_silence() {
        assert!(Liveness::judge(Some(MS(5)), MS(100)).alive());
        assert_eq!(
            Liveness::judge(Some(MS(101)), MS(100)),
            Liveness::Silent { limit: MS(100) }
        );
        let silent = Liveness::judge(None, MS(100));
        assert!(!silent.alive() && silent.finding().contains("silent"));
        assert_eq!(combine(None, None), None);
        assert_eq!(combine(Some(true), Some(&silent)), Some(false));
        assert_eq!(combine(None, Some(&silent)), Some(false));
        assert_eq!(combine(Some(false), None), Some(false));
        assert_eq!(
            combine(None, Some(&Liveness::Alive { after: MS(1) })),
            Some(true)
        );
    }

    proptest! {
        /// Fed through the quarantine rule, console silence behaves exactly as failed
        /// probes do: out of the pool exactly when the last N pokes were all silent.
        #[test]
        fn silence_has_the_probes_hysteresis(answers in proptest::collection::vec(any::<bool>(), 0..40)) {
            let policy = QuarantinePolicy { health_failures: 3, ..QuarantinePolicy::default() };
            let mut r = HealthRecord::default();
            for a in &answers {
                let l = Liveness::judge(a.then_some(MS(1)), MS(100));
                let passed = combine(None, Some(&l)).unwrap_or(true);
                r = r.apply(&policy, passed).0;
            }
            let trailing = answers.iter().rev().take_while(|a| !**a).count() as u32;
            prop_assert_eq!(matches!(r.state, PoolState::Quarantined { .. }), trailing >= 3);
        }
    }
}
