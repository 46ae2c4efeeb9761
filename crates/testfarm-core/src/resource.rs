//! Resources: what jobs are placed on (build servers, QEMU hosts, boards), their
//! administrative state, health and capabilities, and the rules for changing state.
//!
//! `state` answers "may the scheduler use it?" and `health` answers "is it working?".
//! They are kept apart so an operator's maintenance is never undone by a heartbeat, and a
//! sick resource under lease is not silently handed to the next job.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use ulid::Ulid;

use crate::labels::Labels;

/// The three kinds of places a job can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum ResourceKind {
    BuildServer,
    QemuHost,
    Board,
}

impl ResourceKind {
    pub const ALL: [ResourceKind; 3] = [
        ResourceKind::BuildServer,
        ResourceKind::QemuHost,
        ResourceKind::Board,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::BuildServer => "build-server",
            ResourceKind::QemuHost => "qemu-host",
            ResourceKind::Board => "board",
        }
    }
}

/// Administrative state. `leased` is set while a lease is active; the others are set by
/// operators (`maintenance`, `retired`) or by the health monitor (`offline`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ResourceState {
    Available,
    Leased,
    Maintenance,
    Offline,
    Retired,
}

impl ResourceState {
    pub const ALL: [ResourceState; 5] = [
        ResourceState::Available,
        ResourceState::Leased,
        ResourceState::Maintenance,
        ResourceState::Offline,
        ResourceState::Retired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ResourceState::Available => "available",
            ResourceState::Leased => "leased",
            ResourceState::Maintenance => "maintenance",
            ResourceState::Offline => "offline",
            ResourceState::Retired => "retired",
        }
    }
}

macro_rules! str_enum {
    ($ty:ty, $what:literal) => {
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl FromStr for $ty {
            type Err = UnknownValue;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                <$ty>::ALL
                    .into_iter()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| UnknownValue {
                        what: $what,
                        got: s.to_string(),
                        expected: <$ty>::ALL.iter().map(|v| v.as_str()).collect(),
                    })
            }
        }
    };
}

/// A string that names none of an enum's values; lists the ones that exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {got:?}: expected one of {}", expected.join(", "))]
pub struct UnknownValue {
    pub what: &'static str,
    pub got: String,
    pub expected: Vec<&'static str>,
}

str_enum!(ResourceKind, "resource kind");
str_enum!(ResourceState, "resource state");
str_enum!(HealthStatus, "health status");

/// A resource's own labels plus the derived ones selectors also see; labels set by hand
/// win over derived ones of the same name. (One rule for [`Resource::selector_labels`]
/// and for [`Selectable`] rows read without the whole resource.)
pub fn derived_labels(
    mut labels: Labels,
    kind: ResourceKind,
    name: &str,
    arch: Option<&str>,
    board_type: Option<&str>,
) -> Labels {
    labels
        .0
        .entry("kind".into())
        .or_insert_with(|| kind.as_str().into());
    labels.0.entry("name".into()).or_insert_with(|| name.into());
    if let Some(arch) = arch {
        labels.0.entry("arch".into()).or_insert_with(|| arch.into());
    }
    if let Some(bt) = board_type {
        labels
            .0
            .entry("board_type".into())
            .or_insert_with(|| bt.into());
    }
    labels
}

/// What a selector sees of a resource, and enough to name it: read without the rest
/// (health, capabilities, history) where only matching matters, such as taking a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selectable {
    pub id: Ulid,
    pub name: String,
    pub kind: ResourceKind,
    pub state: ResourceState,
    /// [`derived_labels`] of the resource.
    pub labels: Labels,
}

/// Whether the resource works, as the health monitor last judged it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    Ok,
    Degraded,
    Offline,
}

impl HealthStatus {
    pub const ALL: [HealthStatus; 3] = [
        HealthStatus::Ok,
        HealthStatus::Degraded,
        HealthStatus::Offline,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Ok => "ok",
            HealthStatus::Degraded => "degraded",
            HealthStatus::Offline => "offline",
        }
    }
}

/// Health with its reasons ("disk 4 GB free < 10 GB", "agent silent for 31 s").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct Health {
    pub status: HealthStatus,
    #[serde(default)]
    pub reasons: Vec<String>,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            status: HealthStatus::Ok,
            reasons: Vec::new(),
        }
    }
}

/// Measured facts about a resource. Detected by agents where they can be measured; the
/// fields are optional because a freshly added resource has not been measured yet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_gb: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kvm: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub toolchains: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peripherals: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<String>,
}

