//! Bringing a board back: the recovery policy's steps carried out with the board's own
//! drivers — wait, power-cycle, watch the console for the boot prompt — until it boots or
//! the policy says a person is needed. The caller turns the outcome into board state (back
//! in the pool, or `maintenance` with an alert event).

use std::time::{Duration, Instant};

use crate::boot::watch_boot_since;
use crate::console::{Console, ConsoleLine};
use crate::power::{PowerDriver, PowerOutcome};
use crate::rules::boot::BootRules;
use crate::rules::recovery::{RecoveryPolicy, RecoveryStep};

#[derive(Debug, Clone, PartialEq)]
pub enum RecoveryOutcome {
    Recovered {
        attempts: u32,
        took: Duration,
    },
    /// The tries are used up; `attempts` says what each one ended with.
    NeedsManualIntervention {
        reason: String,
        attempts: Vec<String>,
    },
    /// The board's power is manual: a person must cycle it.
    OperatorActionNeeded {
        instructions: String,
    },
}

impl RecoveryOutcome {
    /// What the board's history and the report say: (recovered, what each attempt ended
    /// with, the detail), with `what` naming the trouble ("the board hung (…)").
    pub fn describe(&self, what: &str) -> (bool, Vec<String>, String) {
        match self {
            RecoveryOutcome::Recovered { attempts, took } => (
                true,
                vec![format!(
                    "recovered after {attempts} power cycle(s) in {:.1}s",
                    took.as_secs_f64()
                )],
                format!("{what}; recovered by a power cycle"),
            ),
            RecoveryOutcome::NeedsManualIntervention { reason, attempts } => (
                false,
                attempts.clone(),
                format!("{what}; not recovered: {reason}; the board needs manual intervention"),
            ),
            RecoveryOutcome::OperatorActionNeeded { instructions } => (
                false,
                Vec::new(),
                format!(
                    "{what}; the board has manual power, an operator must cycle it: {instructions}"
                ),
            ),
        }
    }
}

pub async fn recover(
    power: &dyn PowerDriver,
    console: &mut Console,
    boot: &BootRules,
    policy: &RecoveryPolicy,
    sink: &mut (dyn FnMut(&ConsoleLine) + Send),
) -> RecoveryOutcome {
    let start = Instant::now();
    let mut failures: Vec<String> = Vec::new();
    loop {
        let failed = u32::try_from(failures.len()).unwrap_or(u32::MAX);
        match policy.next(failed) {
            RecoveryStep::NeedsManualIntervention { reason } => {
                return RecoveryOutcome::NeedsManualIntervention {
                    reason,
                    attempts: failures,
                };
            }
            RecoveryStep::PowerCycle { attempt, wait } => {
                tokio::time::sleep(wait).await;
                let cycled_at = std::time::SystemTime::now();
                match power.cycle().await {
                    Ok(PowerOutcome::Done(_)) => {}
                    Ok(PowerOutcome::OperatorActionNeeded { instructions, .. }) => {
                        return RecoveryOutcome::OperatorActionNeeded { instructions };
                    }
                    Err(e) => {
                        failures.push(format!("cycle {attempt}: {e}"));
                        continue;
                    }
                }
                let report = watch_boot_since(console, boot.clone(), 10, sink, cycled_at).await;
                if report.verdict.booted() {
                    return RecoveryOutcome::Recovered {
                        attempts: attempt,
                        took: start.elapsed(),
                    };
                }
                failures.push(format!("cycle {attempt}: {}", report.verdict.describe()));
            }
        }
    }
}
