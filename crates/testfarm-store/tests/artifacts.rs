//! The artifact repository's metadata against a real SQLite file: the latest build of a
//! branch that has a kind, filters and pages, tags and pins, and deleting a build.

use std::time::Duration;

use chrono::Utc;
use testfarm_api::artifact::{ArtifactKind, Build};
use testfarm_store::Store;
use testfarm_store::artifacts::{ArtifactFilter, NewArtifact};
use ulid::Ulid;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn build(n: u64, branch: &str, arch: &str) -> Build {
    Build {
        // Ids in creation order, as the server's generator makes them.
        id: Ulid::from_parts(1_800_000_000_000 + n, u128::from(n)),
        commit: format!("c{n}"),
        branch: branch.to_string(),
        arch: arch.to_string(),
        created_at: Utc::now(),
        pinned: false,
        source_job: None,
        tags: Vec::new(),
        artifacts: Vec::new(),
    }
}

async fn add(store: &Store, b: &Build, files: &[(&str, ArtifactKind)]) -> TestResult {
    let mut tx = store.begin().await?;
    tx.insert_build(b, "test").await?;
    for (name, kind) in files {
        tx.insert_artifact(&NewArtifact {
            build: b.id,
            name,
            kind: *kind,
            sha256: &format!("{:0>64}", format!("{}{name}", b.commit).len()),
            size: 10,
            created_at: Utc::now(),
        })
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

#[tokio::test]
async fn latest_of_a_branch_with_a_kind() -> TestResult {
    tokio::time::timeout(Duration::from_secs(30), async {
        let dir = tempfile::tempdir()?;
        let store = Store::open(&dir.path().join("t.db")).await?;
        use ArtifactKind::*;
        let b1 = build(1, "main", "arm64");
        let b2 = build(2, "main", "arm64");
        let b3 = build(3, "main", "x86_64");
        let b4 = build(4, "dev", "arm64");
        let b5 = build(5, "main", "arm64");
        add(&store, &b1, &[("Image", Kernel), ("rootfs.ext4", Rootfs)]).await?;
        add(&store, &b2, &[("Image", Kernel)]).await?;
        add(&store, &b3, &[("bzImage", Kernel), ("rootfs.ext4", Rootfs)]).await?;
        add(&store, &b4, &[("Image", Kernel), ("rootfs.ext4", Rootfs)]).await?;
        // The newest build of main has no kernel yet (still uploading).
        add(&store, &b5, &[("board.dtb", Dtb)]).await?;

        let id = |b: Option<Build>| b.map(|b| b.id);
        assert_eq!(
            id(store.latest_build_with("main", Kernel, None).await?),
            Some(b3.id)
        );
        assert_eq!(
            id(store
                .latest_build_with("main", Kernel, Some("arm64"))
                .await?),
            Some(b2.id)
        );
        assert_eq!(
            id(store
                .latest_build_with("main", Rootfs, Some("arm64"))
                .await?),
            Some(b1.id)
        );
        assert_eq!(
            id(store.latest_build_with("main", Dtb, None).await?),
            Some(b5.id)
        );
        assert_eq!(
            id(store.latest_build_with("main", Firmware, None).await?),
            None
        );
        assert_eq!(
            id(store.latest_build_with("nope", Kernel, None).await?),
            None
        );
        let latest = store
            .latest_build_with("dev", Kernel, None)
            .await?
            .ok_or("no dev build")?;
        assert_eq!(latest.artifacts.len(), 2);
        assert_eq!(latest.artifacts[0].branch, "dev");

        // Filters and pages: newest build first, then name; a page continues exactly.
        let all = store
            .list_artifacts(&ArtifactFilter {
                limit: 100,
                ..Default::default()
            })
            .await?;
        assert_eq!(all.len(), 8);
        assert_eq!(all[0].build_id, b5.id);
        let mut paged = Vec::new();
        let mut after = None;
        loop {
            let page = store
                .list_artifacts(&ArtifactFilter {
                    limit: 3,
                    after: after.clone(),
                    ..Default::default()
                })
                .await?;
            let Some(last) = page.last() else { break };
            after = Some((last.build_id, last.name.clone()));
            paged.extend(page);
        }
        assert_eq!(paged, all);
        let kernels_of_main = store
            .list_artifacts(&ArtifactFilter {
                branch: Some("main".into()),
                kind: Some(Kernel),
                limit: 100,
                ..Default::default()
            })
            .await?;
        assert_eq!(kernels_of_main.len(), 3);
        let by_commit = store
            .list_artifacts(&ArtifactFilter {
                commit: Some("c3".into()),
                limit: 100,
                ..Default::default()
            })
            .await?;
        assert_eq!(by_commit.len(), 2);

        // Tags filter, pin, and retention's view.
        let mut tx = store.begin().await?;
        assert!(tx.add_tag(b1.id, "release").await?);
        assert!(!tx.add_tag(b1.id, "release").await?);
        assert!(tx.set_pinned(b2.id, true).await?);
        assert!(!tx.set_pinned(b2.id, true).await?);
        assert!(tx.add_tag(Ulid::new(), "x").await.is_err());
        tx.commit().await?;
        let tagged = store
            .list_artifacts(&ArtifactFilter {
                tag: Some("release".into()),
                limit: 100,
                ..Default::default()
            })
            .await?;
        assert_eq!(tagged.len(), 2);
        assert!(tagged.iter().all(|a| a.build_id == b1.id));
        let usage = store.build_retention().await?;
        assert_eq!(usage.len(), 5);
        let u1 = usage.iter().find(|u| u.usage.id == b1.id).ok_or("b1")?;
        assert!(u1.usage.tagged && !u1.usage.pinned && u1.usage.blobs.len() == 2);
        let u2 = usage.iter().find(|u| u.usage.id == b2.id).ok_or("b2")?;
        assert!(u2.usage.pinned && !u2.usage.tagged);

        // A duplicate name in a build is refused; deleting a build takes its rows.
        let mut tx = store.begin().await?;
        let dup = tx
            .insert_artifact(&NewArtifact {
                build: b4.id,
                name: "Image",
                kind: Kernel,
                sha256: &"0".repeat(64),
                size: 1,
                created_at: Utc::now(),
            })
            .await;
        assert!(matches!(
            dup,
            Err(testfarm_store::StoreError::Duplicate { .. })
        ));
        drop(tx);
        let before = store.referenced_blobs().await?;
        let mut tx = store.begin().await?;
        assert!(tx.delete_build(b4.id).await?);
        assert!(!tx.delete_build(b4.id).await?);
        tx.commit().await?;
        assert_eq!(
            id(store.latest_build_with("dev", Kernel, None).await?),
            None
        );
        assert!(store.get_build(b4.id).await.is_err());
        assert!(store.referenced_blobs().await?.len() <= before.len());
        assert_eq!(
            store
                .list_artifacts(&ArtifactFilter {
                    build: Some(b4.id),
                    limit: 100,
                    ..Default::default()
                })
                .await?
                .len(),
            0
        );
        Ok::<_, Box<dyn std::error::Error>>(())
    })
    .await?
}
