//! The writer's group commit against a real SQLite file: transactions that share a
//! commit are all durable, one rolled back in a group undoes only itself, and nothing
//! is lost across a reopen.

use std::future::Future;
use std::task::Poll;
use std::time::Duration;

use chrono::Utc;
use testfarm_api::group::Group;
use testfarm_store::events::EventFilter;
use testfarm_store::{NewEvent, Store};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn group(name: &str) -> Group {
    Group {
        name: name.to_string(),
        selector: "kind=board".to_string(),
        description: String::new(),
        created_at: Utc::now(),
    }
}

async fn names(store: &Store) -> Result<Vec<String>, testfarm_store::StoreError> {
    Ok(store
        .list_groups()
        .await?
        .into_iter()
        .map(|g| g.name)
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_transactions_all_commit_and_survive_a_reopen() -> TestResult {
    tokio::time::timeout(Duration::from_secs(60), async {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("t.db");
        let store = Store::open(&path).await?;
        let mut events = store.subscribe_events();
        let mut tasks = Vec::new();
        for i in 0..64 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut tx = store.begin().await?;
                tx.insert_group(&group(&format!("g{i:02}"))).await?;
                tx.record(NewEvent::new(
                    "group.created",
                    "group",
                    format!("g{i:02}"),
                    "test",
                ));
                tx.commit().await
            }));
        }
        for t in tasks {
            t.await??;
        }
        let all = names(&store).await?;
        assert_eq!(all.len(), 64, "{all:?}");
        let logged = store
            .list_events(&EventFilter {
                limit: 1000,
                ..EventFilter::default()
            })
            .await?;
        assert_eq!(logged.len(), 64);
        // Subscribers hear of the newest event once its commit is done.
        assert_eq!(*events.borrow_and_update(), logged[63].id);
        let stats = store.write_stats();
        assert_eq!(stats.transactions, 64);
        assert!(stats.commits <= 64 && stats.commits >= 1, "{stats:?}");
        store.close().await;
        drop(store);
        let reopened = Store::open(&path).await?;
        assert_eq!(names(&reopened).await?.len(), 64);
        Ok::<_, Box<dyn std::error::Error>>(())
    })
    .await?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_rolled_back_inside_a_group_undoes_only_itself() -> TestResult {
    tokio::time::timeout(Duration::from_secs(60), async {
        let dir = tempfile::tempdir()?;
        let store = Store::open(&dir.path().join("t.db")).await?;
        let before = store.write_stats();
        let mut first = store.begin().await?;
        first.insert_group(&group("kept")).await?;
        // A second writer queues behind the first...
        let second = {
            let store = store.clone();
            tokio::spawn(async move {
                let mut tx = store.begin().await?;
                tx.insert_group(&group("undone")).await?;
                drop(tx); // ...and gives up after writing.
                let mut tx = store.begin().await?;
                tx.insert_group(&group("after")).await?;
                tx.commit().await
            })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        // ...so the first commit is deferred to the group, which the second joins.
        first.commit().await?;
        second.await??;
        assert_eq!(names(&store).await?, vec!["after", "kept"]);
        let stats = store.write_stats();
        assert_eq!(stats.transactions - before.transactions, 2);
        assert!(
            stats.commits - before.commits <= 2,
            "the rollback must not have committed on its own: {stats:?}"
        );
        Ok::<_, Box<dyn std::error::Error>>(())
    })
    .await?
}

#[tokio::test]
async fn the_first_transaction_of_a_group_rolls_back_whole() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Store::open(&dir.path().join("t.db")).await?;
    let mut tx = store.begin().await?;
    tx.insert_group(&group("gone")).await?;
    tx.record(NewEvent::new("group.created", "group", "gone", "test"));
    drop(tx);
    assert!(names(&store).await?.is_empty());
    let mut tx = store.begin().await?;
    tx.insert_group(&group("here")).await?;
    tx.commit().await?;
    assert_eq!(names(&store).await?, vec!["here"]);
    let logged = store
        .list_events(&EventFilter {
            limit: 10,
            ..EventFilter::default()
        })
        .await?;
    assert!(
        logged.is_empty(),
        "the rolled-back event must not be stored"
    );
    Ok(())
}

