//! The board tables: a board's status round-trips whole, actions are handed to their
//! agent once (pending → sent) and found overdue, history pages newest first by kind.

use chrono::{Duration, Utc};
use testfarm_api::board::{
    BoardAction, BoardActionKind, BoardActionResult, BoardActionState, BoardHistoryEntry,
    BoardHistoryKind, QuarantineSettings,
};
use testfarm_core::resource::{Resource, ResourceKind};
use testfarm_store::Store;
use testfarm_store::boards::{BoardActionRow, BoardStatus};
use ulid::Ulid;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn action(id: &str, board: &Resource, agent: &str, at: chrono::DateTime<Utc>) -> BoardActionRow {
    BoardActionRow {
        action: BoardAction {
            id: id.into(),
            board: board.name.clone(),
            action: BoardActionKind::PowerCycle,
            requested_by: "olga".into(),
            reason: None,
            lease_id: None,
            session: None,
        },
        resource_id: board.id,
        agent: agent.into(),
        state: BoardActionState::Pending,
        created_at: at,
        sent_at: None,
        finished_at: None,
        result: None,
    }
}

#[tokio::test]
async fn status_actions_and_history_round_trip() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Store::open(&dir.path().join("t.db")).await?;
    let now = Utc::now();
    let mut board = Resource::new(Ulid::new(), "b-1".into(), ResourceKind::Board, now);
    board.agent = Some("ag".into());
    let mut tx = store.begin().await?;
    tx.insert_resource(&board).await?;
    assert_eq!(tx.board_status(board.id).await?, BoardStatus::default());
    let status = BoardStatus {
        quarantine: Some(QuarantineSettings {
            health_failures: 2,
            lab_errors: 3,
            window_ms: 1000,
        }),
        verification: vec!["power: on".into()],
        driven: true,
        ..BoardStatus::default()
    };
    tx.put_board_status(board.id, &status, now).await?;
    tx.insert_board_action(&action("01A", &board, "ag", now - Duration::seconds(120)))
        .await?;
    tx.insert_board_action(&action("01B", &board, "ag", now))
        .await?;
    tx.insert_board_action(&action("01C", &board, "other", now))
        .await?;
    for (i, kind) in [
        BoardHistoryKind::Power,
        BoardHistoryKind::Health,
        BoardHistoryKind::Power,
    ]
    .into_iter()
    .enumerate()
    {
        tx.insert_board_history(
            board.id,
            &BoardHistoryEntry {
                at: now,
                kind,
                action: format!("a{i}"),
                actor: "olga".into(),
                ok: true,
                job_id: None,
                build_id: None,
                detail: String::new(),
            },
        )
        .await?;
    }
    tx.commit().await?;
    assert_eq!(store.board_status(board.id).await?, status);

    assert!(store.has_pending_board_actions("ag").await?);
    let mut tx = store.begin().await?;
    let taken = tx.take_board_actions("ag", now).await?;
    assert_eq!(
        taken.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
        ["01A", "01B"]
    );
    assert!(
        tx.take_board_actions("ag", now).await?.is_empty(),
        "handed over once"
    );
    // Sent a minute ago or earlier: overdue. 01C was never taken and is new: not yet.
    let overdue = tx
        .overdue_board_actions(now + Duration::seconds(1), now - Duration::seconds(60))
        .await?;
    assert_eq!(overdue.len(), 2);
    let result = BoardActionResult {
        ok: false,
        power: None,
        detail: "no answer".into(),
        operator_action_needed: false,
    };
    tx.finish_board_action("01A", BoardActionState::Failed, &result, now)
        .await?;
    tx.commit().await?;
    let a = store.get_board_action("01A").await?;
    assert!(a.is_finished());
    assert_eq!(a.result, Some(result));
    assert_eq!(a.view().state, BoardActionState::Failed);

    let power = store
        .board_history(board.id, Some(BoardHistoryKind::Power), None, 10)
        .await?;
    assert_eq!(
        power
            .iter()
            .map(|(_, e)| e.action.as_str())
            .collect::<Vec<_>>(),
        ["a2", "a0"],
        "newest first, only power"
    );
    let page = store
        .board_history(board.id, None, Some(power[0].0), 1)
        .await?;
    assert_eq!(page[0].1.action, "a1");
    Ok(())
}
