//! Allocation policies: the rules admins set on top of plain matching.
//!
//! - `max_concurrent`: at most N leases at once on the resources of a group (a group is a
//!   named label selector, e.g. `builders = kind=build-server,site=muc`).
//! - `max_vms_per_host`: at most N VMs on each QEMU host of a group (all hosts if none).
//! - `reserved_for`: the resources of a group take only jobs of one team.
//! - `priority_cap`: jobs submitted by a role get at most this priority (users ≤ high).
//!
//! Policies are evaluated in priority order (highest first, then by name). Limits of
//! different groups all apply; when two policies of the same kind decide the same thing
//! differently (two reservations of one board, two VM limits of one host, two caps of one
//! role) the higher-priority one wins and the conflict is reported by [`conflicts`] for the
//! server to log. Every decision a policy takes names the policy.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::labels::Labels;
use crate::priority::{Aging, Priority};
use crate::resource::{Resource, ResourceKind};
use crate::role::Role;
use crate::selector::Selector;

/// Hosts never go above this share of any resource (cpus, memory, reported use).
pub const DEFAULT_MAX_UTILISATION_PCT: u32 = 85;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(tag = "rule", rename_all = "snake_case", deny_unknown_fields)]
pub enum PolicyRule {
    MaxConcurrent {
        group: String,
        max: u32,
    },
    MaxVmsPerHost {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        group: Option<String>,
        max: u32,
    },
    ReservedFor {
        group: String,
        team: String,
    },
    PriorityCap {
        role: Role,
        max: Priority,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct Policy {
    pub name: String,
    /// Higher is evaluated first and wins conflicts.
    #[serde(default)]
    pub priority: i32,
    #[serde(flatten)]
    pub rule: PolicyRule,
}

/// Everything the scheduler needs to know about policies, loaded once per pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policies {
    pub policies: Vec<Policy>,
    /// Group name → selector, as in the `groups` table.
    pub groups: BTreeMap<String, Selector>,
    pub aging: Aging,
    /// Percent; QEMU hosts are never filled above it.
    pub max_utilisation_pct: u32,
    /// Whether degraded resources take new work (off by default: a sick board makes
    /// tests fail for the wrong reason).
    pub place_on_degraded: bool,
}

impl Default for Policies {
    fn default() -> Self {
        Policies {
            policies: Vec::new(),
            groups: BTreeMap::new(),
            aging: Aging::default(),
            max_utilisation_pct: DEFAULT_MAX_UTILISATION_PCT,
            place_on_degraded: false,
        }
    }
}

/// A policy's part in a decision, recorded with it ("max-builds: 3 of 4 in use").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct PolicyNote {
    pub policy: String,
    pub note: String,
}

impl fmt::Display for PolicyNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "policy {}: {}", self.policy, self.note)
    }
}

/// Two policies deciding the same thing differently; the winner applies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct PolicyConflict {
    pub winner: String,
    pub loser: String,
    /// What they disagree on: a resource name or a role.
    pub subject: String,
    pub detail: String,
}

impl fmt::Display for PolicyConflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "policies {} and {} conflict on {}: {} ({} applies, it has the higher priority)",
            self.winner, self.loser, self.subject, self.detail, self.winner
        )
    }
}

/// The policies that bear on one resource, resolved once per pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ResourcePolicies {
    /// Indices (into [`Policies::ordered`]) of `max_concurrent` policies whose group has it.
    pub max_concurrent: Vec<usize>,
    /// The winning `max_vms_per_host` (index, max), for QEMU hosts.
    pub vm_limit: Option<(usize, u32)>,
    /// The winning `reserved_for` (index, team).
    pub reserved: Option<(usize, String)>,
}

