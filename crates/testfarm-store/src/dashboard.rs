//! Reads for the web dashboard: aggregates computed in SQL (GROUP BY, one row per kind or
//! state) so the overview and resources pages cost a few index scans however many jobs
//! and resources the store holds.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rusqlite::params;

use crate::sql::{get_ts, get_ts_opt, get_u64, query_all, query_opt, ts};
use crate::{Result, Store};

/// The overview's figures.
#[derive(Debug, Clone, Default)]
pub struct Overview {
    /// (kind, state, count).
    pub resources: Vec<(String, String, u64)>,
    pub queued: u64,
    pub oldest_queued: Option<DateTime<Utc>>,
    pub active_leases: u64,
    pub utilization: Vec<KindUtilization>,
    /// (state, count) of jobs queued since the cut-off.
    pub jobs_recent: Vec<(String, u64)>,
    /// (state, count) of pipelines created since the cut-off.
    pub pipelines_recent: Vec<(String, u64)>,
}

/// How busy one kind of resource is.
#[derive(Debug, Clone, Default)]
pub struct KindUtilization {
    pub kind: String,
    pub total: u64,
    /// Resources with at least one active lease.
    pub busy: u64,
    /// Averages over the resources' newest heartbeat, when any reported.
    pub cpu_pct: Option<f64>,
    pub memory_pct: Option<f64>,
    pub disk_pct: Option<f64>,
}

/// What holds a resource right now.
#[derive(Debug, Clone, Default)]
pub struct Activity {
    /// (lease id, holder type, holder) of its active leases.
    pub leases: Vec<(String, String, String)>,
    /// (job id, job name) of jobs assigned to or running on it.
    pub jobs: Vec<(String, String)>,
}

/// One job that ran (or runs) on a resource.
#[derive(Debug, Clone)]
pub struct ResourceJob {
    pub id: String,
    pub name: String,
    pub state: String,
    pub queued_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i64>,
}

fn count(c: &rusqlite::Connection, sql: &str, args: impl rusqlite::Params) -> Result<u64> {
    Ok(query_opt(c, sql, args, |r| get_u64(r, "count", "n"))?.unwrap_or(0))
}

fn by_state(c: &rusqlite::Connection, sql: &str, since: &str) -> Result<Vec<(String, u64)>> {
    query_all(c, sql, [since], |r| {
        Ok((r.get("state")?, get_u64(r, "count", "n")?))
    })
}

impl Store {
    /// The overview's figures; `since` bounds the recent jobs and pipelines.
    pub async fn dashboard_overview(&self, since: DateTime<Utc>) -> Result<Overview> {
        let since = ts(since);
        self.read(|c| {
            let resources = query_all(
                c,
                "SELECT kind, state, COUNT(*) AS n FROM resources GROUP BY kind, state ORDER BY kind, state",
                [],
                |r| Ok((r.get("kind")?, r.get("state")?, get_u64(r, "count", "n")?)),
            )?;
            let (queued, oldest_queued) = query_opt(
                c,
                "SELECT COUNT(*) AS n, MIN(queued_at) AS oldest FROM jobs WHERE state = 'queued'",
                [],
                |r| Ok((get_u64(r, "count", "n")?, get_ts_opt(r, "oldest")?)),
            )?
            .unwrap_or_default();
            let active_leases = count(
                c,
                "SELECT COUNT(*) AS n FROM leases WHERE state = 'active'",
                [],
            )?;
            let utilization = query_all(
                c,
                "SELECT r.kind, COUNT(*) AS n,
                        SUM(EXISTS (SELECT 1 FROM leases l WHERE l.resource_id = r.id AND l.state = 'active')) AS busy,
                        AVG(json_extract(m.metrics, '$.cpu_pct')) AS cpu,
                        AVG(json_extract(m.metrics, '$.memory_pct')) AS mem,
                        AVG(json_extract(m.metrics, '$.disk_pct')) AS disk
                 FROM resources r
                 LEFT JOIN (SELECT resource_id, MAX(at) AS at FROM resource_metrics GROUP BY resource_id) l
                   ON l.resource_id = r.id
                 LEFT JOIN resource_metrics m ON m.resource_id = l.resource_id AND m.at = l.at
                 GROUP BY r.kind ORDER BY r.kind",
                [],
                |r| {
                    Ok(KindUtilization {
                        kind: r.get("kind")?,
                        total: get_u64(r, "count", "n")?,
                        busy: get_u64(r, "count", "busy")?,
                        cpu_pct: r.get("cpu")?,
                        memory_pct: r.get("mem")?,
                        disk_pct: r.get("disk")?,
                    })
                },
            )?;
            let jobs_recent = by_state(
                c,
                "SELECT state, COUNT(*) AS n FROM jobs WHERE queued_at >= ? GROUP BY state ORDER BY state",
                &since,
            )?;
            let pipelines_recent = by_state(
                c,
                "SELECT state, COUNT(*) AS n FROM pipelines WHERE created_at >= ? GROUP BY state ORDER BY state",
                &since,
            )?;
            Ok(Overview {
                resources,
                queued,
                oldest_queued,
                active_leases,
                utilization,
                jobs_recent,
                pipelines_recent,
            })
        })
    }

