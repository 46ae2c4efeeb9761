//! The `leases` table, and what each resource row keeps about its leases: the fencing
//! epoch of the newest one (`resources.last_epoch`) and when the last one ended
//! (`resources.last_lease_end`, for least-recently-used placement).

use chrono::{DateTime, Utc};
use rusqlite::{Connection, Row, params};
use testfarm_core::lease::{EndReason, Holder, Lease, LeaseState, Share};
use testfarm_core::resource::{ResourceState, after_lease_end};
use ulid::Ulid;

use crate::sql::{
    get_json, get_json_opt, get_ts, get_ts_opt, get_u64, get_ulid, int, query_all, query_opt,
    to_json, ts, ts_opt,
};
use crate::{Result, Store, StoreError, Tx};

macro_rules! lease_columns {
    () => {
        "id, resource_id, holder_type, holder, epoch, state, share, created_at, expires_at, \
         heartbeat_at, heartbeat_ttl_ms, ended_at, end_reason"
    };
}

fn corrupt(detail: impl ToString) -> StoreError {
    StoreError::Corrupt {
        what: "lease",
        detail: detail.to_string(),
    }
}

fn from_row(row: &Row<'_>) -> Result<Lease> {
    let holder_type: String = row.get("holder_type")?;
    let holder: String = row.get("holder")?;
    let state: String = row.get("state")?;
    Ok(Lease {
        id: get_ulid(row, "lease", "id")?,
        resource_id: get_ulid(row, "lease", "resource_id")?,
        holder: Holder::from_parts(&holder_type, &holder).map_err(corrupt)?,
        share: get_json::<Share>(row, "lease share", "share")?,
        epoch: get_u64(row, "lease", "epoch")?,
        state: state.parse::<LeaseState>().map_err(corrupt)?,
        created_at: get_ts(row, "created_at")?,
        expires_at: get_ts(row, "expires_at")?,
        heartbeat_at: get_ts(row, "heartbeat_at")?,
        heartbeat_ttl_ms: get_u64(row, "lease", "heartbeat_ttl_ms")?,
        ended_at: get_ts_opt(row, "ended_at")?,
        end_reason: get_json_opt::<EndReason>(row, "lease end reason", "end_reason")?,
    })
}

fn fetch(conn: &Connection, id: &str) -> Result<Lease> {
    query_opt(
        conn,
        concat!("SELECT ", lease_columns!(), " FROM leases WHERE id = ?"),
        [id],
        from_row,
    )?
    .ok_or_else(|| StoreError::NotFound {
        what: "lease",
        name: id.to_string(),
    })
}

impl Store {
    pub async fn get_lease(&self, id: &str) -> Result<Lease> {
        self.read(|c| fetch(c, id))
    }

    /// Leases in `state` (all states when `None`), newest first, at most `limit`.
    pub async fn list_leases(&self, state: Option<LeaseState>, limit: u32) -> Result<Vec<Lease>> {
        self.read(|c| {
            query_all(
                c,
                concat!(
                    "SELECT ",
                    lease_columns!(),
                    " FROM leases WHERE (?1 IS NULL OR state = ?1) ORDER BY id DESC LIMIT ?2"
                ),
                params![state.map(|s| s.as_str()), i64::from(limit)],
                from_row,
            )
        })
    }

    pub async fn active_leases(&self) -> Result<Vec<Lease>> {
        self.read(|c| {
            query_all(
                c,
                concat!(
                    "SELECT ",
                    lease_columns!(),
                    " FROM leases WHERE state = 'active'"
                ),
                [],
                from_row,
            )
        })
    }

    /// When each resource was last released, for least-recently-used placement.
    pub async fn last_lease_ends(&self) -> Result<Vec<(Ulid, DateTime<Utc>)>> {
        self.read(|c| {
            query_all(
                c,
                "SELECT id, last_lease_end FROM resources WHERE last_lease_end IS NOT NULL",
                [],
                |r| Ok((get_ulid(r, "resource", "id")?, get_ts(r, "last_lease_end")?)),
            )
        })
    }
}

