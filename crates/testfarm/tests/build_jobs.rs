//! Build jobs end to end with real parts: a real server process, the built-in agent (or
//! a real `testfarm agent` process), a real git repository made in a temporary directory,
//! and the real gcc. A build compiles a small C program, its artifact lands with the
//! right sha256 and is found by `artifacts get --branch main --latest`; building the same
//! commit again stores no second blob; a file that changes while it is uploaded is
//! refused and the build ends `error`; a build whose agent is killed ends `error` and is
//! retried per `retry_on_error`; a named build server without the toolchain is refused
//! at submit with the servers that have it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod agent_support;
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use sha2::{Digest, Sha256};
use support::{Lab, cli, stderr, stdout, wait_for, wait_job};

fn deadline(limit: Duration) -> impl Fn() {
    let start = Instant::now();
    move || {
        assert!(
            start.elapsed() < limit,
            "the test took longer than {limit:?}"
        )
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
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A git repository with a hello-world C program on branch `main`; returns its path
/// and the commit.
fn hello_repo(root: &Path) -> (PathBuf, String) {
    let repo = root.join("hello");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(
        repo.join("hello.c"),
        "#include <stdio.h>\nint main(void) { puts(\"hello from testfarm\"); return 0; }\n",
    )
    .unwrap();
    git(&repo, &["add", "hello.c"]);
    git(&repo, &["commit", "-q", "-m", "hello"]);
    let commit = git(&repo, &["rev-parse", "HEAD"]);
    (repo, commit)
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "arm64",
        other => other,
    }
}

fn sha(data: &[u8]) -> String {
    format!("{:x}", Sha256::digest(data))
}

/// Every blob file under the lab's artifact directory.
fn blob_count(lab: &Lab) -> usize {
    let mut n = 0;
    let mut stack = vec![lab.path().join("artifacts").join("sha256")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                n += 1;
            }
        }
    }
    n
}

fn build_spec(name: &str, repo: &Path, extra_step: &str, run: &str) -> String {
    format!(
        "name: {name}\ntimeout: 3m\nsteps:\n  - build:\n      source: {repo}\n      ref: main\n      arch: {arch}\n      config: tiny\n      run: {run}\n      artifacts:\n        - {{ glob: out/hello, kind: other }}\n{extra_step}      timeout: 2m\n",
        repo = repo.display(),
        arch = host_arch(),
    )
}

/// Compiles, then stays a moment so the agent's 100 ms sampler sees the build run.
const COMPILE: &str = "\"mkdir -p out && gcc -O2 -o out/hello hello.c && echo config=$TESTFARM_BUILD_CONFIG arch=$TESTFARM_BUILD_ARCH && sleep 0.5\"";

fn local_lab() -> Lab {
    let lab = Lab::new();
    lab.fast();
    lab.set("agent.local", "enabled", "true");
    lab.set("health", "max_utilization_pct", "100");
    lab.set("health", "min_disk_gb", "0");
    lab
}

