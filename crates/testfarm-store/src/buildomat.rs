//! The `buildomat_instances` table: the buildomat factory's instances (one worker on one
//! board), so they survive a testfarm restart and the factory loop picks them up again.
//!
//! The state is a word, not an enum of ours: the state machine belongs to the factory
//! (`testfarm-buildomat`), which maps it; the store only keeps the row and refuses to move
//! a destroyed instance anywhere (a destroyed instance has ended its lease for good).

use chrono::{DateTime, Utc};
use rusqlite::{Row, params};

use crate::sql::{exec, get_ts, get_ts_opt, query_all, ts};
use crate::{Result, Store, Tx};

/// One instance row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildomatInstanceRow {
    pub id: String,
    pub state: String,
    pub bmat_job: String,
    pub bmat_worker: String,
    pub target: String,
    pub board: String,
    pub job_id: Option<String>,
    pub lease_id: Option<String>,
    pub hold: bool,
    pub destroy_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_progress: DateTime<Utc>,
    pub destroyed_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "id, state, bmat_job, bmat_worker, target, board, job_id, lease_id, hold, \
                       destroy_reason, created_at, last_progress, destroyed_at";

fn from_row(r: &Row<'_>) -> Result<BuildomatInstanceRow> {
    Ok(BuildomatInstanceRow {
        id: r.get("id")?,
        state: r.get("state")?,
        bmat_job: r.get("bmat_job")?,
        bmat_worker: r.get("bmat_worker")?,
        target: r.get("target")?,
        board: r.get("board")?,
        job_id: r.get("job_id")?,
        lease_id: r.get("lease_id")?,
        hold: r.get("hold")?,
        destroy_reason: r.get("destroy_reason")?,
        created_at: get_ts(r, "created_at")?,
        last_progress: get_ts(r, "last_progress")?,
        destroyed_at: get_ts_opt(r, "destroyed_at")?,
    })
}

impl Store {
    /// Instances, newest first; `live_only` leaves out destroyed ones.
    pub async fn buildomat_instances(&self, live_only: bool) -> Result<Vec<BuildomatInstanceRow>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM buildomat_instances
             WHERE (?1 = 0 OR state <> 'destroyed') ORDER BY created_at DESC, id DESC"
        );
        self.read(|c| query_all(c, &sql, params![live_only], from_row))
    }
}

impl Tx {
    /// Records a new instance (its state as given, normally `created`).
    pub async fn insert_buildomat_instance(&mut self, i: &BuildomatInstanceRow) -> Result<()> {
        exec(
            self.conn(),
            &format!(
                "INSERT INTO buildomat_instances ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
            ),
            params![
                i.id,
                i.state,
                i.bmat_job,
                i.bmat_worker,
                i.target,
                i.board,
                i.job_id,
                i.lease_id,
                i.hold,
                i.destroy_reason,
                ts(i.created_at),
                ts(i.last_progress),
                i.destroyed_at.map(ts),
            ],
        )?;
        Ok(())
    }

    /// Writes the changeable fields of an instance back. A destroyed row is never changed
    /// again; returns whether the row was written.
    pub async fn update_buildomat_instance(&mut self, i: &BuildomatInstanceRow) -> Result<bool> {
        let n = exec(
            self.conn(),
            "UPDATE buildomat_instances SET state = ?2, job_id = ?3, lease_id = ?4, hold = ?5,
                 destroy_reason = ?6, last_progress = ?7, destroyed_at = ?8
             WHERE id = ?1 AND state <> 'destroyed'",
            params![
                i.id,
                i.state,
                i.job_id,
                i.lease_id,
                i.hold,
                i.destroy_reason,
                ts(i.last_progress),
                i.destroyed_at.map(ts),
            ],
        )?;
        Ok(n == 1)
    }
}
