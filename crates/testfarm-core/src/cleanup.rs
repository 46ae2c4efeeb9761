//! What happens to a resource after a lease on it ends.
//!
//! Every ended lease (released, expired, force-released) is followed by a cleanup that
//! returns the resource to a known state: a board is powered off, a VM is stopped. The
//! actual work belongs to the agent's drivers; this module decides what to ask for and
//! what a failure means. A resource whose cleanup fails goes to `maintenance` with the
//! reason, never silently back to the pool: the next job would fail for the lab's fault.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::lease::{Lease, Share};
use crate::resource::{MaintenanceWindow, Refused, Resource, ResourceKind};

/// The cleanup to run after a lease ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum CleanupAction {
    /// Power the board off (and release its console).
    PowerOffBoard,
    /// Stop the lease's VM and remove its overlay.
    StopVm,
    /// Whole host held (manual lease): stop every VM the holder left.
    StopAllVms,
    /// Remove the job's work directory.
    CleanWorkdir,
}

/// The cleanup an ended lease needs.
pub fn cleanup_for(resource: &Resource, lease: &Lease) -> CleanupAction {
    match (resource.kind, lease.share) {
        (ResourceKind::Board, _) => CleanupAction::PowerOffBoard,
        (ResourceKind::QemuHost, Share::Slice { .. }) => CleanupAction::StopVm,
        (ResourceKind::QemuHost, Share::Whole) => CleanupAction::StopAllVms,
        (ResourceKind::BuildServer, _) => CleanupAction::CleanWorkdir,
    }
}

/// The maintenance reason a resource carries while its cleanup runs (`how`: how the
/// lease ended). [`held_for_cleanup`] recognises it, so only the cleanup's own hold is
/// lifted when the cleanup succeeds, never an operator's maintenance or a quarantine set
/// meanwhile.
pub fn hold_reason(lease_id: &str, how: &str) -> String {
    format!("{CLEANUP_HOLD}{lease_id} ({how})")
}

const CLEANUP_HOLD: &str = "cleanup after lease ";

/// Whether the resource is out of the pool only because a lease's cleanup runs.
pub fn held_for_cleanup(resource: &Resource) -> bool {
    resource.state == crate::resource::ResourceState::Maintenance
        && resource
            .maintenance
            .as_ref()
            .is_some_and(|m| m.reason.starts_with(CLEANUP_HOLD))
}

/// Whether the resource sits in maintenance because a lease-end cleanup failed (as
/// [`after_cleanup`] leaves it); the maintenance reason if so. The `cleanup_failed` alert
/// holds while this does.
pub fn failed_cleanup(resource: &Resource) -> Option<&str> {
    let m = resource.maintenance.as_ref()?;
    (resource.state == crate::resource::ResourceState::Maintenance
        && m.reason.contains("cleanup (")
        && m.reason.contains(" failed: "))
    .then_some(m.reason.as_str())
}

/// Takes the resource out of the pool while a lease's cleanup runs. One already out of
/// it for another reason (an operator's maintenance, a quarantine, a board that needs a
/// person) keeps that reason: the cleanup still runs, but its success must not bring the
/// resource back.
pub fn hold_for_cleanup(resource: &mut Resource, lease_id: &str, how: &str, now: DateTime<Utc>) {
    if resource.state == crate::resource::ResourceState::Maintenance && !held_for_cleanup(resource)
    {
        return;
    }
    resource.maintenance = Some(MaintenanceWindow {
        start: None,
        end: None,
        reason: hold_reason(lease_id, how),
    });
    resource.state = crate::resource::ResourceState::Maintenance;
    resource.updated_at = now;
}

/// Applies a cleanup's outcome: on failure the resource goes to maintenance with the
/// reason (returns true: the caller records the event and alerts); a resource already in
/// maintenance for another reason keeps it, with the failure added. Work still running on
/// a shared host keeps running (maintenance drains, it does not kill).
pub fn after_cleanup(
    resource: &mut Resource,
    lease: &Lease,
    outcome: Result<(), String>,
    now: DateTime<Utc>,
) -> Result<bool, Refused> {
    let Err(why) = outcome else {
        return Ok(false);
    };
    let failure = format!(
        "cleanup ({:?}) after lease {} failed: {why}",
        cleanup_for(resource, lease),
        lease.id
    );
    let reason = match &resource.maintenance {
        Some(m)
            if resource.state == crate::resource::ResourceState::Maintenance
                && !held_for_cleanup(resource) =>
        {
            format!("{}; then {failure}", m.reason)
        }
        _ => failure,
    };
    resource.maintenance_on(
        MaintenanceWindow {
            start: None,
            end: None,
            reason,
        },
        now,
    )?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resource_already_out_of_the_pool_keeps_its_reason_through_a_cleanup() {
        let now = Utc::now();
        let mut r = Resource::new(ulid::Ulid::nil(), "b".into(), ResourceKind::Board, now);
        hold_for_cleanup(&mut r, "01A", "expired", now);
        assert!(held_for_cleanup(&r));
        r.maintenance_on(
            MaintenanceWindow {
                start: None,
                end: None,
                reason: "needs manual intervention: 1 power cycle did not recover the board".into(),
            },
            now,
        )
        .unwrap_or_default();
        hold_for_cleanup(&mut r, "01B", "released", now);
        assert!(!held_for_cleanup(&r), "the person's reason stays");
        assert!(
            r.maintenance
                .as_ref()
                .is_some_and(|m| m.reason.starts_with("needs manual intervention"))
        );
    }

    #[test]
    fn only_the_cleanups_own_hold_counts_as_held_for_cleanup() {
        let now = Utc::now();
        let mut r = Resource::new(ulid::Ulid::nil(), "b".into(), ResourceKind::Board, now);
        assert!(!held_for_cleanup(&r));
        let hold = |reason: String| MaintenanceWindow {
            start: None,
            end: None,
            reason,
        };
        r.maintenance_on(hold(hold_reason("01L", "expired")), now)
            .unwrap_or_default();
        assert!(held_for_cleanup(&r));
        r.maintenance_on(hold("quarantined: 3 health checks failed".into()), now)
            .unwrap_or_default();
        assert!(!held_for_cleanup(&r));
    }
    use crate::lease::{Holder, LeaseRequest, acquire};
    use crate::resource::ResourceState;
    use std::time::Duration;
    use ulid::Ulid;

    #[test]
    fn failed_cleanup_means_maintenance_with_reason() {
        let now = Utc::now();
        let mut r = Resource::new(Ulid::nil(), "rpi-1".into(), ResourceKind::Board, now);
        let l = acquire(
            LeaseRequest {
                id: Ulid::nil(),
                resource_id: r.id,
                resource_last_epoch: 0,
                holder: Holder::Person("ann".into()),
                share: Share::Whole,
                duration: Duration::from_secs(60),
                heartbeat_ttl: Duration::from_secs(30),
            },
            now,
        )
        .unwrap();
        assert_eq!(cleanup_for(&r, &l), CleanupAction::PowerOffBoard);
        assert!(!after_cleanup(&mut r, &l, Ok(()), now).unwrap());
        assert_eq!(r.state, ResourceState::Available);
        assert!(after_cleanup(&mut r, &l, Err("PDU did not answer".into()), now).unwrap());
        assert_eq!(r.state, ResourceState::Maintenance);
        let reason = &r.maintenance.as_ref().unwrap().reason;
        assert!(reason.contains("PDU did not answer"), "{reason}");
        assert!(reason.contains("PowerOffBoard"), "{reason}");
    }
}
