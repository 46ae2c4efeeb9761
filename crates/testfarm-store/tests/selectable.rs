//! `Store::list_selectable` reads only what selectors see; it must agree with the
//! domain's `Resource::selector_labels` on every derived label, and skip retired ones.

use chrono::Utc;
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
