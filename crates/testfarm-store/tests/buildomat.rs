//! The buildomat instance table: rows survive reopening the store (a testfarm restart),
//! the live listing leaves destroyed ones out, and a destroyed row is never changed again.

use chrono::Utc;
use testfarm_store::Store;
use testfarm_store::buildomat::BuildomatInstanceRow;

#[tokio::test]
async fn instances_survive_reopen_and_destroyed_is_final() -> Result<(), Box<dyn std::error::Error>>
{
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("t.db");
    let now = Utc::now();
    let mut row = BuildomatInstanceRow {
        id: "01JINSTANCE0000000000000000".into(),
        state: "created".into(),
        bmat_job: "01JJOB".into(),
        bmat_worker: "01JWORKER".into(),
        target: "01JTARGET".into(),
        board: "01JBOARD".into(),
        job_id: None,
        lease_id: None,
        hold: false,
        destroy_reason: None,
        created_at: now,
        last_progress: now,
        destroyed_at: None,
    };
    {
        let store = Store::open(&path).await?;
        let mut tx = store.begin().await?;
        tx.insert_buildomat_instance(&row).await?;
        tx.commit().await?;
    }
    let store = Store::open(&path).await?;
    let live = store.buildomat_instances(true).await?;
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].bmat_worker, "01JWORKER");

    row.state = "destroyed".into();
    row.destroy_reason = Some("recycled".into());
    row.destroyed_at = Some(now);
    let mut tx = store.begin().await?;
    assert!(tx.update_buildomat_instance(&row).await?);
    row.state = "running".into();
    assert!(
        !tx.update_buildomat_instance(&row).await?,
        "destroyed is final"
    );
    tx.commit().await?;
    assert!(store.buildomat_instances(true).await?.is_empty());
    let all = store.buildomat_instances(false).await?;
    assert_eq!(all[0].state, "destroyed");
    assert_eq!(all[0].destroy_reason.as_deref(), Some("recycled"));
    Ok(())
}
