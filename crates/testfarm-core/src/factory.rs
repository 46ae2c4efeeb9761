//! What a buildomat factory does with one of its instances on each pass.
//!
//! buildomat-server owns the truth about a worker (does it exist, is it associated with
//! our instance, has its agent come online, is it held, should it be recycled); testfarm
//! owns the instance (the board it holds and since when). The factory loop asks the server
//! about every live instance and calls [`decide`] with both views; the answer is a value,
//! so every branch is unit-tested here without a server, and the loop is a thin shell
//! that carries the decision out.
//!
//! The order of the checks follows buildomat's own factories: a worker that is gone is
//! destroyed; a held worker is never touched (an engineer is investigating it, the board
//! stays leased until the hold is lifted); a recycled worker is destroyed; an instance
//! whose lab side ended (the board failed, its testfarm job ended) is destroyed; an instance
//! whose worker never came online past [`StuckLimits::boot`] is destroyed (a stuck agent
//! would otherwise hold a board until the server's own 30 minute limit); an online
//! worker whose instance made no progress past [`StuckLimits::silent`] is destroyed; a
//! worker that is not associated yet (we crashed between create and associate) is
//! associated again; a worker not yet online gets its 60 s job lease renewed, so the
//! server never hands the job to a second worker.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// The server's view of one worker, as `GET /0/factory/worker/{w}` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerView {
    /// The instance id the worker was associated with (`private`), if any.
    pub private: Option<String>,
    /// The server wants the worker torn down (job done, cancelled, timed out).
    pub recycle: bool,
    /// The worker's agent has bootstrapped.
    pub online: bool,
    /// An operator keeps the worker for investigation.
    pub hold: bool,
}

/// testfarm's view of one live instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceView {
    /// Our instance id (what we associate as `private`).
    pub id: String,
    /// When the instance was created.
    pub created_at: DateTime<Utc>,
    /// When the instance last showed progress (agent output, state change).
    pub last_progress: DateTime<Utc>,
    /// The lab side ended on its own: the testfarm job holding the board ended (the board
    /// failed, its lease expired, an operator cancelled it). The agent is gone with it.
    pub lab_ended: bool,
}

/// When an instance counts as stuck.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StuckLimits {
    /// A worker that is not online this long after its instance was created is stuck.
    pub boot: Duration,
    /// An online worker whose instance showed no progress this long is stuck.
    pub silent: Duration,
}

impl Default for StuckLimits {
    /// Shorter than the server's own 30 minute limits: a board is worth more than a VM.
    fn default() -> Self {
        StuckLimits {
            boot: Duration::from_secs(10 * 60),
            silent: Duration::from_secs(20 * 60),
        }
    }
}

/// Why an instance is destroyed; logged and stored with the instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DestroyReason {
    /// The server no longer knows the worker (deleted, or forgotten).
    WorkerGone,
    /// The server asked for the worker to be recycled.
    Recycled,
    /// The worker is associated with another instance: ours is a leftover.
    Mismatch,
    /// The worker's agent did not come online in time.
    BootStuck,
    /// The instance showed no progress in time.
    Silent,
    /// The lab side ended (board failure, lease ended): nothing runs the job any more.
    LabEnded,
}

impl DestroyReason {
    /// A stable word for logs, metrics and the instance record.
    pub fn as_str(self) -> &'static str {
        match self {
            DestroyReason::WorkerGone => "worker_gone",
            DestroyReason::Recycled => "recycled",
            DestroyReason::Mismatch => "mismatch",
            DestroyReason::BootStuck => "boot_stuck",
            DestroyReason::Silent => "silent",
            DestroyReason::LabEnded => "lab_ended",
        }
    }
}

/// What to do with one instance on this pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Tear the instance down: end its lease (the board is cleaned), delete the worker.
    Destroy(DestroyReason),
    /// Held by an operator: touch nothing, keep the board.
    KeepHeld,
    /// Associate the worker with the instance again, then renew the job lease.
    Associate,
    /// Not online yet: renew the job lease.
    RenewLease,
    /// Online and healthy: nothing to do.
    Keep,
}

/// Decides what to do with `instance`, given the server's view of its worker (`None`:
/// the server does not know it).
pub fn decide(
    instance: &InstanceView,
    worker: Option<&WorkerView>,
    limits: StuckLimits,
    now: DateTime<Utc>,
) -> Action {
    let Some(w) = worker else {
        return Action::Destroy(DestroyReason::WorkerGone);
    };
    if w.hold {
        return Action::KeepHeld;
    }
    if w.recycle {
        return Action::Destroy(DestroyReason::Recycled);
    }
    if instance.lab_ended {
        return Action::Destroy(DestroyReason::LabEnded);
    }
    if let Some(p) = &w.private
        && p != &instance.id
    {
        return Action::Destroy(DestroyReason::Mismatch);
    }
    if !w.online && older_than(instance.created_at, limits.boot, now) {
        return Action::Destroy(DestroyReason::BootStuck);
    }
    if w.online && older_than(instance.last_progress, limits.silent, now) {
        return Action::Destroy(DestroyReason::Silent);
    }
    if w.private.is_none() {
        return Action::Associate;
    }
    if !w.online {
        return Action::RenewLease;
    }
    Action::Keep
}

