//! Leases: a resource (or a share of a QEMU host or build server) held by a job or a
//! person, and the rules that make every lease end.
//!
//! Two clocks bound a lease, and it ends at whichever comes first:
//!
//! ```text
//! effective_end = min(expires_at, heartbeat_at + heartbeat_ttl)
//! ```
//!
//! `expires_at` is the duration asked for (`--duration 30m`, or the job's timeout);
//! `heartbeat_at + heartbeat_ttl` is how long the holder may stay silent (default 30 s).
//! A holder that dies (`kill -9` of `lease exec`, a cancelled CI job) stops heartbeating,
//! so its lease ends within the heartbeat bound instead of holding a board for the rest
//! of its duration: the failure labgrid and Jumpstarter users report most.
//!
//! Fencing: each lease carries an `epoch`, one more than the resource's last epoch, so
//! epochs grow per resource. Every write under a lease presents its epoch; a write with an
//! older epoch (a partitioned agent coming back, a force-released holder) is refused.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use ulid::Ulid;

use crate::resource::UnknownValue;

/// Default heartbeat bound: a silent holder loses its lease after this long.
pub const DEFAULT_HEARTBEAT_TTL: Duration = Duration::from_secs(30);

/// Added to a job's timeout for its lease: `always` steps and cleanup run under the lease.
pub const JOB_LEASE_MARGIN: Duration = Duration::from_secs(5 * 60);

/// A job's lease when its spec has no timeout; the agent extends it while work runs.
pub const DEFAULT_JOB_LEASE: Duration = Duration::from_secs(60 * 60);

/// The duration of the lease the scheduler takes for a job.
pub fn job_lease_duration(timeout: Option<Duration>) -> Duration {
    timeout
        .unwrap_or(DEFAULT_JOB_LEASE)
        .saturating_add(JOB_LEASE_MARGIN)
        .min(MAX_DURATION)
}

/// Lease times as chrono's own `Serialize` writes them (`2026-11-23T19:12:28.703156717Z`),
/// but through one string written by [`crate::timestamp`]: chrono's goes through
/// `collect_str` and its formatter plumbing, which made serialising a lease answer ~16k
/// instructions, a lease round trip's biggest single cost in Rust code.
mod rfc3339 {
    use chrono::{DateTime, Utc};
    use serde::Serializer;

    pub fn one<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::timestamp::rfc3339(t, true))
    }

    pub fn opt<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => one(t, s),
            None => s.serialize_none(),
        }
    }
}

/// Who holds a lease.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(tag = "holder_type", content = "holder", rename_all = "snake_case")]
pub enum Holder {
    /// A job placed by the scheduler.
    Job(Ulid),
    /// A person or a token's name (manual `lease acquire`).
    Person(String),
}

impl Holder {
    pub fn holder_type(&self) -> &'static str {
        match self {
            Holder::Job(_) => "job",
            Holder::Person(_) => "person",
        }
    }

    /// The holder's name: a job's id, or a person's name (the `holder` column and field).
    pub fn value(&self) -> String {
        match self {
            Holder::Job(id) => id.to_string(),
            Holder::Person(name) => name.clone(),
        }
    }

    /// The holder from its type and value, as [`Holder::holder_type`] and
    /// [`Holder::value`] give them.
    pub fn from_parts(holder_type: &str, value: &str) -> Result<Holder, String> {
        match holder_type {
            "job" => Ulid::from_string(value)
                .map(Holder::Job)
                .map_err(|e| format!("job holder {value:?} is not a job id: {e}")),
            "person" => Ok(Holder::Person(value.to_string())),
            other => Err(format!("unknown holder type {other:?} (job, person)")),
        }
    }
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Holder::Job(id) => write!(f, "job {id}"),
            Holder::Person(name) => write!(f, "{name}"),
        }
    }
}