/// What only boards have: how to identify, power and flash them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BoardInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub board_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
    /// e.g. `pdu`, `relay`, `usb-hub`, `manual`, `process` (simulated boards).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_method: Option<String>,
    /// Name of the host or resource that flashes this board.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flash_station: Option<String>,
}

/// A planned or ongoing maintenance period. Without `end` it lasts until switched off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct MaintenanceWindow {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<DateTime<Utc>>,
    #[serde(default)]
    pub reason: String,
}

/// A resource as stored and as shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct Resource {
    #[cfg_attr(feature = "schema", schema(value_type = String, example = "01JD3Z6S0R8W9Q2A5Y7C4K1M3N"))]
    pub id: Ulid,
    pub name: String,
    pub kind: ResourceKind,
    pub labels: Labels,
    pub capabilities: Capabilities,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub board: Option<BoardInfo>,
    pub state: ResourceState,
    pub health: Health,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<MaintenanceWindow>,
    /// Why it was retired, when it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired_reason: Option<String>,
    /// Name of the agent that registered it; `None` for resources added by hand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<DateTime<Utc>>,
}

/// A refused change, in words an operator can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error(
        "resource {name} is retired; retired resources cannot change state (delete it, or add it again)"
    )]
    Retired { name: String },
    #[error(
        "resource {name} has {active} active workload(s); retire it with force and a reason, or wait until they end"
    )]
    ActiveWorkload { name: String, active: u32 },
    #[error("a forced retirement needs a reason")]
    ForceWithoutReason,
    #[error("resource {name} is not retired; only retired resources can be deleted")]
    NotRetired { name: String },
    #[error("resource {name} is not in maintenance")]
    NotInMaintenance { name: String },
    #[error("maintenance window ends ({end}) before it starts ({start})")]
    WindowInverted {
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    },
    #[error("resource {name} is {state}: cannot lease it")]
    NotLeasable { name: String, state: ResourceState },
}

/// Why a resource name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "resource name {0:?} is invalid: use 1-63 characters from a-z 0-9 - . _ starting with a letter or digit"
)]
pub struct BadName(pub String);

/// Names appear in URLs, selectors and shell scripts, so they stay DNS-like.
pub fn validate_name(name: &str) -> Result<(), BadName> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.' | '_'));
    if ok {
        Ok(())
    } else {
        Err(BadName(name.to_string()))
    }
}

impl Resource {
    /// A new resource, available and healthy until measured otherwise.
    pub fn new(id: Ulid, name: String, kind: ResourceKind, now: DateTime<Utc>) -> Self {
        Resource {
            id,
            name,
            kind,
            labels: Labels::new(),
            capabilities: Capabilities::default(),
            board: (kind == ResourceKind::Board).then(BoardInfo::default),
            state: ResourceState::Available,
            health: Health::default(),
            maintenance: None,
            retired_reason: None,
            agent: None,
            created_at: now,
            updated_at: now,
            last_seen: None,
        }
    }

    /// The labels selectors see: the resource's own plus derived ones (`kind`, `name`,
    /// `arch`, `board_type`), so `kind=board,board_type=rpi4` works without hand-typing.
    pub fn selector_labels(&self) -> Labels {
        derived_labels(
            self.labels.clone(),
            self.kind,
            &self.name,
            self.capabilities.arch.as_deref(),
            self.board.as_ref().and_then(|b| b.board_type.as_deref()),
        )
    }

    fn refuse_if_retired(&self) -> Result<(), Refused> {
        if self.state == ResourceState::Retired {
            Err(Refused::Retired {
                name: self.name.clone(),
            })
        } else {
            Ok(())
        }
    }

    /// Puts the resource into maintenance. Work already running continues (a drain); no
    /// new work is placed. A window starting in the future is recorded and takes effect
    /// at its start ([`Resource::tick_maintenance`]).
    pub fn maintenance_on(
        &mut self,
        window: MaintenanceWindow,
        now: DateTime<Utc>,
    ) -> Result<(), Refused> {
        self.refuse_if_retired()?;
        if let (Some(start), Some(end)) = (window.start, window.end)
            && end <= start
        {
            return Err(Refused::WindowInverted { start, end });
        }
        let starts_now = window.start.is_none_or(|s| s <= now);
        self.maintenance = Some(window);
        if starts_now {
            self.state = ResourceState::Maintenance;
        }
        self.updated_at = now;
        Ok(())
    }

