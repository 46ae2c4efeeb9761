//! The executor with real processes: pass, fail, error, timeouts that kill whole process
//! groups, cancel, `always`, uploads, environment. Reports and log chunks are recorded in
//! memory instead of going to a server; everything else is the real thing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use testfarm_agent::control::JobControl;
use testfarm_agent::executor::{
    self, ExecSettings, JobResult, JobRun, ReportError, Reporter, Target,
};
use testfarm_agent::logs::{self, ChunkSink, SinkError};
use testfarm_api::agent::{Outcome, StepReport};
use testfarm_core::JobSpec;

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

struct Ran {
    result: Option<JobResult>,
    steps: Vec<StepReport>,
    outputs: BTreeMap<String, Bytes>,
    log: String,
    work: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

fn settings(work: &Path) -> ExecSettings {
    ExecSettings {
        work_dir: work.to_path_buf(),
        kill_grace: Duration::from_secs(1),
        always_timeout: Duration::from_secs(20),
        keep_work_dirs: true,
    }
}

fn job(yaml: &str, timeout: Option<Duration>) -> JobRun {
    let spec = JobSpec::parse(yaml).unwrap_or_else(|e| panic!("{e}"));
    JobRun {
        job_id: "01JOBTEST".into(),
        lease_id: "01LEASE".into(),
        epoch: 1,
        resource: "t-build".into(),
        vars: spec.vars.clone(),
        spec,
        timeout,
    }
}

async fn run_with(
    yaml: &str,
    timeout: Option<Duration>,
    control: JobControl,
    work: &tempfile::TempDir,
) -> Ran {
    let job = job(yaml, timeout);
    let rec = Recorder::default();
    let mem = MemLog::default();
    let (log, shipper) = logs::spawn(mem.clone(), control.clone());
    let s = settings(work.path());
    let result = tokio::time::timeout(
        Duration::from_secs(60),
        executor::execute(&job, &s, &Target::Local, &rec, &log, &control),
    )
    .await
    .expect("the job did not end within 60 s");
    drop(log);
    let _ = shipper.finish().await;
    let log = String::from_utf8_lossy(&mem.0.lock().unwrap()).into_owned();
    Ran {
        result,
        steps: rec.steps.lock().unwrap().clone(),
        outputs: rec.outputs.lock().unwrap().clone(),
        log,
        work: work.path().join("jobs/01JOBTEST"),
        _tmp: None,
    }
}

async fn run(yaml: &str) -> Ran {
    let work = tempfile::tempdir().unwrap();
    let mut r = run_with(yaml, None, JobControl::new(), &work).await;
    r._tmp = Some(work);
    r
}

fn spec(steps: &str) -> String {
    format!("name: t\nrequires: {{ kind: build-server }}\n{steps}")
}

/// Alive and not a zombie.
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            let state = s.rsplit(')').next().unwrap_or("").split_whitespace().next();
            state != Some("Z")
        }
        Err(_) => false,
    }
}