/// How much of the resource the lease takes. Boards are always whole; QEMU hosts and
/// build servers are shared in cpus and memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(tag = "share", rename_all = "snake_case")]
pub enum Share {
    Whole,
    Slice { cpus: u32, memory_mb: u64 },
}

impl Share {
    pub fn cpus(self) -> u32 {
        match self {
            Share::Whole => 0,
            Share::Slice { cpus, .. } => cpus,
        }
    }

    pub fn memory_mb(self) -> u64 {
        match self {
            Share::Whole => 0,
            Share::Slice { memory_mb, .. } => memory_mb,
        }
    }
}

impl fmt::Display for Share {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Share::Whole => f.write_str("whole"),
            Share::Slice { cpus, memory_mb } => {
                write!(f, "{cpus} cpus, {}", crate::size::format_mib(*memory_mb))
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum LeaseState {
    Active,
    Released,
    Expired,
}

impl LeaseState {
    pub const ALL: [LeaseState; 3] = [
        LeaseState::Active,
        LeaseState::Released,
        LeaseState::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LeaseState::Active => "active",
            LeaseState::Released => "released",
            LeaseState::Expired => "expired",
        }
    }
}

impl fmt::Display for LeaseState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LeaseState {
    type Err = UnknownValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LeaseState::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| UnknownValue {
                what: "lease state",
                got: s.to_string(),
                expected: LeaseState::ALL.iter().map(|v| v.as_str()).collect(),
            })
    }
}

/// Why a lease ended; stored as `end_reason` and shown in events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(tag = "end", rename_all = "snake_case")]
pub enum EndReason {
    /// The holder released it.
    Released,
    /// An operator took it away; the holder is fenced from now on.
    Forced { by: String, reason: String },
    /// Its duration ran out.
    DurationOver,
    /// Its holder went silent for longer than the heartbeat bound.
    HeartbeatLost { silent_s: u64 },
    /// Ended by reconciliation after a server restart, or because the resource was lost.
    Reconciled { detail: String },
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndReason::Released => f.write_str("released by its holder"),
            EndReason::Forced { by, reason } => write!(f, "force-released by {by}: {reason}"),
            EndReason::DurationOver => f.write_str("its duration ran out"),
            EndReason::HeartbeatLost { silent_s } => {
                write!(f, "its holder stopped heartbeating ({silent_s}s silent)")
            }
            EndReason::Reconciled { detail } => write!(f, "{detail}"),
        }
    }
}

/// A lease as stored (one row of `leases`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct Lease {
    #[cfg_attr(feature = "schema", schema(value_type = String))]
    pub id: Ulid,
    #[cfg_attr(feature = "schema", schema(value_type = String))]
    pub resource_id: Ulid,
    #[serde(flatten)]
    pub holder: Holder,
    pub share: Share,
    pub epoch: u64,
    pub state: LeaseState,
    #[serde(serialize_with = "rfc3339::one")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339::one")]
    pub expires_at: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339::one")]
    pub heartbeat_at: DateTime<Utc>,
    pub heartbeat_ttl_ms: u64,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "rfc3339::opt"
    )]
    pub ended_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<EndReason>,
}

/// A lease operation refused, in words the holder can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseRefused {
    #[error("lease {id} is {state}, not active")]
    NotActive { id: Ulid, state: LeaseState },
    #[error("lease {id} ended at {at} ({why}); it can no longer be renewed")]
    Ended {
        id: Ulid,
        at: DateTime<Utc>,
        why: String,
    },
    #[error(transparent)]
    Stale(#[from] StaleEpoch),
    #[error("lease {id} is held by {holder}, not by {by}")]
    NotHolder {
        id: Ulid,
        holder: Holder,
        by: Holder,
    },
    #[error("a forced release needs a reason")]
    ForceWithoutReason,
    #[error("a lease duration must be more than zero")]
    ZeroDuration,
    #[error("a lease is taken (or extended) for at most 366d at once; renew it for longer")]
    TooLong,
}

