//! The `pipelines` and `pipeline_stages` tables. A stage's job lives in `jobs` like any
//! other; the stage row is what ties it to its pipeline.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, Row, params};
use testfarm_api::pipeline::{
    Pipeline, PipelineHistory, PipelineState, Stage, StageHistory, StageState,
};
use testfarm_core::Role;
use testfarm_core::pipeline::PipelineSpec;

use crate::sql::{exec, get_json, get_ts, get_ts_opt, query_all, query_opt, to_json, ts, ts_opt};
use crate::{Result, Store, StoreError, Tx};

macro_rules! pipeline_columns {
    () => {
        "id, name, spec, vars, overrides, priority, state, submitter, submitter_role, \
         created_at, ended_at, failed_stage, reason, cancel_requested"
    };
}

fn corrupt(detail: impl ToString) -> StoreError {
    StoreError::Corrupt {
        what: "pipeline",
        detail: detail.to_string(),
    }
}

/// A pipeline row: the wire view plus what only the server needs.
#[derive(Debug, Clone)]
pub struct PipelineRow {
    pub pipeline: Pipeline,
    pub spec: PipelineSpec,
    /// The var names given with `--var` (they win over a stage's own vars).
    pub overrides: Vec<String>,
    /// The priority given at submit, for every stage's job.
    pub priority: Option<u16>,
    pub submitter_role: Role,
    /// Set by a cancel; the pipeline ends once its active stages have.
    pub cancel_requested: Option<String>,
}

fn from_row(row: &Row<'_>) -> Result<PipelineRow> {
    let state: String = row.get("state")?;
    let role: String = row.get("submitter_role")?;
    let priority: Option<i64> = row.get("priority")?;
    Ok(PipelineRow {
        pipeline: Pipeline {
            id: row.get("id")?,
            name: row.get("name")?,
            state: state.parse::<PipelineState>().map_err(corrupt)?,
            submitter: row.get("submitter")?,
            created_at: get_ts(row, "created_at")?,
            ended_at: get_ts_opt(row, "ended_at")?,
            failed_stage: row.get("failed_stage")?,
            reason: row.get("reason")?,
            vars: get_json(row, "pipeline vars", "vars")?,
            stages: Vec::new(),
        },
        spec: get_json(row, "pipeline spec", "spec")?,
        overrides: get_json(row, "pipeline overrides", "overrides")?,
        priority: priority
            .map(|p| u16::try_from(p).map_err(corrupt))
            .transpose()?,
        submitter_role: role.parse::<Role>().map_err(corrupt)?,
        cancel_requested: row.get("cancel_requested")?,
    })
}

fn stage_from_row(row: &Row<'_>) -> Result<Stage> {
    let state: String = row.get("state")?;
    Ok(Stage {
        name: row.get("name")?,
        needs: get_json(row, "stage needs", "needs")?,
        state: state.parse::<StageState>().map_err(corrupt)?,
        job: row.get("job_id")?,
        started_at: get_ts_opt(row, "started_at")?,
        ended_at: get_ts_opt(row, "ended_at")?,
        reason: row.get("reason")?,
    })
}

fn stages(conn: &Connection, id: &str) -> Result<Vec<Stage>> {
    query_all(
        conn,
        "SELECT name, needs, state, job_id, started_at, ended_at, reason
         FROM pipeline_stages WHERE pipeline_id = ? ORDER BY position",
        [id],
        stage_from_row,
    )
}

fn fetch(conn: &Connection, id: &str) -> Result<PipelineRow> {
    let mut row = query_opt(
        conn,
        concat!(
            "SELECT ",
            pipeline_columns!(),
            " FROM pipelines WHERE id = ?"
        ),
        [id],
        from_row,
    )?
    .ok_or_else(|| StoreError::NotFound {
        what: "pipeline",
        name: id.to_string(),
    })?;
    row.pipeline.stages = stages(conn, id)?;
    Ok(row)
}

