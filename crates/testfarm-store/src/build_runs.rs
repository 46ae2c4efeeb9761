//! The `build_runs` table: one row per build step of each attempt of a job, written
//! when the agent reports the step, read for a job's steps and for build servers'
//! history.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, Row, params};
use testfarm_api::agent::Outcome;
use testfarm_api::build::{BuildRun, BuildSummary, BuiltArtifact};
use testfarm_api::job::StepRecord;
use testfarm_core::build::BuildFact;

use crate::sql::{exec, get_json, get_ts, int, query_all, to_json, ts};
use crate::{Result, Store, StoreError, Tx};

/// Filters of [`Store::list_build_runs`]; all given must match.
#[derive(Debug, Clone, Default)]
pub struct BuildRunFilter {
    pub server: Option<String>,
    pub job: Option<String>,
    pub limit: u32,
}

fn corrupt(detail: impl ToString) -> StoreError {
    StoreError::Corrupt {
        what: "build run",
        detail: detail.to_string(),
    }
}

fn outcome_text(o: Outcome) -> String {
    serde_json::to_value(o)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn run_from_row(r: &Row<'_>) -> Result<BuildRun> {
    let outcome: String = r.get("outcome")?;
    let step: i64 = r.get("step_idx")?;
    let ms: i64 = r.get("duration_ms")?;
    let mem: Option<i64> = r.get("peak_memory_bytes")?;
    let artifacts: Vec<BuiltArtifact> = get_json(r, "build run", "artifacts")?;
    Ok(BuildRun {
        job_id: r.get("job_id")?,
        step: u32::try_from(step).map_err(corrupt)?,
        outcome: serde_json::from_value(serde_json::Value::String(outcome)).map_err(corrupt)?,
        ended_at: get_ts(r, "ended_at")?,
        summary: BuildSummary {
            build_id: r.get("build_id")?,
            source: r.get("source")?,
            git_ref: r.get("git_ref")?,
            commit: r.get("commit_id")?,
            branch: r.get("branch")?,
            arch: r.get("arch")?,
            config: r.get("config")?,
            toolchain: r.get("toolchain")?,
            server: r.get("server")?,
            duration_ms: u64::try_from(ms).unwrap_or(0),
            peak_cpu_pct: r.get("peak_cpu_pct")?,
            peak_memory_bytes: mem.and_then(|m| u64::try_from(m).ok()),
            artifacts,
        },
    })
}

const COLUMNS: &str = "job_id, attempt, step_idx, server, outcome, duration_ms, peak_cpu_pct, \
    peak_memory_bytes, source, git_ref, commit_id, branch, arch, config, toolchain, build_id, \
    artifacts, ended_at";

/// Puts each build step's summary of `attempt` on its step record.
pub(crate) fn attach(
    conn: &Connection,
    job_id: &str,
    attempt: u32,
    steps: &mut [StepRecord],
) -> Result<()> {
    if !steps.iter().any(|s| s.kind == "build") {
        return Ok(());
    }
    let runs = query_all(
        conn,
        &format!("SELECT {COLUMNS} FROM build_runs WHERE job_id = ? AND attempt = ?"),
        params![job_id, i64::from(attempt)],
        run_from_row,
    )?;
    for run in runs {
        if let Some(s) = steps.iter_mut().find(|s| s.index == run.step) {
            s.build = Some(run.summary);
        }
    }
    Ok(())
}

impl Store {
    /// Build runs, newest first.
    pub async fn list_build_runs(&self, f: &BuildRunFilter) -> Result<Vec<BuildRun>> {
        self.read(|c| {
            query_all(
                c,
                &format!(
                    "SELECT {COLUMNS} FROM build_runs
                     WHERE (?1 IS NULL OR server = ?1) AND (?2 IS NULL OR job_id = ?2)
                     ORDER BY ended_at DESC, job_id DESC LIMIT ?3"
                ),
                params![f.server, f.job, i64::from(f.limit)],
                run_from_row,
            )
        })
    }

    /// Every finished build (cancelled ones do not count), for history, oldest first.
    pub async fn build_facts(&self, server: Option<&str>) -> Result<Vec<BuildFact>> {
        self.read(|c| {
            query_all(
                c,
                "SELECT server, outcome, duration_ms FROM build_runs
                 WHERE (?1 IS NULL OR server = ?1) AND outcome NOT IN ('cancelled', 'skipped')
                 ORDER BY ended_at",
                params![server],
                |r| {
                    let outcome: String = r.get("outcome")?;
                    let ms: i64 = r.get("duration_ms")?;
                    Ok(BuildFact {
                        server: r.get("server")?,
                        passed: outcome == "passed",
                        duration: std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0)),
                    })
                },
            )
        })
    }
}

