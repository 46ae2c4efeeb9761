//! Which builds the artifact repository lets go. Builds pile up (every CI run leaves a
//! kernel, a root file system…), so retention deletes them, with their artifacts:
//!
//! - a **pinned** or **tagged** build is never deleted, whatever its age or the budget;
//! - every other build older than `max_age` goes;
//! - then, while the blobs still referenced take more than `max_total_bytes`, the oldest
//!   remaining unprotected build goes, and the next, until the total is within budget
//!   (or only protected builds are left).
//!
//! Sizes are counted as stored: blobs are content-addressed, so two builds with the same
//! kernel store it once, and deleting one of them frees nothing. The rule counts each
//! distinct blob once and frees it when its last build goes.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use ulid::Ulid;

/// What the rule knows of one build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildUsage {
    pub id: Ulid,
    pub created_at: DateTime<Utc>,
    pub pinned: bool,
    pub tagged: bool,
    /// The blobs its artifacts refer to: (sha256, size in bytes).
    pub blobs: Vec<(String, u64)>,
}

impl BuildUsage {
    fn protected(&self) -> bool {
        self.pinned || self.tagged
    }
}

/// The limits; `None` is no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Budget {
    pub max_age: Option<Duration>,
    pub max_total_bytes: Option<u64>,
}

impl Budget {
    /// Limits from configuration, where zero means "no limit".
    pub fn from_config(max_age: Duration, max_total_gb: u64) -> Budget {
        Budget {
            max_age: (!max_age.is_zero()).then_some(max_age),
            max_total_bytes: (max_total_gb > 0).then(|| max_total_gb.saturating_mul(1 << 30)),
        }
    }
}

/// Why a build goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ExpiryReason {
    /// Older than `max_age`.
    Age,
    /// Among the oldest while the repository was over `max_total_bytes`.
    Size,
}

/// One build to delete and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expired {
    pub id: Ulid,
    pub reason: ExpiryReason,
}

/// The outcome: what goes, oldest first, and the stored bytes before and after.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    pub expired: Vec<Expired>,
    pub total_before: u64,
    pub total_after: u64,
}

/// Distinct blobs and how many builds refer to each.
#[derive(Default)]
struct Refs {
    counts: HashMap<String, (u64, u64)>,
    total: u64,
}

impl Refs {
    fn add(&mut self, b: &BuildUsage) {
        for (digest, size) in &b.blobs {
            let e = self.counts.entry(digest.clone()).or_insert((0, *size));
            if e.0 == 0 {
                self.total = self.total.saturating_add(e.1);
            }
            e.0 += 1;
        }
    }

    fn remove(&mut self, b: &BuildUsage) {
        for (digest, _) in &b.blobs {
            if let Some(e) = self.counts.get_mut(digest) {
                e.0 = e.0.saturating_sub(1);
                if e.0 == 0 {
                    self.total = self.total.saturating_sub(e.1);
                }
            }
        }
    }
}