#[test]
fn a_build_compiles_from_a_local_repo_and_its_artifact_is_found_by_branch() {
    let within = deadline(Duration::from_secs(150));
    let lab = local_lab();
    let server = lab.start();
    let http = server.http();
    let t = &lab.token;
    let tmp = tempfile::tempdir().unwrap();
    let (repo, commit) = hello_repo(tmp.path());
    wait_for("the built-in build server", Duration::from_secs(20), || {
        let r = http.get("/api/v1/resources/local-build", t);
        (r.status == 200 && r.body["state"] == "available").then_some(())
    });

    let spec = build_spec("hello-build", &repo, "", COMPILE);
    let r = http.post("/api/v1/jobs", t, json!({ "spec": spec }));
    assert_eq!(r.status, 201, "{}", r.text);
    assert!(
        r.body["estimated_start"].is_string(),
        "the submit answer carries an estimated start: {}",
        r.text
    );
    assert_eq!(
        r.body["spec"]["steps"][0]["build"]["source"],
        repo.display().to_string()
    );
    let id = r.body["id"].as_str().unwrap().to_string();
    let job = wait_job(&http, t, &id, Duration::from_secs(90));
    let log = stdout(&cli(&server.url, t, &["logs", &id]));
    assert_eq!(job["state"], "passed", "{job}\n{log}");
    assert_eq!(job["resource"], "local-build");
    assert!(
        log.contains(&format!("config=tiny arch={}", host_arch())),
        "the build sees its config and arch: {log}"
    );
    let b = &job["steps"][0]["build"];
    assert_eq!(b["commit"], commit, "{job}");
    assert_eq!(b["branch"], "main");
    assert_eq!(b["server"], "local-build");
    assert!(b["duration_ms"].as_u64().unwrap() > 0);
    assert!(b["peak_memory_bytes"].as_u64().unwrap_or(0) > 0, "{b}");
    let art = &b["artifacts"][0];
    assert_eq!(art["name"], "hello");
    assert_eq!(art["kind"], "other");
    let reported_sha = art["sha256"].as_str().unwrap().to_string();
    let build_id = b["build_id"].as_str().unwrap().to_string();

    // The repository has it, with the job as its source, and --latest finds it.
    let rb = http.get(&format!("/api/v1/builds/{build_id}"), t);
    assert_eq!(rb.status, 200, "{}", rb.text);
    assert_eq!(rb.body["commit"], commit);
    assert_eq!(rb.body["branch"], "main");
    assert_eq!(rb.body["source_job"], id);
    let out = tmp.path().join("hello.bin");
    let o = cli(
        &server.url,
        t,
        &[
            "artifacts",
            "get",
            "--branch",
            "main",
            "--latest",
            "--kind",
            "other",
            "-o",
            out.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let bytes = std::fs::read(&out).unwrap();
    assert_eq!(
        sha(&bytes),
        reported_sha,
        "the bytes are what the agent hashed"
    );
    assert_eq!(bytes.len() as u64, art["size"].as_u64().unwrap());
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let ran = Command::new(&out).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&ran.stdout).trim(),
        "hello from testfarm",
        "the artifact is the program that was built"
    );
    let shown = stdout(&cli(&server.url, t, &["job", "show", &id]));
    assert!(
        shown.contains(&commit) && shown.contains("peak memory") && shown.contains("hello"),
        "{shown}"
    );

    // The same commit built again: a second build record, no second blob.
    let blobs = blob_count(&lab);
    let id2 = {
        let r = http.post("/api/v1/jobs", t, json!({ "spec": spec }));
        assert_eq!(r.status, 201, "{}", r.text);
        r.body["id"].as_str().unwrap().to_string()
    };
    let job2 = wait_job(&http, t, &id2, Duration::from_secs(90));
    assert_eq!(job2["state"], "passed", "{job2}");
    let b2 = &job2["steps"][0]["build"];
    assert_ne!(b2["build_id"], b["build_id"]);
    assert_eq!(b2["artifacts"][0]["sha256"], reported_sha.as_str());
    assert_eq!(blob_count(&lab), blobs, "identical content is stored once");

    // History per build server, in the API and the CLI.
    let h = http.get("/api/v1/builds/history?server=local-build", t);
    assert_eq!(h.status, 200, "{}", h.text);
    assert_eq!(h.body["servers"][0]["server"], "local-build");
    assert_eq!(h.body["servers"][0]["count"], 2);
    assert_eq!(h.body["servers"][0]["success_rate"], 1.0);
    assert_eq!(h.body["recent"].as_array().unwrap().len(), 2);
    let o = cli(
        &server.url,
        t,
        &["builds", "history", "--server", "local-build"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains("local-build") && text.contains("100%"),
        "{text}"
    );
    let o = cli(&server.url, t, &["resource", "show", "local-build"]);
    assert!(
        stdout(&o).contains("2 ended, 100% passed"),
        "{}",
        stdout(&o)
    );
    within();
}

#[test]
fn a_missing_glob_fails_and_a_file_changing_during_upload_is_refused_as_error() {
    let within = deadline(Duration::from_secs(150));
    let lab = local_lab();
    let server = lab.start();
    let http = server.http();
    let t = &lab.token;
    let tmp = tempfile::tempdir().unwrap();
    let (repo, _) = hello_repo(tmp.path());
    wait_for("the built-in build server", Duration::from_secs(20), || {
        let r = http.get("/api/v1/resources/local-build", t);
        (r.status == 200 && r.body["state"] == "available").then_some(())
    });

    // The build made no out/hello: the step fails, nothing is recorded.
    let spec = build_spec("no-output", &repo, "", "\"true\"");
    let r = http.post("/api/v1/jobs", t, json!({ "spec": spec }));
    assert_eq!(r.status, 201, "{}", r.text);
    let job = wait_job(
        &http,
        t,
        r.body["id"].as_str().unwrap(),
        Duration::from_secs(60),
    );
    assert_eq!(job["state"], "failed", "{job}");
    assert!(
        job["reason"]
            .as_str()
            .unwrap_or("")
            .contains("no file of the build matches"),
        "{job}"
    );
    assert!(job["steps"][0]["build"]["build_id"].is_null(), "{job}");

    // A process outside the build's group (started before the build command ends, so
    // the group's kill misses it) keeps rewriting the artifact, so the bytes
    // the server receives are not those the agent hashed: the server refuses them,
    // nothing is stored under that name, and the build ends `error` (the lab's fault).
    let blobs = blob_count(&lab);
    let run = "\"mkdir -p out; head -c 8388608 /dev/zero > out/hello; setsid sh -c 'touch started; n=0; while [ $n -lt 30000 ] && printf x | dd of=out/hello bs=1 seek=$(( (n * 4099) % 8388608 )) conv=notrunc 2>/dev/null; do n=$((n + 1)); done' >/dev/null 2>&1 < /dev/null & while [ ! -e started ]; do sleep 0.05; done\"";
    let spec = build_spec("corrupt", &repo, "", run);
    let r = http.post("/api/v1/jobs", t, json!({ "spec": spec }));
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.body["id"].as_str().unwrap().to_string();
    let job = wait_job(&http, t, &id, Duration::from_secs(90));
    let log = stdout(&cli(&server.url, t, &["logs", &id]));
    assert_eq!(job["state"], "error", "{job}\n{log}");
    let reason = job["reason"].as_str().unwrap_or("");
    assert!(reason.contains("refused"), "{reason}");
    let b = &job["steps"][0]["build"];
    let build_id = b["build_id"].as_str().unwrap();
    assert!(b["artifacts"].as_array().unwrap().is_empty(), "{b}");
    let rb = http.get(&format!("/api/v1/builds/{build_id}"), t);
    assert!(
        rb.body["artifacts"].as_array().unwrap().is_empty(),
        "nothing half-written is visible: {}",
        rb.text
    );
    assert_eq!(blob_count(&lab), blobs, "no blob was kept");
    within();
}

#[test]
fn a_named_server_without_the_toolchain_is_refused_with_the_servers_that_have_it() {
    let within = deadline(Duration::from_secs(60));
    let lab = local_lab();
    let server = lab.start();
    let http = server.http();
    let t = &lab.token;
    wait_for("the built-in build server", Duration::from_secs(20), || {
        let r = http.get("/api/v1/resources/local-build", t);
        (r.status == 200 && r.body["state"] == "available").then_some(())
    });
    // A build server with a RISC-V cross compiler (registered by hand: its toolchains
    // are what an agent would have measured).
    let r = http.post(
        "/api/v1/resources",
        t,
        json!({
            "name": "rv-builder", "kind": "build-server",
            "capabilities": { "cpus": 8, "memory_mb": 16384, "arch": "x86_64",
                              "toolchains": ["gcc", "riscv64-linux-gnu-gcc"] }
        }),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let spec = "name: rv\nsteps:\n  - build:\n      source: /nowhere\n      arch: riscv64\n      run: make\n      server: local-build\n";
    let local_has_rv =
        http.get("/api/v1/resources/local-build", t).body["capabilities"]["toolchains"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v == "riscv64-linux-gnu-gcc");
    if !local_has_rv {
        let r = http.post("/api/v1/jobs", t, json!({ "spec": spec }));
        assert_eq!(r.status, 422, "{}", r.text);
        assert_eq!(r.body["field"], "spec.steps[0].build.server", "{}", r.text);
        let detail = r.body["detail"].as_str().unwrap();
        assert!(
            detail.contains("has no toolchain that builds for riscv64")
                && detail.contains("rv-builder")
                && detail.contains("line 7"),
            "{detail}"
        );
        // The CLI says the same, pointing at the line.
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), spec).unwrap();
        let o = cli(&server.url, t, &["submit", f.path().to_str().unwrap()]);
        assert!(!o.status.success());
        assert!(stderr(&o).contains("rv-builder"), "{}", stderr(&o));
    }
    // Unknown server: refused too, naming it.
    let r = http.post(
        "/api/v1/jobs",
        t,
        json!({ "spec": spec.replace("local-build", "nope") }),
    );
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(r.text.contains("no such resource"), "{}", r.text);
    // Auto: placed by arch and toolchain (rv-builder is the only one); the job queues.
    let r = http.post(
        "/api/v1/jobs",
        t,
        json!({ "spec": spec.replace("      server: local-build\n", "") }),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let why = http.get(
        &format!("/api/v1/jobs/{}/why", r.body["id"].as_str().unwrap()),
        t,
    );
    assert!(why.text.contains("rv-builder"), "{}", why.text);
    // An agent records builds only for jobs it runs.
    let stranger = {
        let r = http.post(
            "/api/v1/tokens",
            t,
            json!({ "name": "stranger", "role": "agent" }),
        );
        assert_eq!(r.status, 201, "{}", r.text);
        r.body["token"].as_str().unwrap().to_string()
    };
    let queued = r.body["id"].as_str().unwrap().to_string();
    for body in [
        json!({ "commit": "c", "branch": "main", "arch": "x86_64" }),
        json!({ "commit": "c", "branch": "main", "arch": "x86_64", "source_job": queued }),
    ] {
        let r = http.post("/api/v1/builds", &stranger, body);
        assert_eq!(r.status, 403, "{}", r.text);
    }
    // Bad input in the build step is a 422 naming the field and its line.
    for (bad, field) in [
        ("      ref: \"-x\"\n", "spec.steps[0].build.ref"),
        (
            "      artifacts: [{ glob: ../etc, kind: other }]\n",
            "spec.steps[0].build.artifacts[0].glob",
        ),
        (
            "      artifacts: [{ glob: a, kind: bzimage }]\n",
            "spec.steps[0].build.artifacts[0].kind",
        ),
    ] {
        let s = format!("{}{bad}", spec.replace("      server: local-build\n", ""));
        let r = http.post("/api/v1/jobs", t, json!({ "spec": s }));
        assert_eq!(r.status, 422, "{s}: {}", r.text);
        assert!(
            r.body["field"].as_str().unwrap().starts_with(field),
            "{s}: {}",
            r.text
        );
    }
    within();
}

#[test]
fn a_build_whose_agent_is_killed_ends_error_and_is_retried() {
    use agent_support::{Agent, agent_token, job, lab, wait_registered, wait_state};
    let within = deadline(Duration::from_secs(170));
    // The resource goes offline (4 s of silence) before the lease would expire (10 s),
    // so the re-queued attempt waits for the agent instead of landing on the dead one.
    let lab = lab("4s", "10s");
    let server = lab.start();
    let http = server.http();
    let t = lab.token.clone();
    let at = agent_token(&http, &t, "bk1");
    let mut agent = Agent::start(&server.url, &at, "bk1", "");
    let res = agent.resource();
    wait_registered(&http, &t, &res);
    let tmp = tempfile::tempdir().unwrap();
    let (repo, commit) = hello_repo(tmp.path());
    let mark = tmp.path().join("first-attempt");
    // The first attempt hangs (and is killed with its agent); the second compiles.
    let run = format!(
        "\"if [ -e {m} ]; then mkdir -p out && gcc -o out/hello hello.c; else touch {m}; sleep 1000; fi\"",
        m = mark.display()
    );
    let spec = build_spec("killed", &repo, &format!("      server: {res}\n"), &run)
        .replace("timeout: 3m\n", "timeout: 3m\nretry_on_error: 1\n");
    let r = http.post("/api/v1/jobs", &t, json!({ "spec": spec }));
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.body["id"].as_str().unwrap().to_string();
    wait_state(&http, &t, &id, "running", Duration::from_secs(30));
    wait_for("the first attempt's build", Duration::from_secs(30), || {
        mark.exists().then_some(())
    });
    agent.kill9();
    // The lab failed: the attempt ends `error` and, per retry_on_error, queues again.
    wait_for("the job to be re-queued", Duration::from_secs(40), || {
        let j = job(&http, &t, &id);
        (j["attempt"] == 2).then_some(())
    });
    let j = job(&http, &t, &id);
    assert!(
        j["state"] == "queued" || j["state"] == "assigned" || j["state"] == "running",
        "{j}"
    );
    assert!(j["reason"].is_string(), "the re-queue says why: {j}");
    agent.spawn();
    let j = wait_job(&http, &t, &id, Duration::from_secs(90));
    assert_eq!(j["state"], "passed", "{j}\n{}", agent.log());
    assert_eq!(j["attempt"], 2);
    assert_eq!(j["steps"][0]["build"]["commit"], commit);
    assert_eq!(j["steps"][0]["build"]["server"], res.as_str());
    let h = http.get("/api/v1/builds/history", &t);
    assert_eq!(h.body["servers"][0]["server"], res.as_str(), "{}", h.text);
    within();
}
