//! The `jobs` and `job_steps` tables.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, Row, params};
use testfarm_api::agent::Outcome;
use testfarm_api::job::{Job, JobState, StepRecord};
use testfarm_core::Role;

use crate::sql::{
    exec, get_json, get_ts, get_ts_opt, get_u64, int, query_all, query_opt, to_json, ts, ts_opt,
};
use crate::{Result, Store, StoreError, Tx};

macro_rules! job_columns {
    () => {
        "id, name, spec, vars, priority, state, submitter, submitter_role, resource_id, \
         resource_name, lease_id, attempt, reason, created_at, queued_at, assigned_at, \
         started_at, ended_at, last_report_at, log_bytes, log_chunks, cancel_requested, \
         avoid_resource"
    };
}

fn corrupt(detail: impl ToString) -> StoreError {
    StoreError::Corrupt {
        what: "job",
        detail: detail.to_string(),
    }
}

/// A job row: the wire view plus what only the server needs.
#[derive(Debug, Clone)]
pub struct JobRow {
    pub job: Job,
    pub submitter_role: Role,
    pub resource_id: Option<String>,
    pub last_report_at: Option<DateTime<Utc>>,
    pub log_chunks: u64,
    /// Set while a running job is being cancelled (the agent is told in its heartbeat).
    pub cancel_requested: Option<String>,
    /// The resource (id) its last attempt ended with a lab error on; a retry prefers
    /// another.
    pub avoid_resource: Option<String>,
}

fn from_row(row: &Row<'_>) -> Result<JobRow> {
    let state: String = row.get("state")?;
    let role: String = row.get("submitter_role")?;
    let priority: i64 = row.get("priority")?;
    let attempt: i64 = row.get("attempt")?;
    Ok(JobRow {
        job: Job {
            id: row.get("id")?,
            name: row.get("name")?,
            state: state.parse::<JobState>().map_err(corrupt)?,
            priority: u16::try_from(priority).map_err(corrupt)?,
            submitter: row.get("submitter")?,
            resource: row.get("resource_name")?,
            lease_id: row.get("lease_id")?,
            attempt: u32::try_from(attempt).map_err(corrupt)?,
            reason: row.get("reason")?,
            created_at: get_ts(row, "created_at")?,
            queued_at: get_ts(row, "queued_at")?,
            assigned_at: get_ts_opt(row, "assigned_at")?,
            started_at: get_ts_opt(row, "started_at")?,
            ended_at: get_ts_opt(row, "ended_at")?,
            log_bytes: get_u64(row, "job", "log_bytes")?,
            spec: get_json(row, "job spec", "spec")?,
            vars: get_json(row, "job vars", "vars")?,
            steps: Vec::new(),
            estimated_start: None,
        },
        submitter_role: role.parse::<Role>().map_err(corrupt)?,
        resource_id: row.get("resource_id")?,
        last_report_at: get_ts_opt(row, "last_report_at")?,
        log_chunks: get_u64(row, "job", "log_chunks")?,
        cancel_requested: row.get("cancel_requested")?,
        avoid_resource: row.get("avoid_resource")?,
    })
}

/// Filters for [`Store::list_jobs`].
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub states: Vec<JobState>,
    pub name: Option<String>,
    pub submitter: Option<String>,
    /// Only jobs with an id smaller than this (newest-first paging).
    pub before: Option<String>,
    pub limit: u32,
}

fn fetch(conn: &Connection, id: &str) -> Result<JobRow> {
    query_opt(
        conn,
        concat!("SELECT ", job_columns!(), " FROM jobs WHERE id = ?"),
        [id],
        from_row,
    )?
    .ok_or_else(|| StoreError::NotFound {
        what: "job",
        name: id.to_string(),
    })
}

fn states_json(states: &[JobState]) -> String {
    to_json(&states.iter().map(|s| s.as_str()).collect::<Vec<_>>())
}

impl Store {
    pub async fn get_job(&self, id: &str) -> Result<JobRow> {
        self.read(|c| {
            let mut row = fetch(c, id)?;
            row.job.steps = steps(c, id)?;
            crate::build_runs::attach(c, id, row.job.attempt, &mut row.job.steps)?;
            Ok(row)
        })
    }

