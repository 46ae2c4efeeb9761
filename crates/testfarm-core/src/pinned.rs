//! Submit-time check of a job pinned to one resource (`requires.resource: rpi-07`).
//!
//! A pinned job that can never run on its resource (wrong arch, missing toolchain) or
//! cannot now (maintenance, offline, retired) is refused at submit with every reason and
//! the resources that could serve it instead, rather than waiting in the queue forever.
//! Merely busy is not a refusal: the job queues for it.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::jobspec::{Mismatch, Requirements};
use crate::resource::{HealthStatus, Resource, ResourceState};

/// Why a pinned resource cannot serve the job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum PinProblem {
    NotFound,
    Mismatch { mismatch: Mismatch },
    Maintenance { reason: String },
    Offline { reasons: Vec<String> },
    Retired { reason: Option<String> },
}

impl fmt::Display for PinProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PinProblem::NotFound => f.write_str("no such resource"),
            PinProblem::Mismatch { mismatch } => write!(f, "it {mismatch}"),
            PinProblem::Maintenance { reason } if reason.is_empty() => {
                f.write_str("it is in maintenance")
            }
            PinProblem::Maintenance { reason } => write!(f, "it is in maintenance ({reason})"),
            PinProblem::Offline { reasons } if reasons.is_empty() => f.write_str("it is offline"),
            PinProblem::Offline { reasons } => write!(f, "it is offline ({})", reasons.join("; ")),
            PinProblem::Retired { reason: None } => f.write_str("it is retired"),
            PinProblem::Retired { reason: Some(r) } => write!(f, "it is retired ({r})"),
        }
    }
}

/// The refusal: the resource, every problem, and what could serve the job instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct PinRefused {
    pub resource: String,
    pub problems: Vec<PinProblem>,
    /// Names of resources that match the job and take new work now, best first (by name).
    pub alternatives: Vec<String>,
}

impl fmt::Display for PinRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "resource {} cannot serve this job: ", self.resource)?;
        let problems: Vec<String> = self.problems.iter().map(ToString::to_string).collect();
        f.write_str(&problems.join("; "))?;
        if self.alternatives.is_empty() {
            f.write_str(". No other resource can serve it either.")
        } else {
            write!(f, ". Resources that can: {}", self.alternatives.join(", "))
        }
    }
}

/// How many alternatives a refusal lists.
pub const MAX_ALTERNATIVES: usize = 10;

