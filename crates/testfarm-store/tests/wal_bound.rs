//! The WAL stays bounded under a steady stream of commits. A checkpoint that runs beside
//! the writers never catches up with the end of the log, and SQLite only starts the log
//! over once a checkpoint has; without the writer's restart the file grew without bound
//! (477 MB after a few minutes of lease benchmark).

use std::time::Duration;

use testfarm_store::{NewEvent, Store};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// What the WAL may reach: the restart threshold plus the commits of the checkpoint
/// intervals a loaded machine lets pass (the suite runs beside this; it once reached
/// 73 MB there), well under the ~160 MB the file reaches without the restart.
const BOUND: u64 = 100 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_wal_restarts_under_continuous_writes() -> TestResult {
    tokio::time::timeout(Duration::from_secs(90), async {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("t.db");
        let wal = dir.path().join("t.db-wal");
        let store = Store::open(&path).await?;
        // 2400 commits of ~64 KiB (17 pages) each: ~160 MB of WAL if it never restarted.
        let payload = "x".repeat(64 * 1024);
        let mut tasks = Vec::new();
        for worker in 0..8 {
            let (store, payload) = (store.clone(), payload.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0..300 {
                    let mut tx = store.begin().await?;
                    tx.record(
                        NewEvent::new("test.write", "test", format!("{worker}-{i}"), "test")
                            .with_data(serde_json::json!({ "payload": payload })),
                    );
                    tx.commit().await?;
                }
                Ok::<_, testfarm_store::StoreError>(())
            }));
        }
        let mut largest = 0;
        while !tasks.iter().all(|t| t.is_finished()) {
            largest = largest.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for t in tasks {
            t.await??;
        }
        largest = largest.max(std::fs::metadata(&wal)?.len());
        let stats = store.write_stats();
        assert_eq!(stats.transactions, 2400);
        assert!(
            largest < BOUND,
            "the WAL reached {largest} bytes over {} commits",
            stats.commits
        );
        Ok(())
    })
    .await?
}