/// What to do with a worker the server lists for this factory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrphanAction {
    /// It belongs to a live instance, or is held: leave it.
    Leave,
    /// No live instance has it: DELETE it on the server.
    Delete,
}

/// Decides about a worker the server lists: held workers are always left alone; a worker
/// whose `private` (or id) is not one of our live instances is detritus of a crash.
pub fn decide_orphan(hold: bool, belongs_to_live_instance: bool) -> OrphanAction {
    if hold || belongs_to_live_instance {
        OrphanAction::Leave
    } else {
        OrphanAction::Delete
    }
}

fn older_than(since: DateTime<Utc>, limit: Duration, now: DateTime<Utc>) -> bool {
    match (now - since).to_std() {
        Ok(age) => age > limit,
        // `since` in the future (clock stepped back): not old.
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + secs, 0)
            .single()
            .unwrap_or_default()
    }

    fn inst() -> InstanceView {
        InstanceView {
            id: "i1".into(),
            created_at: t(0),
            last_progress: t(0),
            lab_ended: false,
        }
    }

    fn worker(private: Option<&str>, recycle: bool, online: bool, hold: bool) -> WorkerView {
        WorkerView {
            private: private.map(str::to_string),
            recycle,
            online,
            hold,
        }
    }

    const L: StuckLimits = StuckLimits {
        boot: Duration::from_secs(600),
        silent: Duration::from_secs(1200),
    };

    #[test]
    fn gone_worker_destroys() {
        assert_eq!(
            decide(&inst(), None, L, t(1)),
            Action::Destroy(DestroyReason::WorkerGone)
        );
    }

    #[test]
    fn held_worker_is_kept_even_when_recycled_or_stuck() {
        let w = worker(Some("i1"), true, false, true);
        assert_eq!(decide(&inst(), Some(&w), L, t(100_000)), Action::KeepHeld);
    }

    #[test]
    fn recycle_destroys() {
        let w = worker(Some("i1"), true, true, false);
        assert_eq!(
            decide(&inst(), Some(&w), L, t(1)),
            Action::Destroy(DestroyReason::Recycled)
        );
    }

    #[test]
    fn unassociated_worker_is_associated() {
        let w = worker(None, false, false, false);
        assert_eq!(decide(&inst(), Some(&w), L, t(1)), Action::Associate);
    }

    #[test]
    fn other_instance_destroys() {
        let w = worker(Some("i2"), false, false, false);
        assert_eq!(
            decide(&inst(), Some(&w), L, t(1)),
            Action::Destroy(DestroyReason::Mismatch)
        );
    }

    #[test]
    fn not_online_renews_until_boot_limit() {
        let w = worker(Some("i1"), false, false, false);
        assert_eq!(decide(&inst(), Some(&w), L, t(600)), Action::RenewLease);
        assert_eq!(
            decide(&inst(), Some(&w), L, t(601)),
            Action::Destroy(DestroyReason::BootStuck)
        );
    }

    #[test]
    fn online_is_kept_until_silent() {
        let w = worker(Some("i1"), false, true, false);
        assert_eq!(decide(&inst(), Some(&w), L, t(1200)), Action::Keep);
        assert_eq!(
            decide(&inst(), Some(&w), L, t(1201)),
            Action::Destroy(DestroyReason::Silent)
        );
        let mut i = inst();
        i.last_progress = t(1000);
        assert_eq!(decide(&i, Some(&w), L, t(1500)), Action::Keep);
    }

    #[test]
    fn clock_stepped_back_is_not_stuck() {
        let w = worker(Some("i1"), false, false, false);
        assert_eq!(decide(&inst(), Some(&w), L, t(-50)), Action::RenewLease);
    }

    #[test]
    fn lab_ended_destroys_unless_held() {
        let mut i = inst();
        i.lab_ended = true;
        let w = worker(Some("i1"), false, true, false);
        assert_eq!(
            decide(&i, Some(&w), L, t(1)),
            Action::Destroy(DestroyReason::LabEnded)
        );
        let held = worker(Some("i1"), false, true, true);
        assert_eq!(decide(&i, Some(&held), L, t(1)), Action::KeepHeld);
    }

    #[test]
    fn orphans() {
        assert_eq!(decide_orphan(true, false), OrphanAction::Leave);
        assert_eq!(decide_orphan(false, true), OrphanAction::Leave);
        assert_eq!(decide_orphan(false, false), OrphanAction::Delete);
    }
}