    /// Jobs newest first.
    pub async fn list_jobs(&self, f: &JobFilter) -> Result<Vec<JobRow>> {
        self.read(|c| {
            query_all(
                c,
                concat!(
                    "SELECT ",
                    job_columns!(),
                    " FROM jobs WHERE (?1 = '[]' OR state IN (SELECT value FROM json_each(?1)))
                      AND (?2 IS NULL OR name = ?2) AND (?3 IS NULL OR submitter = ?3)
                      AND (?4 IS NULL OR id < ?4)
                      ORDER BY id DESC LIMIT ?5"
                ),
                params![
                    states_json(&f.states),
                    f.name,
                    f.submitter,
                    f.before,
                    i64::from(f.limit)
                ],
                from_row,
            )
        })
    }

    /// Assigned jobs on resources of `agent`, oldest first (what its work long-poll hands
    /// out), with each resource's name.
    pub async fn assigned_to_agent(&self, agent: &str) -> Result<Vec<(JobRow, String)>> {
        self.read(|c| {
            query_all(
                c,
                "SELECT j.id, j.name, j.spec, j.vars, j.priority, j.state, j.submitter, j.submitter_role,
                        j.resource_id, j.resource_name, j.lease_id, j.attempt, j.reason, j.created_at,
                        j.queued_at, j.assigned_at, j.started_at, j.ended_at, j.last_report_at,
                        j.log_bytes, j.log_chunks, j.cancel_requested, j.avoid_resource, r.name AS rname
                 FROM jobs j JOIN resources r ON r.id = j.resource_id
                 WHERE j.state = 'assigned' AND r.agent = ? ORDER BY j.id",
                [agent],
                |r| Ok((from_row(r)?, r.get("rname")?)),
            )
        })
    }

    /// Whether any job is in `state` (cheap: the state column is indexed).
    pub async fn any_job_in(&self, state: JobState) -> Result<bool> {
        self.read(|c| {
            Ok(
                c.prepare_cached("SELECT EXISTS (SELECT 1 FROM jobs WHERE state = ?)")?
                    .query_row([state.as_str()], |r| r.get(0))?,
            )
        })
    }

    /// Jobs in the given states, oldest first (what the scheduler and reaper read).
    pub async fn jobs_in(&self, states: &[JobState]) -> Result<Vec<JobRow>> {
        self.read(|c| {
            query_all(
                c,
                concat!(
                    "SELECT ",
                    job_columns!(),
                    " FROM jobs WHERE state IN (SELECT value FROM json_each(?)) ORDER BY id"
                ),
                [states_json(states)],
                from_row,
            )
        })
    }

    /// (name, resource kind, resource id, duration) of recently finished jobs, newest
    /// first, for estimates.
    pub async fn job_history(
        &self,
        limit: u32,
    ) -> Result<Vec<(String, Option<String>, Option<String>, i64)>> {
        self.read(|c| {
            query_all(
                c,
                "SELECT j.name, r.kind, j.resource_id,
                        CAST((julianday(j.ended_at) - julianday(j.started_at)) * 86400000 AS INTEGER) AS ms
                 FROM jobs j LEFT JOIN resources r ON r.id = j.resource_id
                 WHERE j.state = 'passed' OR j.state = 'failed'
                 ORDER BY j.ended_at DESC LIMIT ?",
                [i64::from(limit)],
                |r| {
                    Ok((
                        r.get("name")?,
                        r.get("kind")?,
                        r.get("resource_id")?,
                        r.get::<_, Option<i64>>("ms")?.unwrap_or(0),
                    ))
                },
            )
        })
    }
}

fn steps(conn: &Connection, id: &str) -> Result<Vec<StepRecord>> {
    query_all(
        conn,
        "SELECT idx, kind, always, outcome, exit_code, duration_ms, reason FROM job_steps WHERE job_id = ? ORDER BY idx",
        [id],
        |r| {
            let outcome: String = r.get("outcome")?;
            let idx: i64 = r.get("idx")?;
            let ms: i64 = r.get("duration_ms")?;
            Ok(StepRecord {
                index: u32::try_from(idx).map_err(corrupt)?,
                kind: r.get("kind")?,
                always: r.get("always")?,
                outcome: serde_json::from_value::<Outcome>(serde_json::Value::String(outcome))
                    .map_err(corrupt)?,
                exit_code: r.get("exit_code")?,
                duration_ms: u64::try_from(ms).unwrap_or(0),
                reason: r.get("reason")?,
                build: None,
            })
        },
    )
}