impl Policies {
    /// The policies in evaluation order: priority descending, then name.
    pub fn ordered(&self) -> Vec<&Policy> {
        let mut v: Vec<&Policy> = self.policies.iter().collect();
        v.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.name.cmp(&b.name)));
        v
    }

    fn group_matches(&self, group: &str, labels: &Labels) -> bool {
        // An unknown group matches nothing: a typo must not reserve the whole lab.
        self.groups.get(group).is_some_and(|s| s.matches(labels))
    }

    /// Resolves the policies for one resource (`labels` = its selector labels).
    pub(crate) fn for_resource(
        &self,
        ordered: &[&Policy],
        resource: &Resource,
        labels: &Labels,
    ) -> ResourcePolicies {
        let mut out = ResourcePolicies::default();
        for (i, p) in ordered.iter().enumerate() {
            match &p.rule {
                PolicyRule::MaxConcurrent { group, .. } => {
                    if self.group_matches(group, labels) {
                        out.max_concurrent.push(i);
                    }
                }
                PolicyRule::MaxVmsPerHost { group, max } => {
                    let applies = resource.kind == ResourceKind::QemuHost
                        && group
                            .as_deref()
                            .is_none_or(|g| self.group_matches(g, labels));
                    if applies && out.vm_limit.is_none() {
                        out.vm_limit = Some((i, *max));
                    }
                }
                PolicyRule::ReservedFor { group, team } => {
                    if out.reserved.is_none() && self.group_matches(group, labels) {
                        out.reserved = Some((i, team.clone()));
                    }
                }
                PolicyRule::PriorityCap { .. } => {}
            }
        }
        out
    }

    /// The priority a submitter's role may have: the highest-priority cap for the role
    /// wins. Returns the note when the cap lowered it.
    pub fn cap_priority(&self, requested: Priority, role: Role) -> (Priority, Option<PolicyNote>) {
        for p in self.ordered() {
            if let PolicyRule::PriorityCap { role: r, max } = &p.rule
                && *r == role
            {
                if requested > *max {
                    return (
                        *max,
                        Some(PolicyNote {
                            policy: p.name.clone(),
                            note: format!(
                                "priority {requested} lowered to {max}: the cap for role {role}"
                            ),
                        }),
                    );
                }
                return (requested, None);
            }
        }
        (requested, None)
    }

    /// Policies that decide the same thing differently for some resource or role; the
    /// first named wins. The server logs these when policies or resources change.
    pub fn conflicts(&self, resources: &[Resource]) -> Vec<PolicyConflict> {
        let ordered = self.ordered();
        let mut out = Vec::new();
        // Roles with two caps.
        for (i, a) in ordered.iter().enumerate() {
            for b in &ordered[i + 1..] {
                if let (
                    PolicyRule::PriorityCap { role: ra, max: ma },
                    PolicyRule::PriorityCap { role: rb, max: mb },
                ) = (&a.rule, &b.rule)
                    && ra == rb
                    && ma != mb
                {
                    out.push(PolicyConflict {
                        winner: a.name.clone(),
                        loser: b.name.clone(),
                        subject: format!("role {ra}"),
                        detail: format!("priority cap {ma} versus {mb}"),
                    });
                }
            }
        }
        for r in resources {
            let labels = r.selector_labels();
            let mut vm: Option<(&Policy, u32)> = None;
            let mut reserved: Option<(&Policy, &str)> = None;
            for p in &ordered {
                match &p.rule {
                    PolicyRule::MaxVmsPerHost { group, max }
                        if r.kind == ResourceKind::QemuHost
                            && group
                                .as_deref()
                                .is_none_or(|g| self.group_matches(g, &labels)) =>
                    {
                        match vm {
                            None => vm = Some((p, *max)),
                            Some((w, wmax)) if wmax != *max => out.push(PolicyConflict {
                                winner: w.name.clone(),
                                loser: p.name.clone(),
                                subject: r.name.clone(),
                                detail: format!("at most {wmax} VMs versus {max}"),
                            }),
                            _ => {}
                        }
                    }
                    PolicyRule::ReservedFor { group, team }
                        if self.group_matches(group, &labels) =>
                    {
                        match reserved {
                            None => reserved = Some((p, team)),
                            Some((w, wteam)) if wteam != team => out.push(PolicyConflict {
                                winner: w.name.clone(),
                                loser: p.name.clone(),
                                subject: r.name.clone(),
                                detail: format!("reserved for team {wteam} versus {team}"),
                            }),
                            _ => {}
                        }
                    }
                    _ => {}
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use ulid::Ulid;

    fn pol(name: &str, priority: i32, rule: PolicyRule) -> Policy {
        Policy {
            name: name.into(),
            priority,
            rule,
        }
    }

    fn policies() -> Policies {
        let mut groups = BTreeMap::new();
        groups.insert(
            "rpis".to_string(),
            Selector::parse("board_type=rpi4").unwrap(),
        );
        groups.insert(
            "all-boards".to_string(),
            Selector::parse("kind=board").unwrap(),
        );
        Policies {
            policies: vec![
                pol(
                    "users-high",
                    10,
                    PolicyRule::PriorityCap {
                        role: Role::User,
                        max: Priority::HIGH,
                    },
                ),
                pol(
                    "users-normal",
                    5,
                    PolicyRule::PriorityCap {
                        role: Role::User,
                        max: Priority::NORMAL,
                    },
                ),
                pol(
                    "kernel-rpis",
                    20,
                    PolicyRule::ReservedFor {
                        group: "rpis".into(),
                        team: "kernel".into(),
                    },
                ),
                pol(
                    "bsp-boards",
                    1,
                    PolicyRule::ReservedFor {
                        group: "all-boards".into(),
                        team: "bsp".into(),
                    },
                ),
            ],
            groups,
            ..Policies::default()
        }
    }

    #[test]
    fn priority_cap_highest_policy_wins() {
        let p = policies();
        let (got, note) = p.cap_priority(Priority::URGENT, Role::User);
        assert_eq!(got, Priority::HIGH);
        assert_eq!(note.unwrap().policy, "users-high");
        assert_eq!(
            p.cap_priority(Priority::LOW, Role::User),
            (Priority::LOW, None)
        );
        assert_eq!(
            p.cap_priority(Priority::URGENT, Role::Operator),
            (Priority::URGENT, None)
        );
    }

    #[test]
    fn conflicts_are_reported_and_resolved() {
        let p = policies();
        let mut r = Resource::new(Ulid::nil(), "rpi-1".into(), ResourceKind::Board, Utc::now());
        r.labels.insert("board_type", "rpi4");
        let c = p.conflicts(std::slice::from_ref(&r));
        assert_eq!(c.len(), 2, "{c:?}");
        assert!(
            c.iter()
                .any(|c| c.winner == "kernel-rpis" && c.loser == "bsp-boards")
        );
        assert!(c.iter().any(|c| c.winner == "users-high"));
        let ordered = p.ordered();
        let rp = p.for_resource(&ordered, &r, &r.selector_labels());
        assert_eq!(rp.reserved.map(|(_, t)| t), Some("kernel".to_string()));
    }

    #[test]
    fn unknown_group_matches_nothing() {
        let mut p = policies();
        p.policies = vec![pol(
            "typo",
            1,
            PolicyRule::ReservedFor {
                group: "rpiz".into(),
                team: "x".into(),
            },
        )];
        let r = Resource::new(Ulid::nil(), "rpi-1".into(), ResourceKind::Board, Utc::now());
        let ordered = p.ordered();
        assert!(
            p.for_resource(&ordered, &r, &r.selector_labels())
                .reserved
                .is_none()
        );
    }

    #[test]
    fn serde_shape() {
        let p: Policy = serde_json::from_value(serde_json::json!({
            "name": "vms", "priority": 3, "rule": "max_vms_per_host", "max": 4
        }))
        .unwrap();
        assert_eq!(
            p.rule,
            PolicyRule::MaxVmsPerHost {
                group: None,
                max: 4
            }
        );
    }
}