/// A write presented an epoch that is not the current one: the server answers 409.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "stale lease epoch {presented}: the current epoch is {current}; this holder has been fenced"
)]
pub struct StaleEpoch {
    pub presented: u64,
    pub current: u64,
}

/// The fencing check: only the current epoch may write.
pub fn check_epoch(presented: u64, current: u64) -> Result<(), StaleEpoch> {
    if presented == current {
        Ok(())
    } else {
        Err(StaleEpoch { presented, current })
    }
}

fn chrono_dur(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// The longest a lease may be asked for, or extended by at once. Leases are renewed by
/// heartbeat far more often; the bound keeps every stored end a real date.
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 86_400);

/// The latest instant any lease end is stored as: the last second RFC 3339 can write
/// with a four-digit year, so no arithmetic here makes a row that cannot be read back.
fn latest() -> DateTime<Utc> {
    DateTime::from_timestamp(253_402_300_799, 0).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

fn add(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    t.checked_add_signed(chrono_dur(d))
        .map_or_else(latest, |end| end.min(latest()))
}

/// What [`acquire`] needs besides the clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRequest {
    pub id: Ulid,
    pub resource_id: Ulid,
    /// The resource's `last_epoch`; the new lease gets one more.
    pub resource_last_epoch: u64,
    pub holder: Holder,
    pub share: Share,
    pub duration: Duration,
    pub heartbeat_ttl: Duration,
}

/// Grants a lease. Whether the resource is free (exclusive board, capacity of a host) is
/// the scheduler's decision ([`crate::placement`]); this only builds the record. The
/// caller stores `epoch` as the resource's new `last_epoch` in the same transaction.
pub fn acquire(req: LeaseRequest, now: DateTime<Utc>) -> Result<Lease, LeaseRefused> {
    if req.duration.is_zero() || req.heartbeat_ttl.is_zero() {
        return Err(LeaseRefused::ZeroDuration);
    }
    if req.duration > MAX_DURATION || req.heartbeat_ttl > MAX_DURATION {
        return Err(LeaseRefused::TooLong);
    }
    Ok(Lease {
        id: req.id,
        resource_id: req.resource_id,
        holder: req.holder,
        share: req.share,
        epoch: req.resource_last_epoch.saturating_add(1),
        state: LeaseState::Active,
        created_at: now,
        expires_at: add(now, req.duration),
        heartbeat_at: now,
        heartbeat_ttl_ms: u64::try_from(req.heartbeat_ttl.as_millis()).unwrap_or(u64::MAX),
        ended_at: None,
        end_reason: None,
    })
}

