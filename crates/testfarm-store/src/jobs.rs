//! The `jobs` and `job_steps` tables.

use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};
use testfarm_api::agent::Outcome;
use testfarm_api::job::{Job, JobState, StepRecord};
use testfarm_core::Role;

use crate::{Result, Store, StoreError, Tx, from_json, to_json};

macro_rules! job_columns {
    () => {
        "id, name, spec, vars, priority, state, submitter, submitter_role, resource_id, \
         resource_name, lease_id, attempt, reason, created_at, queued_at, assigned_at, \
         started_at, ended_at, last_report_at, log_bytes, log_chunks, cancel_requested"
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
}

fn from_row(row: &SqliteRow) -> Result<JobRow> {
    let state: String = row.try_get("state")?;
    let role: String = row.try_get("submitter_role")?;
    let priority: i64 = row.try_get("priority")?;
    let attempt: i64 = row.try_get("attempt")?;
    let log_bytes: i64 = row.try_get("log_bytes")?;
    let log_chunks: i64 = row.try_get("log_chunks")?;
    Ok(JobRow {
        job: Job {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            state: state.parse::<JobState>().map_err(corrupt)?,
            priority: u16::try_from(priority).map_err(corrupt)?,
            submitter: row.try_get("submitter")?,
            resource: row.try_get("resource_name")?,
            lease_id: row.try_get("lease_id")?,
            attempt: u32::try_from(attempt).map_err(corrupt)?,
            reason: row.try_get("reason")?,
            created_at: row.try_get("created_at")?,
            queued_at: row.try_get("queued_at")?,
            assigned_at: row.try_get("assigned_at")?,
            started_at: row.try_get("started_at")?,
            ended_at: row.try_get("ended_at")?,
            log_bytes: u64::try_from(log_bytes).map_err(corrupt)?,
            spec: from_json("job spec", row.try_get("spec")?)?,
            vars: from_json("job vars", row.try_get("vars")?)?,
            steps: Vec::new(),
        },
        submitter_role: role.parse::<Role>().map_err(corrupt)?,
        resource_id: row.try_get("resource_id")?,
        last_report_at: row.try_get("last_report_at")?,
        log_chunks: u64::try_from(log_chunks).map_err(corrupt)?,
        cancel_requested: row.try_get("cancel_requested")?,
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

async fn fetch(conn: &mut SqliteConnection, id: &str) -> Result<JobRow> {
    let row = sqlx::query(concat!(
        "SELECT ",
        job_columns!(),
        " FROM jobs WHERE id = ?"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?
    .ok_or_else(|| StoreError::NotFound {
        what: "job",
        name: id.to_string(),
    })?;
    from_row(&row)
}

impl Store {
    pub async fn get_job(&self, id: &str) -> Result<JobRow> {
        let mut conn = self.pool.acquire().await?;
        let mut row = fetch(&mut conn, id).await?;
        row.job.steps = steps(&mut conn, id).await?;
        Ok(row)
    }

    /// Jobs newest first.
    pub async fn list_jobs(&self, f: &JobFilter) -> Result<Vec<JobRow>> {
        let states =
            serde_json::to_string(&f.states.iter().map(|s| s.as_str()).collect::<Vec<_>>())
                .unwrap_or_else(|_| "[]".into());
        let rows = sqlx::query(concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobs WHERE (? = '[]' OR state IN (SELECT value FROM json_each(?)))
              AND (? IS NULL OR name = ?) AND (? IS NULL OR submitter = ?) AND (? IS NULL OR id < ?)
              ORDER BY id DESC LIMIT ?"
        ))
        .bind(&states)
        .bind(&states)
        .bind(&f.name)
        .bind(&f.name)
        .bind(&f.submitter)
        .bind(&f.submitter)
        .bind(&f.before)
        .bind(&f.before)
        .bind(i64::from(f.limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(from_row).collect()
    }

    /// Assigned jobs on resources of `agent`, oldest first (what its work long-poll hands
    /// out), with each resource's name.
    pub async fn assigned_to_agent(&self, agent: &str) -> Result<Vec<(JobRow, String)>> {
        let rows = sqlx::query(
            "SELECT j.id, j.name, j.spec, j.vars, j.priority, j.state, j.submitter, j.submitter_role,
                    j.resource_id, j.resource_name, j.lease_id, j.attempt, j.reason, j.created_at,
                    j.queued_at, j.assigned_at, j.started_at, j.ended_at, j.last_report_at,
                    j.log_bytes, j.log_chunks, j.cancel_requested, r.name AS rname
             FROM jobs j JOIN resources r ON r.id = j.resource_id
             WHERE j.state = 'assigned' AND r.agent = ? ORDER BY j.id",
        )
        .bind(agent)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((from_row(r)?, r.try_get("rname")?)))
            .collect()
    }

    /// Whether any job is in `state` (cheap: the state column is indexed).
    pub async fn any_job_in(&self, state: JobState) -> Result<bool> {
        let row = sqlx::query("SELECT EXISTS (SELECT 1 FROM jobs WHERE state = ?)")
            .bind(state.as_str())
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<bool, _>(0)?)
    }

    /// Jobs in the given states, oldest first (what the scheduler and reaper read).
    pub async fn jobs_in(&self, states: &[JobState]) -> Result<Vec<JobRow>> {
        let states = serde_json::to_string(&states.iter().map(|s| s.as_str()).collect::<Vec<_>>())
            .unwrap_or_else(|_| "[]".into());
        let rows = sqlx::query(concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobs WHERE state IN (SELECT value FROM json_each(?)) ORDER BY id"
        ))
        .bind(states)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(from_row).collect()
    }

    /// (name, resource kind, resource id, duration) of recently finished jobs, newest
    /// first, for estimates.
    pub async fn job_history(
        &self,
        limit: u32,
    ) -> Result<Vec<(String, Option<String>, Option<String>, i64)>> {
        let rows = sqlx::query(
            "SELECT j.name, r.kind, j.resource_id,
                    CAST((julianday(j.ended_at) - julianday(j.started_at)) * 86400000 AS INTEGER) AS ms
             FROM jobs j LEFT JOIN resources r ON r.id = j.resource_id
             WHERE j.state = 'passed' OR j.state = 'failed'
             ORDER BY j.ended_at DESC LIMIT ?",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("name")?,
                    r.try_get("kind")?,
                    r.try_get("resource_id")?,
                    r.try_get::<Option<i64>, _>("ms")?.unwrap_or(0),
                ))
            })
            .collect()
    }
}

async fn steps(conn: &mut SqliteConnection, id: &str) -> Result<Vec<StepRecord>> {
    let rows = sqlx::query(
        "SELECT idx, kind, always, outcome, exit_code, duration_ms, reason FROM job_steps WHERE job_id = ? ORDER BY idx",
    )
    .bind(id)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            let outcome: String = r.try_get("outcome")?;
            let idx: i64 = r.try_get("idx")?;
            let ms: i64 = r.try_get("duration_ms")?;
            Ok(StepRecord {
                index: u32::try_from(idx).map_err(corrupt)?,
                kind: r.try_get("kind")?,
                always: r.try_get("always")?,
                outcome: from_json::<Outcome>("step outcome", &format!("\"{outcome}\""))?,
                exit_code: r.try_get("exit_code")?,
                duration_ms: u64::try_from(ms).unwrap_or(0),
                reason: r.try_get("reason")?,
            })
        })
        .collect()
}

