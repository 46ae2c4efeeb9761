//! The `agents` and `resource_metrics` tables.

use chrono::{DateTime, Utc};
use rusqlite::params;
use testfarm_api::agent::ResourceMetrics;
use ulid::Ulid;

use crate::sql::{exec, get_json, get_ts, get_ulid, query_all, to_json, ts};
use crate::{Result, Store, Tx};

/// How many heartbeats of history are kept per resource.
pub const METRIC_HISTORY: i64 = 60;

impl Store {
    /// The newest reported metrics of every resource.
    pub async fn latest_metrics(&self) -> Result<Vec<(Ulid, DateTime<Utc>, ResourceMetrics)>> {
        self.read(|c| {
            query_all(
                c,
                "SELECT m.resource_id, m.at, m.metrics FROM resource_metrics m
                 JOIN (SELECT resource_id, MAX(at) AS at FROM resource_metrics GROUP BY resource_id) l
                 ON l.resource_id = m.resource_id AND l.at = m.at",
                [],
                |r| {
                    Ok((
                        get_ulid(r, "resource metrics", "resource_id")?,
                        get_ts(r, "at")?,
                        get_json(r, "resource metrics", "metrics")?,
                    ))
                },
            )
        })
    }

    /// A resource's recent metrics, newest first.
    pub async fn metric_history(
        &self,
        resource: Ulid,
    ) -> Result<Vec<(DateTime<Utc>, ResourceMetrics)>> {
        self.read(|c| {
            query_all(
                c,
                "SELECT at, metrics FROM resource_metrics WHERE resource_id = ? ORDER BY at DESC",
                [resource.to_string()],
                |r| {
                    Ok((
                        get_ts(r, "at")?,
                        get_json(r, "resource metrics", "metrics")?,
                    ))
                },
            )
        })
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
        exec(
            self.conn(),
            "INSERT INTO agents (name, hostname, version, registered_at, last_seen) VALUES (?1, ?2, ?3, ?4, ?4)
             ON CONFLICT (name) DO UPDATE SET hostname = excluded.hostname, version = excluded.version,
               registered_at = excluded.registered_at, last_seen = excluded.last_seen",
            params![name, hostname, version, ts(now)],
        )?;
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
        exec(
            self.conn(),
            "INSERT OR REPLACE INTO resource_metrics (resource_id, at, metrics) VALUES (?, ?, ?)",
            params![id, ts(at), to_json(m)],
        )?;
        exec(
            self.conn(),
            "DELETE FROM resource_metrics WHERE resource_id = ?1 AND at NOT IN
             (SELECT at FROM resource_metrics WHERE resource_id = ?1 ORDER BY at DESC LIMIT ?2)",
            params![id, METRIC_HISTORY],
        )?;
        Ok(())
    }
}