/// A commit deferred to the next writer in the queue still completes when that writer is
/// cancelled before it gets its turn (a request dropped by its client): the cancelled
/// waiter hands the group to the flusher.
#[tokio::test]
async fn a_group_whose_next_writer_is_cancelled_still_commits() -> TestResult {
    tokio::time::timeout(Duration::from_secs(30), async {
        let dir = tempfile::tempdir()?;
        let store = Store::open(&dir.path().join("t.db")).await?;
        let mut first = store.begin().await?;
        first.insert_group(&group("deferred")).await?;
        // A second writer queues for the writer (polled once, then left waiting).
        let mut waiter = Box::pin(store.begin());
        assert!(
            tokio::time::timeout(Duration::ZERO, &mut waiter)
                .await
                .is_err(),
            "the writer is taken, so the second must wait"
        );
        // The committer sees it queued and defers its commit to it...
        let committer = tokio::spawn(async move { first.commit().await });
        tokio::task::yield_now().await;
        // ...but it is cancelled before its turn.
        drop(waiter);
        committer.await??;
        assert_eq!(names(&store).await?, vec!["deferred"]);
        Ok::<_, Box<dyn std::error::Error>>(())
    })
    .await?
}

/// Spawns `n` tasks that each create one group (`{prefix}{i}`) in its own transaction,
/// all ready at once, and waits for them; returns the commits they took.
async fn ready_together(
    store: &Store,
    prefix: &'static str,
    n: usize,
) -> Result<u64, Box<dyn std::error::Error>> {
    let before = store.write_stats();
    let mut tasks = Vec::new();
    for i in 0..n {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut tx = store.begin().await?;
            tx.insert_group(&group(&format!("{prefix}{i:03}"))).await?;
            tx.commit().await
        }));
    }
    for t in tasks {
        t.await??;
    }
    let after = store.write_stats();
    assert_eq!(after.transactions - before.transactions, n as u64);
    Ok(after.commits - before.commits)
}

/// On one thread (the server's default) a transaction reaches its commit before the
/// requests behind it have begun theirs. It yields once first: they run up to their
/// `begin`, queue, and all share its commit, instead of eight commits in a row.
#[tokio::test]
async fn on_one_thread_transactions_started_together_share_a_commit() -> TestResult {
    tokio::time::timeout(Duration::from_secs(30), async {
        let dir = tempfile::tempdir()?;
        let store = Store::open(&dir.path().join("t.db")).await?;
        let commits = ready_together(&store, "g", 8).await?;
        assert!(
            commits <= 2,
            "eight transactions ready together took {commits} commits"
        );
        assert_eq!(names(&store).await?.len(), 8);

        // A group stops growing at 64: 130 ready at once take at least two commits.
        let commits = ready_together(&store, "h", 130).await?;
        assert!(
            (2..=4).contains(&commits),
            "130 transactions took {commits} commits"
        );
        assert_eq!(names(&store).await?.len(), 138);
        Ok::<_, Box<dyn std::error::Error>>(())
    })
    .await?
}

/// A transaction whose request is cancelled during that one yield has already released
/// its work into the open group: the flusher commits it (as it does for a cancelled
/// member of a group), and the writer takes the next transaction.
#[tokio::test]
async fn a_transaction_cancelled_while_it_yields_before_committing_is_committed() -> TestResult {
    tokio::time::timeout(Duration::from_secs(30), async {
        let dir = tempfile::tempdir()?;
        let store = Store::open(&dir.path().join("t.db")).await?;
        let mut tx = store.begin().await?;
        tx.insert_group(&group("yielded")).await?;
        let mut commit = Box::pin(tx.commit());
        // Polled once: alone at its commit, it yields.
        let first = std::future::poll_fn(|cx| Poll::Ready(commit.as_mut().poll(cx))).await;
        assert!(
            first.is_pending(),
            "alone at its commit, it yields once first"
        );
        drop(commit);
        // Reads see only what is committed.
        while names(&store).await?.is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut next = store.begin().await?;
        next.insert_group(&group("next")).await?;
        next.commit().await?;
        let mut all = names(&store).await?;
        all.sort();
        assert_eq!(all, vec!["next", "yielded"]);
        Ok::<_, Box<dyn std::error::Error>>(())
    })
    .await?
}
