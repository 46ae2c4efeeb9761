//! The `job_results` table: a finished job's test report, JSON and JUnit.

use chrono::{DateTime, Utc};
use rusqlite::params;

use crate::sql::{exec, get_json, query_opt, ts};
use crate::{Result, Store, Tx};

impl Store {
    /// The stored report of a finished job: (JSON, JUnit XML).
    pub async fn get_results(&self, job_id: &str) -> Result<Option<(serde_json::Value, String)>> {
        self.read(|c| {
            query_opt(
                c,
                "SELECT report, junit FROM job_results WHERE job_id = ?",
                [job_id],
                |r| Ok((get_json(r, "job results", "report")?, r.get("junit")?)),
            )
        })
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
        exec(
            self.conn(),
            "INSERT INTO job_results (job_id, report, junit, created_at) VALUES (?, ?, ?, ?)
             ON CONFLICT (job_id) DO UPDATE SET report = excluded.report, junit = excluded.junit",
            params![job_id, report.to_string(), junit, ts(now)],
        )?;
        Ok(())
    }
}
