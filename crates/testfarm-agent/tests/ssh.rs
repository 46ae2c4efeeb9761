//! SSH hosts against a real `sshd` on a loopback port, with keys generated for the test:
//! registration measures the host over SSH, steps run there (pass, fail, upload, timeout
//! and cancel killing the remote process group), and a wrong key or a missing toolchain
//! says precisely what failed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use testfarm_agent::control::JobControl;
use testfarm_agent::executor::{self, ExecSettings, JobRun, ReportError, Reporter, Target};
use testfarm_agent::logs::{self, ChunkSink, SinkError};
use testfarm_agent::ssh::SshError;
use testfarm_api::agent::{Outcome, StepReport};
use testfarm_core::JobSpec;

mod sshd;

use sshd::Sshd;

#[tokio::test]
async fn registration_measures_the_host_over_ssh() {
    let sshd = Sshd::start();
    let d = tokio::time::timeout(Duration::from_secs(60), sshd.host("id", &[]).probe())
        .await
        .unwrap()
        .unwrap();
    let local = testfarm_agent::detect::detect_local(Path::new("/tmp"), &[]).await;
    assert_eq!(d.cpus, local.cpus);
    assert_eq!(d.arch, local.arch);
    assert_eq!(d.memory_mb, local.memory_mb);
    assert_eq!(d.kvm, local.kvm);
    assert!(d.disk_free_gb.is_some());
    let caps = d.capabilities();
    assert!(
        caps.toolchains.contains(&"cargo".to_string())
            || caps.toolchains.contains(&"gcc".to_string())
    );
    // And its load, for heartbeats.
    let mut last = None;
    let load = sshd.host("id", &[]).load(&mut last).await.unwrap();
    assert!(last.is_some());
    assert!(load.memory_pct > 0.0 && load.disk_free_gb > 0.0, "{load:?}");
}

#[tokio::test]
async fn a_wrong_key_says_authentication_failed() {
    let sshd = Sshd::start();
    let e = tokio::time::timeout(Duration::from_secs(60), sshd.host("wrong", &[]).probe())
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(e, SshError::Auth { .. }), "{e}");
    let text = e.to_string();
    assert!(text.contains("authentication failed"), "{text}");
    assert!(text.contains("remote1"), "{text}");
}

#[tokio::test]
async fn a_missing_toolchain_is_named() {
    let sshd = Sshd::start();
    let e = sshd
        .host("id", &["no-such-triple"])
        .probe()
        .await
        .unwrap_err();
    assert!(matches!(e, SshError::MissingToolchain { .. }), "{e}");
    assert!(
        e.to_string().contains("no-such-triple-gcc not found"),
        "{e}"
    );
}

#[derive(Default, Clone)]
struct Recorder {
    steps: Arc<Mutex<Vec<StepReport>>>,
    outputs: Arc<Mutex<BTreeMap<String, Bytes>>>,
}

impl Reporter for Recorder {
    async fn step(&self, report: StepReport) -> Result<(), ReportError> {
        self.steps.lock().unwrap().push(report);
        Ok(())
    }
    async fn output(&self, name: &str, body: Bytes) -> Result<(), ReportError> {
        self.outputs.lock().unwrap().insert(name.to_string(), body);
        Ok(())
    }
}

#[derive(Default, Clone)]
struct MemLog(Arc<Mutex<Vec<u8>>>);

impl ChunkSink for MemLog {
    async fn put(&self, _seq: u64, body: Bytes) -> Result<(), SinkError> {
        self.0.lock().unwrap().extend_from_slice(&body);
        Ok(())
    }
}

async fn run_remote(
    sshd: &Sshd,
    steps: &str,
    control: JobControl,
) -> (
    Option<executor::JobResult>,
    Vec<StepReport>,
    Recorder,
    String,
) {
    let yaml = format!("name: t\nrequires: {{ kind: build-server }}\n{steps}");
    let spec = JobSpec::parse(&yaml).unwrap_or_else(|e| panic!("{e}"));
    let job = JobRun {
        job_id: "01SSHJOB".into(),
        lease_id: "01LEASE".into(),
        epoch: 1,
        resource: "remote1".into(),
        vars: BTreeMap::from([("who".to_string(), serde_json::json!("remote"))]),
        spec,
        timeout: None,
    };
    let local = tempfile::tempdir().unwrap();
    let settings = ExecSettings {
        work_dir: local.path().to_path_buf(),
        kill_grace: Duration::from_secs(1),
        always_timeout: Duration::from_secs(30),
        keep_work_dirs: true,
    };
    let rec = Recorder::default();
    let mem = MemLog::default();
    let (log, shipper) = logs::spawn(mem.clone(), control.clone());
    let target = Target::Ssh(sshd.host("id", &[]));
    let result = tokio::time::timeout(
        Duration::from_secs(90),
        executor::execute(&job, &settings, &target, &rec, &log, &control),
    )
    .await
    .expect("the remote job did not end within 90 s");
    drop(log);
    let _ = shipper.finish().await;
    let text = String::from_utf8_lossy(&mem.0.lock().unwrap()).into_owned();
    let steps = rec.steps.lock().unwrap().clone();
    (result, steps, rec, text)
}

