//! Running one assignment: a fresh work directory, the steps in order, then the `always`
//! steps whatever happened, each step reported with its outcome, exit code and duration.
//!
//! Outcomes keep the line DESIGN.md draws: a step that runs and exits non-zero is
//! `failed` (the test's fault); a step the agent could not run (spawn failure, missing
//! interpreter or work directory, lost SSH connection, a step kind this agent lacks) is
//! `error` (the lab's fault). The first step that does not pass ends the main list: the
//! rest are reported `skipped`, and its outcome is the job's. `always` steps run after
//! success, failure, timeout or cancel (each with its own time limit, since the job's may
//! be spent), and can turn a passed job into a failed one, never the reverse.
//!
//! A cancel kills the running step cleanly and goes on to `always`; a drop (the lease is
//! gone) kills everything and reports nothing more: [`execute`] then returns `None`.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use testfarm_api::agent::{Assignment, Outcome, StepReport};
use testfarm_api::artifact::{Artifact, Build, CreateBuild};
use testfarm_api::build::BuildSummary;
use testfarm_core::jobspec::{JobSpec, ShellStep, Step, UploadStep, Via};
use tokio::time::Instant;

use crate::control::{JobControl, Signal};
use crate::detect::shell_quote;
use crate::logs::LogWriter;
use crate::shell::{self, ProcessEnd};
use crate::ssh::SshHost;
use crate::upload;
use crate::vm_steps::{self, VmSlot};

/// Why a report did not land.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReportError {
    /// 409: the lease moved on; the job must be dropped.
    #[error("stale epoch: {0}")]
    Stale(String),
    #[error("{0}")]
    Failed(String),
}

/// Where a local job's running process group id is kept, relative to its work directory.
pub const PGID_FILE: &str = ".testfarm/pgid";

/// Where step reports and outputs go (the server, through [`crate::client`]; a recorder in
/// tests).
pub trait Reporter: Send + Sync {
    fn step(&self, report: StepReport) -> impl Future<Output = Result<(), ReportError>> + Send;
    fn output(
        &self,
        name: &str,
        body: Bytes,
    ) -> impl Future<Output = Result<(), ReportError>> + Send;
    /// The server connection, for steps that fetch from it (deploy); `None` in tests.
    fn client(&self) -> Option<&crate::client::Client> {
        None
    }
    /// Something a board job did to its board (flash, power, deploy, recovery), for the
    /// board's history. Default: through [`Reporter::client`]; nowhere without one.
    fn board_report(
        &self,
        board: &str,
        report: testfarm_api::board::BoardReport,
    ) -> impl Future<Output = ()> + Send {
        async move {
            if let Some(c) = self.client()
                && let Err(e) = c.board_report(board, &report).await
            {
                tracing::warn!(%board, error = %e, "board report not delivered");
            }
        }
    }
    /// Records a build in the artifact repository (for a build step's artifacts).
    fn create_build(
        &self,
        _req: CreateBuild,
    ) -> impl Future<Output = Result<Build, ReportError>> + Send {
        async { Err(ReportError::Failed("this agent stores no builds".into())) }
    }
    /// Streams one file into a build, with the sha256 the agent computed; the server
    /// refuses it (and nothing is stored) when the bytes it got have another.
    fn put_artifact(
        &self,
        _build: &str,
        _file: ArtifactUpload,
    ) -> impl Future<Output = Result<Artifact, ReportError>> + Send {
        async { Err(ReportError::Failed("this agent stores no builds".into())) }
    }
}

/// A local file to store as an artifact.
#[derive(Debug, Clone)]
pub struct ArtifactUpload {
    pub path: PathBuf,
    pub name: String,
    pub kind: testfarm_core::artifact::ArtifactKind,
    pub sha256: String,
    pub size: u64,
}

/// Where a job's steps run.
#[derive(Debug, Clone)]
pub enum Target {
    /// This machine.
    Local,
    /// A remote host over SSH.
    Ssh(SshHost),
    /// A board with drivers (`[[board]]`): host steps run on this machine, deploy, boot
    /// and `via: console` steps on the board ([`crate::board`]).
    Board(crate::board::BoardTarget),
}

/// Agent-wide settings the executor needs.
#[derive(Debug, Clone)]
pub struct ExecSettings {
    /// Local job directories are `<work_dir>/jobs/<job id>`.
    pub work_dir: PathBuf,
    pub kill_grace: Duration,
    pub always_timeout: Duration,
    pub keep_work_dirs: bool,
}