impl Lease {
    pub fn heartbeat_ttl(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ttl_ms)
    }

    /// When the lease ends if nothing more happens: the earlier of its duration's end and
    /// the heartbeat bound.
    pub fn effective_end(&self) -> DateTime<Utc> {
        self.expires_at
            .min(add(self.heartbeat_at, self.heartbeat_ttl()))
    }

    /// Active and not past its effective end. A lease past its end is dead even before
    /// the reaper writes it down.
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.state == LeaseState::Active && now < self.effective_end()
    }

    /// Why it ends (or ended) at its effective end.
    fn expiry_reason(&self) -> EndReason {
        let hb_end = add(self.heartbeat_at, self.heartbeat_ttl());
        if hb_end < self.expires_at {
            let silent = (hb_end - self.heartbeat_at).num_seconds();
            EndReason::HeartbeatLost {
                silent_s: u64::try_from(silent).unwrap_or(0),
            }
        } else {
            EndReason::DurationOver
        }
    }

    fn refuse_unless_live(&self, now: DateTime<Utc>) -> Result<(), LeaseRefused> {
        if self.state != LeaseState::Active {
            return Err(LeaseRefused::NotActive {
                id: self.id,
                state: self.state,
            });
        }
        if now >= self.effective_end() {
            return Err(LeaseRefused::Ended {
                id: self.id,
                at: self.effective_end(),
                why: self.expiry_reason().to_string(),
            });
        }
        Ok(())
    }

    /// Whether a write under this lease with `presented` epoch may go ahead: the lease is
    /// live and the epoch is its own. After a forced release or expiry every write fails.
    pub fn check_write(&self, presented: u64, now: DateTime<Utc>) -> Result<(), LeaseRefused> {
        check_epoch(presented, self.epoch)?;
        self.refuse_unless_live(now)
    }

    /// A heartbeat, optionally extending the duration to at least `now + extend`.
    /// Refused if the lease is not live or the epoch is stale; a lease past its end stays
    /// dead (no resurrection by a late heartbeat).
    pub fn renew(
        &self,
        presented: u64,
        extend: Option<Duration>,
        now: DateTime<Utc>,
    ) -> Result<Lease, LeaseRefused> {
        self.check_write(presented, now)?;
        let mut next = self.clone();
        next.heartbeat_at = now;
        if let Some(d) = extend {
            if d > MAX_DURATION {
                return Err(LeaseRefused::TooLong);
            }
            next.expires_at = next.expires_at.max(add(now, d));
        }
        Ok(next)
    }

    /// Release by the holder.
    pub fn release(
        &self,
        by: &Holder,
        presented: u64,
        now: DateTime<Utc>,
    ) -> Result<Lease, LeaseRefused> {
        if *by != self.holder {
            return Err(LeaseRefused::NotHolder {
                id: self.id,
                holder: self.holder.clone(),
                by: by.clone(),
            });
        }
        check_epoch(presented, self.epoch)?;
        if self.state != LeaseState::Active {
            return Err(LeaseRefused::NotActive {
                id: self.id,
                state: self.state,
            });
        }
        Ok(self.end(LeaseState::Released, EndReason::Released, now))
    }

    /// Release by an operator, with a reason. The holder is fenced: its epoch no longer
    /// matches a live lease, so [`Lease::check_write`] refuses it from now on.
    pub fn force_release(
        &self,
        by: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<Lease, LeaseRefused> {
        if reason.trim().is_empty() {
            return Err(LeaseRefused::ForceWithoutReason);
        }
        if self.state != LeaseState::Active {
            return Err(LeaseRefused::NotActive {
                id: self.id,
                state: self.state,
            });
        }
        Ok(self.end(
            LeaseState::Released,
            EndReason::Forced {
                by: by.to_string(),
                reason: reason.to_string(),
            },
            now,
        ))
    }

    /// Credits the holder with the server's own silence: a holder cannot be heard while
    /// the server is not listening (down, or stalled: a paused VM, a starved process), so
    /// its heartbeat bound counts from no earlier than `awake_since`, when the server was
    /// last awake again. The duration still counts: a 30-minute lease does not grow.
    /// Returns whether the heartbeat moved.
    pub fn credit(&mut self, awake_since: DateTime<Utc>) -> bool {
        let moved = self.state == LeaseState::Active && self.heartbeat_at < awake_since;
        if moved {
            self.heartbeat_at = awake_since;
        }
        moved
    }

    /// For the reaper: the expired lease if this one is active and past its effective end.
    /// `ended_at` is the effective end, not the reaper's clock, so history shows when the
    /// lease really stopped.
    pub fn expire(&self, now: DateTime<Utc>) -> Option<Lease> {
        if self.state != LeaseState::Active || now < self.effective_end() {
            return None;
        }
        let at = self.effective_end();
        Some(self.end(LeaseState::Expired, self.expiry_reason(), at))
    }

    /// Ends an active lease for reconciliation or resource loss, whatever its clocks say.
    pub fn end_reconciled(&self, detail: &str, now: DateTime<Utc>) -> Option<Lease> {
        (self.state == LeaseState::Active).then(|| {
            self.end(
                LeaseState::Released,
                EndReason::Reconciled {
                    detail: detail.to_string(),
                },
                now,
            )
        })
    }

    fn end(&self, state: LeaseState, reason: EndReason, at: DateTime<Utc>) -> Lease {
        let mut next = self.clone();
        next.state = state;
        next.ended_at = Some(at);
        next.end_reason = Some(reason);
        next
    }
}

