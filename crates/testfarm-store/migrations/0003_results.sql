-- Test results parsed from a job's TAP output, kept once the job has ended so reports
-- do not re-read its log.
CREATE TABLE job_results (
    job_id          TEXT PRIMARY KEY,
    report          TEXT NOT NULL,             -- JSON report (testfarm_tap::json::render)
    junit           TEXT NOT NULL,             -- JUnit XML
    created_at      TEXT NOT NULL
);

-- Heartbeats look up an agent's resources on every call.
CREATE INDEX resources_agent ON resources (agent);