impl Tx {
    /// Records (or, for a re-sent report, replaces) a build step's run.
    pub async fn upsert_build_run(
        &mut self,
        job_id: &str,
        attempt: u32,
        step: u32,
        outcome: Outcome,
        s: &BuildSummary,
        ended_at: DateTime<Utc>,
    ) -> Result<()> {
        exec(
            self.conn(),
            &format!(
                "INSERT OR REPLACE INTO build_runs ({COLUMNS})
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            ),
            params![
                job_id,
                i64::from(attempt),
                i64::from(step),
                s.server,
                outcome_text(outcome),
                int(s.duration_ms),
                s.peak_cpu_pct.filter(|c| c.is_finite()),
                s.peak_memory_bytes.map(int),
                s.source,
                s.git_ref,
                s.commit,
                s.branch,
                s.arch,
                s.config,
                s.toolchain,
                s.build_id,
                to_json(&s.artifacts),
                ts(ended_at),
            ],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_round_trip_and_make_history() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| corrupt(e.to_string()))?;
        let store = Store::open(&dir.path().join("db.sqlite")).await?;
        let summary = |server: &str, ms| BuildSummary {
            source: "/src/hello".into(),
            commit: Some("abc".into()),
            branch: Some("main".into()),
            server: server.into(),
            duration_ms: ms,
            peak_cpu_pct: Some(150.0),
            peak_memory_bytes: Some(1 << 20),
            artifacts: vec![BuiltArtifact {
                name: "hello".into(),
                kind: testfarm_api::build::ArtifactKind::Other,
                size: 10,
                sha256: "00".repeat(32),
            }],
            ..BuildSummary::default()
        };
        let mut tx = store.begin().await?;
        tx.upsert_build_run(
            "j1",
            1,
            0,
            Outcome::Passed,
            &summary("b1", 1000),
            Utc::now(),
        )
        .await?;
        tx.upsert_build_run(
            "j2",
            1,
            0,
            Outcome::Failed,
            &summary("b1", 3000),
            Utc::now(),
        )
        .await?;
        tx.upsert_build_run(
            "j3",
            1,
            0,
            Outcome::Cancelled,
            &summary("b2", 5),
            Utc::now(),
        )
        .await?;
        tx.commit().await?;
        let runs = store
            .list_build_runs(&BuildRunFilter {
                server: Some("b1".into()),
                limit: 10,
                ..Default::default()
            })
            .await?;
        assert_eq!(runs.len(), 2);
        assert_eq!(
            runs.iter()
                .find(|r| r.job_id == "j1")
                .map(|r| r.summary.clone()),
            Some(summary("b1", 1000))
        );
        let h = testfarm_core::build::history(&store.build_facts(None).await?);
        assert_eq!(h.len(), 1, "cancelled builds are not history");
        assert_eq!(h[0].count, 2);
        assert!((h[0].success_rate - 0.5).abs() < 1e-9);
        assert!((h[0].average_duration_s - 2.0).abs() < 1e-9);
        Ok(())
    }
}
