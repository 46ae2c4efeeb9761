//! The `leases` table.

use sqlx::Row;
use ulid::Ulid;

use crate::{Result, Tx};

impl Tx {
    /// Active leases on a resource: the workloads that block retirement.
    pub async fn active_lease_count(&mut self, resource: Ulid) -> Result<u32> {
        let row = sqlx::query("SELECT COUNT(*) FROM leases WHERE resource_id = ? AND state = 'active'")
            .bind(resource.to_string())
            .fetch_one(self.conn())
            .await?;
        let n: i64 = row.try_get(0)?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }
}