    /// Ends maintenance. `active_leases` decides whether it returns as leased or available.
    pub fn maintenance_off(
        &mut self,
        active_leases: u32,
        now: DateTime<Utc>,
    ) -> Result<(), Refused> {
        self.refuse_if_retired()?;
        if self.maintenance.is_none() && self.state != ResourceState::Maintenance {
            return Err(Refused::NotInMaintenance {
                name: self.name.clone(),
            });
        }
        self.maintenance = None;
        if self.state == ResourceState::Maintenance {
            self.state = if active_leases > 0 {
                ResourceState::Leased
            } else {
                ResourceState::Available
            };
        }
        self.updated_at = now;
        Ok(())
    }

    /// Applies a maintenance window's start and end as time passes. Returns true when the
    /// state changed (the caller records an event).
    pub fn tick_maintenance(&mut self, active_leases: u32, now: DateTime<Utc>) -> bool {
        let Some(window) = self.maintenance.clone() else {
            return false;
        };
        if self.state == ResourceState::Retired {
            return false;
        }
        if window.end.is_some_and(|e| e <= now) {
            self.maintenance = None;
            if self.state == ResourceState::Maintenance {
                self.state = if active_leases > 0 {
                    ResourceState::Leased
                } else {
                    ResourceState::Available
                };
                self.updated_at = now;
                return true;
            }
            return false;
        }
        if window.start.is_none_or(|s| s <= now)
            && matches!(self.state, ResourceState::Available | ResourceState::Leased)
        {
            self.state = ResourceState::Maintenance;
            self.updated_at = now;
            return true;
        }
        false
    }

    /// Retires the resource for good. Refused while work runs on it unless forced with a
    /// reason (the caller then ends that work as a lab error).
    pub fn retire(
        &mut self,
        active_workloads: u32,
        force: bool,
        reason: Option<String>,
        now: DateTime<Utc>,
    ) -> Result<(), Refused> {
        self.refuse_if_retired()?;
        let reason = reason.filter(|r| !r.trim().is_empty());
        if active_workloads > 0 {
            if !force {
                return Err(Refused::ActiveWorkload {
                    name: self.name.clone(),
                    active: active_workloads,
                });
            }
            if reason.is_none() {
                return Err(Refused::ForceWithoutReason);
            }
        }
        self.state = ResourceState::Retired;
        self.retired_reason = reason;
        self.maintenance = None;
        self.updated_at = now;
        Ok(())
    }

    /// Only retired resources may be deleted, so nothing in use disappears by mistake.
    pub fn check_deletable(&self) -> Result<(), Refused> {
        if self.state == ResourceState::Retired {
            Ok(())
        } else {
            Err(Refused::NotRetired {
                name: self.name.clone(),
            })
        }
    }

    /// Whether new work may be placed here at all (ignoring capacity, which the scheduler
    /// checks). See [`takes_new_work`].
    pub fn accepts_new_work(&self) -> bool {
        takes_new_work(self.state, self.health.status)
    }
}

/// Whether a resource in `state` with health `health` takes new work at all (ignoring
/// capacity). Offline, maintenance and retired resources take nothing new, nor does one
/// its agent stopped reporting for.
pub fn takes_new_work(state: ResourceState, health: HealthStatus) -> bool {
    matches!(state, ResourceState::Available | ResourceState::Leased)
        && health != HealthStatus::Offline
}

/// Whether a whole lease (a board, a person's manual lease) may take a resource that has
/// no active lease: it must be available, not merely taking new work.
pub fn takes_whole_lease(state: ResourceState, health: HealthStatus) -> bool {
    state == ResourceState::Available && takes_new_work(state, health)
}

