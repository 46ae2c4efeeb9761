//! A pod: N VMs pulling tests from one queue. A VM whose guest crashes or stops answering is
//! killed and replaced, its test reported as `error` (the lab failed, not the test) with the
//! console tail, and the run goes on. Failed tests can be retried on another VM.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use testfarm_guest::protocol::DEFAULT_SHARE_DIR;
use testfarm_guest::protocol::v2::Exec;
use tokio::sync::mpsc;

use crate::agent::Agent;
use crate::error::{Result, VmError};
use crate::runtime_dir::RuntimeDir;
use crate::vm::{Vm, VmOptions};

/// Consecutive failed boots after which a worker gives up (the image is likely broken).
const MAX_BOOT_FAILURES: u32 = 2;

#[derive(Debug, Clone)]
pub struct PodOptions {
    pub size: usize,
    pub vm: VmOptions,
    /// Per-test timeout, enforced in the guest (v2) or by replacing the VM (v1).
    pub timeout: Duration,
    /// `--isolate test`: every test in a throw-away mount namespace and cgroup.
    pub isolate: bool,
    /// Extra attempts for a test that did not pass.
    pub retries: u32,
    /// Where the project tree is in the guest.
    pub guest_root: String,
    /// Stop starting tests after the first one that did not pass.
    pub fail_fast: bool,
}

impl PodOptions {
    pub fn new(size: usize, vm: VmOptions) -> PodOptions {
        PodOptions {
            size: size.max(1),
            vm,
            timeout: Duration::from_secs(60),
            isolate: false,
            retries: 0,
            guest_root: DEFAULT_SHARE_DIR.to_string(),
            fail_fast: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum TestOutcome {
    /// The script ran to its end; the TAP verdict decides pass or fail.
    Exited {
        code: Option<i32>,
        signal: Option<i32>,
    },
    TimedOut(Duration),
    /// The lab failed: the VM crashed, hung, or could not boot.
    Error(String),
}

/// One test script's final result (after retries). Serializable: warm pods send it over
/// their socket.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct TestResult {
    /// Relative to the project root, e.g. `t/01-sanity/api_test.sh`.
    pub path: String,
    pub vm: String,
    pub outcome: TestOutcome,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub duration: Duration,
    /// Guest kernel messages (console) written while the test ran.
    pub kernel_log: String,
    /// Last console lines, kept when the VM failed.
    pub console_tail: Option<String>,
    pub attempts: u32,
    /// Did not pass at first, passed on a retry.
    pub flaky: bool,
}

impl TestResult {
    /// The exit code the TAP verdict should see.
    pub fn exit_code(&self) -> Option<i32> {
        match self.outcome {
            TestOutcome::Exited { code, signal } => {
                Some(testfarm_guest::protocol::v1::exit_code_of(code, signal))
            }
            _ => None,
        }
    }

    pub fn passed(&self) -> bool {
        matches!(self.outcome, TestOutcome::Exited { .. })
            && testfarm_tap::Document::parse(&self.stdout)
                .summary(self.exit_code())
                .ok
    }
}

#[derive(Debug, Clone)]
struct Job {
    path: String,
    attempt: u32,
    last_vm: Option<String>,
    failed_before: bool,
}

struct Shared {
    opts: PodOptions,
    queue: Mutex<VecDeque<Job>>,
    seq: Arc<AtomicUsize>,
    dir: std::path::PathBuf,
    tx: mpsc::UnboundedSender<TestResult>,
    stop: std::sync::atomic::AtomicBool,
}

impl Shared {
    /// The next job, preferring one that did not last fail on `vm` (retries go elsewhere).
    fn pop(&self, vm: Option<&str>) -> Option<Job> {
        if self.stop.load(Ordering::SeqCst) {
            return None;
        }
        let mut q = self.queue.lock().ok()?;
        let i = q
            .iter()
            .position(|j| j.last_vm.is_none() || j.last_vm.as_deref() != vm)
            .unwrap_or(0);
        q.remove(i)
    }
}

/// A booted pod. Keep it across runs (warm pod) or shut it down after one.
pub struct Pod {
    opts: PodOptions,
    dir: RuntimeDir,
    vms: Vec<Option<Vm>>,
    seq: Arc<AtomicUsize>,
}

impl std::fmt::Debug for Pod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pod")
            .field("dir", &self.dir.path())
            .field("vms", &self.vm_names())
            .finish()
    }
}

async fn boot_named(seq: &AtomicUsize, dir: &RuntimeDir, opts: &VmOptions) -> Result<Vm> {
    let n = seq.fetch_add(1, Ordering::SeqCst) + 1;
    let name = format!("vm-{n}");
    let vm_dir = dir.subdir(&name)?;
    Vm::boot(&name, opts, &vm_dir).await
}