impl Tx {
    pub async fn get_job(&mut self, id: &str) -> Result<JobRow> {
        fetch(self.conn(), id).await
    }

    pub async fn insert_job(&mut self, j: &JobRow) -> Result<()> {
        let job = &j.job;
        sqlx::query(concat!(
            "INSERT INTO jobs (",
            job_columns!(),
            ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ))
        .bind(&job.id)
        .bind(&job.name)
        .bind(to_json(&job.spec))
        .bind(to_json(&job.vars))
        .bind(i64::from(job.priority))
        .bind(job.state.as_str())
        .bind(&job.submitter)
        .bind(j.submitter_role.as_str())
        .bind(&j.resource_id)
        .bind(&job.resource)
        .bind(&job.lease_id)
        .bind(i64::from(job.attempt))
        .bind(&job.reason)
        .bind(job.created_at)
        .bind(job.queued_at)
        .bind(job.assigned_at)
        .bind(job.started_at)
        .bind(job.ended_at)
        .bind(j.last_report_at)
        .bind(i64::try_from(job.log_bytes).unwrap_or(i64::MAX))
        .bind(i64::try_from(j.log_chunks).unwrap_or(i64::MAX))
        .bind(&j.cancel_requested)
        .execute(self.conn())
        .await?;
        Ok(())
    }