impl Tx {
    /// Jobs the lab failed on `resource_id` that were re-queued to run elsewhere
    /// (`avoid_resource`) since `since`, oldest first: (job id, when re-queued).
    pub async fn jobs_retried_away_from(
        &mut self,
        resource_id: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<(String, DateTime<Utc>)>> {
        query_all(
            self.conn(),
            "SELECT id, queued_at FROM jobs WHERE avoid_resource = ?1 AND attempt > 1 AND queued_at >= ?2 ORDER BY queued_at",
            params![resource_id, ts(since)],
            |r| Ok((r.get("id")?, get_ts(r, "queued_at")?)),
        )
    }

    pub async fn get_job(&mut self, id: &str) -> Result<JobRow> {
        fetch(self.conn(), id)
    }

    /// Just a job's state (cheaper than [`Tx::get_job`], which parses its spec).
    pub async fn job_state(&mut self, id: &str) -> Result<JobState> {
        let state: String = query_opt(
            self.conn(),
            "SELECT state FROM jobs WHERE id = ?",
            [id],
            |r| Ok(r.get(0)?),
        )?
        .ok_or_else(|| StoreError::NotFound {
            what: "job",
            name: id.to_string(),
        })?;
        state.parse::<JobState>().map_err(corrupt)
    }

    pub async fn insert_job(&mut self, j: &JobRow) -> Result<()> {
        let job = &j.job;
        exec(
            self.conn(),
            concat!(
                "INSERT INTO jobs (",
                job_columns!(),
                ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            ),
            params![
                job.id,
                job.name,
                to_json(&job.spec),
                to_json(&job.vars),
                i64::from(job.priority),
                job.state.as_str(),
                job.submitter,
                j.submitter_role.as_str(),
                j.resource_id,
                job.resource,
                job.lease_id,
                i64::from(job.attempt),
                job.reason,
                ts(job.created_at),
                ts(job.queued_at),
                ts_opt(job.assigned_at),
                ts_opt(job.started_at),
                ts_opt(job.ended_at),
                ts_opt(j.last_report_at),
                int(job.log_bytes),
                int(j.log_chunks),
                j.cancel_requested,
                j.avoid_resource,
            ],
        )?;
        Ok(())
    }

    /// Writes the job's mutable fields.
    pub async fn update_job(&mut self, j: &JobRow) -> Result<()> {
        let job = &j.job;
        exec(
            self.conn(),
            "UPDATE jobs SET state = ?, resource_id = ?, resource_name = ?, lease_id = ?, attempt = ?,
             reason = ?, queued_at = ?, assigned_at = ?, started_at = ?, ended_at = ?, last_report_at = ?,
             log_bytes = ?, log_chunks = ?, cancel_requested = ?, avoid_resource = ? WHERE id = ?",
            params![
                job.state.as_str(),
                j.resource_id,
                job.resource,
                job.lease_id,
                i64::from(job.attempt),
                job.reason,
                ts(job.queued_at),
                ts_opt(job.assigned_at),
                ts_opt(job.started_at),
                ts_opt(job.ended_at),
                ts_opt(j.last_report_at),
                int(job.log_bytes),
                int(j.log_chunks),
                j.cancel_requested,
                j.avoid_resource,
                job.id,
            ],
        )?;
        Ok(())
    }

    /// Records a step result; a repeated report of the same step replaces it.
    pub async fn upsert_step(&mut self, job_id: &str, s: &StepRecord) -> Result<()> {
        let outcome = serde_json::to_value(s.outcome)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        exec(
            self.conn(),
            "INSERT INTO job_steps (job_id, idx, kind, always, outcome, exit_code, duration_ms, reason)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (job_id, idx) DO UPDATE SET kind = excluded.kind, always = excluded.always,
               outcome = excluded.outcome, exit_code = excluded.exit_code,
               duration_ms = excluded.duration_ms, reason = excluded.reason",
            params![
                job_id,
                i64::from(s.index),
                s.kind,
                s.always,
                outcome,
                s.exit_code,
                int(s.duration_ms),
                s.reason,
            ],
        )?;
        Ok(())
    }

    /// Records a log chunk's place in the job's log file. Returns false when `seq` was
    /// already stored (a retry).
    pub async fn insert_log_chunk(
        &mut self,
        job_id: &str,
        seq: u64,
        offset: u64,
        len: u64,
    ) -> Result<bool> {
        let n = exec(
            self.conn(),
            "INSERT INTO log_chunks (job_id, seq, offset, len) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
            params![job_id, int(seq), int(offset), int(len)],
        )?;
        Ok(n == 1)
    }

    pub async fn insert_output(
        &mut self,
        job_id: &str,
        name: &str,
        size: u64,
        sha256: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        exec(
            self.conn(),
            "INSERT INTO job_outputs (job_id, name, size, sha256, created_at) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (job_id, name) DO UPDATE SET size = excluded.size, sha256 = excluded.sha256",
            params![job_id, name, int(size), sha256, ts(now)],
        )?;
        Ok(())
    }
}