/// Filters for [`Store::list_pipelines`].
#[derive(Debug, Clone, Default)]
pub struct PipelineFilter {
    pub name: Option<String>,
    pub state: Option<PipelineState>,
    /// Only pipelines with an id smaller than this (newest-first paging).
    pub before: Option<String>,
    pub limit: u32,
}

impl Store {
    pub async fn get_pipeline(&self, id: &str) -> Result<PipelineRow> {
        self.read(|c| fetch(c, id))
    }

    /// Newest first, with their stages.
    pub async fn list_pipelines(&self, f: &PipelineFilter) -> Result<Vec<Pipeline>> {
        self.read(|c| {
            let mut rows = query_all(
                c,
                concat!(
                    "SELECT ",
                    pipeline_columns!(),
                    " FROM pipelines
                     WHERE (?1 IS NULL OR name = ?1) AND (?2 IS NULL OR state = ?2)
                       AND (?3 IS NULL OR id < ?3)
                     ORDER BY id DESC LIMIT ?4"
                ),
                params![
                    f.name,
                    f.state.map(|s| s.as_str()),
                    f.before,
                    i64::from(f.limit)
                ],
                from_row,
            )?;
            for r in &mut rows {
                r.pipeline.stages = stages(c, &r.pipeline.id)?;
            }
            Ok(rows.into_iter().map(|r| r.pipeline).collect())
        })
    }

    /// Ids of the pipelines still running (for the sweep after a restart).
    pub async fn running_pipelines(&self) -> Result<Vec<String>> {
        self.read(|c| {
            query_all(
                c,
                "SELECT id FROM pipelines WHERE state = 'running' ORDER BY id",
                [],
                |r| Ok(r.get(0)?),
            )
        })
    }

    /// The pipeline a job is a stage of, if any.
    pub async fn pipeline_of_job(&self, job_id: &str) -> Result<Option<String>> {
        self.read(|c| {
            query_opt(
                c,
                "SELECT pipeline_id FROM pipeline_stages WHERE job_id = ?",
                [job_id],
                |r| Ok(r.get(0)?),
            )
        })
    }

    /// Runs, outcomes and stage durations of every ended pipeline called `name`.
    pub async fn pipeline_history(&self, name: &str) -> Result<PipelineHistory> {
        self.read(|c| {
            let mut h = PipelineHistory {
                name: name.to_string(),
                runs: 0,
                passed: 0,
                failed: 0,
                error: 0,
                cancelled: 0,
                success_rate: 0.0,
                stages: Vec::new(),
            };
            let counts = query_all(
                c,
                "SELECT state, count(*) FROM pipelines WHERE name = ? AND state != 'running'
                 GROUP BY state",
                [name],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)),
            )?;
            for (state, n) in counts {
                let n = u64::try_from(n).unwrap_or(0);
                h.runs += n;
                match state.parse::<PipelineState>().map_err(corrupt)? {
                    PipelineState::Passed => h.passed += n,
                    PipelineState::Failed => h.failed += n,
                    PipelineState::Error => h.error += n,
                    PipelineState::Cancelled => h.cancelled += n,
                    PipelineState::Running => {}
                }
            }
            h.success_rate = rate(h.passed, h.runs);
            // Stage order: as the newest run lists them.
            let rows = query_all(
                c,
                "SELECT s.name, s.state, s.started_at, s.ended_at, s.position
                 FROM pipeline_stages s JOIN pipelines p ON p.id = s.pipeline_id
                 WHERE p.name = ? AND s.ended_at IS NOT NULL AND s.started_at IS NOT NULL
                 ORDER BY p.id DESC",
                [name],
                |r| {
                    let state: String = r.get(1)?;
                    Ok((
                        r.get::<_, String>(0)?,
                        state.parse::<StageState>().map_err(corrupt)?,
                        get_ts(r, "started_at")?,
                        get_ts(r, "ended_at")?,
                        r.get::<_, i64>(4)?,
                    ))
                },
            )?;
            let mut by_stage: BTreeMap<String, (i64, u64, u64, u64)> = BTreeMap::new();
            for (stage, state, start, end, position) in rows {
                let e = by_stage.entry(stage).or_insert((position, 0, 0, 0));
                e.1 += 1;
                if state == StageState::Passed {
                    e.2 += 1;
                }
                e.3 += u64::try_from((end - start).num_milliseconds()).unwrap_or(0);
            }
            let mut stages: Vec<(i64, StageHistory)> = by_stage
                .into_iter()
                .map(|(name, (position, runs, passed, total_ms))| {
                    (
                        position,
                        StageHistory {
                            name,
                            runs,
                            passed,
                            success_rate: rate(passed, runs),
                            avg_duration_ms: total_ms.checked_div(runs).unwrap_or(0),
                        },
                    )
                })
                .collect();
            stages.sort_by_key(|(p, s)| (*p, s.name.clone()));
            h.stages = stages.into_iter().map(|(_, s)| s).collect();
            Ok(h)
        })
    }
}