/// The reaper's rule: every active lease past its effective end, expired, with the
/// server's silence until `awake_since` credited to the holders ([`Lease::credit`]). The
/// server runs it every second or so and schedules each resource's cleanup.
pub fn reap(leases: &[Lease], now: DateTime<Utc>, awake_since: DateTime<Utc>) -> Vec<Lease> {
    leases
        .iter()
        .filter_map(|l| {
            let mut l = l.clone();
            l.credit(awake_since);
            l.expire(now)
        })
        .collect()
}

/// The next moment the reaper has something to do (to sleep until then), if any.
pub fn next_expiry(leases: &[Lease]) -> Option<DateTime<Utc>> {
    leases
        .iter()
        .filter(|l| l.state == LeaseState::Active)
        .map(Lease::effective_end)
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration as CD;

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-23T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn lease(duration: Duration) -> Lease {
        acquire(
            LeaseRequest {
                id: Ulid::from_parts(1, 1),
                resource_id: Ulid::from_parts(1, 2),
                resource_last_epoch: 6,
                holder: Holder::Person("ann".into()),
                share: Share::Whole,
                duration,
                heartbeat_ttl: DEFAULT_HEARTBEAT_TTL,
            },
            t0(),
        )
        .unwrap()
    }

    #[test]
    fn job_lease_covers_timeout_and_always() {
        assert_eq!(
            job_lease_duration(Some(Duration::from_secs(600))),
            Duration::from_secs(900)
        );
        assert_eq!(job_lease_duration(None), Duration::from_secs(3900));
    }

    #[test]
    fn epoch_grows_from_the_resource() {
        let l = lease(Duration::from_secs(1800));
        assert_eq!(l.epoch, 7);
        assert_eq!(l.state, LeaseState::Active);
        assert!(check_epoch(7, 7).is_ok());
        assert_eq!(
            check_epoch(6, 7),
            Err(StaleEpoch {
                presented: 6,
                current: 7
            })
        );
    }

    #[test]
    fn dead_holder_loses_lease_within_heartbeat_bound() {
        // A 30-minute lease whose holder dies right after acquiring it.
        let l = lease(Duration::from_secs(1800));
        assert_eq!(l.effective_end(), t0() + CD::seconds(30));
        assert!(l.expire(t0() + CD::seconds(29)).is_none());
        let e = l.expire(t0() + CD::seconds(31)).unwrap();
        assert_eq!(e.state, LeaseState::Expired);
        assert_eq!(e.ended_at, Some(t0() + CD::seconds(30)));
        assert_eq!(
            e.end_reason,
            Some(EndReason::HeartbeatLost { silent_s: 30 })
        );
        // A late heartbeat cannot revive it.
        assert!(matches!(
            l.renew(7, None, t0() + CD::seconds(31)),
            Err(LeaseRefused::Ended { .. })
        ));
    }

    #[test]
    fn heartbeats_keep_it_until_its_duration() {
        let mut l = lease(Duration::from_secs(60));
        for s in (20..=60).step_by(20) {
            if let Ok(next) = l.renew(7, None, t0() + CD::seconds(s)) {
                l = next;
            }
        }
        // Heartbeats never extend past the duration without `extend`.
        assert_eq!(l.effective_end(), t0() + CD::seconds(60));
        let e = l.expire(t0() + CD::seconds(60)).unwrap();
        assert_eq!(e.end_reason, Some(EndReason::DurationOver));
        // Extending moves the duration end.
        let l = lease(Duration::from_secs(60));
        let l = l
            .renew(7, Some(Duration::from_secs(600)), t0() + CD::seconds(20))
            .unwrap();
        assert_eq!(l.expires_at, t0() + CD::seconds(620));
        assert_eq!(l.effective_end(), t0() + CD::seconds(50));
    }

    #[test]
    fn renew_refusals() {
        let l = lease(Duration::from_secs(60));
        assert!(matches!(
            l.renew(6, None, t0()),
            Err(LeaseRefused::Stale(_))
        ));
        let r = l.release(&Holder::Person("ann".into()), 7, t0()).unwrap();
        assert!(matches!(
            r.renew(7, None, t0()),
            Err(LeaseRefused::NotActive { .. })
        ));
        assert!(r.expire(t0() + CD::hours(1)).is_none());
    }

    #[test]
    fn release_rules() {
        let l = lease(Duration::from_secs(60));
        assert!(matches!(
            l.release(&Holder::Person("bob".into()), 7, t0()),
            Err(LeaseRefused::NotHolder { .. })
        ));
        assert!(matches!(
            l.release(&Holder::Person("ann".into()), 5, t0()),
            Err(LeaseRefused::Stale(_))
        ));
        let r = l.release(&Holder::Person("ann".into()), 7, t0()).unwrap();
        assert_eq!(r.state, LeaseState::Released);
        assert_eq!(r.end_reason, Some(EndReason::Released));
        assert!(r.release(&Holder::Person("ann".into()), 7, t0()).is_err());
    }

    #[test]
    fn forced_release_fences_the_holder() {
        let l = lease(Duration::from_secs(600));
        assert_eq!(
            l.force_release("op", " ", t0()),
            Err(LeaseRefused::ForceWithoutReason)
        );
        let f = l.force_release("op", "board on fire", t0()).unwrap();
        assert_eq!(f.state, LeaseState::Released);
        assert!(l.check_write(7, t0()).is_ok());
        assert!(matches!(
            f.check_write(7, t0()),
            Err(LeaseRefused::NotActive { .. })
        ));
        // The next lease on the resource has a newer epoch; the old one is stale there too.
        let next = acquire(
            LeaseRequest {
                id: Ulid::from_parts(2, 1),
                resource_id: f.resource_id,
                resource_last_epoch: f.epoch,
                holder: Holder::Person("bob".into()),
                share: Share::Whole,
                duration: Duration::from_secs(60),
                heartbeat_ttl: DEFAULT_HEARTBEAT_TTL,
            },
            t0(),
        )
        .unwrap();
        assert!(matches!(
            next.check_write(7, t0()),
            Err(LeaseRefused::Stale(_))
        ));
    }

    #[test]
    fn reaper_and_next_expiry() {
        let a = lease(Duration::from_secs(10));
        let b = lease(Duration::from_secs(600));
        let leases = [a.clone(), b.clone()];
        assert_eq!(next_expiry(&leases), Some(t0() + CD::seconds(10)));
        assert!(reap(&leases, t0() + CD::seconds(5), t0()).is_empty());
        assert_eq!(reap(&leases, t0() + CD::seconds(10), t0()).len(), 1);
        assert_eq!(reap(&leases, t0() + CD::seconds(31), t0()).len(), 2);
        assert!(
            acquire(
                LeaseRequest {
                    duration: Duration::ZERO,
                    ..LeaseRequest {
                        id: Ulid::nil(),
                        resource_id: Ulid::nil(),
                        resource_last_epoch: u64::MAX,
                        holder: Holder::Job(Ulid::nil()),
                        share: Share::Whole,
                        duration: Duration::from_secs(1),
                        heartbeat_ttl: DEFAULT_HEARTBEAT_TTL,
                    }
                },
                t0()
            )
            .is_err()
        );
    }

    #[test]
    fn the_servers_silence_is_credited_to_the_holder() {
        // Heartbeat bound 30 s, duration 10 min. The server stalls from t0+5s to t0+40s.
        let l = lease(Duration::from_secs(600));
        let resumed = t0() + CD::seconds(40);
        let at = t0() + CD::seconds(41);
        // Judged without the credit, the holder looks 41 s silent and loses the lease.
        assert_eq!(reap(std::slice::from_ref(&l), at, t0()).len(), 1);
        assert!(l.check_write(7, at).is_err());
        // With it, the holder has a whole heartbeat bound from the resume to be heard.
        assert!(reap(std::slice::from_ref(&l), at, resumed).is_empty());
        let mut c = l.clone();
        assert!(c.credit(resumed));
        assert!(c.check_write(7, at).is_ok());
        assert!(c.renew(7, None, at).is_ok());
        // A holder that stays silent after the resume still loses it, a bound later.
        let late = resumed + CD::seconds(30);
        let ended = reap(std::slice::from_ref(&l), late, resumed);
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].ended_at, Some(late));
        // The duration is not extended by the credit.
        let short = lease(Duration::from_secs(20));
        assert_eq!(
            reap(
                std::slice::from_ref(&short),
                t0() + CD::seconds(21),
                resumed
            )
            .len(),
            1
        );
        // Nothing moves for a lease heard after the resume, or one already ended.
        let mut fresh = c.renew(7, None, resumed + CD::seconds(1)).unwrap();
        assert!(!fresh.credit(resumed));
        let mut gone = l.release(&Holder::Person("ann".into()), 7, t0()).unwrap();
        assert!(!gone.credit(resumed));
    }

    #[test]
    fn times_and_holders_are_written_as_chrono_and_serde_would() {
        for nanos in [0, 7_000_000, 703_156_000, 703_156_717] {
            let t = t0() + CD::nanoseconds(nanos);
            let mut l = lease(Duration::from_secs(60));
            l.created_at = t;
            l.ended_at = Some(t);
            let v = serde_json::to_value(&l).unwrap();
            assert_eq!(v["created_at"], serde_json::to_value(t).unwrap());
            assert_eq!(v["ended_at"], serde_json::to_value(t).unwrap());
        }
        for h in [
            Holder::Job(Ulid::from_parts(5, 6)),
            Holder::Person("ann".into()),
        ] {
            let v = serde_json::to_value(&h).unwrap();
            assert_eq!(v["holder_type"], h.holder_type());
            assert_eq!(v["holder"], h.value());
            assert_eq!(Holder::from_parts(h.holder_type(), &h.value()), Ok(h));
        }
        assert!(Holder::from_parts("job", "not-an-id").is_err());
        assert!(Holder::from_parts("robot", "x").is_err());
    }

    #[test]
    fn wire_shape_matches_the_table() {
        let l = lease(Duration::from_secs(60));
        let v = serde_json::to_value(&l).unwrap();
        assert_eq!(v["holder_type"], "person");
        assert_eq!(v["holder"], "ann");
        assert_eq!(v["share"]["share"], "whole");
        let back: Lease = serde_json::from_value(v).unwrap();
        assert_eq!(back, l);
    }

    #[test]
    fn a_lease_is_bounded_and_its_end_is_a_real_date() {
        let req = |d: Duration| LeaseRequest {
            id: Ulid::nil(),
            resource_id: Ulid::nil(),
            resource_last_epoch: 0,
            holder: Holder::Person("p".into()),
            share: Share::Whole,
            duration: d,
            heartbeat_ttl: Duration::from_secs(30),
        };
        assert_eq!(
            acquire(req(MAX_DURATION + Duration::from_secs(1)), t0()),
            Err(LeaseRefused::TooLong)
        );
        let l = acquire(req(MAX_DURATION), t0()).unwrap();
        assert_eq!(
            l.renew(l.epoch, Some(Duration::MAX), t0()),
            Err(LeaseRefused::TooLong)
        );
        // Even arithmetic at the edge of time stays within four-digit years.
        let far = DateTime::<Utc>::MAX_UTC - chrono::Duration::days(1);
        assert!(add(far, Duration::from_secs(86_400 * 400)) <= latest());
    }
}
