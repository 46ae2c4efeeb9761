//! Jobs that need no resource (`requires` omitted): the server runs their `http`,
//! `wait_for`, `sleep` and `fail_if` steps itself, then the `always` steps whatever
//! happened, and records each step's outcome and log lines as an agent's would be.
//!
//! - `failed` when the remote system said no (a status not expected, `fail_if` held, a
//!   `wait_for` whose `until` never held within its timeout); `error` when the lab failed
//!   (the URL unreachable, DNS, a connection refused): see [`http::StepError`].
//! - Secrets are masked (`****`) in every log line, step reason and job reason written
//!   here; their values are never stored.
//! - **Restart**: the runner's state (saved values, where a wait stands) lives only in
//!   memory, so a server that restarts while a job runs does not resume it. On start,
//!   [`recover`] finds every server-side job still `running`, runs its `always` steps
//!   (with no saved values: a template that needs one fails that step) and ends it
//!   `error`, saying the server restarted during step N. Resuming would need every saved
//!   value and wait deadline persisted with the step, and a resumed `http` POST could be
//!   sent twice; ending `error` is simple and honest, and `retry_on_error` re-queues it.

mod http;
pub(crate) mod template;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use testfarm_api::agent::Outcome;
use testfarm_api::job::{JobState, StepRecord};
use testfarm_core::expr::Expr;
use testfarm_core::job::{JobEvent, LabError};
use testfarm_core::jobspec::{JobSpec, Step};
use testfarm_store::NewEvent;
use ulid::Ulid;

use self::http::StepError;
use self::template::{Masker, Scope};
use crate::lifecycle::{self, LifecycleError};
use crate::state::AppState;

/// `: cause: its cause…` for every source of `e`, so a step's reason says why all the way down.
pub(crate) fn causes(e: &dyn std::error::Error) -> String {
    let mut out = String::new();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Longest `sleep` honoured (a job's timeout usually ends it first).
const MAX_SLEEP: Duration = Duration::from_secs(24 * 3600);
/// `wait_for` polls this often when it sets no `interval`.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// How often a `sleep` or a wait looks whether the job was cancelled or timed out.
const CHECK_EVERY: Duration = Duration::from_millis(500);

/// Marks the job running on the server and runs it in a task.
pub(crate) async fn start(
    state: &AppState,
    job: Ulid,
    now: DateTime<Utc>,
) -> Result<(), LifecycleError> {
    let mut tx = state.store.begin().await?;
    let mut row = tx.get_job(&job.to_string()).await?;
    if row.job.state != JobState::Queued {
        return Ok(());
    }
    row.job.resource = Some("server".into());
    let assign = JobEvent::Assign {
        resource: Ulid::nil(),
        lease: Ulid::nil(),
    };
    let mut after =
        lifecycle::apply_job_event(&mut tx, &mut row, assign, "scheduler", now, false).await?;
    after.merge(
        lifecycle::apply_job_event(&mut tx, &mut row, JobEvent::Start, "server", now, false)
            .await?,
    );
    tx.commit().await?;
    state.after_commit(after);
    let spec: Option<JobSpec> = serde_json::from_value(row.job.spec.clone()).ok();
    let state = state.clone();
    tokio::spawn(async move {
        let event = match spec {
            Some(spec) => {
                // A panic in the runner must not leave the job `running`.
                let runner = Runner::new(&state, job, &spec);
                match tokio::spawn(async move { runner.run(&spec).await }).await {
                    Ok(event) => event,
                    Err(e) => JobEvent::Error {
                        reason: LabError::Infrastructure {
                            detail: format!("the server's step runner failed: {e}"),
                        },
                    },
                }
            }
            None => JobEvent::Error {
                reason: LabError::Infrastructure {
                    detail: "the stored spec could not be read".into(),
                },
            },
        };
        if let Err(e) = finish(&state, job, event).await {
            tracing::error!(error = %e, %job, "could not record a server-side job's end");
        }
    });
    Ok(())
}

/// After a restart: server-side jobs still `running` run their `always` steps and end
/// `error` (see the module's documentation).
pub(crate) async fn recover(state: &AppState) {
    let running = match state.store.jobs_in(&[JobState::Running]).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot list running jobs to recover server-side ones");
            return;
        }
    };
    for row in running {
        if row.job.resource.as_deref() != Some("server") || row.job.lease_id.is_some() {
            continue;
        }
        let Ok(job) = Ulid::from_string(&row.job.id) else {
            continue;
        };
        let steps_done = match state.store.get_job(&row.job.id).await {
            Ok(full) => full.job.steps.iter().filter(|s| !s.always).count(),
            Err(_) => 0,
        };
        let spec: Option<JobSpec> = serde_json::from_value(row.job.spec.clone()).ok();
        let state = state.clone();
        tokio::spawn(async move {
            let detail = format!(
                "the server restarted while the job ran (during step {steps_done}); server-side steps are not resumed"
            );
            if let Some(spec) = spec {
                let runner = Runner::new(&state, job, &spec);
                runner
                    .log(&format!("{detail}; running the always steps"))
                    .await;
                let first = u32::try_from(spec.steps.len()).unwrap_or(u32::MAX);
                let mut runner = runner;
                runner.run_always(&spec, first).await;
            }
            let event = JobEvent::Error {
                reason: LabError::Infrastructure { detail },
            };
            if let Err(e) = finish(&state, job, event).await {
                tracing::error!(error = %e, %job, "could not end a server-side job after a restart");
            }
        });
    }
}