impl Pod {
    /// Boots `opts.size` VMs at once. Fails only if none boots.
    pub async fn start(opts: PodOptions, dir: RuntimeDir) -> Result<Pod> {
        let seq = Arc::new(AtomicUsize::new(0));
        let boots = (0..opts.size).map(|_| boot_named(&seq, &dir, &opts.vm));
        let results = futures::future::join_all(boots).await;
        let mut vms = Vec::new();
        let mut first_err = None;
        for r in results {
            match r {
                Ok(vm) => vms.push(Some(vm)),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if vms.is_empty() {
            return Err(first_err.unwrap_or_else(|| VmError::Config("empty pod".into())));
        }
        Ok(Pod {
            opts,
            dir,
            vms,
            seq,
        })
    }

    pub fn vm_names(&self) -> Vec<String> {
        self.vms.iter().flatten().map(|v| v.name.clone()).collect()
    }

    pub fn vms(&self) -> impl Iterator<Item = &Vm> {
        self.vms.iter().flatten()
    }

    pub fn vms_mut(&mut self) -> impl Iterator<Item = &mut Vm> {
        self.vms.iter_mut().flatten()
    }

    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    pub fn options(&self) -> &PodOptions {
        &self.opts
    }

    /// Per-run settings (timeout, isolation, retries) of a pod that outlives one run.
    pub fn options_mut(&mut self) -> &mut PodOptions {
        &mut self.opts
    }

    /// Runs `paths` (in this order) across the pod; each final result goes to `tx` as soon as
    /// it is known. Returns when every test has a result.
    pub async fn run(&mut self, paths: Vec<String>, tx: mpsc::UnboundedSender<TestResult>) {
        let queue = paths
            .into_iter()
            .map(|path| Job {
                path,
                attempt: 1,
                last_vm: None,
                failed_before: false,
            })
            .collect();
        let shared = Arc::new(Shared {
            opts: self.opts.clone(),
            queue: Mutex::new(queue),
            seq: self.seq.clone(),
            dir: self.dir.path().to_path_buf(),
            tx,
            stop: std::sync::atomic::AtomicBool::new(false),
        });
        let mut handles = Vec::new();
        for slot in self.vms.iter_mut() {
            let vm = slot.take();
            let shared = shared.clone();
            handles.push(tokio::spawn(worker(vm, shared)));
        }
        let mut vms = Vec::new();
        for h in handles {
            vms.push(h.await.ok().flatten());
        }
        self.vms = vms;
    }

    /// Boots replacements until the pod is back to its size (a warm pod after a crash whose
    /// replacement was not needed by the run). Returns the boot errors.
    pub async fn refill(&mut self) -> Vec<VmError> {
        self.vms.retain(Option::is_some);
        let missing = self.opts.size.saturating_sub(self.vms.len());
        let boots = (0..missing).map(|_| boot_named(&self.seq, &self.dir, &self.opts.vm));
        let mut errors = Vec::new();
        for r in futures::future::join_all(boots).await {
            match r {
                Ok(vm) => self.vms.push(Some(vm)),
                Err(e) => errors.push(e),
            }
        }
        errors
    }

    pub async fn shutdown(mut self) {
        let all: Vec<Vm> = self.vms.drain(..).flatten().collect();
        futures::future::join_all(all.into_iter().map(Vm::shutdown)).await;
    }
}

async fn worker(mut vm: Option<Vm>, shared: Arc<Shared>) -> Option<Vm> {
    let mut boot_failures = 0;
    loop {
        let Some(mut job) = shared.pop(vm.as_ref().map(|v| v.name.as_str())) else {
            return vm;
        };
        if vm.is_none() {
            let rd = RuntimeDirRef(&shared.dir);
            match rd.boot(&shared.seq, &shared.opts.vm).await {
                Ok(v) => {
                    boot_failures = 0;
                    vm = Some(v);
                }
                Err(e) => {
                    boot_failures += 1;
                    let _ = shared
                        .tx
                        .send(error_result(&job, "-", format!("{e}"), None));
                    if boot_failures >= MAX_BOOT_FAILURES {
                        return None;
                    }
                    continue;
                }
            }
        }
        let Some(v) = vm.as_mut() else { continue };
        let (mut result, vm_ok) = run_one(v, &job, &shared.opts).await;
        if !vm_ok && let Some(dead) = vm.take() {
            dead.kill().await;
        }
        let passed = result.passed();
        if !passed && job.attempt <= shared.opts.retries {
            job.last_vm = Some(result.vm.clone());
            job.attempt += 1;
            job.failed_before = true;
            if let Ok(mut q) = shared.queue.lock() {
                q.push_front(job);
            }
            continue;
        }
        result.attempts = job.attempt;
        result.flaky = passed && job.failed_before;
        if !passed && shared.opts.fail_fast {
            shared.stop.store(true, Ordering::SeqCst);
        }
        let _ = shared.tx.send(result);
    }
}

/// Boots replacement VMs into the pod's run directory.
struct RuntimeDirRef<'a>(&'a std::path::Path);

impl RuntimeDirRef<'_> {
    async fn boot(&self, seq: &AtomicUsize, opts: &VmOptions) -> Result<Vm> {
        let n = seq.fetch_add(1, Ordering::SeqCst) + 1;
        let name = format!("vm-{n}");
        let dir = self.0.join(&name);
        std::fs::create_dir(&dir)
            .map_err(|e| VmError::io(format!("creating {}", dir.display()), e))?;
        Vm::boot(&name, opts, &dir).await
    }
}

