//! The agent loop: register, heartbeat, long-poll for work, run it, report it.
//!
//! Three concurrent parts share one table of running jobs:
//! - the heartbeat task sends load and running work every interval, and obeys the
//!   server's `drop` and `cancel` lists;
//! - the work loop long-polls `GET /agents/work` and starts a task per assignment;
//! - each job task starts the job, renews its lease every `renew_every_ms`, runs the
//!   [`executor`](crate::executor), ships the log, and finishes it.
//!
//! Registration is idempotent (by name) and carries the work this agent believes it runs,
//! including what a previous life of the process left in `<work_dir>/running`, so the
//! server can reconcile after either side restarts. Work left by a previous life cannot be
//! resumed: its process groups are killed and it is finished `error`, unless the server
//! said to drop it.
//!
//! [`run`] is the whole agent; `testfarm agent` calls it, and `testfarm server` runs the
//! built-in local agent through it in-process.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use testfarm_api::agent::{
    AgentResource, Assignment, FinishRequest, Heartbeat, Outcome, RegisterRequest,
    RegisterResponse, ResourceMetrics, RunningWork, StepReport,
};
use testfarm_api::artifact::{Artifact, Build, CreateBuild};
use testfarm_api::resource::{Capabilities, Labels, ResourceKind};

use crate::board::{BoardHandle, BoardTarget};
use crate::client::{Client, ClientError};
use crate::config::{AgentConfig, ConfigError};
use crate::control::{JobControl, Signal};
use crate::detect::{self, Detected};
use crate::executor::{self, ArtifactUpload, ExecSettings, JobRun, ReportError, Reporter, Target};
use crate::logs::{self, ClientSink};
use crate::metrics::{CpuTimes, LocalSampler};
use crate::ssh::{SshError, SshHost};

/// Why the agent stopped (it does not stop for transient trouble: it retries).
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("the server refused this agent: {0}")]
    Refused(ClientError),
    #[error("no resource could be registered: {0}")]
    NoResources(String),
    #[error("cannot use the work directory {}: {source}", .path.display())]
    WorkDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Client(#[from] ClientError),
}

/// One resource this agent manages, with where its work runs.
#[derive(Debug, Clone)]
pub struct Managed {
    pub resource: AgentResource,
    pub target: Target,
}

/// The result of measuring one configured resource: registered, or why not.
#[derive(Debug, Clone)]
pub struct Probed {
    pub name: String,
    pub result: Result<Managed, String>,
}

