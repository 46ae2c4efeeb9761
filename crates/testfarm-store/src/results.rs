//! The `job_results` table: a finished job's test report, JSON and JUnit.

use chrono::{DateTime, Utc};
use sqlx::Row;

use crate::{Result, Store, Tx, from_json};

impl Store {
    /// The stored report of a finished job: (JSON, JUnit XML).
    pub async fn get_results(&self, job_id: &str) -> Result<Option<(serde_json::Value, String)>> {
        let row = sqlx::query("SELECT report, junit FROM job_results WHERE job_id = ?")
            .bind(job_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok((
                from_json("job results", r.try_get("report")?)?,
                r.try_get("junit")?,
            ))
        })
        .transpose()
    }
}

impl Tx {
    pub async fn put_results(
        &mut self,
        job_id: &str,
        report: &serde_json::Value,
        junit: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO job_results (job_id, report, junit, created_at) VALUES (?, ?, ?, ?)
             ON CONFLICT (job_id) DO UPDATE SET report = excluded.report, junit = excluded.junit",
        )
        .bind(job_id)
        .bind(report.to_string())
        .bind(junit)
        .bind(now)
        .execute(self.conn())
        .await?;
        Ok(())
    }
}