    /// Writes the job's mutable fields.
    pub async fn update_job(&mut self, j: &JobRow) -> Result<()> {
        let job = &j.job;
        sqlx::query(
            "UPDATE jobs SET state = ?, resource_id = ?, resource_name = ?, lease_id = ?, attempt = ?,
             reason = ?, queued_at = ?, assigned_at = ?, started_at = ?, ended_at = ?, last_report_at = ?,
             log_bytes = ?, log_chunks = ?, cancel_requested = ? WHERE id = ?",
        )
        .bind(job.state.as_str())
        .bind(&j.resource_id)
        .bind(&job.resource)
        .bind(&job.lease_id)
        .bind(i64::from(job.attempt))
        .bind(&job.reason)
        .bind(job.queued_at)
        .bind(job.assigned_at)
        .bind(job.started_at)
        .bind(job.ended_at)
        .bind(j.last_report_at)
        .bind(i64::try_from(job.log_bytes).unwrap_or(i64::MAX))
        .bind(i64::try_from(j.log_chunks).unwrap_or(i64::MAX))
        .bind(&j.cancel_requested)
        .bind(&job.id)
        .execute(self.conn())
        .await?;
        Ok(())
    }

    /// Records a step result; a repeated report of the same step replaces it.
    pub async fn upsert_step(&mut self, job_id: &str, s: &StepRecord) -> Result<()> {
        let outcome = serde_json::to_value(s.outcome)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        sqlx::query(
            "INSERT INTO job_steps (job_id, idx, kind, always, outcome, exit_code, duration_ms, reason)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (job_id, idx) DO UPDATE SET kind = excluded.kind, always = excluded.always,
               outcome = excluded.outcome, exit_code = excluded.exit_code,
               duration_ms = excluded.duration_ms, reason = excluded.reason",
        )
        .bind(job_id)
        .bind(i64::from(s.index))
        .bind(&s.kind)
        .bind(s.always)
        .bind(outcome)
        .bind(s.exit_code)
        .bind(i64::try_from(s.duration_ms).unwrap_or(i64::MAX))
        .bind(&s.reason)
        .execute(self.conn())
        .await?;
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
        let done = sqlx::query(
            "INSERT INTO log_chunks (job_id, seq, offset, len) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(job_id)
        .bind(i64::try_from(seq).unwrap_or(i64::MAX))
        .bind(i64::try_from(offset).unwrap_or(i64::MAX))
        .bind(i64::try_from(len).unwrap_or(i64::MAX))
        .execute(self.conn())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn insert_output(
        &mut self,
        job_id: &str,
        name: &str,
        size: u64,
        sha256: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO job_outputs (job_id, name, size, sha256, created_at) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (job_id, name) DO UPDATE SET size = excluded.size, sha256 = excluded.sha256",
        )
        .bind(job_id)
        .bind(name)
        .bind(i64::try_from(size).unwrap_or(i64::MAX))
        .bind(sha256)
        .bind(now)
        .execute(self.conn())
        .await?;
        Ok(())
    }
}
