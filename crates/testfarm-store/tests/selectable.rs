//! `Store::list_selectable` reads only what selectors see; it must agree with the
//! domain's `Resource::selector_labels` on every derived label, and skip retired ones.

use std::time::Duration;

use chrono::Utc;
use testfarm_core::lease::{self, Holder, LeaseRequest, Share};
use testfarm_core::resource::{Resource, ResourceKind, ResourceState};
use testfarm_store::Store;
use ulid::Ulid;

type TestResult = Result<(), Box<dyn std::error::Error>>;

#[tokio::test]
async fn selectable_rows_carry_the_same_labels_as_the_resource() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Store::open(&dir.path().join("t.db")).await?;
    let now = Utc::now();
    let mut board = Resource::new(Ulid::new(), "rpi-1".into(), ResourceKind::Board, now);
    board.labels.insert("lab", "north");
    board.capabilities.arch = Some("arm64".into());
    if let Some(b) = board.board.as_mut() {
        b.board_type = Some("rpi4".into());
    }
    let mut host = Resource::new(Ulid::new(), "qemu-1".into(), ResourceKind::QemuHost, now);
    // A label set by hand wins over the derived one of the same name.
    host.labels.insert("arch", "x86_64-v3");
    host.capabilities.arch = Some("x86_64".into());
    let mut gone = Resource::new(Ulid::new(), "old".into(), ResourceKind::Board, now);
    gone.state = ResourceState::Retired;
    let mut tx = store.begin().await?;
    for r in [&board, &host, &gone] {
        tx.insert_resource(r).await?;
    }
    tx.commit().await?;

    let all = store.list_selectable(None).await?;
    assert_eq!(
        all.len(),
        2,
        "retired resources are not selectable: {all:?}"
    );
    for resource in [&board, &host] {
        let row = all
            .iter()
            .find(|r| r.id == resource.id)
            .ok_or("a resource is missing")?;
        assert_eq!(row.name, resource.name);
        assert_eq!(row.kind, resource.kind);
        assert_eq!(row.state, resource.state);
        assert_eq!(row.labels, resource.selector_labels());
    }
    let host_row = all.iter().find(|r| r.id == host.id).ok_or("no host")?;
    assert_eq!(
        host_row.labels.0.get("arch").map(String::as_str),
        Some("x86_64-v3")
    );
    let boards = store.list_selectable(Some(ResourceKind::Board)).await?;
    assert_eq!(boards.len(), 1);
    assert_eq!(
        boards[0].labels.0.get("board_type").map(String::as_str),
        Some("rpi4")
    );
    assert_eq!(
        store.resource_name(board.id).await?.as_deref(),
        Some("rpi-1")
    );
    assert_eq!(store.resource_name(Ulid::new()).await?, None);
    Ok(())
}

/// The cached selectable rows survive what a lease does to a board (a state change) and
/// are dropped by anything that changes which resources exist or what they are labelled.
#[tokio::test]
async fn the_selectable_cache_follows_changes_to_the_resource_set() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Store::open(&dir.path().join("t.db")).await?;
    let now = Utc::now();
    let mut board = Resource::new(Ulid::new(), "rpi-1".into(), ResourceKind::Board, now);
    let mut tx = store.begin().await?;
    tx.insert_resource(&board).await?;
    tx.commit().await?;

    let first = store.selectable(Some(ResourceKind::Board)).await?;
    assert_eq!(first.len(), 1);
    let again = store.selectable(Some(ResourceKind::Board)).await?;
    assert!(
        std::sync::Arc::ptr_eq(&first, &again),
        "an unchanged resource set is served from memory"
    );

    // A lease taking the board, and giving it back, changes only its state: the cache
    // stays.
    let lease = lease::acquire(
        LeaseRequest {
            id: Ulid::new(),
            resource_id: board.id,
            resource_last_epoch: 0,
            holder: Holder::Person("alice".into()),
            share: Share::Whole,
            duration: Duration::from_secs(600),
            heartbeat_ttl: Duration::from_secs(30),
        },
        now,
    )?;
    let mut tx = store.begin().await?;
    tx.insert_lease(&lease, Some(ResourceState::Leased)).await?;
    tx.commit().await?;
    assert_eq!(
        store.get_resource("rpi-1").await?.state,
        ResourceState::Leased
    );
    let mut tx = store.begin().await?;
    let ended = lease.release(&lease.holder, lease.epoch, now)?;
    let back = tx.write_ended_lease(&ended, now).await?;
    tx.commit().await?;
    assert_eq!(
        (back.name.as_str(), back.state),
        ("rpi-1", ResourceState::Available)
    );
    let after_lease = store.selectable(Some(ResourceKind::Board)).await?;
    assert!(std::sync::Arc::ptr_eq(&first, &after_lease));

    // A relabel is seen at once.
    board.labels.insert("lab", "south");
    let mut tx = store.begin().await?;
    tx.update_resource(&board).await?;
    tx.commit().await?;
    let relabelled = store.selectable(Some(ResourceKind::Board)).await?;
    assert_eq!(
        relabelled[0].labels.0.get("lab").map(String::as_str),
        Some("south")
    );

    // A rolled-back insert changes nothing; a committed one is seen.
    let other = Resource::new(Ulid::new(), "rpi-2".into(), ResourceKind::Board, now);
    let mut tx = store.begin().await?;
    tx.insert_resource(&other).await?;
    drop(tx);
    assert_eq!(store.selectable(Some(ResourceKind::Board)).await?.len(), 1);
    let mut tx = store.begin().await?;
    tx.insert_resource(&other).await?;
    tx.commit().await?;
    assert_eq!(store.selectable(Some(ResourceKind::Board)).await?.len(), 2);

    // Retiring drops it (retired is not selectable).
    let mut retired = other.clone();
    retired.state = ResourceState::Retired;
    let mut tx = store.begin().await?;
    tx.update_resource(&retired).await?;
    tx.commit().await?;
    assert_eq!(store.selectable(Some(ResourceKind::Board)).await?.len(), 1);

    // Deleting removes it.
    let mut tx = store.begin().await?;
    tx.delete_resource("rpi-1").await?;
    tx.commit().await?;
    assert!(
        store
            .selectable(Some(ResourceKind::Board))
            .await?
            .is_empty()
    );
    Ok(())
}