/// Decides which builds go at `now`.
pub fn plan(builds: &[BuildUsage], budget: &Budget, now: DateTime<Utc>) -> Plan {
    let mut refs = Refs::default();
    let mut seen = std::collections::HashSet::new();
    for b in builds {
        // The same build listed twice counts once.
        if seen.insert(b.id) {
            refs.add(b);
        }
    }
    let total_before = refs.total;
    let mut candidates: Vec<&BuildUsage> = builds.iter().filter(|b| !b.protected()).collect();
    candidates.sort_by_key(|b| (b.created_at, b.id));
    candidates.dedup_by_key(|b| b.id);
    let cutoff = budget
        .max_age
        .and_then(|a| chrono::Duration::from_std(a).ok())
        .and_then(|a| now.checked_sub_signed(a));
    let mut expired = Vec::new();
    for b in candidates {
        let reason = if cutoff.is_some_and(|c| b.created_at < c) {
            ExpiryReason::Age
        } else if budget.max_total_bytes.is_some_and(|max| refs.total > max) {
            ExpiryReason::Size
        } else {
            // Candidates are oldest first: none after this one is older than the cutoff,
            // and the total is within budget.
            break;
        };
        refs.remove(b);
        expired.push(Expired { id: b.id, reason });
    }
    Plan {
        expired,
        total_before,
        total_after: refs.total,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap_or_default()
    }

    fn build(n: u64, age_secs: i64, pinned: bool, blobs: &[(&str, u64)]) -> BuildUsage {
        BuildUsage {
            id: Ulid::from_parts(n, 0),
            created_at: at(-age_secs),
            pinned,
            tagged: false,
            blobs: blobs.iter().map(|(d, s)| (d.to_string(), *s)).collect(),
        }
    }

    #[test]
    fn old_unpinned_builds_go_and_pinned_ones_stay() {
        let builds = [
            build(1, 100, false, &[("a", 10)]),
            build(2, 100, true, &[("b", 10)]),
            build(3, 1, false, &[("c", 10)]),
        ];
        let p = plan(
            &builds,
            &Budget {
                max_age: Some(Duration::from_secs(50)),
                max_total_bytes: None,
            },
            at(0),
        );
        assert_eq!(
            p.expired,
            vec![Expired {
                id: builds[0].id,
                reason: ExpiryReason::Age
            }]
        );
        assert_eq!((p.total_before, p.total_after), (30, 20));
    }

    #[test]
    fn over_budget_removes_oldest_first_and_shared_blobs_count_once() {
        let builds = [
            build(1, 30, false, &[("k", 100), ("r", 50)]),
            build(2, 20, false, &[("k", 100)]),
            build(3, 10, false, &[("n", 100)]),
        ];
        // 250 stored; removing build 1 frees only r (k is shared with build 2).
        let p = plan(
            &builds,
            &Budget {
                max_age: None,
                max_total_bytes: Some(150),
            },
            at(0),
        );
        let ids: Vec<Ulid> = p.expired.iter().map(|e| e.id).collect();
        assert_eq!(ids, vec![builds[0].id, builds[1].id]);
        assert_eq!((p.total_before, p.total_after), (250, 100));
        assert!(p.expired.iter().all(|e| e.reason == ExpiryReason::Size));
        assert_eq!(plan(&builds, &Budget::default(), at(0)).expired, vec![]);
        assert_eq!(Budget::from_config(Duration::ZERO, 0), Budget::default());
    }

    fn arb_builds() -> impl Strategy<Value = Vec<BuildUsage>> {
        prop::collection::vec(
            (
                0i64..1000,
                any::<bool>(),
                any::<bool>(),
                prop::collection::vec((0u8..12, 1u64..1000), 0..4),
            ),
            0..20,
        )
        .prop_map(|v| {
            v.into_iter()
                .enumerate()
                .map(|(i, (age, pinned, tagged, blobs))| BuildUsage {
                    id: Ulid::from_parts(i as u64, 0),
                    created_at: at(-age),
                    pinned,
                    tagged,
                    // A digest names one content, so it has one size.
                    blobs: blobs
                        .into_iter()
                        .map(|(d, _)| (format!("d{d}"), u64::from(d) * 37 + 1))
                        .collect(),
                })
                .collect()
        })
    }

    fn stored(builds: &[BuildUsage], gone: &HashSet<Ulid>) -> u64 {
        let mut seen = HashMap::new();
        for b in builds.iter().filter(|b| !gone.contains(&b.id)) {
            for (d, s) in &b.blobs {
                seen.insert(d.clone(), *s);
            }
        }
        seen.values().sum()
    }

    proptest! {
        #[test]
        fn the_rule_holds(
            builds in arb_builds(),
            max_age in prop::option::of(0u64..1000),
            max_total in prop::option::of(0u64..2000),
        ) {
            let budget = Budget {
                max_age: max_age.map(Duration::from_secs),
                max_total_bytes: max_total,
            };
            let now = at(0);
            let p = plan(&builds, &budget, now);
            let gone: HashSet<Ulid> = p.expired.iter().map(|e| e.id).collect();
            prop_assert_eq!(gone.len(), p.expired.len(), "a build is listed once");
            // Pinned and tagged builds never go.
            for b in &builds {
                if b.pinned || b.tagged {
                    prop_assert!(!gone.contains(&b.id));
                }
            }
            // The totals are the distinct blobs before and after.
            prop_assert_eq!(p.total_before, stored(&builds, &HashSet::new()));
            prop_assert_eq!(p.total_after, stored(&builds, &gone));
            let candidates: Vec<&BuildUsage> =
                builds.iter().filter(|b| !b.pinned && !b.tagged).collect();
            let kept: Vec<&&BuildUsage> =
                candidates.iter().filter(|b| !gone.contains(&b.id)).collect();
            // No kept candidate is too old.
            if let Some(age) = budget.max_age {
                let cutoff = now - chrono::Duration::from_std(age).unwrap_or_default();
                for b in &kept {
                    prop_assert!(b.created_at >= cutoff);
                }
            }
            // Within budget, unless only protected builds are left.
            if let Some(max) = budget.max_total_bytes && !kept.is_empty() {
                prop_assert!(p.total_after <= max);
            }
            // Oldest first: every candidate older than a removed one is removed too.
            for e in &p.expired {
                let b = builds.iter().find(|b| b.id == e.id);
                prop_assert!(b.is_some());
                if let Some(b) = b {
                    for o in &candidates {
                        if (o.created_at, o.id) < (b.created_at, b.id) {
                            prop_assert!(gone.contains(&o.id));
                        }
                    }
                }
            }
            // No more than needed: without the newest build removed for size, the
            // repository would be over budget.
            if let Some(last) = p.expired.iter().rev().find(|e| e.reason == ExpiryReason::Size) {
                let mut fewer = gone.clone();
                fewer.remove(&last.id);
                let over = budget.max_total_bytes.is_some_and(|max| stored(&builds, &fewer) > max);
                prop_assert!(over);
            }
            // No limits: nothing goes.
            prop_assert!(plan(&builds, &Budget::default(), now).expired.is_empty());
        }
    }
}