fn rate(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

impl Tx {
    pub async fn get_pipeline(&mut self, id: &str) -> Result<PipelineRow> {
        fetch(self.conn(), id)
    }

    /// A new pipeline and its stages (as given in `row.pipeline.stages`).
    pub async fn insert_pipeline(&mut self, row: &PipelineRow) -> Result<()> {
        let p = &row.pipeline;
        exec(
            self.conn(),
            concat!(
                "INSERT INTO pipelines (",
                pipeline_columns!(),
                ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            ),
            params![
                p.id,
                p.name,
                to_json(&row.spec),
                p.vars.to_string(),
                to_json(&row.overrides),
                row.priority.map(i64::from),
                p.state.as_str(),
                p.submitter,
                row.submitter_role.as_str(),
                ts(p.created_at),
                ts_opt(p.ended_at),
                p.failed_stage,
                p.reason,
                row.cancel_requested,
            ],
        )?;
        for (position, s) in p.stages.iter().enumerate() {
            exec(
                self.conn(),
                "INSERT INTO pipeline_stages (pipeline_id, position, name, needs, state, job_id,
                 started_at, ended_at, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                params![
                    p.id,
                    i64::try_from(position).unwrap_or(i64::MAX),
                    s.name,
                    to_json(&s.needs),
                    s.state.as_str(),
                    s.job,
                    ts_opt(s.started_at),
                    ts_opt(s.ended_at),
                    s.reason,
                ],
            )?;
        }
        Ok(())
    }

    /// Writes the pipeline's own fields (state, end, reason, cancel).
    pub async fn update_pipeline(&mut self, row: &PipelineRow) -> Result<()> {
        let p = &row.pipeline;
        exec(
            self.conn(),
            "UPDATE pipelines SET state = ?, ended_at = ?, failed_stage = ?, reason = ?,
             cancel_requested = ? WHERE id = ?",
            params![
                p.state.as_str(),
                ts_opt(p.ended_at),
                p.failed_stage,
                p.reason,
                row.cancel_requested,
                p.id
            ],
        )?;
        Ok(())
    }

    pub async fn update_stage(&mut self, pipeline_id: &str, s: &Stage) -> Result<()> {
        exec(
            self.conn(),
            "UPDATE pipeline_stages SET state = ?, job_id = ?, started_at = ?, ended_at = ?,
             reason = ? WHERE pipeline_id = ? AND name = ?",
            params![
                s.state.as_str(),
                s.job,
                ts_opt(s.started_at),
                ts_opt(s.ended_at),
                s.reason,
                pipeline_id,
                s.name
            ],
        )?;
        Ok(())
    }
}

/// When a stage ended, for durations: `ended_at - started_at`.
pub fn stage_duration(s: &Stage) -> Option<chrono::Duration> {
    let (a, b): (DateTime<Utc>, DateTime<Utc>) = (s.started_at?, s.ended_at?);
    Some(b - a)
}
