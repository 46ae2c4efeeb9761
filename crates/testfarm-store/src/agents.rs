//! The `agents` and `resource_metrics` tables.

use chrono::{DateTime, Utc};
use sqlx::Row;
use testfarm_api::agent::ResourceMetrics;
use ulid::Ulid;

use crate::{Result, Store, Tx, from_json, to_json};

/// How many heartbeats of history are kept per resource.
pub const METRIC_HISTORY: i64 = 60;

impl Store {
    /// The newest reported metrics of every resource.
    pub async fn latest_metrics(&self) -> Result<Vec<(Ulid, DateTime<Utc>, ResourceMetrics)>> {
        let rows = sqlx::query(
            "SELECT m.resource_id, m.at, m.metrics FROM resource_metrics m
             JOIN (SELECT resource_id, MAX(at) AS at FROM resource_metrics GROUP BY resource_id) l
             ON l.resource_id = m.resource_id AND l.at = m.at",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .filter_map(|r| {
                let id: String = r.try_get("resource_id").ok()?;
                Some((id, r))
            })
            .map(|(id, r)| {
                Ok((
                    Ulid::from_string(&id).unwrap_or_default(),
                    r.try_get("at")?,
                    from_json("resource metrics", r.try_get("metrics")?)?,
                ))
            })
            .collect()
    }

    /// A resource's recent metrics, newest first.
    pub async fn metric_history(
        &self,
        resource: Ulid,
    ) -> Result<Vec<(DateTime<Utc>, ResourceMetrics)>> {
        let rows = sqlx::query(
            "SELECT at, metrics FROM resource_metrics WHERE resource_id = ? ORDER BY at DESC",
        )
        .bind(resource.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("at")?,
                    from_json("resource metrics", r.try_get("metrics")?)?,
                ))
            })
            .collect()
    }
}

impl Tx {
    pub async fn upsert_agent(
        &mut self,
        name: &str,
        hostname: &str,
        version: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO agents (name, hostname, version, registered_at, last_seen) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (name) DO UPDATE SET hostname = excluded.hostname, version = excluded.version,
               registered_at = excluded.registered_at, last_seen = excluded.last_seen",
        )
        .bind(name)
        .bind(hostname)
        .bind(version)
        .bind(now)
        .bind(now)
        .execute(self.conn())
        .await?;
        Ok(())
    }

    /// Stores a heartbeat's metrics for a resource and trims its history.
    pub async fn record_metrics(
        &mut self,
        resource: Ulid,
        at: DateTime<Utc>,
        m: &ResourceMetrics,
    ) -> Result<()> {
        let id = resource.to_string();
        sqlx::query(
            "INSERT OR REPLACE INTO resource_metrics (resource_id, at, metrics) VALUES (?, ?, ?)",
        )
        .bind(&id)
        .bind(at)
        .bind(to_json(m))
        .execute(self.conn())
        .await?;
        sqlx::query(
            "DELETE FROM resource_metrics WHERE resource_id = ? AND at NOT IN
             (SELECT at FROM resource_metrics WHERE resource_id = ? ORDER BY at DESC LIMIT ?)",
        )
        .bind(&id)
        .bind(&id)
        .bind(METRIC_HISTORY)
        .execute(self.conn())
        .await?;
        Ok(())
    }
}