impl Tx {
    /// Deletes up to `limit` leases that ended before `before` (never an active one),
    /// oldest first; returns how many went. Lease ids are ULIDs, which start with their
    /// creation time, and a lease ends after it starts: only ids below `before`'s are
    /// looked at, so a pass costs the old rows, not the whole table.
    pub async fn prune_ended_leases(
        &mut self,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<usize> {
        let ms = u64::try_from(before.timestamp_millis()).unwrap_or(0);
        let below = Ulid::from_parts(ms, 0).to_string();
        let n = self
            .conn()
            .prepare_cached(
                "DELETE FROM leases WHERE id IN (
                     SELECT id FROM leases
                     WHERE id < ?3 AND state != 'active' AND julianday(ended_at) < julianday(?1)
                     ORDER BY id LIMIT ?2)",
            )?
            .execute(params![
                ts(before),
                i64::try_from(limit).unwrap_or(i64::MAX),
                below
            ])?;
        Ok(n)
    }

    pub async fn get_lease(&mut self, id: &str) -> Result<Lease> {
        fetch(self.conn(), id)
    }

    /// Active leases on a resource: the workloads that block retirement.
    pub async fn active_lease_count(&mut self, resource: Ulid) -> Result<u32> {
        let n: i64 = self
            .conn()
            .prepare_cached(
                "SELECT COUNT(*) FROM leases WHERE resource_id = ? AND state = 'active'",
            )?
            .query_row([resource.to_string()], |r| r.get(0))?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    pub async fn active_leases_on(&mut self, resource: Ulid) -> Result<Vec<Lease>> {
        query_all(
            self.conn(),
            concat!(
                "SELECT ",
                lease_columns!(),
                " FROM leases WHERE resource_id = ? AND state = 'active'"
            ),
            [resource.to_string()],
            from_row,
        )
    }

    /// Whether an active lease on `resource` stands in the way of a new one taking
    /// `share`: any lease blocks a whole one; only a whole lease blocks a slice. (One
    /// indexed probe; a QEMU host can carry dozens of slice leases.)
    pub async fn share_blocked(&mut self, resource: Ulid, share: Share) -> Result<bool> {
        Ok(self
            .conn()
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM leases WHERE resource_id = ?1 AND state = 'active'
                   AND (?2 OR json_extract(share, '$.share') = 'whole'))",
            )?
            .query_row(params![resource.to_string(), share == Share::Whole], |r| {
                r.get(0)
            })?)
    }

    /// The fencing epoch of the newest lease ever granted on the resource.
    pub async fn last_epoch(&mut self, resource: Ulid) -> Result<u64> {
        let e: i64 = query_opt(
            self.conn(),
            "SELECT last_epoch FROM resources WHERE id = ?",
            [resource.to_string()],
            |r| Ok(r.get(0)?),
        )?
        .ok_or_else(|| StoreError::NotFound {
            what: "resource",
            name: resource.to_string(),
        })?;
        Ok(u64::try_from(e).unwrap_or(0))
    }

    /// Inserts a new lease and advances the resource's epoch to it, in this transaction;
    /// with `resource_state`, the same statement moves the resource to that state (a
    /// whole lease taking a board: one write of its row instead of two).
    pub async fn insert_lease(
        &mut self,
        l: &Lease,
        resource_state: Option<ResourceState>,
    ) -> Result<()> {
        let (holder_type, holder) = (l.holder.holder_type(), l.holder.value());
        let epoch = i64::try_from(l.epoch).map_err(corrupt)?;
        let resource_id = l.resource_id.to_string();
        let conn = self.conn();
        conn.prepare_cached(concat!(
            "INSERT INTO leases (",
            lease_columns!(),
            ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ))?
        .execute(params![
            l.id.to_string(),
            resource_id,
            holder_type,
            holder,
            epoch,
            l.state.as_str(),
            to_json(&l.share),
            ts(l.created_at),
            ts(l.expires_at),
            ts(l.heartbeat_at),
            int(l.heartbeat_ttl_ms),
            ts_opt(l.ended_at),
            l.end_reason.as_ref().map(to_json),
        ])?;
        match resource_state {
            None => conn
                .prepare_cached("UPDATE resources SET last_epoch = MAX(last_epoch, ?) WHERE id = ?")?
                .execute(params![epoch, resource_id])?,
            Some(state) => conn
                .prepare_cached(
                    "UPDATE resources SET last_epoch = MAX(last_epoch, ?), state = ?, updated_at = ? WHERE id = ?",
                )?
                .execute(params![epoch, state.as_str(), ts(l.created_at), resource_id])?,
        };
        Ok(())
    }

    /// Writes the mutable fields of a lease that is still active (renewed, credited after
    /// a restart). A lease that ended goes through [`Tx::write_ended_lease`], which also
    /// puts its resource back; one passed here is refused rather than half-written.
    pub async fn update_lease(&mut self, l: &Lease) -> Result<()> {
        if l.ended_at.is_some() {
            return Err(corrupt(format!(
                "lease {} has ended; it is written with its resource by write_ended_lease",
                l.id
            )));
        }
        write_lease_row(self.conn(), l)
    }

    /// Writes a lease that has ended and puts its resource where
    /// `core::resource::after_lease_end` says (back in the pool after its last lease),
    /// moving its `last_lease_end` forward; returns the resource as it now stands.
    /// Three statements (the lease, one read and one write of the resource row), as
    /// releasing is half of every lease round trip.
    pub async fn write_ended_lease(&mut self, l: &Lease, now: DateTime<Utc>) -> Result<AfterLease> {
        let Some(ended) = l.ended_at else {
            return Err(corrupt(format!(
                "lease {} is written as ended but has no end time",
                l.id
            )));
        };
        let conn = self.conn();
        write_lease_row(conn, l)?;
        let id = l.resource_id.to_string();
        let (name, state, active, agent_board) = query_opt(
            conn,
            "SELECT name, state,
                 (SELECT COUNT(*) FROM leases WHERE resource_id = ?1 AND state = 'active'),
                 EXISTS (SELECT 1 FROM board_status WHERE resource_id = ?1
                         AND json_extract(status, '$.driven'))
             FROM resources WHERE id = ?1",
            [&id],
            |r| {
                let state: String = r.get(1)?;
                let state: ResourceState = state.parse().map_err(|e| StoreError::Corrupt {
                    what: "resource",
                    detail: format!("state: {e}"),
                })?;
                let active: i64 = r.get(2)?;
                Ok((
                    r.get::<_, String>(0)?,
                    state,
                    u32::try_from(active).unwrap_or(u32::MAX),
                    r.get::<_, bool>(3)?,
                ))
            },
        )?
        .ok_or_else(|| StoreError::NotFound {
            what: "resource",
            name: id.clone(),
        })?;
        let next = after_lease_end(state, active);
        if next == state {
            conn.prepare_cached(
                "UPDATE resources SET last_lease_end = MAX(COALESCE(last_lease_end, ''), ?1) WHERE id = ?2",
            )?
            .execute(params![ts(ended), id])?;
        } else {
            conn.prepare_cached(
                "UPDATE resources SET last_lease_end = MAX(COALESCE(last_lease_end, ''), ?1),
                     state = ?2, updated_at = ?3 WHERE id = ?4",
            )?
            .execute(params![ts(ended), next.as_str(), ts(now), id])?;
        }
        Ok(AfterLease {
            name,
            state: next,
            agent_board,
        })
    }
}

/// A resource as a lease ending on it leaves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AfterLease {
    pub name: String,
    /// Its state now: back in the pool, or as it was.
    pub state: ResourceState,
    /// A board its agent drives (`BoardStatus::driven`): every lease end on it is
    /// cleaned up by its agent (`release`).
    pub agent_board: bool,
}

/// The mutable fields of a lease's row.
fn write_lease_row(conn: &Connection, l: &Lease) -> Result<()> {
    conn.prepare_cached(
        "UPDATE leases SET state = ?, expires_at = ?, heartbeat_at = ?, ended_at = ?, end_reason = ? WHERE id = ?",
    )?
    .execute(params![
        l.state.as_str(),
        ts(l.expires_at),
        ts(l.heartbeat_at),
        ts_opt(l.ended_at),
        l.end_reason.as_ref().map(to_json),
        l.id.to_string(),
    ])?;
    Ok(())
}
