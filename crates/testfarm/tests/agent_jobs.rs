//! Real server + real `testfarm agent` processes: registration with measured capabilities,
//! shell jobs that pass, fail, cannot run (error), time out, and are cancelled, with
//! `always` steps, uploads and logs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod agent_support;
mod support;

use std::time::Duration;

use agent_support::*;

struct Setup {
    _lab: support::Lab,
    server: support::Server,
    agent: Agent,
    token: String,
    http: support::Http,
}

fn setup(name: &str) -> Setup {
    let lab = lab("30s", "30s");
    let server = lab.start();
    let http = server.http();
    let at = agent_token(&http, &lab.token, name);
    let agent = Agent::start(&server.url, &at, name, "labels = { team = \"kernel\" }\n");
    wait_registered(&http, &lab.token, &agent.resource());
    let token = lab.token.clone();
    Setup {
        _lab: lab,
        server,
        agent,
        token,
        http,
    }
}

impl Setup {
    /// Reads a pid file the job writes; on timeout, shows the job and the agent's log.
    fn pid(&self, id: &str, path: &std::path::Path) -> i32 {
        let start = std::time::Instant::now();
        loop {
            if let Some(p) = std::fs::read_to_string(path)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                return p;
            }
            if start.elapsed() > Duration::from_secs(30) {
                let j = job(&self.http, &self.token, id);
                let why = self
                    .http
                    .get(&format!("/api/v1/jobs/{id}/why"), &self.token)
                    .text;
                let r = self
                    .http
                    .get(
                        &format!("/api/v1/resources/{}", self.agent.resource()),
                        &self.token,
                    )
                    .text;
                panic!(
                    "no pid from job {id}: {j}\nwhy: {why}\nresource: {r}\nagent log:\n{}",
                    self.agent.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the job to end; on timeout, shows the job and the agent's log.
    fn wait(&self, id: &str) -> serde_json::Value {
        let start = std::time::Instant::now();
        loop {
            let j = job(&self.http, &self.token, id);
            let state = j["state"].as_str().unwrap_or("").to_string();
            if ["passed", "failed", "error", "cancelled", "timed_out"].contains(&state.as_str()) {
                if start.elapsed() > Duration::from_secs(15) {
                    eprintln!(
                        "slow job {id} ({:?}): {j}\nagent log:\n{}",
                        start.elapsed(),
                        self.agent.log()
                    );
                }
                return j;
            }
            if start.elapsed() > Duration::from_secs(60) {
                let why = self
                    .http
                    .get(&format!("/api/v1/jobs/{id}/why"), &self.token)
                    .text;
                let r = self
                    .http
                    .get(
                        &format!("/api/v1/resources/{}", self.agent.resource()),
                        &self.token,
                    )
                    .text;
                panic!(
                    "job {id} did not end: {j}\nwhy: {why}\nresource: {r}\nagent log:\n{}",
                    self.agent.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn registration_reports_measured_capabilities() {
    let s = setup("cap1");
    let r = s.http.get(
        &format!("/api/v1/resources/{}", s.agent.resource()),
        &s.token,
    );
    let caps = &r.body["capabilities"];
    assert!(caps["cpus"].as_u64().unwrap() >= 1, "{}", r.text);
    assert!(caps["memory_mb"].as_u64().unwrap() > 100, "{}", r.text);
    assert!(caps["disk_gb"].is_u64(), "{}", r.text);
    assert!(caps["kvm"].is_boolean(), "{}", r.text);
    assert!(
        caps["toolchains"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "cargo"),
        "{}",
        r.text
    );
    assert_eq!(r.body["labels"]["team"], "kernel");
    assert!(r.body["labels"]["arch"].is_string(), "{}", r.text);
    // Idempotent: a restarted agent finds the same resource again.
    let id = r.body["id"].clone();
    let mut agent = s.agent;
    agent.kill9();
    agent.spawn();
    std::thread::sleep(Duration::from_secs(2));
    let r2 = s
        .http
        .get(&format!("/api/v1/resources/{}", agent.resource()), &s.token);
    assert_eq!(r2.body["id"], id);
    drop(s.server);
}

#[test]
fn a_shell_job_passes_with_log_steps_and_outputs() {
    let s = setup("pass1");
    let id = submit(
        &s.http,
        &s.token,
        &spec(
            &s.agent.resource(),
            "vars: { who: world }\nsteps:\n  - shell: |\n      echo \"hello $who from $TESTFARM_JOB_ID\"\n      echo report > report.txt\n  - upload: { path: report.txt, name: report.txt }\n",
        ),
    );
    let j = s.wait(&id);
    assert_eq!(j["state"], "passed", "{j}\n{}", s.agent.log());
    let steps = j["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2, "{j}");
    assert_eq!(steps[0]["outcome"], "passed");
    assert!(steps[0]["duration_ms"].is_u64());
    let log = log(&s.http, &s.token, &id);
    assert!(log.contains(&format!("hello world from {id}")), "{log}");
    // The lease ended with the job: the resource is free again.
    wait_registered(&s.http, &s.token, &s.agent.resource());
}

#[test]
fn a_failing_script_ends_failed_and_a_missing_interpreter_ends_error() {
    let s = setup("fail1");
    let id = submit(
        &s.http,
        &s.token,
        &spec(
            &s.agent.resource(),
            "steps:\n  - shell: exit 3\n  - shell: echo never\n",
        ),
    );
    let j = s.wait(&id);
    assert_eq!(j["state"], "failed", "{j}");
    assert_eq!(j["steps"][0]["exit_code"], 3, "{j}");
    assert_eq!(j["steps"][1]["outcome"], "skipped", "{j}");

    let id = submit(
        &s.http,
        &s.token,
        &spec(
            &s.agent.resource(),
            "steps:\n  - shell: |\n      #!/no/such/interpreter\n      print(1)\n",
        ),
    );
    let j = s.wait(&id);
    assert_eq!(j["state"], "error", "{j}");
    assert!(
        j["reason"]
            .as_str()
            .unwrap_or("")
            .contains("interpreter /no/such/interpreter not found")
            || j["steps"][0]["reason"]
                .as_str()
                .unwrap_or("")
                .contains("interpreter /no/such/interpreter not found"),
        "{j}"
    );
}

#[test]
fn always_runs_after_a_failure_and_after_a_timeout() {
    let s = setup("always1");
    let marks = tempfile::tempdir().unwrap();
    let m1 = marks.path().join("after-failure");
    let id = submit(
        &s.http,
        &s.token,
        &spec(
            &s.agent.resource(),
            &format!(
                "steps:\n  - shell: exit 1\nalways:\n  - shell: touch {}\n",
                m1.display()
            ),
        ),
    );
    let j = s.wait(&id);
    assert_eq!(j["state"], "failed", "{j}");
    assert!(m1.exists(), "always did not run after a failure");

    let m2 = marks.path().join("after-timeout");
    let id = submit(
        &s.http,
        &s.token,
        &format!(
            "name: t\ntimeout: 2s\nrequires: {{ kind: build-server, resource: {} }}\nsteps:\n  - shell: sleep 1000\nalways:\n  - shell: touch {}\n",
            s.agent.resource(),
            m2.display()
        ),
    );
    let j = s.wait(&id);
    assert_eq!(j["state"], "timed_out", "{j}\n{}", s.agent.log());
    assert!(m2.exists(), "always did not run after a timeout");
    let steps = j["steps"].as_array().unwrap();
    assert_eq!(steps[0]["outcome"], "timed_out");
    assert_eq!(steps[1]["always"], true);
}

#[test]
fn cancel_kills_the_whole_process_group() {
    let s = setup("cancel1");
    let marks = tempfile::tempdir().unwrap();
    let pidfile = marks.path().join("grandchild.pid");
    let m = marks.path().join("cleanup");
    let id = submit(
        &s.http,
        &s.token,
        &spec(
            &s.agent.resource(),
            &format!(
                "steps:\n  - shell: |\n      sh -c 'sleep 1000 & echo $! > {p}; wait' &\n      sleep 1000\nalways:\n  - shell: touch {m}\n",
                p = pidfile.display(),
                m = m.display()
            ),
        ),
    );
    let pid = s.pid(&id, &pidfile);
    assert!(alive(pid));
    let r = s.http.post(
        &format!("/api/v1/jobs/{id}/cancel"),
        &s.token,
        serde_json::json!({ "reason": "test" }),
    );
    assert!(r.status < 300, "{}", r.text);
    let j = s.wait(&id);
    assert_eq!(j["state"], "cancelled", "{j}\n{}", s.agent.log());
    wait_for("the grandchild to die", Duration::from_secs(10), || {
        (!alive(pid)).then_some(())
    });
    assert!(m.exists(), "always did not run after the cancel");
}