/// Where a resource goes when a lease on it ends (before any cleanup): a leased
/// resource whose last lease ended is back in the pool; one still running other
/// capacity shares stays leased; maintenance and retired stay as they are (an operator
/// put them there while the lease ran).
pub fn after_lease_end(state: ResourceState, active_leases: u32) -> ResourceState {
    if state == ResourceState::Leased && active_leases == 0 {
        ResourceState::Available
    } else {
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    #[test]
    fn a_resource_returns_to_the_pool_with_its_last_lease_only() {
        use ResourceState::*;
        assert_eq!(after_lease_end(Leased, 0), Available);
        assert_eq!(after_lease_end(Leased, 2), Leased);
        for kept in [Available, Maintenance, Retired] {
            assert_eq!(after_lease_end(kept, 0), kept);
        }
    }

    #[test]
    fn what_takes_new_work_and_whole_leases() {
        let mut takes = Vec::new();
        let mut whole = Vec::new();
        for s in ResourceState::ALL {
            for h in HealthStatus::ALL {
                if takes_new_work(s, h) {
                    takes.push((s.as_str(), h.as_str()));
                }
                if takes_whole_lease(s, h) {
                    whole.push((s.as_str(), h.as_str()));
                }
            }
        }
        assert_eq!(
            takes,
            [
                ("available", "ok"),
                ("available", "degraded"),
                ("leased", "ok"),
                ("leased", "degraded")
            ]
        );
        assert_eq!(whole, [("available", "ok"), ("available", "degraded")]);
    }

    fn board() -> Resource {
        Resource::new(Ulid::nil(), "rpi-1".into(), ResourceKind::Board, Utc::now())
    }

    #[test]
    fn kinds_and_states_parse() {
        assert_eq!(
            "qemu-host".parse::<ResourceKind>().unwrap(),
            ResourceKind::QemuHost
        );
        let e = "vm".parse::<ResourceKind>().unwrap_err();
        assert!(
            e.to_string().contains("build-server, qemu-host, board"),
            "{e}"
        );
        assert_eq!(
            serde_json::to_string(&ResourceKind::BuildServer).unwrap(),
            "\"build-server\""
        );
        assert_eq!(
            "maintenance".parse::<ResourceState>().unwrap(),
            ResourceState::Maintenance
        );
    }

    #[test]
    fn names() {
        assert!(validate_name("rpi4-01.lab").is_ok());
        assert!(validate_name("RPI").is_err());
        assert!(validate_name("").is_err());
        assert!(validate_name("-x").is_err());
        assert!(validate_name(&"a".repeat(64)).is_err());
    }

    #[test]
    fn maintenance_round_trip_and_window() {
        let now = Utc::now();
        let mut r = board();
        r.maintenance_on(
            MaintenanceWindow {
                start: None,
                end: None,
                reason: "fan".into(),
            },
            now,
        )
        .unwrap();
        assert_eq!(r.state, ResourceState::Maintenance);
        assert!(!r.accepts_new_work());
        r.maintenance_off(0, now).unwrap();
        assert_eq!(r.state, ResourceState::Available);
        assert!(r.maintenance_off(0, now).is_err());

        // A future window takes effect at its start and ends at its end.
        let w = MaintenanceWindow {
            start: Some(now + Duration::hours(1)),
            end: Some(now + Duration::hours(2)),
            reason: "move".into(),
        };
        r.maintenance_on(w, now).unwrap();
        assert_eq!(r.state, ResourceState::Available);
        assert!(!r.tick_maintenance(0, now));
        assert!(r.tick_maintenance(0, now + Duration::minutes(61)));
        assert_eq!(r.state, ResourceState::Maintenance);
        assert!(r.tick_maintenance(1, now + Duration::minutes(121)));
        assert_eq!(r.state, ResourceState::Leased);
        assert!(r.maintenance.is_none());

        let bad = MaintenanceWindow {
            start: Some(now),
            end: Some(now - Duration::seconds(1)),
            reason: String::new(),
        };
        assert!(matches!(
            r.maintenance_on(bad, now),
            Err(Refused::WindowInverted { .. })
        ));
    }

    #[test]
    fn retire_rules() {
        let now = Utc::now();
        let mut r = board();
        assert!(matches!(
            r.check_deletable(),
            Err(Refused::NotRetired { .. })
        ));
        assert!(matches!(
            r.retire(1, false, None, now),
            Err(Refused::ActiveWorkload { active: 1, .. })
        ));
        assert!(matches!(
            r.retire(1, true, Some(" ".into()), now),
            Err(Refused::ForceWithoutReason)
        ));
        r.retire(1, true, Some("burnt".into()), now).unwrap();
        assert_eq!(r.state, ResourceState::Retired);
        assert!(r.check_deletable().is_ok());
        assert!(matches!(
            r.maintenance_on(
                MaintenanceWindow {
                    start: None,
                    end: None,
                    reason: String::new()
                },
                now
            ),
            Err(Refused::Retired { .. })
        ));
    }

    #[test]
    fn derived_selector_labels() {
        let mut r = board();
        r.board = Some(BoardInfo {
            board_type: Some("rpi4".into()),
            ..Default::default()
        });
        r.capabilities.arch = Some("arm64".into());
        let sel =
            crate::Selector::parse("kind=board,board_type=rpi4,arch=arm64,name=rpi-1").unwrap();
        assert!(sel.matches(&r.selector_labels()));
    }
}