async fn wait_dead(pid: i32) -> bool {
    for _ in 0..100 {
        if !alive(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn a_passing_script() {
    let r = run(&spec(
        "steps:\n  - shell: |\n      echo hello from $TESTFARM_JOB_ID\n      echo to stderr >&2\n",
    ))
    .await;
    assert_eq!(r.result.unwrap().outcome, Outcome::Passed, "{}", r.log);
    assert_eq!(r.steps.len(), 1);
    assert_eq!(r.steps[0].outcome, Outcome::Passed);
    assert_eq!(r.steps[0].exit_code, None);
    assert!(r.log.contains("hello from 01JOBTEST"), "{}", r.log);
    assert!(r.log.contains("to stderr"), "{}", r.log);
}

#[tokio::test]
async fn a_failing_script_fails_and_skips_the_rest() {
    let r = run(&spec(
        "steps:\n  - shell: \"false; echo not reached\"\n  - shell: echo skipped\n",
    ))
    .await;
    let res = r.result.unwrap();
    assert_eq!(res.outcome, Outcome::Failed);
    assert_eq!(r.steps[0].outcome, Outcome::Failed);
    assert_eq!(r.steps[0].exit_code, Some(1));
    assert!(!r.log.contains("not reached"), "sh -e: {}", r.log);
    assert_eq!(r.steps[1].outcome, Outcome::Skipped);
    let r = run(&spec("steps:\n  - shell: exit 7\n")).await;
    assert_eq!(r.steps[0].exit_code, Some(7));
}

#[tokio::test]
async fn a_missing_interpreter_is_an_error_not_a_failure() {
    let r = run(&spec(
        "steps:\n  - shell: |\n      #!/no/such/interpreter\n      print('hi')\n",
    ))
    .await;
    let res = r.result.unwrap();
    assert_eq!(res.outcome, Outcome::Error, "{}", r.log);
    let reason = r.steps[0].reason.clone().unwrap();
    assert!(
        reason.contains("interpreter /no/such/interpreter not found"),
        "{reason}"
    );
    // A real interpreter named on the shebang line runs the script.
    let r = run(&spec(
        "steps:\n  - shell: |\n      #!/bin/sh\n      echo via shebang\n",
    ))
    .await;
    assert_eq!(r.result.unwrap().outcome, Outcome::Passed, "{}", r.log);
    assert!(r.log.contains("via shebang"));
}

#[tokio::test]
async fn a_missing_work_directory_is_an_error() {
    let job = job(
        &spec("steps:\n  - shell: echo hi\nalways:\n  - shell: echo hi\n"),
        None,
    );
    let rec = Recorder::default();
    let mem = MemLog::default();
    let control = JobControl::new();
    let (log, shipper) = logs::spawn(mem.clone(), control.clone());
    // A work directory under a regular file cannot be created.
    let f = tempfile::NamedTempFile::new().unwrap();
    let s = settings(f.path());
    let res = executor::execute(&job, &s, &Target::Local, &rec, &log, &control)
        .await
        .unwrap();
    drop(log);
    shipper.finish().await.unwrap();
    assert_eq!(res.outcome, Outcome::Error);
    let steps = rec.steps.lock().unwrap().clone();
    assert_eq!(steps.len(), 2);
    assert!(steps.iter().all(|s| s.outcome == Outcome::Error));
    assert!(
        steps[0]
            .reason
            .as_ref()
            .unwrap()
            .contains("cannot create the work directory")
    );
}

#[tokio::test]
async fn a_step_timeout_kills_the_whole_process_group() {
    let r = run(&spec(
        "steps:\n  - shell:\n      run: |\n        sh -c 'sleep 1000 & echo $! > grandchild.pid; wait' &\n        sleep 1000\n      timeout: 1s\nalways:\n  - shell: echo always ran > always.txt\n",
    ))
    .await;
    let res = r.result.unwrap();
    assert_eq!(res.outcome, Outcome::TimedOut, "{}", r.log);
    assert!(
        r.steps[0]
            .reason
            .as_ref()
            .unwrap()
            .contains("time limit (1s)")
    );
    assert!(r.steps[0].duration_ms >= 1000 && r.steps[0].duration_ms < 10_000);
    let pid: i32 = std::fs::read_to_string(r.work.join("grandchild.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        wait_dead(pid).await,
        "grandchild {pid} survived the timeout"
    );
    assert!(r.steps[1].always);
    assert_eq!(r.steps[1].outcome, Outcome::Passed);
    assert!(r.work.join("always.txt").exists(), "always after a timeout");
}

#[tokio::test]
async fn a_step_ignoring_sigterm_is_killed_after_the_grace() {
    let r = run(&spec(
        "steps:\n  - shell:\n      run: \"trap '' TERM; sleep 1000 & echo $! > bg.pid; while :; do sleep 1; done\"\n      timeout: 1s\n",
    ))
    .await;
    assert_eq!(r.result.unwrap().outcome, Outcome::TimedOut);
    let ms = r.steps[0].duration_ms;
    assert!(
        (1900..10_000).contains(&ms),
        "timeout 1s + grace 1s, took {ms} ms"
    );
    let pid: i32 = std::fs::read_to_string(r.work.join("bg.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(wait_dead(pid).await);
}

#[tokio::test]
async fn the_job_timeout_bounds_all_steps() {
    let work = tempfile::tempdir().unwrap();
    let r = run_with(
        &spec("steps:\n  - shell: sleep 0.3\n  - shell: sleep 1000\n  - shell: echo never\nalways:\n  - shell: echo cleanup\n"),
        Some(Duration::from_millis(1500)),
        JobControl::new(),
        &work,
    )
    .await;
    let res = r.result.unwrap();
    assert_eq!(res.outcome, Outcome::TimedOut);
    assert!(res.reason.unwrap().contains("job's time limit"));
    let outcomes: Vec<Outcome> = r.steps.iter().map(|s| s.outcome).collect();
    assert_eq!(
        outcomes,
        vec![
            Outcome::Passed,
            Outcome::TimedOut,
            Outcome::Skipped,
            Outcome::Passed
        ]
    );
}

#[tokio::test]
async fn cancel_kills_the_group_and_runs_always() {
    let work = tempfile::tempdir().unwrap();
    let control = JobControl::new();
    let c2 = control.clone();
    let pidfile = work.path().join("jobs/01JOBTEST/bg.pid");
    tokio::spawn(async move {
        for _ in 0..200 {
            if pidfile.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        c2.cancel();
    });
    let r = run_with(
        &spec("steps:\n  - shell: \"sleep 1000 & echo $! > bg.pid; wait\"\n  - shell: echo next\nalways:\n  - shell: echo cleaned > cleaned.txt\n"),
        None,
        control,
        &work,
    )
    .await;
    let res = r.result.unwrap();
    assert_eq!(res.outcome, Outcome::Cancelled, "{}", r.log);
    let outcomes: Vec<Outcome> = r.steps.iter().map(|s| s.outcome).collect();
    assert_eq!(
        outcomes,
        vec![Outcome::Cancelled, Outcome::Skipped, Outcome::Passed]
    );
    let pid: i32 = std::fs::read_to_string(r.work.join("bg.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(wait_dead(pid).await);
    assert!(r.work.join("cleaned.txt").exists());
}

#[tokio::test]
async fn always_runs_after_a_failure_and_can_fail_a_passed_job() {
    let r = run(&spec(
        "steps:\n  - shell: exit 2\nalways:\n  - shell: echo collected > diag.txt\n",
    ))
    .await;
    assert_eq!(r.result.unwrap().outcome, Outcome::Failed);
    assert!(r.steps[1].always && r.steps[1].outcome == Outcome::Passed);
    assert_eq!(r.steps[1].index, 1);
    assert!(r.work.join("diag.txt").exists());
    let r = run(&spec(
        "steps:\n  - shell: \"true\"\nalways:\n  - shell: exit 4\n",
    ))
    .await;
    let res = r.result.unwrap();
    assert_eq!(res.outcome, Outcome::Failed);
    assert!(res.reason.unwrap().contains("always step 1"));
}

#[tokio::test]
async fn a_drop_kills_and_reports_nothing_more() {
    let work = tempfile::tempdir().unwrap();
    let control = JobControl::new();
    let c2 = control.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        c2.drop_job();
    });
    let r = run_with(
        &spec("steps:\n  - shell: sleep 1000\nalways:\n  - shell: echo no\n"),
        None,
        control,
        &work,
    )
    .await;
    assert!(r.result.is_none());
    assert!(r.steps.is_empty(), "{:?}", r.steps);
}

#[tokio::test]
async fn vars_and_env_reach_the_script() {
    let r = run(&spec(
        "vars: { greeting: hello, count: 3 }\nsteps:\n  - shell:\n      run: |\n        test \"$greeting\" = hello\n        test \"$count\" = 3\n        test \"$EXTRA\" = x\n        test \"$TESTFARM_RESOURCE\" = t-build\n        test \"$PWD\" = \"$TESTFARM_WORK_DIR\"\n      env: { EXTRA: x }\n",
    ))
    .await;
    assert_eq!(r.result.unwrap().outcome, Outcome::Passed, "{}", r.log);
}

#[tokio::test]
async fn uploads_by_glob() {
    let r = run(&spec(
        "steps:\n  - shell: mkdir -p out/sub && echo a > out/a.xml && echo b > out/sub/b.xml && echo c > out/c.txt\n  - upload: \"out/**/*.xml\"\n  - upload: { path: out/c.txt, name: report.txt }\n",
    ))
    .await;
    assert_eq!(r.result.unwrap().outcome, Outcome::Passed, "{}", r.log);
    let names: Vec<&String> = r.outputs.keys().collect();
    assert_eq!(names, vec!["out_a.xml", "out_sub_b.xml", "report.txt"]);
    assert_eq!(r.outputs["report.txt"].as_ref(), b"c\n");
    let r = run(&spec("steps:\n  - upload: \"nothing/*\"\n")).await;
    assert_eq!(r.result.unwrap().outcome, Outcome::Failed);
}

#[tokio::test]
async fn sleep_runs_and_unsupported_steps_are_errors() {
    let r = run(&spec(
        "steps:\n  - sleep: 100ms\n  - fail_if: \"$.x == 1\"\n",
    ))
    .await;
    let res = r.result.unwrap();
    assert_eq!(res.outcome, Outcome::Error);
    assert_eq!(r.steps[0].outcome, Outcome::Passed);
    assert!(r.steps[0].duration_ms >= 100);
    assert!(
        r.steps[1]
            .reason
            .as_ref()
            .unwrap()
            .contains("not supported by this agent yet")
    );
}

#[tokio::test]
async fn a_deploy_without_a_server_connection_is_an_error() {
    let r = run(
        "name: t\nrequires: { kind: qemu-host }\nsteps:\n  - deploy: { artifacts: { branch: main, latest: true } }\n  - boot: {}\n  - test: { run: t.sh, via: guest }\n",
    )
    .await;
    let res = r.result.unwrap();
    assert_eq!(res.outcome, Outcome::Error);
    assert!(
        r.steps[0]
            .reason
            .as_ref()
            .unwrap()
            .contains("no server connection"),
        "{:?}",
        r.steps[0]
    );
    assert_eq!(r.steps[1].outcome, Outcome::Skipped);
    assert_eq!(r.steps[2].outcome, Outcome::Skipped);
}

#[tokio::test]
async fn a_big_output_arrives_whole() {
    // 20 MB through the pipe and the shipper, byte for byte.
    let r = run(&spec(
        "steps:\n  - shell: \"head -c 20000000 /dev/zero | tr '\\\\0' 'x'\"\n",
    ))
    .await;
    assert_eq!(r.result.unwrap().outcome, Outcome::Passed);
    let xs = r.log.bytes().filter(|b| *b == b'x').count();
    assert_eq!(xs, 20_000_000);
}