/// Checks the templates of a server-side spec at submit (see [`template::check_spec`]).
pub(crate) fn check_templates(state: &AppState, spec: &JobSpec) -> Result<(), (String, String)> {
    let names = state.secrets.keys().cloned().collect();
    template::check_spec(spec, &names)
}

struct Runner {
    state: AppState,
    job: Ulid,
    scope: Scope,
    mask: Masker,
    client: Result<reqwest::Client, String>,
    /// A cancel asked for while the job ran (its reason).
    cancel: Option<String>,
    /// Running the `always` steps: they run to their end whatever happened.
    in_always: bool,
}

impl Runner {
    fn new(state: &AppState, job: Ulid, spec: &JobSpec) -> Runner {
        let secrets: BTreeMap<String, String> = (*state.secrets).clone();
        let mask = Masker::new(secrets.values());
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("testfarm/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot set up the HTTP client: {e}"));
        Runner {
            state: state.clone(),
            job,
            scope: Scope {
                vars: spec.vars.clone(),
                secrets,
                saved: BTreeMap::new(),
            },
            mask,
            client,
            cancel: None,
            in_always: false,
        }
    }

    /// Runs `steps` then `always`; returns the job's ending event.
    async fn run(mut self, spec: &JobSpec) -> JobEvent {
        let mut verdict: Option<StepError> = None;
        let mut index = 0u32;
        for step in &spec.steps {
            let t0 = Instant::now();
            let result = if verdict.is_some() {
                Err(None)
            } else if self.ended().await {
                verdict = Some(StepError::Lab("the job ended before this step".into()));
                Err(None)
            } else {
                self.log(&format!("step {index} ({}) started", step.kind()))
                    .await;
                self.step(step).await.map_err(Some)
            };
            let result = result.map_err(|e| e.map(|e| self.prefixed(index, step, false, e)));
            if let Err(Some(e)) = &result {
                verdict.get_or_insert_with(|| e.clone());
            }
            self.record(index, step, false, &result, t0.elapsed()).await;
            index += 1;
        }
        if let Some(e) = self.run_always(spec, index).await {
            verdict.get_or_insert(e);
        }
        let event = match verdict {
            _ if self.cancel.is_some() => JobEvent::Cancel {
                by: "server".into(),
                reason: self.cancel.clone().unwrap_or_default(),
            },
            None => JobEvent::Pass,
            Some(StepError::Remote(reason)) => JobEvent::Fail { reason },
            Some(StepError::Lab(detail)) => JobEvent::Error {
                reason: LabError::Infrastructure { detail },
            },
        };
        let word = match &event {
            JobEvent::Pass => "passed".to_string(),
            JobEvent::Fail { reason } => format!("failed: {reason}"),
            JobEvent::Error { reason } => format!("error: {reason}"),
            JobEvent::Cancel { reason, .. } => format!("cancelled: {reason}"),
            _ => String::new(),
        };
        self.log(&format!("job ended {word}")).await;
        event
    }

    /// Runs the `always` steps, numbered from `first`; returns the first failure.
    async fn run_always(&mut self, spec: &JobSpec, first: u32) -> Option<StepError> {
        let mut failure = None;
        self.in_always = true;
        for (i, step) in spec.always.iter().enumerate() {
            let index = first.saturating_add(u32::try_from(i).unwrap_or(u32::MAX));
            let t0 = Instant::now();
            self.log(&format!("always step {index} ({}) started", step.kind()))
                .await;
            let result = self
                .step(step)
                .await
                .map_err(|e| Some(self.prefixed(index, step, true, e)));
            if let Err(Some(e)) = &result {
                failure.get_or_insert_with(|| e.clone());
            }
            self.record(index, step, true, &result, t0.elapsed()).await;
        }
        failure
    }

    fn prefixed(&self, index: u32, step: &Step, always: bool, e: StepError) -> StepError {
        let what = if always { "always step" } else { "step" };
        let f = |m: String| {
            self.mask
                .mask(&format!("{what} {index} ({}): {m}", step.kind()))
        };
        match e {
            StepError::Remote(m) => StepError::Remote(f(m)),
            StepError::Lab(m) => StepError::Lab(f(m)),
        }
    }

    /// Whether the job must stop: it ended under the runner (timed out), or a cancel was
    /// asked for (remembered, so the job ends `cancelled` after its `always` steps).
    async fn ended(&mut self) -> bool {
        match self.state.store.get_job(&self.job.to_string()).await {
            Ok(row) => {
                if let Some(reason) = row.cancel_requested {
                    self.cancel.get_or_insert(reason);
                }
                row.job.state.is_terminal() || self.cancel.is_some()
            }
            Err(_) => false,
        }
    }

    async fn step(&mut self, step: &Step) -> Result<(), StepError> {
        match step {
            Step::Sleep(d) => self.sleep(d.get().min(MAX_SLEEP)).await,
            Step::FailIf(text) => {
                let e = Expr::parse(text).map_err(|e| StepError::Lab(e.to_string()))?;
                let doc = serde_json::to_value(&self.scope.saved).unwrap_or_default();
                if e.holds(&doc) {
                    Err(StepError::Remote(format!("`{text}` holds")))
                } else {
                    Ok(())
                }
            }
            Step::Http(h) => {
                let limit = h.timeout.map_or(http::DEFAULT_REQUEST_TIMEOUT, |t| t.get());
                let answer = http::send(self.client()?, h, &self.scope, limit).await?;
                self.log(&format!(
                    "{} {} -> {} ({} bytes)",
                    answer.method,
                    answer.url,
                    answer.status,
                    answer.body.len()
                ))
                .await;
                answer.check_status(h)?;
                if !h.save.is_empty() {
                    let doc = answer.json()?;
                    self.save(http::saved_values(h, &doc)?).await;
                }
                Ok(())
            }
            Step::WaitFor(w) => {
                let until = Expr::parse(&w.until).map_err(|e| StepError::Lab(e.to_string()))?;
                let interval = w.interval.map_or(DEFAULT_INTERVAL, |i| i.get());
                let deadline = Instant::now() + w.timeout.get();
                let mut polls = 0u64;
                loop {
                    polls += 1;
                    let left = deadline.saturating_duration_since(Instant::now());
                    let limit = w
                        .http
                        .timeout
                        .map_or(http::DEFAULT_REQUEST_TIMEOUT, |t| t.get())
                        .min(left.max(Duration::from_millis(100)));
                    let answer = http::send(self.client()?, &w.http, &self.scope, limit).await?;
                    answer.check_status(&w.http)?;
                    let doc = answer.json()?;
                    let holds = until.holds(&doc);
                    self.log(&format!(
                        "poll {polls}: {} {} -> {}; until {}",
                        answer.method,
                        answer.url,
                        answer.status,
                        if holds { "holds" } else { "not yet" }
                    ))
                    .await;
                    if holds {
                        self.save(http::saved_values(&w.http, &doc)?).await;
                        return Ok(());
                    }
                    if Instant::now() + interval > deadline {
                        let body: String = String::from_utf8_lossy(&answer.body)
                            .chars()
                            .take(200)
                            .collect();
                        return Err(StepError::Remote(format!(
                            "`{}` did not hold within {:?} ({polls} polls; last answer {body:?})",
                            w.until,
                            w.timeout.get()
                        )));
                    }
                    self.sleep(interval).await?;
                }
            }
            other => Err(StepError::Lab(format!(
                "a {} step cannot run on the server",
                other.kind()
            ))),
        }
    }

    fn client(&self) -> Result<&reqwest::Client, StepError> {
        self.client.as_ref().map_err(|e| StepError::Lab(e.clone()))
    }

    /// Sleeps, stopping early (as a lab error) when the job ends under it.
    async fn sleep(&mut self, d: Duration) -> Result<(), StepError> {
        let until = Instant::now() + d;
        loop {
            let now = Instant::now();
            if now >= until {
                return Ok(());
            }
            tokio::time::sleep((until - now).min(CHECK_EVERY)).await;
            if !self.in_always && self.ended().await {
                return Err(StepError::Lab(match &self.cancel {
                    Some(reason) => format!("cancelled during this step ({reason})"),
                    None => "the job ended (timed out) during this step".into(),
                }));
            }
        }
    }

    async fn save(&mut self, values: Vec<(String, serde_json::Value)>) {
        for (name, value) in values {
            let shown: String = value.to_string().chars().take(200).collect();
            self.log(&format!("saved {name} = {shown}")).await;
            self.scope.saved.insert(name, value);
        }
    }

    /// One line in the job's log, secrets masked.
    async fn log(&self, line: &str) {
        let text = format!("[testfarm] {}\n", self.mask.mask(line));
        if let Err(e) =
            crate::logs::append_server(&self.state, &self.job.to_string(), text.as_bytes()).await
        {
            tracing::warn!(job = %self.job, error = %e, "could not write a server-side job's log");
        }
    }

    async fn record(
        &self,
        index: u32,
        step: &Step,
        always: bool,
        result: &Result<(), Option<StepError>>,
        took: Duration,
    ) {
        let (outcome, reason) = match result {
            Ok(()) => (Outcome::Passed, None),
            Err(None) => (Outcome::Skipped, None),
            Err(Some(StepError::Remote(m))) => (Outcome::Failed, Some(m.clone())),
            Err(Some(StepError::Lab(m))) => (Outcome::Error, Some(m.clone())),
        };
        let what = if always { "always step" } else { "step" };
        let line = match (&outcome, &reason) {
            (Outcome::Skipped, _) => format!("{what} {index} ({}) skipped", step.kind()),
            (_, Some(r)) => r.clone(),
            _ => format!(
                "{what} {index} ({}) passed in {:.1}s",
                step.kind(),
                took.as_secs_f64()
            ),
        };
        self.log(&line).await;
        let rec = StepRecord {
            index,
            kind: step.kind().to_string(),
            always,
            outcome,
            exit_code: None,
            duration_ms: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
            reason: reason.map(|r| self.mask.mask(&r)),
            build: None,
        };
        if let Err(e) = self.write_record(&rec).await {
            tracing::warn!(job = %self.job, error = %e, "could not record a server-side step");
        }
    }

    async fn write_record(&self, rec: &StepRecord) -> Result<(), LifecycleError> {
        let id = self.job.to_string();
        let mut tx = self.state.store.begin().await?;
        let mut job = tx.get_job(&id).await?;
        tx.upsert_step(&id, rec).await?;
        job.last_report_at = Some(Utc::now());
        tx.update_job(&job).await?;
        tx.record(
            NewEvent::new("job.step", "job", &id, "server")
                .with_data(serde_json::to_value(rec).unwrap_or_default()),
        );
        tx.commit().await?;
        Ok(())
    }
}

async fn finish(state: &AppState, job: Ulid, event: JobEvent) -> Result<(), LifecycleError> {
    let now = Utc::now();
    let mut tx = state.store.begin().await?;
    let mut row = tx.get_job(&job.to_string()).await?;
    if row.job.state.is_terminal() {
        return Ok(());
    }
    let after = lifecycle::apply_job_event(&mut tx, &mut row, event, "server", now, false).await?;
    tx.commit().await?;
    state.after_commit(after);
    Ok(())
}
