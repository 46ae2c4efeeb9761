//! The build step with real processes: a real git repository in a temporary directory,
//! real gcc, the executor's real process handling; the server is a recorder that can
//! refuse uploads. Outcomes: a bad ref is `error`, a failing command `failed`, a refused
//! upload `error`, a timeout `timed_out`; a passing build records its commit and branch
//! and uploads each artifact with the sha256 of its bytes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use sha2::{Digest, Sha256};
use testfarm_agent::control::JobControl;
use testfarm_agent::executor::{
    self, ArtifactUpload, ExecSettings, JobRun, ReportError, Reporter, Target,
};
use testfarm_agent::logs::{self, ChunkSink, SinkError};
use testfarm_api::agent::{Outcome, StepReport};
use testfarm_api::artifact::{Artifact, Build, CreateBuild};
use testfarm_core::JobSpec;

#[derive(Default, Clone)]
struct Server {
    steps: Arc<Mutex<Vec<StepReport>>>,
    builds: Arc<Mutex<Vec<CreateBuild>>>,
    /// (name, sha256 the agent sent, sha256 of the bytes at the path).
    uploads: Arc<Mutex<Vec<(String, String, String)>>>,
    refuse_uploads: bool,
}

impl Reporter for Server {
    async fn step(&self, report: StepReport) -> Result<(), ReportError> {
        self.steps.lock().unwrap().push(report);
        Ok(())
    }
    async fn output(&self, _name: &str, _body: Bytes) -> Result<(), ReportError> {
        Ok(())
    }
    async fn create_build(&self, req: CreateBuild) -> Result<Build, ReportError> {
        self.builds.lock().unwrap().push(req.clone());
        Ok(Build {
            id: ulid::Ulid::from_parts(1, 1),
            commit: req.commit,
            branch: req.branch,
            arch: req.arch,
            created_at: Utc::now(),
            pinned: false,
            source_job: req.source_job,
            tags: req.tags,
            artifacts: Vec::new(),
        })
    }
    async fn put_artifact(&self, build: &str, f: ArtifactUpload) -> Result<Artifact, ReportError> {
        let bytes = std::fs::read(&f.path).unwrap();
        let got = format!("{:x}", Sha256::digest(&bytes));
        self.uploads
            .lock()
            .unwrap()
            .push((f.name.clone(), f.sha256.clone(), got.clone()));
        if self.refuse_uploads {
            return Err(ReportError::Failed(
                "422: the body's sha256 is not the one given".into(),
            ));
        }
        Ok(Artifact {
            build_id: build.parse().unwrap(),
            name: f.name,
            kind: f.kind,
            sha256: got,
            size: bytes.len() as u64,
            created_at: Utc::now(),
            commit: String::new(),
            branch: String::new(),
            arch: String::new(),
        })
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

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A repository: `hello.c` on `main`, a tag `v1` there, and a branch `next` one commit on.
fn repo(root: &Path) -> (PathBuf, String, String) {
    let r = root.join("repo");
    std::fs::create_dir_all(&r).unwrap();
    git(&r, &["init", "-q", "-b", "main"]);
    std::fs::write(r.join("hello.c"), "int main(void) { return 0; }\n").unwrap();
    git(&r, &["add", "."]);
    git(&r, &["commit", "-q", "-m", "one"]);
    git(&r, &["tag", "v1"]);
    let main = git(&r, &["rev-parse", "HEAD"]);
    git(&r, &["checkout", "-q", "-b", "next"]);
    std::fs::write(r.join("NEXT"), "x\n").unwrap();
    git(&r, &["add", "."]);
    git(&r, &["commit", "-q", "-m", "two"]);
    let next = git(&r, &["rev-parse", "HEAD"]);
    git(&r, &["checkout", "-q", "main"]);
    (r, main, next)
}

struct Ran {
    outcome: Outcome,
    step: StepReport,
    server: Server,
    log: String,
}

async fn run(yaml: &str, server: Server, timeout: Option<Duration>) -> Ran {
    let work = tempfile::tempdir().unwrap();
    let spec = JobSpec::parse(yaml).unwrap_or_else(|e| panic!("{e}"));
    let job = JobRun {
        job_id: "01JOBBUILD".into(),
        lease_id: "01LEASE".into(),
        epoch: 1,
        resource: "t-build".into(),
        vars: spec.vars.clone(),
        spec,
        timeout,
    };
    let control = JobControl::new();
    let mem = MemLog::default();
    let (log, shipper) = logs::spawn(mem.clone(), control.clone());
    let settings = ExecSettings {
        work_dir: work.path().to_path_buf(),
        kill_grace: Duration::from_secs(1),
        always_timeout: Duration::from_secs(20),
        keep_work_dirs: false,
    };
    let result = tokio::time::timeout(
        Duration::from_secs(60),
        executor::execute(&job, &settings, &Target::Local, &server, &log, &control),
    )
    .await
    .expect("the job did not end within 60 s")
    .expect("not dropped");
    drop(log);
    let _ = shipper.finish().await;
    let step = server.steps.lock().unwrap()[0].clone();
    Ran {
        outcome: result.outcome,
        step,
        log: String::from_utf8_lossy(&mem.0.lock().unwrap()).into_owned(),
        server,
    }
}

fn spec(repo: &Path, git_ref: &str, run: &str, artifacts: &str) -> String {
    format!(
        "name: b\nsteps:\n  - build:\n      source: {}\n      ref: {git_ref}\n      run: {run:?}\n      timeout: 30s\n{artifacts}",
        repo.display()
    )
}

const ARTIFACTS: &str = "      artifacts:\n        - { glob: \"out/*.bin\", kind: firmware }\n";

#[tokio::test]
async fn a_build_records_commit_and_branch_and_uploads_with_the_right_sha256() {
    let tmp = tempfile::tempdir().unwrap();
    let (r, main, next) = repo(tmp.path());
    let run_cmd = "mkdir -p out && gcc -o out/a.bin hello.c && printf two > out/b.bin && sleep 0.3";
    let ran = run(
        &spec(&r, "next", run_cmd, ARTIFACTS),
        Server::default(),
        None,
    )
    .await;
    assert_eq!(ran.outcome, Outcome::Passed, "{}", ran.log);
    let b = ran.step.build.clone().unwrap();
    assert_eq!(b.commit.as_deref(), Some(next.as_str()));
    assert_eq!(b.branch.as_deref(), Some("next"));
    assert_eq!(b.server, "t-build");
    assert!(b.peak_memory_bytes.unwrap_or(0) > 0, "{b:?}");
    let names: Vec<&str> = b.artifacts.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["a.bin", "b.bin"]);
    for (name, sent, actual) in ran.server.uploads.lock().unwrap().iter() {
        assert_eq!(sent, actual, "{name}: the agent's sha256 is the file's");
    }
    let builds = ran.server.builds.lock().unwrap().clone();
    assert_eq!(builds[0].commit, next);
    assert_eq!(builds[0].source_job.as_deref(), Some("01JOBBUILD"));

    // A tag resolves to its commit; the branch recorded is the one containing it.
    let ran = run(&spec(&r, "v1", run_cmd, ARTIFACTS), Server::default(), None).await;
    let b = ran.step.build.unwrap();
    assert_eq!(b.commit.as_deref(), Some(main.as_str()));
    assert_eq!(b.branch.as_deref(), Some("main"), "{}", ran.log);
}

#[tokio::test]
async fn outcomes_keep_lab_errors_and_build_failures_apart() {
    let tmp = tempfile::tempdir().unwrap();
    let (r, _, _) = repo(tmp.path());
    // No such ref: nothing was built, the lab could not fetch it.
    let ran = run(&spec(&r, "nope", "true", ""), Server::default(), None).await;
    assert_eq!(ran.outcome, Outcome::Error, "{}", ran.log);
    assert!(ran.step.reason.unwrap().contains("cannot fetch the source"));
    // The command fails: the build failed.
    let ran = run(&spec(&r, "main", "exit 3", ""), Server::default(), None).await;
    assert_eq!(ran.outcome, Outcome::Failed);
    assert_eq!(ran.step.exit_code, Some(3));
    assert!(ran.step.build.unwrap().commit.is_some());
    // No file for a glob: failed, no build recorded.
    let ran = run(
        &spec(&r, "main", "true", ARTIFACTS),
        Server::default(),
        None,
    )
    .await;
    assert_eq!(ran.outcome, Outcome::Failed);
    assert!(ran.server.builds.lock().unwrap().is_empty());
    // The server refuses the upload: error, and the summary lists no artifact.
    let refusing = Server {
        refuse_uploads: true,
        ..Server::default()
    };
    let ran = run(
        &spec(&r, "main", "mkdir -p out && echo x > out/x.bin", ARTIFACTS),
        refusing,
        None,
    )
    .await;
    assert_eq!(ran.outcome, Outcome::Error);
    assert!(
        ran.step.reason.clone().unwrap().contains("refused"),
        "{:?}",
        ran.step
    );
    assert!(ran.step.build.unwrap().artifacts.is_empty());
    // The job's time limit stops the build.
    let t0 = std::time::Instant::now();
    let ran = run(
        &spec(&r, "main", "sleep 100", ""),
        Server::default(),
        Some(Duration::from_secs(2)),
    )
    .await;
    assert_eq!(ran.outcome, Outcome::TimedOut);
    assert!(t0.elapsed() < Duration::from_secs(20));
}