/// Checks a pinned job against its resource. `Ok(None)`: the job is not pinned;
/// `Ok(Some(r))`: the pinned resource can serve it (maybe after a wait).
pub fn check_pinned<'a>(
    req: &Requirements,
    resources: &'a [Resource],
) -> Result<Option<&'a Resource>, PinRefused> {
    let Some(name) = &req.resource else {
        return Ok(None);
    };
    let mut problems = Vec::new();
    let found = resources.iter().find(|r| &r.name == name);
    match found {
        None => problems.push(PinProblem::NotFound),
        Some(r) => {
            let labels = r.selector_labels();
            problems.extend(
                req.mismatches(r, &labels)
                    .into_iter()
                    .map(|mismatch| PinProblem::Mismatch { mismatch }),
            );
            match r.state {
                ResourceState::Maintenance => problems.push(PinProblem::Maintenance {
                    reason: r
                        .maintenance
                        .as_ref()
                        .map(|m| m.reason.clone())
                        .unwrap_or_default(),
                }),
                ResourceState::Offline => problems.push(PinProblem::Offline {
                    reasons: r.health.reasons.clone(),
                }),
                ResourceState::Retired => problems.push(PinProblem::Retired {
                    reason: r.retired_reason.clone(),
                }),
                ResourceState::Available | ResourceState::Leased => {
                    if r.health.status == HealthStatus::Offline {
                        problems.push(PinProblem::Offline {
                            reasons: r.health.reasons.clone(),
                        });
                    }
                }
            }
        }
    }
    if problems.is_empty() {
        return Ok(found);
    }
    // Alternatives: the same requirements without the pin, of the pinned kind when the
    // job did not name one.
    let mut unpinned = req.clone();
    unpinned.resource = None;
    if unpinned.kind.is_none() {
        unpinned.kind = found.map(|r| r.kind);
    }
    let mut alternatives: Vec<String> = resources
        .iter()
        .filter(|r| r.name != *name && r.accepts_new_work())
        .filter(|r| unpinned.kind.is_some() && unpinned.fits(r, &r.selector_labels()))
        .map(|r| r.name.clone())
        .collect();
    alternatives.sort();
    alternatives.truncate(MAX_ALTERNATIVES);
    Err(PinRefused {
        resource: name.clone(),
        problems,
        alternatives,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::tests::{res, t0};
    use crate::resource::{MaintenanceWindow, ResourceKind};

    fn pinned(name: &str) -> Requirements {
        Requirements {
            kind: Some(ResourceKind::BuildServer),
            resource: Some(name.into()),
            toolchains: vec!["gcc-aarch64".into()],
            arch: Some("arm64".into()),
            ..Requirements::default()
        }
    }

    fn lab() -> Vec<Resource> {
        let mut a = res(1, "build-a", ResourceKind::BuildServer);
        a.capabilities.toolchains = vec!["gcc-riscv".into()];
        a.capabilities.arch = Some("x86_64".into());
        let mut b = res(2, "build-b", ResourceKind::BuildServer);
        b.capabilities.toolchains = vec!["gcc-aarch64".into()];
        let mut c = res(3, "build-c", ResourceKind::BuildServer);
        c.capabilities.toolchains = vec!["gcc-aarch64".into()];
        c.maintenance_on(
            MaintenanceWindow {
                start: None,
                end: None,
                reason: "disk swap".into(),
            },
            t0(),
        )
        .unwrap();
        let mut d = res(4, "build-d", ResourceKind::BuildServer);
        d.capabilities.toolchains = vec!["gcc-aarch64".into()];
        d.state = ResourceState::Offline;
        let mut e = res(5, "build-e", ResourceKind::BuildServer);
        e.capabilities.toolchains = vec!["gcc-aarch64".into()];
        e.retire(0, false, None, t0()).unwrap();
        vec![a, b, c, d, e]
    }

    #[test]
    fn good_pin_and_unpinned() {
        let lab = lab();
        assert_eq!(
            check_pinned(&pinned("build-b"), &lab)
                .unwrap()
                .unwrap()
                .name,
            "build-b"
        );
        assert_eq!(check_pinned(&Requirements::default(), &lab).unwrap(), None);
    }

    #[test]
    fn wrong_arch_and_toolchain_with_alternatives() {
        let e = check_pinned(&pinned("build-a"), &lab()).unwrap_err();
        assert_eq!(e.problems.len(), 2, "{e}");
        assert!(e.to_string().contains("lacks toolchain gcc-aarch64"), "{e}");
        assert!(e.to_string().contains("it has arch x86_64"), "{e}");
        assert_eq!(e.alternatives, vec!["build-b".to_string()]);
    }

    #[test]
    fn maintenance_offline_retired_missing_wrong_kind() {
        let lab = lab();
        let e = check_pinned(&pinned("build-c"), &lab).unwrap_err();
        assert!(e.to_string().contains("maintenance (disk swap)"), "{e}");
        let e = check_pinned(&pinned("build-d"), &lab).unwrap_err();
        assert!(matches!(e.problems[0], PinProblem::Offline { .. }));
        let e = check_pinned(&pinned("build-e"), &lab).unwrap_err();
        assert!(matches!(e.problems[0], PinProblem::Retired { .. }));
        let e = check_pinned(&pinned("nope"), &lab).unwrap_err();
        assert_eq!(e.problems, vec![PinProblem::NotFound]);
        assert_eq!(e.alternatives, vec!["build-b".to_string()]);
        let mut req = pinned("build-b");
        req.kind = Some(ResourceKind::Board);
        let e = check_pinned(&req, &lab).unwrap_err();
        assert!(matches!(
            e.problems[0],
            PinProblem::Mismatch {
                mismatch: Mismatch::WrongKind { .. }
            }
        ));
    }
}