fn error_result(job: &Job, vm: &str, message: String, tail: Option<String>) -> TestResult {
    TestResult {
        path: job.path.clone(),
        vm: vm.to_string(),
        outcome: TestOutcome::Error(message),
        stdout: Vec::new(),
        stderr: Vec::new(),
        duration: Duration::ZERO,
        kernel_log: String::new(),
        console_tail: tail,
        attempts: job.attempt,
        flaky: false,
    }
}

/// Runs one test; the bool says whether the VM is still good.
async fn run_one(vm: &mut Vm, job: &Job, opts: &PodOptions) -> (TestResult, bool) {
    let start = Instant::now();
    let mark = vm.console_len();
    let script = format!("{}/{}", opts.guest_root.trim_end_matches('/'), job.path);
    let mut result = TestResult {
        path: job.path.clone(),
        vm: vm.name.clone(),
        outcome: TestOutcome::Error(String::new()),
        stdout: Vec::new(),
        stderr: Vec::new(),
        duration: Duration::ZERO,
        kernel_log: String::new(),
        console_tail: None,
        attempts: job.attempt,
        flaky: false,
    };
    let vm_ok = match &mut vm.agent {
        Agent::V2(a) => {
            let exec = Exec {
                argv: vec!["/bin/sh".into(), script],
                env: vec![
                    ("TESTFARM_VM".into(), vm.name.clone()),
                    ("TESTFARM_TEST".into(), job.path.clone()),
                ],
                cwd: Some(opts.guest_root.clone()),
                timeout_ms: u64::try_from(opts.timeout.as_millis()).unwrap_or(u64::MAX),
                isolate: opts.isolate,
            };
            match a.exec(exec).await {
                Ok(out) => {
                    result.stdout = out.stdout;
                    result.stderr = out.stderr;
                    result.outcome = if out.status.timed_out {
                        TestOutcome::TimedOut(opts.timeout)
                    } else {
                        TestOutcome::Exited {
                            code: out.status.code,
                            signal: out.status.signal,
                        }
                    };
                    true
                }
                // The guest answered but could not run it: the VM itself is fine.
                Err(e @ VmError::Guest(_)) => {
                    result.outcome = TestOutcome::Error(format!("VM {}: {e}", vm.name));
                    true
                }
                Err(e) => {
                    result.outcome = TestOutcome::Error(format!("VM {}: {e}", vm.name));
                    false
                }
            }
        }
        Agent::V1(a) => match tokio::time::timeout(opts.timeout, a.test(&job.path)).await {
            Ok(Ok((tap, code))) => {
                result.stdout = tap.into_bytes();
                result.outcome = TestOutcome::Exited {
                    code: Some(code),
                    signal: None,
                };
                true
            }
            // v1 cannot cancel: the VM is replaced.
            Err(_) => {
                result.outcome = TestOutcome::TimedOut(opts.timeout);
                false
            }
            Ok(Err(e)) => {
                result.outcome = TestOutcome::Error(format!("VM {}: {e}", vm.name));
                false
            }
        },
    };
    result.duration = start.elapsed();
    if !vm_ok {
        // Give a dying QEMU a moment to flush the panic to the console log.
        tokio::time::sleep(Duration::from_millis(200)).await;
        if vm.has_exited()
            && let TestOutcome::Error(m) = &mut result.outcome
        {
            m.push_str(" (QEMU exited: the guest crashed)");
        }
        result.console_tail = Some(vm.console_tail(30));
    }
    result.kernel_log = vm.console_since(mark);
    (result, vm_ok)
}