#[tokio::test]
async fn steps_run_over_ssh() {
    let sshd = Sshd::start();
    let (res, steps, rec, log) = run_remote(
        &sshd,
        "steps:\n  - shell: |\n      echo \"hello $who from $TESTFARM_JOB_ID in $(pwd)\"\n      mkdir out && echo data > out/r.txt\n  - upload: { path: \"out/*.txt\", name: r.txt }\n  - shell: exit 3\n  - shell: echo skipped\nalways:\n  - shell: |\n      #!/bin/sh\n      echo always over ssh\n",
        JobControl::new(),
    )
    .await;
    let res = res.unwrap();
    assert_eq!(res.outcome, Outcome::Failed, "{log}");
    let outcomes: Vec<Outcome> = steps.iter().map(|s| s.outcome).collect();
    assert_eq!(
        outcomes,
        vec![
            Outcome::Passed,
            Outcome::Passed,
            Outcome::Failed,
            Outcome::Skipped,
            Outcome::Passed
        ],
        "{log}"
    );
    assert_eq!(steps[2].exit_code, Some(3));
    let dir = sshd.remote_work().join("01SSHJOB");
    assert!(
        log.contains(&format!("hello remote from 01SSHJOB in {}", dir.display())),
        "{log}"
    );
    assert!(log.contains("always over ssh"), "{log}");
    assert_eq!(rec.outputs.lock().unwrap()["r.txt"].as_ref(), b"data\n");
}

#[tokio::test]
async fn a_missing_remote_interpreter_is_an_error() {
    let sshd = Sshd::start();
    let (res, steps, _, log) = run_remote(
        &sshd,
        "steps:\n  - shell: |\n      #!/no/such/interp\n      x\n",
        JobControl::new(),
    )
    .await;
    assert_eq!(res.unwrap().outcome, Outcome::Error, "{log}");
    assert!(
        log.contains("interpreter /no/such/interp not found"),
        "{log}"
    );
    assert_eq!(steps[0].outcome, Outcome::Error);
}

fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            s.rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next())
                != Some("Z")
        }
        Err(_) => false,
    }
}

async fn wait_dead(pid: i32) -> bool {
    for _ in 0..200 {
        if !alive(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn timeout_and_cancel_kill_the_remote_process_group() {
    // The "remote" host is this machine, so /proc shows whether the remote processes died.
    let sshd = Sshd::start();
    let (res, steps, _, log) = run_remote(
        &sshd,
        "steps:\n  - shell:\n      run: \"sh -c 'sleep 1000' & echo $! > bg.pid; sleep 1000\"\n      timeout: 2s\n",
        JobControl::new(),
    )
    .await;
    assert_eq!(res.unwrap().outcome, Outcome::TimedOut, "{log}");
    assert!(steps[0].duration_ms < 20_000);
    let pidfile = sshd.remote_work().join("01SSHJOB/bg.pid");
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        wait_dead(pid).await,
        "remote process {pid} survived the timeout"
    );

    std::fs::remove_file(&pidfile).unwrap();
    let control = JobControl::new();
    let c2 = control.clone();
    let pf = pidfile.clone();
    tokio::spawn(async move {
        for _ in 0..400 {
            if std::fs::metadata(&pf).map(|m| m.len() > 0).unwrap_or(false) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        c2.cancel();
    });
    let (res, _, _, log) = run_remote(
        &sshd,
        "steps:\n  - shell: \"sleep 1000 & echo $! > bg.pid; wait\"\nalways:\n  - shell: echo cleanup ran\n",
        control,
    )
    .await;
    assert_eq!(res.unwrap().outcome, Outcome::Cancelled, "{log}");
    assert!(log.contains("cleanup ran"), "{log}");
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        wait_dead(pid).await,
        "remote process {pid} survived the cancel"
    );
}
