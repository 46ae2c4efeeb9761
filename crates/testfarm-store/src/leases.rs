//! The `leases` table, and the per-resource fencing epoch kept in `resources.last_epoch`.

use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};
use testfarm_core::lease::{EndReason, Holder, Lease, LeaseState, Share};
use ulid::Ulid;

use crate::{Result, Store, StoreError, Tx, from_json, to_json};

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

fn from_row(row: &SqliteRow) -> Result<Lease> {
    let id: String = row.try_get("id")?;
    let resource_id: String = row.try_get("resource_id")?;
    let holder_type: String = row.try_get("holder_type")?;
    let holder: String = row.try_get("holder")?;
    let state: String = row.try_get("state")?;
    let end_reason: Option<String> = row.try_get("end_reason")?;
    let epoch: i64 = row.try_get("epoch")?;
    let ttl: i64 = row.try_get("heartbeat_ttl_ms")?;
    Ok(Lease {
        id: Ulid::from_string(&id).map_err(corrupt)?,
        resource_id: Ulid::from_string(&resource_id).map_err(corrupt)?,
        holder: from_json::<Holder>(
            "lease holder",
            &serde_json::json!({ "holder_type": holder_type, "holder": holder }).to_string(),
        )?,
        share: from_json::<Share>("lease share", row.try_get("share")?)?,
        epoch: u64::try_from(epoch).map_err(corrupt)?,
        state: state.parse::<LeaseState>().map_err(corrupt)?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        heartbeat_at: row.try_get("heartbeat_at")?,
        heartbeat_ttl_ms: u64::try_from(ttl).map_err(corrupt)?,
        ended_at: row.try_get("ended_at")?,
        end_reason: end_reason
            .map(|r| from_json::<EndReason>("lease end reason", &r))
            .transpose()?,
    })
}

fn holder_parts(h: &Holder) -> (String, String) {
    let v = serde_json::to_value(h).unwrap_or_default();
    (
        v["holder_type"].as_str().unwrap_or("person").to_string(),
        v["holder"].as_str().unwrap_or_default().to_string(),
    )
}

async fn fetch(conn: &mut SqliteConnection, id: &str) -> Result<Lease> {
    let row = sqlx::query(concat!(
        "SELECT ",
        lease_columns!(),
        " FROM leases WHERE id = ?"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?
    .ok_or_else(|| StoreError::NotFound {
        what: "lease",
        name: id.to_string(),
    })?;
    from_row(&row)
}

impl Store {
    pub async fn get_lease(&self, id: &str) -> Result<Lease> {
        let mut conn = self.pool.acquire().await?;
        fetch(&mut conn, id).await
    }

    /// Leases in `state` (all states when `None`), newest first, at most `limit`.
    pub async fn list_leases(&self, state: Option<LeaseState>, limit: u32) -> Result<Vec<Lease>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            lease_columns!(),
            " FROM leases WHERE (? IS NULL OR state = ?) ORDER BY id DESC LIMIT ?"
        ))
        .bind(state.map(|s| s.as_str()))
        .bind(state.map(|s| s.as_str()))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(from_row).collect()
    }

    pub async fn active_leases(&self) -> Result<Vec<Lease>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            lease_columns!(),
            " FROM leases WHERE state = 'active'"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(from_row).collect()
    }

    /// When each resource was last released, for least-recently-used placement.
    pub async fn last_lease_ends(&self) -> Result<Vec<(Ulid, DateTime<Utc>)>> {
        let rows = sqlx::query(
            "SELECT resource_id, MAX(ended_at) AS last FROM leases WHERE ended_at IS NOT NULL GROUP BY resource_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let id: String = r.try_get("resource_id")?;
                Ok((Ulid::from_string(&id).map_err(corrupt)?, r.try_get("last")?))
            })
            .collect()
    }
}

impl Tx {
    pub async fn get_lease(&mut self, id: &str) -> Result<Lease> {
        fetch(self.conn(), id).await
    }

    /// Active leases on a resource: the workloads that block retirement.
    pub async fn active_lease_count(&mut self, resource: Ulid) -> Result<u32> {
        let row =
            sqlx::query("SELECT COUNT(*) FROM leases WHERE resource_id = ? AND state = 'active'")
                .bind(resource.to_string())
                .fetch_one(self.conn())
                .await?;
        let n: i64 = row.try_get(0)?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    pub async fn active_leases_on(&mut self, resource: Ulid) -> Result<Vec<Lease>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            lease_columns!(),
            " FROM leases WHERE resource_id = ? AND state = 'active'"
        ))
        .bind(resource.to_string())
        .fetch_all(self.conn())
        .await?;
        rows.iter().map(from_row).collect()
    }

    /// The fencing epoch of the newest lease ever granted on the resource.
    pub async fn last_epoch(&mut self, resource: Ulid) -> Result<u64> {
        let row = sqlx::query("SELECT last_epoch FROM resources WHERE id = ?")
            .bind(resource.to_string())
            .fetch_optional(self.conn())
            .await?
            .ok_or_else(|| StoreError::NotFound {
                what: "resource",
                name: resource.to_string(),
            })?;
        let e: i64 = row.try_get(0)?;
        Ok(u64::try_from(e).unwrap_or(0))
    }

    /// Inserts a new lease and advances the resource's epoch to it, in this transaction.
    pub async fn insert_lease(&mut self, l: &Lease) -> Result<()> {
        let (holder_type, holder) = holder_parts(&l.holder);
        let epoch = i64::try_from(l.epoch).map_err(corrupt)?;
        sqlx::query(concat!(
            "INSERT INTO leases (",
            lease_columns!(),
            ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ))
        .bind(l.id.to_string())
        .bind(l.resource_id.to_string())
        .bind(holder_type)
        .bind(holder)
        .bind(epoch)
        .bind(l.state.as_str())
        .bind(to_json(&l.share))
        .bind(l.created_at)
        .bind(l.expires_at)
        .bind(l.heartbeat_at)
        .bind(i64::try_from(l.heartbeat_ttl_ms).unwrap_or(i64::MAX))
        .bind(l.ended_at)
        .bind(l.end_reason.as_ref().map(to_json))
        .execute(self.conn())
        .await?;
        sqlx::query("UPDATE resources SET last_epoch = MAX(last_epoch, ?) WHERE id = ?")
            .bind(epoch)
            .bind(l.resource_id.to_string())
            .execute(self.conn())
            .await?;
        Ok(())
    }

    /// Writes a lease's mutable fields (state, times, end reason).
    pub async fn update_lease(&mut self, l: &Lease) -> Result<()> {
        sqlx::query(
            "UPDATE leases SET state = ?, expires_at = ?, heartbeat_at = ?, ended_at = ?, end_reason = ? WHERE id = ?",
        )
        .bind(l.state.as_str())
        .bind(l.expires_at)
        .bind(l.heartbeat_at)
        .bind(l.ended_at)
        .bind(l.end_reason.as_ref().map(to_json))
        .bind(l.id.to_string())
        .execute(self.conn())
        .await?;
        Ok(())
    }
}