    /// Active leases and assigned or running jobs, by resource id (two indexed scans).
    pub async fn resource_activity(&self) -> Result<HashMap<String, Activity>> {
        self.read(|c| {
            let mut out: HashMap<String, Activity> = HashMap::new();
            let leases = query_all(
                c,
                "SELECT resource_id, id, holder_type, holder FROM leases WHERE state = 'active' ORDER BY id",
                [],
                |r| {
                    Ok((
                        r.get::<_, String>("resource_id")?,
                        (r.get("id")?, r.get("holder_type")?, r.get("holder")?),
                    ))
                },
            )?;
            for (rid, l) in leases {
                out.entry(rid).or_default().leases.push(l);
            }
            let jobs = query_all(
                c,
                "SELECT resource_id, id, name FROM jobs
                 WHERE state IN ('assigned', 'running') AND resource_id IS NOT NULL ORDER BY id",
                [],
                |r| {
                    Ok((
                        r.get::<_, String>("resource_id")?,
                        (r.get("id")?, r.get("name")?),
                    ))
                },
            )?;
            for (rid, j) in jobs {
                out.entry(rid).or_default().jobs.push(j);
            }
            Ok(out)
        })
    }

    /// The newest jobs that were placed on a resource.
    pub async fn jobs_on_resource(
        &self,
        resource_id: &str,
        limit: u32,
    ) -> Result<Vec<ResourceJob>> {
        self.read(|c| {
            query_all(
                c,
                "SELECT id, name, state, queued_at, ended_at,
                        CAST(ROUND((julianday(ended_at) - julianday(started_at)) * 86400000) AS INTEGER) AS ms
                 FROM jobs WHERE resource_id = ? ORDER BY id DESC LIMIT ?",
                params![resource_id, i64::from(limit)],
                |r| {
                    Ok(ResourceJob {
                        id: r.get("id")?,
                        name: r.get("name")?,
                        state: r.get("state")?,
                        queued_at: get_ts(r, "queued_at")?,
                        ended_at: get_ts_opt(r, "ended_at")?,
                        duration_ms: r.get("ms")?,
                    })
                },
            )
        })
    }

    /// (builds, average duration in ms) of a build server's finished builds.
    pub async fn build_average(&self, server: &str) -> Result<(u64, Option<f64>)> {
        self.read(|c| {
            Ok(query_opt(
                c,
                "SELECT COUNT(*) AS n, AVG(duration_ms) AS avg FROM build_runs WHERE server = ?",
                [server],
                |r| Ok((get_u64(r, "count", "n")?, r.get("avg")?)),
            )?
            .unwrap_or_default())
        })
    }
}

/// A resource's maintenance window, current or ahead, with the capacity it removes.
#[derive(Debug, Clone)]
pub struct Window {
    pub name: String,
    pub kind: String,
    pub window: testfarm_core::resource::MaintenanceWindow,
    pub capabilities: testfarm_core::resource::Capabilities,
}

impl Store {
    /// Every resource with a maintenance window set (the partial scan of one column).
    pub async fn maintenance_windows(&self) -> Result<Vec<Window>> {
        self.read(|c| {
            query_all(
                c,
                "SELECT name, kind, maintenance, capabilities FROM resources
                 WHERE maintenance IS NOT NULL ORDER BY name",
                [],
                |r| {
                    Ok(Window {
                        name: r.get("name")?,
                        kind: r.get("kind")?,
                        window: crate::sql::get_json(r, "resource", "maintenance")?,
                        capabilities: crate::sql::get_json(r, "resource", "capabilities")?,
                    })
                },
            )
        })
    }
}