/// One job, decoded from its assignment.
#[derive(Debug, Clone)]
pub struct JobRun {
    pub job_id: String,
    pub lease_id: String,
    pub epoch: u64,
    pub resource: String,
    pub spec: JobSpec,
    pub vars: BTreeMap<String, serde_json::Value>,
    pub timeout: Option<Duration>,
}

impl JobRun {
    /// Decodes the spec carried by an assignment.
    pub fn from_assignment(a: &Assignment) -> Result<JobRun, String> {
        let spec: JobSpec = serde_json::from_value(a.spec.clone())
            .map_err(|e| format!("the job spec could not be read by this agent: {e}"))?;
        let mut vars: BTreeMap<String, serde_json::Value> = match &a.vars {
            serde_json::Value::Object(m) => m.clone().into_iter().collect(),
            _ => BTreeMap::new(),
        };
        for (k, v) in &spec.vars {
            vars.entry(k.clone()).or_insert_with(|| v.clone());
        }
        Ok(JobRun {
            job_id: a.job_id.clone(),
            lease_id: a.lease_id.clone(),
            epoch: a.epoch,
            resource: a.resource.clone(),
            timeout: (a.timeout_ms > 0).then(|| Duration::from_millis(a.timeout_ms)),
            spec,
            vars,
        })
    }
}

/// How the job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobResult {
    pub outcome: Outcome,
    pub reason: Option<String>,
}

/// One step's result, before it is reported.
#[derive(Debug, Clone)]
pub(crate) struct StepResult {
    pub(crate) outcome: Outcome,
    pub(crate) exit_code: Option<i32>,
    pub(crate) reason: Option<String>,
    pub(crate) build: Option<BuildSummary>,
}

impl StepResult {
    pub(crate) fn new(outcome: Outcome, reason: impl Into<Option<String>>) -> StepResult {
        StepResult {
            outcome,
            exit_code: None,
            reason: reason.into(),
            build: None,
        }
    }
}

/// Where the job's files are.
#[derive(Debug, Clone)]
pub(crate) enum WorkDir {
    Local(PathBuf),
    Remote(String),
}

pub(crate) struct Run<'a, R: Reporter> {
    pub(crate) job: &'a JobRun,
    pub(crate) settings: &'a ExecSettings,
    pub(crate) target: &'a Target,
    pub(crate) reporter: &'a R,
    pub(crate) log: &'a LogWriter,
    pub(crate) dir: WorkDir,
    /// The job's VM, if it deploys one (`crate::vm_steps`).
    vm: VmSlot,
    /// The job's board, when it runs on one with drivers.
    board: Option<crate::board::job::JobBoard>,
}

/// Runs a job to its end. `None`: it was dropped (stale epoch); report nothing more.
pub async fn execute<R: Reporter>(
    job: &JobRun,
    settings: &ExecSettings,
    target: &Target,
    reporter: &R,
    log: &LogWriter,
    control: &JobControl,
) -> Option<JobResult> {
    let dir = match target {
        Target::Local | Target::Board(_) => {
            WorkDir::Local(settings.work_dir.join("jobs").join(&job.job_id))
        }
        Target::Ssh(h) => WorkDir::Remote(h.job_dir(&job.job_id)),
    };
    let board = match target {
        Target::Board(b) => Some(
            crate::board::job::JobBoard::begin(b.clone(), &job.job_id, &job.lease_id, log).await,
        ),
        _ => None,
    };
    let run = Run {
        job,
        settings,
        target,
        reporter,
        log,
        dir,
        vm: VmSlot::default(),
        board,
    };
    let result = run.all(control).await;
    run.cleanup().await;
    result
}