/// Measures every configured resource (this host, boards, SSH hosts). SSH hosts that cannot
/// be reached or lack a configured toolchain come back as errors that say why; `[[board]]`
/// boards are verified (power status, console) and always come back registrable, with an
/// `offline_reason` when they cannot be reached (`testfarm agent --check` shows it).
pub async fn probe_all(config: &AgentConfig) -> Vec<Probed> {
    let mut out = Vec::new();
    let mut triples: Vec<String> = config
        .resources
        .iter()
        .flat_map(|r| r.targets.clone())
        .collect();
    triples.sort();
    triples.dedup();
    let host_resources = config
        .resources
        .iter()
        .any(|r| r.kind != ResourceKind::Board);
    let local = if host_resources {
        Some(detect::detect_local(&config.work_dir, &triples).await)
    } else {
        None
    };
    for r in &config.resources {
        let name = config.resource_name(r);
        let result = match (r.kind, &local) {
            (ResourceKind::Board, _) => {
                let mut labels = r.labels.clone();
                if let Some(arch) = &r.arch
                    && labels.get("arch").is_none()
                {
                    labels.insert("arch", arch.clone());
                }
                Ok(Managed {
                    resource: AgentResource {
                        name: name.clone(),
                        kind: ResourceKind::Board,
                        labels,
                        capabilities: Capabilities {
                            arch: r.arch.clone(),
                            peripherals: r.peripherals.clone(),
                            ..Capabilities::default()
                        },
                        board: r.board.clone(),
                        offline_reason: None,
                        verification: Vec::new(),
                        quarantine: None,
                    },
                    target: Target::Local,
                })
            }
            (kind, Some(d)) => {
                let missing: Vec<&String> = r
                    .targets
                    .iter()
                    .filter(|t| d.missing_targets.contains(t))
                    .collect();
                if missing.is_empty() {
                    let mut d = d.clone();
                    d.targets.retain(|t| r.targets.contains(t));
                    Ok(Managed {
                        resource: host_resource(&name, kind, &d, &r.labels),
                        target: Target::Local,
                    })
                } else {
                    Err(format!(
                        "missing toolchain: {} not found on this host",
                        missing
                            .iter()
                            .map(|t| format!("{t}-gcc"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                }
            }
            (_, None) => Err("this host was not measured".into()),
        };
        out.push(Probed { name, result });
    }
    // Boards with drivers: verified (power status, console) and registered with what was
    // found; an unreachable one is registered offline with the reason, never dropped.
    let boards: Vec<Arc<BoardHandle>> = config
        .boards
        .0
        .iter()
        .cloned()
        .map(|c| Arc::new(BoardHandle::new(c)))
        .collect();
    for (b, resource) in boards
        .iter()
        .zip(crate::board::register::verify_all(&boards).await)
    {
        out.push(Probed {
            name: b.name().to_string(),
            result: Ok(Managed {
                resource,
                target: Target::Board(BoardTarget(b.clone())),
            }),
        });
    }
    let probes = config.ssh_hosts.iter().cloned().map(|h| async move {
        let host = SshHost::new(h.clone());
        let result = host
            .probe()
            .await
            .map(|d| Managed {
                resource: host_resource(&h.name, h.kind, &d, &h.labels),
                target: Target::Ssh(host.clone()),
            })
            .map_err(|e: SshError| e.to_string());
        Probed {
            name: h.name.clone(),
            result,
        }
    });
    out.extend(futures_join_all(probes).await);
    out
}

/// Runs futures concurrently, keeping order (a small join_all, to avoid a dependency).
async fn futures_join_all<F: Future + Send + 'static>(
    futs: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        if let Ok(v) = h.await {
            out.push(v);
        }
    }
    out
}

fn host_resource(name: &str, kind: ResourceKind, d: &Detected, labels: &Labels) -> AgentResource {
    let mut all = d.labels();
    for (k, v) in &labels.0 {
        all.insert(k.clone(), v.clone());
    }
    AgentResource {
        name: name.to_string(),
        kind,
        labels: all,
        capabilities: d.capabilities(),
        board: None,
        offline_reason: None,
        verification: Vec::new(),
        quarantine: None,
    }
}

/// A job this agent is running.
#[derive(Debug, Clone)]
struct RunningJob {
    work: RunningWork,
    resource: String,
    control: JobControl,
}

/// What the loop's parts share.
struct Shared {
    config: AgentConfig,
    client: Client,
    managed: std::sync::RwLock<HashMap<String, Managed>>,
    running: Mutex<HashMap<String, RunningJob>>,
    settings: ExecSettings,
    stopping: std::sync::atomic::AtomicBool,
}

impl Shared {
    /// A snapshot of the managed resources.
    fn managed(&self) -> Vec<(String, Managed)> {
        let m = self.managed.read().unwrap_or_else(|e| e.into_inner());
        m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    fn managed_get(&self, name: &str) -> Option<Managed> {
        let m = self.managed.read().unwrap_or_else(|e| e.into_inner());
        m.get(name).cloned()
    }

    fn running_work(&self) -> Vec<RunningWork> {
        self.lock_running()
            .values()
            .map(|r| r.work.clone())
            .collect()
    }

    fn lock_running(&self) -> std::sync::MutexGuard<'_, HashMap<String, RunningJob>> {
        // A panic while holding this lock leaves a consistent map: recover it.
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn state_dir(&self) -> PathBuf {
        self.config.work_dir.join("running")
    }

    fn persist(&self, work: &RunningWork) {
        let path = self.state_dir().join(format!("{}.json", work.job_id));
        let body = serde_json::to_vec(work).unwrap_or_default();
        if let Err(e) = std::fs::write(&path, body) {
            tracing::warn!(path = %path.display(), error = %e, "cannot record running work");
        }
    }

    fn forget(&self, job_id: &str) {
        let _ = std::fs::remove_file(self.state_dir().join(format!("{job_id}.json")));
    }
}

/// Runs the agent until `shutdown` resolves. Transient trouble (server down, connection
/// cut) is retried with backoff; a refused token, an unusable work directory or no
/// registrable resource stops it with an error.
pub async fn run(
    config: AgentConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    let token = config.read_token()?;
    let client = Client::new(&config.url, &token)?;
    for dir in [
        config.work_dir.join("jobs"),
        config.work_dir.join("running"),
    ] {
        std::fs::create_dir_all(&dir).map_err(|source| AgentError::WorkDir {
            path: dir.clone(),
            source,
        })?;
    }
    let probed = probe_all(&config).await;
    let mut managed = HashMap::new();
    let mut failures = Vec::new();
    let mut unreachable = Vec::new();
    for p in probed {
        match p.result {
            Ok(m) => {
                managed.insert(p.name, m);
            }
            Err(e) => {
                tracing::error!(resource = %p.name, error = %e, "resource not registered");
                failures.push(format!("{}: {e}", p.name));
                if let Some(h) = config.ssh_hosts.iter().find(|h| h.name == p.name) {
                    unreachable.push(h.clone());
                }
            }
        }
    }
    let boards: Vec<Arc<BoardHandle>> = managed
        .values()
        .filter_map(|m| match &m.target {
            Target::Board(b) => Some(b.0.clone()),
            _ => None,
        })
        .collect();
    if managed.is_empty() {
        return Err(AgentError::NoResources(if failures.is_empty() {
            "none configured".into()
        } else {
            failures.join("; ")
        }));
    }
    let settings = ExecSettings {
        work_dir: config.work_dir.clone(),
        kill_grace: config.kill_grace.0,
        always_timeout: config.always_timeout.0,
        keep_work_dirs: config.keep_work_dirs,
    };
    let shared = Arc::new(Shared {
        client,
        managed: std::sync::RwLock::new(managed),
        running: Mutex::new(HashMap::new()),
        settings,
        stopping: std::sync::atomic::AtomicBool::new(false),
        config,
    });
    let mut shutdown = std::pin::pin!(shutdown);

    // Work a previous life of this agent left behind.
    let leftover = leftover_work(&shared.state_dir());
    for w in &leftover {
        kill_leftover_group(&shared.settings.work_dir, &w.job_id);
    }

    let registered = tokio::select! {
        r = register(&shared, &leftover) => r?,
        _ = &mut shutdown => return Ok(()),
    };
    tracing::info!(
        agent = %registered.agent,
        resources = shared.managed().len(),
        "registered"
    );
    for w in leftover {
        if !registered.drop.contains(&w.job_id) {
            let finish = FinishRequest {
                epoch: w.epoch,
                outcome: Outcome::Error,
                reason: Some(
                    "the agent restarted while the job ran; its processes were killed".into(),
                ),
                log_chunks: 0,
            };
            if let Err(e) = shared.client.finish(&w.job_id, &finish).await {
                tracing::warn!(job = %w.job_id, error = %e, "cannot finish work left by a previous run");
            }
        }
        shared.forget(&w.job_id);
    }

    let interval = shared
        .config
        .heartbeat_interval
        .map(|h| h.0)
        .unwrap_or(Duration::from_millis(
            registered.heartbeat_interval_ms.max(100),
        ));
    let heartbeat = tokio::spawn(heartbeat_loop(shared.clone(), interval));
    let reprobe = tokio::spawn(reprobe_loop(shared.clone(), unreachable));
    let probes: Vec<_> = boards
        .iter()
        .map(|b| {
            tokio::spawn(crate::board::health::idle_probe_loop(
                b.clone(),
                shared.client.clone(),
            ))
        })
        .collect();
    let mut actions = tokio::task::JoinSet::new();
    let answered = Arc::new(Mutex::new(ActionLedger::default()));
    let mut jobs = tokio::task::JoinSet::new();
    let mut backoff = Duration::from_millis(200);
    loop {
        let poll = tokio::select! {
            r = shared.client.work(Duration::from_secs(30)) => r,
            _ = &mut shutdown => break,
        };
        match poll {
            Ok(w) => {
                backoff = Duration::from_millis(200);
                for action in w.board_actions {
                    let fresh = answered
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .take(&action.id);
                    if fresh {
                        actions.spawn(board_action(shared.clone(), action));
                    }
                }
                while actions.try_join_next().is_some() {}
                for a in w.assignments {
                    if shared.lock_running().contains_key(&a.job_id) {
                        continue;
                    }
                    let control = JobControl::new();
                    let work = RunningWork {
                        job_id: a.job_id.clone(),
                        lease_id: a.lease_id.clone(),
                        epoch: a.epoch,
                    };
                    shared.persist(&work);
                    shared.lock_running().insert(
                        a.job_id.clone(),
                        RunningJob {
                            work,
                            resource: a.resource.clone(),
                            control: control.clone(),
                        },
                    );
                    jobs.spawn(run_job(shared.clone(), a, control));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "polling for work failed");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = &mut shutdown => break,
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
        while jobs.try_join_next().is_some() {}
    }
    // Stopping: running jobs end `error` (the lab stopped them), bounded in time.
    shared
        .stopping
        .store(true, std::sync::atomic::Ordering::SeqCst);
    for r in shared.lock_running().values() {
        r.control.cancel();
    }
    let bound = shared.settings.kill_grace + Duration::from_secs(20);
    if tokio::time::timeout(bound, async { while jobs.join_next().await.is_some() {} })
        .await
        .is_err()
    {
        for r in shared.lock_running().values() {
            r.control.drop_job();
        }
        let _ = tokio::time::timeout(Duration::from_secs(3), async {
            while jobs.join_next().await.is_some() {}
        })
        .await;
    }
    heartbeat.abort();
    reprobe.abort();
    for p in probes {
        p.abort();
    }
    actions.abort_all();
    for b in &boards {
        b.hub.detach();
    }
    Ok(())
}

/// Board actions being handled or answered lately: the work poll may hand an action out
/// again before its answer lands, and each is answered exactly once.
#[derive(Default)]
struct ActionLedger {
    seen: std::collections::VecDeque<String>,
}

impl ActionLedger {
    const KEEP: usize = 1024;

    /// True the first time an id is seen.
    fn take(&mut self, id: &str) -> bool {
        if self.seen.iter().any(|s| s == id) {
            return false;
        }
        if self.seen.len() == Self::KEEP {
            self.seen.pop_front();
        }
        self.seen.push_back(id.to_string());
        true
    }
}

/// Handles one board action and answers it (retrying transient failures).
async fn board_action(shared: Arc<Shared>, action: testfarm_api::board::BoardAction) {
    let result = match shared.managed_get(&action.board) {
        Some(Managed {
            target: Target::Board(b),
            ..
        }) => {
            crate::board::actions::handle(&b.0, &action, &shared.client, Some(&shared.client)).await
        }
        Some(m) if m.resource.kind == ResourceKind::Board => {
            crate::board::actions::without_drivers(&action)
        }
        _ => testfarm_api::board::BoardActionResult {
            ok: false,
            power: None,
            detail: format!("{} is not a board of this agent", action.board),
            operator_action_needed: false,
        },
    };
    tracing::info!(board = %action.board, action = action.action.as_str(), ok = result.ok, detail = %result.detail, "board action");
    let client = &shared.client;
    if let Err(e) = retrying(
        || client.board_action_result(&action.id, &result),
        REPORT_RETRY_FOR,
    )
    .await
    {
        tracing::warn!(action = %action.id, error = %e, "board action result not delivered");
    }
}

/// Registers until it succeeds; only a refusal (bad token, forbidden) is final.
async fn register(
    shared: &Shared,
    leftover: &[RunningWork],
) -> Result<RegisterResponse, AgentError> {
    let req = RegisterRequest {
        version: env!("CARGO_PKG_VERSION").to_string(),
        hostname: hostname(),
        resources: shared
            .managed()
            .into_iter()
            .map(|(_, m)| m.resource)
            .collect(),
        running: leftover.to_vec(),
    };
    let mut backoff = Duration::from_millis(200);
    loop {
        match shared.client.register(&req).await {
            Ok(r) => return Ok(r),
            Err(e) if e.is_retryable() => {
                tracing::warn!(error = %e, "registration failed, retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
            Err(e) => return Err(AgentError::Refused(e)),
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

fn leftover_work(dir: &Path) -> Vec<RunningWork> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|b| serde_json::from_slice(&b).ok())
        .collect()
}

/// Kills the process group a previous life of the agent recorded for a job.
fn kill_leftover_group(work_dir: &Path, job_id: &str) {
    let f = work_dir.join("jobs").join(job_id).join(executor::PGID_FILE);
    if let Some(pgid) = std::fs::read_to_string(f)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .filter(|p| *p > 1)
    {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pgid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Probes SSH hosts that failed at start again every `reprobe_interval`, and registers
/// each one that answers: a host down when the agent started joins when it comes up.
async fn reprobe_loop(shared: Arc<Shared>, mut hosts: Vec<crate::config::SshHostConfig>) {
    let every = shared.config.reprobe_interval.0;
    while !hosts.is_empty() {
        tokio::time::sleep(every).await;
        let mut joined = false;
        let mut still = Vec::new();
        for h in hosts {
            let host = SshHost::new(h.clone());
            match host.probe().await {
                Ok(d) => {
                    tracing::info!(resource = %h.name, "ssh host reachable now");
                    let m = Managed {
                        resource: host_resource(&h.name, h.kind, &d, &h.labels),
                        target: Target::Ssh(host),
                    };
                    shared
                        .managed
                        .write()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(h.name.clone(), m);
                    joined = true;
                }
                Err(e) => {
                    tracing::warn!(resource = %h.name, error = %e, "ssh host still not registered");
                    still.push(h);
                }
            }
        }
        hosts = still;
        if joined {
            match register(&shared, &shared.running_work()).await {
                Ok(r) => {
                    let running = shared.lock_running();
                    for id in &r.drop {
                        if let Some(j) = running.get(id) {
                            j.control.drop_job();
                        }
                    }
                }
                Err(e) => tracing::error!(error = %e, "re-registration refused"),
            }
        }
    }
}

async fn heartbeat_loop(shared: Arc<Shared>, interval: Duration) {
    let mut local = LocalSampler::new(&shared.config.work_dir);
    let mut remote_cpu: HashMap<String, Option<CpuTimes>> = HashMap::new();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let per_resource: HashMap<String, u32> = {
            let mut m = HashMap::new();
            for r in shared.lock_running().values() {
                *m.entry(r.resource.clone()).or_insert(0) += 1;
            }
            m
        };
        let load = local.sample();
        let mut metrics: Vec<ResourceMetrics> = Vec::new();
        for (name, m) in &shared.managed() {
            let jobs = per_resource.get(name).copied().unwrap_or(0);
            match &m.target {
                Target::Local | Target::Board(_) => metrics.push(load.for_resource(name, jobs)),
                Target::Ssh(h) => {
                    let last = remote_cpu.entry(name.clone()).or_insert(None);
                    match tokio::time::timeout(interval.max(Duration::from_secs(2)), h.load(last))
                        .await
                    {
                        Ok(Ok(l)) => metrics.push(l.for_resource(name, jobs)),
                        Ok(Err(e)) => {
                            tracing::warn!(resource = %name, error = %e, "cannot measure")
                        }
                        Err(_) => tracing::warn!(resource = %name, "measuring over ssh timed out"),
                    }
                }
            }
        }
        let hb = Heartbeat {
            metrics,
            running: shared.running_work(),
        };
        match shared.client.heartbeat(&hb).await {
            Ok(resp) => {
                let running = shared.lock_running();
                for id in &resp.drop {
                    if let Some(r) = running.get(id) {
                        tracing::warn!(job = %id, "the server says drop this job");
                        r.control.drop_job();
                    }
                }
                for id in &resp.cancel {
                    if let Some(r) = running.get(id) {
                        tracing::info!(job = %id, "cancel requested");
                        r.control.cancel();
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
        }
    }
}

/// Reports steps and outputs through the client, retrying transient failures.
struct ClientReporter {
    client: Client,
    job_id: String,
    epoch: u64,
}

/// How long a report is retried before the agent gives up on it (the job's finish
/// still tells the server how it ended).
const REPORT_RETRY_FOR: Duration = Duration::from_secs(60);

async fn retrying<T, F, Fut>(mut f: F, for_: Duration) -> Result<T, ClientError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ClientError>>,
{
    let start = tokio::time::Instant::now();
    let mut backoff = Duration::from_millis(100);
    loop {
        match f().await {
            Err(e) if e.is_retryable() && start.elapsed() < for_ => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            other => return other,
        }
    }
}

fn report_error(e: ClientError) -> ReportError {
    match e {
        ClientError::StaleEpoch(d) => ReportError::Stale(d),
        other => ReportError::Failed(other.to_string()),
    }
}

impl Reporter for ClientReporter {
    async fn step(&self, report: StepReport) -> Result<(), ReportError> {
        retrying(|| self.client.step(&self.job_id, &report), REPORT_RETRY_FOR)
            .await
            .map_err(report_error)
    }

    async fn output(&self, name: &str, body: Bytes) -> Result<(), ReportError> {
        retrying(
            || {
                self.client
                    .put_output(&self.job_id, name, self.epoch, body.clone())
            },
            REPORT_RETRY_FOR,
        )
        .await
        .map_err(report_error)
    }

    async fn create_build(&self, req: CreateBuild) -> Result<Build, ReportError> {
        retrying(|| self.client.create_build(&req), REPORT_RETRY_FOR)
            .await
            .map_err(report_error)
    }

    async fn put_artifact(
        &self,
        build: &str,
        file: ArtifactUpload,
    ) -> Result<Artifact, ReportError> {
        // A 409 here is "that name holds other bytes", not a stale lease: a step error.
        retrying(|| self.client.put_artifact(build, &file), REPORT_RETRY_FOR)
            .await
            .map_err(|e| ReportError::Failed(e.to_string()))
    }

    fn client(&self) -> Option<&Client> {
        Some(&self.client)
    }
}

async fn run_job(shared: Arc<Shared>, a: Assignment, control: JobControl) {
    let job_id = a.job_id.clone();
    run_job_inner(&shared, a, &control).await;
    shared.lock_running().remove(&job_id);
    shared.forget(&job_id);
}

async fn run_job_inner(shared: &Shared, a: Assignment, control: &JobControl) {
    let client = &shared.client;
    let forever = Duration::from_secs(u64::MAX / 4);
    match retrying(|| client.start(&a.job_id, a.epoch), forever).await {
        Ok(()) => {}
        Err(ClientError::StaleEpoch(_)) => return,
        Err(e) => {
            tracing::warn!(job = %a.job_id, error = %e, "cannot start the job");
            return;
        }
    }
    // Renew the lease while the job runs; a refusal means it is gone: drop the work.
    let renew = {
        let (client, lease, epoch, control) =
            (client.clone(), a.lease_id.clone(), a.epoch, control.clone());
        let every = Duration::from_millis(a.renew_every_ms.max(100));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                match client.renew(&lease, epoch).await {
                    Ok(()) => {}
                    Err(ClientError::StaleEpoch(d)) => {
                        tracing::warn!(%lease, detail = %d, "lease renewal refused: dropping the job");
                        control.drop_job();
                        return;
                    }
                    Err(e) => tracing::warn!(%lease, error = %e, "lease renewal failed"),
                }
            }
        })
    };
    let sink = ClientSink {
        client: client.clone(),
        job_id: a.job_id.clone(),
        epoch: a.epoch,
    };
    let (log, shipper) = logs::spawn(sink, control.clone());
    let result = match (JobRun::from_assignment(&a), shared.managed_get(&a.resource)) {
        (Err(reason), _) => Some(executor::JobResult {
            outcome: Outcome::Error,
            reason: Some(reason),
        }),
        (Ok(_), None) => Some(executor::JobResult {
            outcome: Outcome::Error,
            reason: Some(format!(
                "resource {} is not managed by this agent",
                a.resource
            )),
        }),
        (Ok(job), Some(m)) => {
            let reporter = ClientReporter {
                client: client.clone(),
                job_id: a.job_id.clone(),
                epoch: a.epoch,
            };
            executor::execute(&job, &shared.settings, &m.target, &reporter, &log, control).await
        }
    };
    renew.abort();
    let Some(mut result) = result.filter(|_| control.get() != Signal::Drop) else {
        shipper.abort();
        return;
    };
    if let Some(reason) = &result.reason
        && result.outcome == Outcome::Error
    {
        log.note(reason).await;
    }
    if shared.stopping.load(std::sync::atomic::Ordering::SeqCst)
        && result.outcome == Outcome::Cancelled
    {
        result = executor::JobResult {
            outcome: Outcome::Error,
            reason: Some("the agent was stopped while the job ran".into()),
        };
    }
    drop(log);
    let chunks = match shipper.finish().await {
        Ok(stats) => stats.chunks,
        Err(logs::ShipError::Stale { .. }) => return,
        Err(e @ logs::ShipError::Refused { seq, .. }) => {
            tracing::warn!(job = %a.job_id, error = %e, "log shipping refused");
            seq
        }
    };
    let finish = FinishRequest {
        epoch: a.epoch,
        outcome: result.outcome,
        reason: result.reason,
        log_chunks: chunks,
    };
    match retrying(|| client.finish(&a.job_id, &finish), forever).await {
        Ok(()) => {}
        Err(ClientError::StaleEpoch(_)) => {}
        Err(e) => tracing::warn!(job = %a.job_id, error = %e, "cannot finish the job"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn probing_this_host_and_a_board() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "url = \"http://127.0.0.1:1\"\nname = \"t1\"\nwork_dir = \"{}\"\n\
             [[resource]]\nkind = \"build-server\"\nlabels = {{ team = \"k\" }}\n\
             [[resource]]\nkind = \"build-server\"\nname = \"t1-cross\"\ntargets = [\"no-such-triple\"]\n\
             [[resource]]\nkind = \"board\"\nname = \"b1\"\narch = \"arm64\"\nperipherals = [\"can0\"]\n",
            dir.path().display()
        );
        let c = AgentConfig::parse(Path::new("a.toml"), &text).unwrap();
        let p = probe_all(&c).await;
        assert_eq!(p.len(), 3);
        let build = p[0].result.as_ref().unwrap();
        assert_eq!(build.resource.name, "t1-build");
        assert_eq!(build.resource.labels.get("team"), Some("k"));
        assert!(build.resource.capabilities.cpus.is_some());
        let e = p[1].result.as_ref().unwrap_err();
        assert!(e.contains("missing toolchain: no-such-triple-gcc"), "{e}");
        let board = p[2].result.as_ref().unwrap();
        assert_eq!(board.resource.labels.get("arch"), Some("arm64"));
        assert_eq!(
            board.resource.capabilities.peripherals,
            vec!["can0".to_string()]
        );
    }

    #[test]
    fn leftover_work_is_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let w = RunningWork {
            job_id: "j1".into(),
            lease_id: "l1".into(),
            epoch: 3,
        };
        std::fs::write(dir.path().join("j1.json"), serde_json::to_vec(&w).unwrap()).unwrap();
        std::fs::write(dir.path().join("junk.json"), b"{").unwrap();
        assert_eq!(leftover_work(dir.path()), vec![w]);
    }
}