impl<R: Reporter> Run<'_, R> {
    async fn all(&self, control: &JobControl) -> Option<JobResult> {
        let job = self.job;
        let started = Instant::now();
        let deadline = job.timeout.map(|t| started + t);
        let where_ = match self.target {
            Target::Local => "this host".to_string(),
            Target::Board(b) => format!("board {} wired to this host", b.0.name()),
            Target::Ssh(h) => format!("{} over ssh", h.config.destination),
        };
        self.log
            .note(&format!(
                "job {} ({}) on {} ({where_})",
                job.job_id, job.spec.name, job.resource
            ))
            .await;
        let prepared = self.prepare().await;
        let mut verdict: Option<(Outcome, Option<String>)> = None;
        if let Err(reason) = &prepared {
            self.log.note(reason).await;
        }
        let mut index = 0u32;
        for step in &job.spec.steps {
            let sig = control.get();
            if sig == Signal::Drop {
                return None;
            }
            let (result, elapsed) = if verdict.is_some() {
                (StepResult::new(Outcome::Skipped, None), Duration::ZERO)
            } else if let Err(reason) = &prepared {
                (
                    StepResult::new(Outcome::Error, reason.clone()),
                    Duration::ZERO,
                )
            } else if sig == Signal::Cancel {
                (
                    StepResult::new(
                        Outcome::Cancelled,
                        "cancelled before it started".to_string(),
                    ),
                    Duration::ZERO,
                )
            } else if deadline.is_some_and(|d| Instant::now() >= d) {
                (
                    StepResult::new(Outcome::TimedOut, self.job_timeout_reason()),
                    Duration::ZERO,
                )
            } else {
                let t0 = Instant::now();
                let step_deadline = earliest(deadline, step_timeout(step).map(|t| t0 + t));
                let r = self
                    .step(index, step, step_deadline, deadline, control)
                    .await?;
                (r, t0.elapsed())
            };
            if verdict.is_none() && result.outcome != Outcome::Passed {
                verdict = Some((result.outcome, result.reason.clone()));
            }
            self.report(index, step, false, &result, elapsed, control)
                .await?;
            index += 1;
        }
        // `always` steps listen to drop only: a cancel has already done its work.
        let always_control = JobControl::new();
        let forward = {
            let (from, to) = (control.clone(), always_control.clone());
            tokio::spawn(async move {
                from.reached(Signal::Drop).await;
                to.drop_job();
            })
        };
        for step in &job.spec.always {
            if control.get() == Signal::Drop {
                forward.abort();
                return None;
            }
            let t0 = Instant::now();
            let limit = step_timeout(step).unwrap_or(self.settings.always_timeout);
            let result = match &prepared {
                Err(reason) => StepResult::new(Outcome::Error, reason.clone()),
                Ok(()) => {
                    let d = Some(t0 + limit);
                    match self.step(index, step, d, None, &always_control).await {
                        Some(r) => r,
                        None => {
                            forward.abort();
                            return None;
                        }
                    }
                }
            };
            let passed_so_far = verdict.is_none();
            if passed_so_far && result.outcome != Outcome::Passed {
                verdict = Some((
                    result.outcome,
                    Some(format!(
                        "always step {index} ({}): {}",
                        step.kind(),
                        result.reason.clone().unwrap_or_default()
                    )),
                ));
            }
            let r = self
                .report(index, step, true, &result, t0.elapsed(), control)
                .await;
            if r.is_none() {
                forward.abort();
                return None;
            }
            index += 1;
        }
        forward.abort();
        let (outcome, reason) = verdict.unwrap_or((Outcome::Passed, None));
        self.log
            .note(&format!(
                "job ended {} after {:.1}s{}",
                outcome_word(outcome),
                started.elapsed().as_secs_f64(),
                reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            ))
            .await;
        Some(JobResult { outcome, reason })
    }

    fn job_timeout_reason(&self) -> String {
        let t = self.job.timeout.unwrap_or_default();
        format!(
            "the job's time limit ({}) was reached",
            testfarm_core::duration::format(t)
        )
    }

    /// Sends a step report (and logs a line). `None`: the lease is gone.
    async fn report(
        &self,
        index: u32,
        step: &Step,
        always: bool,
        r: &StepResult,
        elapsed: Duration,
        control: &JobControl,
    ) -> Option<()> {
        if r.outcome != Outcome::Skipped {
            self.log
                .note(&format!(
                    "step {index} ({}) {} in {:.1}s{}{}",
                    step.kind(),
                    outcome_word(r.outcome),
                    elapsed.as_secs_f64(),
                    r.exit_code
                        .map(|c| format!(", exit {c}"))
                        .unwrap_or_default(),
                    r.reason
                        .as_deref()
                        .map(|x| format!(": {x}"))
                        .unwrap_or_default()
                ))
                .await;
        }
        let report = StepReport {
            epoch: self.job.epoch,
            index,
            kind: step.kind().to_string(),
            always,
            outcome: r.outcome,
            exit_code: r.exit_code,
            duration_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            reason: r.reason.clone(),
            build: r.build.clone(),
        };
        match self.reporter.step(report).await {
            Ok(()) => Some(()),
            Err(ReportError::Stale(_)) => {
                control.drop_job();
                None
            }
            Err(ReportError::Failed(e)) => {
                // The step's own result stands; the server learns the job's at finish.
                tracing::warn!(job = %self.job.job_id, index, error = %e, "step report not delivered");
                Some(())
            }
        }
    }

    /// Makes a fresh, empty work directory.
    async fn prepare(&self) -> Result<(), String> {
        match (&self.dir, self.target) {
            (WorkDir::Local(d), _) => {
                if d.exists() {
                    std::fs::remove_dir_all(d).map_err(|e| {
                        format!("cannot clear the work directory {}: {e}", d.display())
                    })?;
                }
                std::fs::create_dir_all(d.join(".testfarm"))
                    .map_err(|e| format!("cannot create the work directory {}: {e}", d.display()))
            }
            (WorkDir::Remote(d), Target::Ssh(h)) => h
                .fresh_dir(d)
                .await
                .map_err(|e| format!("cannot create the remote work directory {d}: {e}")),
            (WorkDir::Remote(_), Target::Local | Target::Board(_)) => {
                Err("no remote host for a remote directory".into())
            }
        }
    }

    async fn cleanup(&self) {
        // The VM goes whatever happened, before the work directory (its overlay is there).
        self.vm.end(self.reporter, self.log).await;
        // The board is left safe whatever happened: console.log, detach, on_release.
        if let Some(b) = &self.board {
            b.end(self.reporter, self.log).await;
        }
        if self.settings.keep_work_dirs {
            return;
        }
        match (&self.dir, self.target) {
            (WorkDir::Local(d), _) => {
                let _ = std::fs::remove_dir_all(d);
            }
            (WorkDir::Remote(d), Target::Ssh(h)) => {
                if let Err(e) = h.remove_dir(d).await {
                    tracing::warn!(error = %e, "cannot remove the remote work directory");
                }
            }
            _ => {}
        }
    }

    /// Runs one step. `None`: dropped.
    async fn step(
        &self,
        index: u32,
        step: &Step,
        deadline: Option<Instant>,
        job_deadline: Option<Instant>,
        control: &JobControl,
    ) -> Option<StepResult> {
        self.log
            .note(&format!("step {index} ({}) started", step.kind()))
            .await;
        let timed_out = |_: ()| {
            if job_deadline.is_some_and(|j| deadline.is_some_and(|d| d >= j)) {
                self.job_timeout_reason()
            } else {
                format!(
                    "the step's time limit ({}) was reached",
                    step_timeout(step)
                        .map(testfarm_core::duration::format)
                        .unwrap_or_else(|| testfarm_core::duration::format(
                            self.settings.always_timeout
                        ))
                )
            }
        };
        if let Some(jb) = &self.board {
            let on_board = match step {
                Step::Deploy(_) | Step::Boot(_) => true,
                Step::Shell(s) => matches!(s.via, Via::Console | Via::Guest),
                Step::Test(t) => matches!(t.via, Via::Console | Via::Guest),
                _ => false,
            };
            if on_board {
                return self.board_step(jb, step, deadline, control).await;
            }
        } else if matches!(step, Step::Shell(s) if s.via == Via::Console)
            || matches!(step, Step::Test(t) if t.via == Via::Console)
        {
            return Some(StepResult::new(
                Outcome::Error,
                format!(
                    "`via: console` types into a board's console; {} is not a board with drivers ([[board]] in agent.toml)",
                    self.job.resource
                ),
            ));
        }
        match step {
            Step::Deploy(_) | Step::Boot(_) => {
                self.vm_step(index, step, deadline, control, timed_out)
                    .await
            }
            Step::Shell(s) if s.via == Via::Guest => {
                self.vm_step(index, step, deadline, control, timed_out)
                    .await
            }
            Step::Test(t) if t.via == Via::Guest => {
                self.vm_step(index, step, deadline, control, timed_out)
                    .await
            }
            Step::Shell(s) => self.shell(index, s, deadline, control, timed_out).await,
            // A test step is a shell step that marks each script's TAP (core::test_step).
            Step::Test(t) => {
                let shell = testfarm_core::test_step::as_shell(t);
                self.shell(index, &shell, deadline, control, timed_out)
                    .await
            }
            Step::Upload(u) => self.upload(u, control).await,
            Step::Build(b) => self.build(index, b, deadline, control, &timed_out).await,
            Step::Sleep(d) => {
                let mut rx = control.subscribe();
                let until = earliest(deadline, Some(Instant::now() + d.get()));
                let hit_deadline = deadline.is_some_and(|dl| until == Some(dl));
                tokio::select! {
                    _ = sleep_until(until) => Some(if hit_deadline {
                        StepResult::new(Outcome::TimedOut, timed_out(()))
                    } else {
                        StepResult::new(Outcome::Passed, None)
                    }),
                    dropped = async {
                        rx.wait_for(|s| *s != Signal::Run).await.map(|s| *s == Signal::Drop).unwrap_or(true)
                    } => {
                        if dropped {
                            None
                        } else {
                            Some(StepResult::new(Outcome::Cancelled, "cancelled".to_string()))
                        }
                    }
                }
            }
            other => Some(StepResult::new(
                Outcome::Error,
                format!("a {} step is not supported by this agent yet", other.kind()),
            )),
        }
    }

    /// deploy, boot and console steps on a board ([`crate::board`]), bounded by the
    /// step's deadline (each part is bounded too: flash, power, boot watch, hang limit).
    async fn board_step(
        &self,
        jb: &crate::board::job::JobBoard,
        step: &Step,
        deadline: Option<Instant>,
        control: &JobControl,
    ) -> Option<StepResult> {
        let WorkDir::Local(dir) = &self.dir else {
            return Some(StepResult::new(
                Outcome::Error,
                "no local work directory".to_string(),
            ));
        };
        let ctx = vm_steps::Ctx {
            job: self.job,
            reporter: self.reporter,
            log: self.log,
            control,
            work_dir: dir,
        };
        use crate::board::console_step::{self, ConsoleCommand};
        let work = async {
            match step {
                Step::Deploy(d) => Some(crate::board::deploy::deploy(&ctx, jb, d).await),
                Step::Boot(b) => Some(crate::board::deploy::boot(&ctx, jb, b).await),
                Step::Shell(s) if s.via == Via::Console => {
                    let cmd = ConsoleCommand {
                        command: &s.run,
                        tap: None,
                    };
                    console_step::run(&ctx, jb, cmd, deadline).await
                }
                Step::Test(t) if t.via == Via::Console => {
                    let cmd = ConsoleCommand {
                        command: &t.run,
                        tap: Some(t.run.trim()),
                    };
                    console_step::run(&ctx, jb, cmd, deadline).await
                }
                other => Some(vm_steps::End::error(format!(
                    "a board has no guest agent: run the {} step with `via: console`",
                    other.kind()
                ))),
            }
        };
        let end = tokio::select! {
            e = work => e?,
            _ = sleep_until(deadline.map(|d| d + Duration::from_secs(10))) => vm_steps::End {
                outcome: Outcome::TimedOut,
                reason: Some("the step's time limit was reached".into()),
                exit_code: None,
            },
            _ = control.reached(Signal::Cancel), if matches!(step, Step::Deploy(_) | Step::Boot(_)) => {
                if control.get() == Signal::Drop {
                    return None;
                }
                vm_steps::End { outcome: Outcome::Cancelled, reason: Some("cancelled".into()), exit_code: None }
            }
        };
        Some(StepResult {
            outcome: end.outcome,
            exit_code: end.exit_code,
            reason: end.reason,
            build: None,
        })
    }

    /// deploy, boot and guest commands ([`crate::vm_steps`]), bounded by the step's
    /// deadline and stopped by a cancel or drop. Local hosts only.
    async fn vm_step(
        &self,
        index: u32,
        step: &Step,
        deadline: Option<Instant>,
        control: &JobControl,
        timed_out: impl Fn(()) -> String,
    ) -> Option<StepResult> {
        let WorkDir::Local(dir) = &self.dir else {
            return Some(StepResult::new(
                Outcome::Error,
                format!(
                    "a {} step runs on a local qemu-host; VMs on hosts driven over SSH are not supported yet",
                    step.kind()
                ),
            ));
        };
        let ctx = vm_steps::Ctx {
            job: self.job,
            reporter: self.reporter,
            log: self.log,
            control,
            work_dir: dir,
        };
        let slot = &self.vm;
        let work = async {
            match step {
                Step::Deploy(d) => Some(vm_steps::deploy::run(&ctx, slot, d).await),
                Step::Boot(b) => vm_steps::boot::run(&ctx, slot, b, deadline).await,
                Step::Shell(s) => {
                    let env = self.env(index, &s.env);
                    vm_steps::guest::run(&ctx, slot, &s.run, env, deadline).await
                }
                Step::Test(t) => {
                    let env = self.env(index, &t.env);
                    let script = testfarm_core::test_step::script(t);
                    vm_steps::guest::run(&ctx, slot, &script, env, deadline).await
                }
                other => Some(vm_steps::End::error(format!(
                    "a {} step is not a VM step",
                    other.kind()
                ))),
            }
        };
        // Boot and guest commands watch the signal and deadline themselves (they must
        // keep consoles and cancel in the guest); this bounds the rest (downloads).
        let end = tokio::select! {
            e = work => e?,
            _ = sleep_until(deadline.map(|d| d + Duration::from_secs(10))) => {
                vm_steps::End { outcome: Outcome::TimedOut, reason: Some(timed_out(())), exit_code: None }
            }
            _ = control.reached(Signal::Cancel), if matches!(step, Step::Deploy(_)) => {
                if control.get() == Signal::Drop {
                    return None;
                }
                vm_steps::End { outcome: Outcome::Cancelled, reason: Some("cancelled".into()), exit_code: None }
            }
        };
        let end = match end {
            // The guest's own time limit is the step's.
            vm_steps::End {
                outcome: Outcome::TimedOut,
                exit_code,
                ..
            } => vm_steps::End {
                outcome: Outcome::TimedOut,
                reason: Some(timed_out(())),
                exit_code,
            },
            other => other,
        };
        Some(StepResult {
            outcome: end.outcome,
            exit_code: end.exit_code,
            reason: end.reason,
            build: None,
        })
    }

    pub(crate) fn env(
        &self,
        index: u32,
        step_env: &BTreeMap<String, String>,
    ) -> BTreeMap<String, String> {
        let job = self.job;
        let mut env = BTreeMap::new();
        for (k, v) in &job.vars {
            if is_env_name(k) {
                let v = match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                env.insert(k.clone(), v);
            }
        }
        let dir = match &self.dir {
            WorkDir::Local(d) => d.display().to_string(),
            WorkDir::Remote(d) => d.clone(),
        };
        for (k, v) in [
            ("TESTFARM_JOB_ID", job.job_id.clone()),
            ("TESTFARM_JOB_NAME", job.spec.name.clone()),
            ("TESTFARM_LEASE_ID", job.lease_id.clone()),
            ("TESTFARM_RESOURCE", job.resource.clone()),
            ("TESTFARM_STEP", index.to_string()),
            ("TESTFARM_WORK_DIR", dir),
        ] {
            env.insert(k.to_string(), v);
        }
        for (k, v) in step_env {
            if is_env_name(k) {
                env.insert(k.clone(), v.clone());
            }
        }
        env
    }

    async fn shell(
        &self,
        index: u32,
        s: &ShellStep,
        deadline: Option<Instant>,
        control: &JobControl,
        timed_out: impl Fn(()) -> String,
    ) -> Option<StepResult> {
        let env = self.env(index, &s.env);
        let file = format!(".testfarm/step-{index}.sh");
        self.shell_as(&file, s, env, deadline, control, timed_out)
            .await
    }

    /// Runs `s` as the script `file` (relative to the work directory) with `env`.
    pub(crate) async fn shell_as(
        &self,
        file: &str,
        s: &ShellStep,
        env: BTreeMap<String, String>,
        deadline: Option<Instant>,
        control: &JobControl,
        timed_out: impl Fn(()) -> String,
    ) -> Option<StepResult> {
        let script = if s.run.ends_with('\n') {
            s.run.clone()
        } else {
            format!("{}\n", s.run)
        };
        let grace = self.settings.kill_grace;
        let (end, remote) = match (&self.dir, self.target) {
            (WorkDir::Local(dir), _) => {
                if !dir.is_dir() {
                    return Some(StepResult::new(
                        Outcome::Error,
                        format!("the work directory {} is missing", dir.display()),
                    ));
                }
                let path = dir.join(file);
                if let Err(e) = write_script(&path, &script) {
                    return Some(StepResult::new(
                        Outcome::Error,
                        format!("cannot write the step's script {}: {e}", path.display()),
                    ));
                }
                let mut end;
                let mut tries = 0;
                loop {
                    let mut cmd = shell::local_command(&path, &script);
                    cmd.current_dir(dir).envs(&env);
                    end = shell::run_process(
                        cmd,
                        self.log,
                        deadline,
                        control,
                        grace,
                        false,
                        Some(&dir.join(PGID_FILE)),
                    )
                    .await;
                    // ETXTBSY: another thread forked while the script was open for writing.
                    let busy =
                        matches!(&end, ProcessEnd::SpawnFailed(e) if e.raw_os_error() == Some(26));
                    tries += 1;
                    if !busy || tries >= 20 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                (end, false)
            }
            (WorkDir::Remote(dir), Target::Ssh(h)) => {
                let path = format!("{dir}/{file}");
                let put = format!(
                    "mkdir -p {q}/.testfarm && cat > {p} && chmod 755 {p}",
                    q = shell_quote(dir),
                    p = shell_quote(&path)
                );
                let copy = h
                    .run_ok(&put, script.as_bytes(), Duration::from_secs(120))
                    .await;
                if let Err(e) = copy {
                    return Some(StepResult::new(
                        Outcome::Error,
                        format!("cannot copy the step's script to the host: {e}"),
                    ));
                }
                let wrapper = shell::remote_wrapper(dir, file, &script, &env, grace);
                let cmd = h.command(&wrapper);
                let end =
                    shell::run_process(cmd, self.log, deadline, control, grace, true, None).await;
                (end, true)
            }
            (WorkDir::Remote(_), Target::Local | Target::Board(_)) => {
                return Some(StepResult::new(
                    Outcome::Error,
                    "no remote host".to_string(),
                ));
            }
        };
        Some(match end {
            ProcessEnd::Exited(status) => {
                use std::os::unix::process::ExitStatusExt;
                match (status.code(), status.signal()) {
                    (Some(0), _) => StepResult::new(Outcome::Passed, None),
                    (Some(255), _) if remote => StepResult {
                        outcome: Outcome::Error,
                        exit_code: Some(255),
                        reason: Some(
                            "ssh failed or the connection to the host was lost (see the log)"
                                .into(),
                        ),
                        build: None,
                    },
                    (Some(shell::REMOTE_CANNOT_RUN), _) if remote => StepResult {
                        outcome: Outcome::Error,
                        exit_code: Some(shell::REMOTE_CANNOT_RUN),
                        reason: Some("the host could not run the script (see the log)".into()),
                        build: None,
                    },
                    (Some(c), _) => StepResult {
                        outcome: Outcome::Failed,
                        exit_code: Some(c),
                        reason: Some(format!("exit status {c}")),
                        build: None,
                    },
                    (None, Some(sig)) => {
                        StepResult::new(Outcome::Failed, format!("killed by signal {sig}"))
                    }
                    (None, None) => {
                        StepResult::new(Outcome::Failed, "ended without a status".to_string())
                    }
                }
            }
            ProcessEnd::SpawnFailed(e) => {
                let reason = match shell::shebang(&script) {
                    Some(interp) if e.kind() == std::io::ErrorKind::NotFound => {
                        format!("cannot run the script: interpreter {interp} not found")
                    }
                    _ if remote => format!("cannot run ssh: {e}"),
                    _ => format!("cannot run the script: {e}"),
                };
                StepResult::new(Outcome::Error, reason)
            }
            ProcessEnd::TimedOut => StepResult::new(Outcome::TimedOut, timed_out(())),
            ProcessEnd::Cancelled => StepResult::new(Outcome::Cancelled, "cancelled".to_string()),
            ProcessEnd::Dropped => return None,
        })
    }

    async fn upload(&self, u: &UploadStep, control: &JobControl) -> Option<StepResult> {
        let files = match self.list().await {
            Ok(f) => f,
            Err(e) => return Some(StepResult::new(Outcome::Error, e)),
        };
        let matched: Vec<&String> = files
            .iter()
            .filter(|f| !upload::is_internal(f) && upload::glob_match(&u.path, f))
            .collect();
        if matched.is_empty() {
            return Some(StepResult::new(
                Outcome::Failed,
                format!("no file matches {:?}", u.path),
            ));
        }
        for rel in &matched {
            let name = upload::output_name(u.name.as_deref(), rel, matched.len());
            let body = match self.read(rel).await {
                Ok(b) => b,
                Err(e) => return Some(StepResult::new(Outcome::Error, e)),
            };
            let size = body.len();
            match self.reporter.output(&name, body).await {
                Ok(()) => {
                    self.log
                        .note(&format!("uploaded {rel} as {name} ({size} bytes)"))
                        .await;
                }
                Err(ReportError::Stale(_)) => {
                    control.drop_job();
                    return None;
                }
                Err(ReportError::Failed(e)) => {
                    return Some(StepResult::new(
                        Outcome::Error,
                        format!("cannot store {rel} as {name}: {e}"),
                    ));
                }
            }
        }
        Some(StepResult::new(Outcome::Passed, None))
    }

    /// Files in the work directory, relative.
    pub(crate) async fn list(&self) -> Result<Vec<String>, String> {
        match (&self.dir, self.target) {
            (WorkDir::Local(d), _) => upload::list_files(d)
                .map_err(|e| format!("cannot list the work directory {}: {e}", d.display())),
            (WorkDir::Remote(d), Target::Ssh(h)) => {
                let cmd = format!("cd {} && find . -type f", shell_quote(d));
                let out = h
                    .run_ok(&cmd, b"", Duration::from_secs(120))
                    .await
                    .map_err(|e| format!("cannot list the remote work directory: {e}"))?;
                let mut v: Vec<String> = String::from_utf8_lossy(&out)
                    .lines()
                    .map(|l| l.trim_start_matches("./").to_string())
                    .filter(|l| !l.is_empty())
                    .collect();
                v.sort();
                Ok(v)
            }
            _ => Err("no remote host".into()),
        }
    }

    pub(crate) async fn read(&self, rel: &str) -> Result<Bytes, String> {
        match (&self.dir, self.target) {
            (WorkDir::Local(d), _) => tokio::fs::read(d.join(rel))
                .await
                .map(Bytes::from)
                .map_err(|e| format!("cannot read {rel}: {e}")),
            (WorkDir::Remote(d), Target::Ssh(h)) => {
                let cmd = format!("cat {}", shell_quote(&format!("{d}/{rel}")));
                h.run_ok(&cmd, b"", Duration::from_secs(600))
                    .await
                    .map(Bytes::from)
                    .map_err(|e| format!("cannot read {rel} on the host: {e}"))
            }
            _ => Err("no remote host".into()),
        }
    }
}

fn write_script(path: &std::path::Path, script: &str) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, script)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
}

fn step_timeout(step: &Step) -> Option<Duration> {
    match step {
        Step::Shell(s) => s.timeout.map(|t| t.get()),
        Step::Test(t) => t.timeout.map(|t| t.get()),
        Step::Build(b) => b.timeout.map(|t| t.get()),
        Step::Deploy(d) => d.timeout.map(|t| t.get()),
        // Per attempt: the step may take every attempt's, each with time to start QEMU.
        Step::Boot(b) => Some(
            (b.timeout
                .map(|t| t.get())
                .unwrap_or(crate::vm_steps::boot::DEFAULT_BOOT_TIMEOUT)
                + crate::vm_steps::boot::START_ALLOWANCE)
                .saturating_mul(b.retries + 1),
        ),
        Step::Http(h) => h.timeout.map(|t| t.get()),
        Step::WaitFor(w) => Some(w.timeout.get()),
        Step::Sleep(_) | Step::Upload(_) | Step::FailIf(_) => None,
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

async fn sleep_until(d: Option<Instant>) {
    match d {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn is_env_name(k: &str) -> bool {
    !k.is_empty()
        && !k.starts_with(|c: char| c.is_ascii_digit())
        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

pub fn outcome_word(o: Outcome) -> &'static str {
    match o {
        Outcome::Passed => "passed",
        Outcome::Failed => "failed",
        Outcome::Error => "error",
        Outcome::TimedOut => "timed_out",
        Outcome::Cancelled => "cancelled",
        Outcome::Skipped => "skipped",
    }
}
