//! Pipelines through a real server: stages on the built-in agent that pass a build to the
//! next stage through templates, a failing middle stage that halts the rest and keeps
//! what ran, a stage that cannot start (a lab error, kept apart from a test failure),
//! submit-time refusals with field, line and column, cancel, history, and the CLI.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::{BIN, Http, Lab, cli, stderr, stdout, wait_for};

const TERMINAL: &[&str] = &["passed", "failed", "error", "cancelled"];

fn wait_pipeline(http: &Http, token: &str, id: &str, timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let p = http.get(&format!("/api/v1/pipelines/{id}"), token);
        assert_eq!(p.status, 200, "{}", p.text);
        if TERMINAL.contains(&p.body["state"].as_str().unwrap_or("")) {
            return p.body;
        }
        if Instant::now() > deadline {
            let events = http.get("/api/v1/events?limit=200", token).text;
            panic!(
                "pipeline {id} did not end in {timeout:?}: {}\nevents: {events}",
                p.text
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn stage<'a>(p: &'a Value, name: &str) -> &'a Value {
    p["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no stage {name} in {p}"))
}

fn submit(http: &Http, token: &str, spec: &str) -> Value {
    let r = http.post("/api/v1/pipelines", token, json!({ "spec": spec }));
    assert_eq!(r.status, 201, "{}", r.text);
    r.body
}

#[test]
fn stages_pass_a_build_to_the_next_through_templates() {
    let lab = Lab::new();
    lab.fast();
    lab.set("agent.local", "enabled", "true");
    let server = lab.start();
    let http = server.http();
    let t = &lab.token;
    wait_for("the built-in build server", Duration::from_secs(20), || {
        (http.get("/api/v1/resources/local-build", t).status == 200).then_some(())
    });
    let token_file = lab.path().join("admin.token");
    let content = "hello pipeline\n";
    let sha: String = Sha256::digest(content.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let spec = format!(
        r#"
name: ci-demo
vars: {{ TFBIN: "{bin}", TFURL: "{url}", TFTOKEN: "{token}" }}
stages:
  - name: build
    job:
      timeout: 2m
      requires: {{ kind: build-server }}
      steps:
        - shell: |
            printf 'hello pipeline\n' > out.bin
            id=$("$TFBIN" artifacts new-build --url "$TFURL" --token-file "$TFTOKEN" \
                 --commit c0ffee --branch main --arch x86_64 --job "$TESTFARM_JOB_ID")
            "$TFBIN" artifacts upload --url "$TFURL" --token-file "$TFTOKEN" \
                 --build "$id" --kind other out.bin
  - name: check
    job:
      timeout: 2m
      requires: {{ kind: build-server }}
      steps:
        - shell: |
            echo "got {{{{ stages.build.artifacts.other }}}} of {{{{ stages.build.commit }}}} in {{{{ pipeline.id }}}}"
            test "{{{{ stages.build.artifacts.other }}}}" = "{sha}"
  - name: report
    needs: [build, check]
    job:
      steps:
        - sleep: 10ms
"#,
        bin = BIN,
        url = server.url,
        token = token_file.display(),
    );
    let started = Instant::now();
    let p = submit(&http, t, &spec);
    let id = p["id"].as_str().unwrap().to_string();
    assert_eq!(p["state"], "running");
    assert_eq!(stage(&p, "build")["state"], "queued", "{p}");
    assert_eq!(stage(&p, "check")["state"], "waiting");
    assert_eq!(stage(&p, "report")["needs"], json!(["build", "check"]));
    let end = wait_pipeline(&http, t, &id, Duration::from_secs(120));
    let check_job = stage(&end, "check")["job"]
        .as_str()
        .unwrap_or_else(|| panic!("the check stage has no job: {end}"))
        .to_string();
    let log = stdout(&cli(&server.url, t, &["logs", &check_job]));
    assert_eq!(end["state"], "passed", "{end}\ncheck log:\n{log}");
    assert!(
        log.contains(&format!("got {sha} of c0ffee in {id}")),
        "the check stage saw the build stage's artifact: {log}"
    );
    for s in ["build", "check", "report"] {
        assert_eq!(stage(&end, s)["state"], "passed", "{end}");
        assert!(stage(&end, s)["ended_at"].is_string());
    }
    eprintln!("pipeline of 3 stages took {:?}", started.elapsed());
    // Stage moves are events.
    let events = http
        .get(
            &format!("/api/v1/events?subject_type=pipeline&subject={id}&limit=500"),
            t,
        )
        .body;
    let kinds: Vec<&str> = events
        .as_array()
        .unwrap_or_else(|| panic!("{events}"))
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    for k in [
        "pipeline.started",
        "pipeline.stage.queued",
        "pipeline.stage.passed",
        "pipeline.passed",
    ] {
        assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
    }
    // The CLI.
    let out = cli(&server.url, t, &["pipeline", "show", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("passed") && text.contains("report"), "{text}");
    let out = cli(&server.url, t, &["pipeline", "list", "--name", "ci-demo"]);
    assert!(stdout(&out).contains(&id), "{}", stdout(&out));
    let h = http.get("/api/v1/pipelines/history?name=ci-demo", t);
    assert_eq!(h.status, 200, "{}", h.text);
    assert_eq!(h.body["runs"], 1);
    assert_eq!(h.body["passed"], 1);
    assert_eq!(h.body["stages"][0]["name"], "build");
    assert_eq!(h.body["stages"].as_array().unwrap().len(), 3);
    let out = cli(&server.url, t, &["pipeline", "history", "ci-demo"]);
    assert!(stdout(&out).contains("100%"), "{}", stdout(&out));
}

#[test]
fn a_failing_stage_halts_the_rest_and_a_lab_error_is_told_apart() {
    let lab = Lab::new();
    lab.fast();
    let server = lab.start();
    let http = server.http();
    let t = &lab.token;
    // Server-side stages: no agent needed.
    let failing = r#"
name: halts
stages:
  - name: first
    job: { steps: [ { sleep: 10ms } ] }
  - name: middle
    job:
      steps: [ { fail_if: "1 == 1" } ]
  - name: last
    job: { steps: [ { sleep: 10ms } ] }
"#;
    let p = submit(&http, t, failing);
    let id = p["id"].as_str().unwrap();
    let end = wait_pipeline(&http, t, id, Duration::from_secs(30));
    assert_eq!(end["state"], "failed", "{end}");
    assert_eq!(end["failed_stage"], "middle");
    assert!(
        end["reason"]
            .as_str()
            .unwrap()
            .contains("the change under test failed"),
        "{end}"
    );
    assert_eq!(stage(&end, "first")["state"], "passed");
    assert_eq!(stage(&end, "middle")["state"], "failed");
    assert_eq!(stage(&end, "last")["state"], "skipped");
    assert!(stage(&end, "last")["job"].is_null(), "never submitted");
    // What ran is kept: the first stage's job and its log.
    let first = stage(&end, "first")["job"].as_str().unwrap();
    assert_eq!(
        http.get(&format!("/api/v1/jobs/{first}"), t).body["state"],
        "passed"
    );
    assert_eq!(
        http.get(&format!("/api/v1/jobs/{first}/log"), t).status,
        200
    );

    // A stage pinned to a resource that does not exist cannot start: the lab's fault.
    let lab_error = r#"
name: lab-fault
stages:
  - name: setup
    job: { steps: [ { sleep: 10ms } ] }
  - name: flash
    job:
      requires: { resource: no-such-board }
      steps: [ { shell: "true" } ]
"#;
    let p = submit(&http, t, lab_error);
    let end = wait_pipeline(&http, t, p["id"].as_str().unwrap(), Duration::from_secs(30));
    assert_eq!(end["state"], "error", "{end}");
    assert_eq!(end["failed_stage"], "flash");
    let reason = end["reason"].as_str().unwrap();
    assert!(reason.contains("the lab failed"), "{reason}");
    assert!(reason.contains("no-such-board"), "{reason}");

    // `pipeline run --follow` exits 1 for a test failure, 3 for a lab error.
    let file = lab.path().join("halts.yaml");
    std::fs::write(&file, failing).unwrap();
    let out = cli(
        &server.url,
        t,
        &["pipeline", "run", file.to_str().unwrap(), "--follow"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("stage middle: failed"),
        "{}",
        stderr(&out)
    );
    let file = lab.path().join("lab.yaml");
    std::fs::write(&file, lab_error).unwrap();
    let out = cli(
        &server.url,
        t,
        &["pipeline", "run", file.to_str().unwrap(), "--follow"],
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let h = http.get("/api/v1/pipelines/history?name=halts", t).body;
    assert_eq!(h["runs"], 2);
    assert_eq!(h["failed"], 2);
    assert_eq!(h["success_rate"], 0.0);
}

#[test]
fn bad_pipelines_are_refused_at_submit_with_field_line_and_column() {
    let lab = Lab::new();
    let server = lab.start();
    let http = server.http();
    let t = &lab.token;
    let cases = [
        (
            "name: p\nstages:\n  - name: a\n    job: { steps: [ { sleep: 1s } ] }\n  - name: b\n    needs: [zz]\n    job: { steps: [ { sleep: 1s } ] }\n",
            "spec.stages[1].needs[0]",
            "unknown stage `zz`",
            6,
        ),
        (
            "name: p\nstages:\n  - name: a\n    needs: [b]\n    job: { steps: [ { sleep: 1s } ] }\n  - name: b\n    job: { steps: [ { sleep: 1s } ] }\n",
            "spec.stages[0].needs",
            "cycle",
            4,
        ),
        (
            "name: p\nstages:\n  - name: a\n    job: { steps: [ { sleep: 1s } ] }\n  - name: b\n    job:\n      steps:\n        - http: { url: \"http://127.0.0.1:1/{{ stages.a.kernal }}\" }\n",
            "spec.stages[1].job.steps[0].http.url",
            "kernal",
            8,
        ),
        (
            "name: p\nstages:\n  - name: a\n    job:\n      steps:\n        - http: { url: \"http://127.0.0.1:1/{{ nothing_saves_this }}\" }\n",
            "spec.stages[0].job.steps[0].http.url",
            "nothing_saves_this",
            6,
        ),
        (
            "name: p\nstages: []\n",
            "spec.stages",
            "at least one stage",
            2,
        ),
    ];
    for (spec, field, message, line) in cases {
        let r = http.post("/api/v1/pipelines", t, json!({ "spec": spec }));
        assert_eq!(r.status, 422, "{spec}: {}", r.text);
        assert_eq!(r.body["field"], field, "{spec}: {}", r.text);
        let detail = r.body["detail"].as_str().unwrap();
        assert!(detail.contains(message), "{spec}: {detail}");
        assert!(
            detail.contains(&format!("line {line},")),
            "{spec}: {detail}"
        );
    }
    assert!(
        http.get("/api/v1/pipelines", t).body["items"]
            .as_array()
            .unwrap()
            .is_empty(),
        "nothing refused was stored"
    );
    let r = http.get("/api/v1/pipelines/history", t);
    assert_eq!(r.status, 400, "{}", r.text);
    let r = http.get("/api/v1/pipelines?state=bogus", t);
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(http.get("/api/v1/pipelines/nope", t).status, 404);
}

#[test]
fn cancel_stops_the_running_stage_and_skips_the_rest() {
    let lab = Lab::new();
    lab.fast();
    let server = lab.start();
    let http = server.http();
    let t = &lab.token;
    let p = submit(
        &http,
        t,
        r#"
name: long
stages:
  - name: wait
    job: { steps: [ { sleep: 60s } ] }
  - name: after
    job: { steps: [ { sleep: 10ms } ] }
"#,
    );
    let id = p["id"].as_str().unwrap();
    wait_for("the first stage to run", Duration::from_secs(20), || {
        let p = http.get(&format!("/api/v1/pipelines/{id}"), t).body;
        (stage(&p, "wait")["state"] == "running").then_some(())
    });
    let user = http.create_token(t, "someone-else", "user");
    let r = http.post(&format!("/api/v1/pipelines/{id}/cancel"), &user, json!({}));
    assert_eq!(
        r.status, 403,
        "only the submitter or an operator: {}",
        r.text
    );
    let started = Instant::now();
    let r = http.post(
        &format!("/api/v1/pipelines/{id}/cancel"),
        t,
        json!({ "reason": "not needed" }),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let end = wait_pipeline(&http, t, id, Duration::from_secs(20));
    assert!(started.elapsed() < Duration::from_secs(15));
    assert_eq!(end["state"], "cancelled", "{end}");
    assert_eq!(end["reason"], "not needed");
    assert_eq!(stage(&end, "wait")["state"], "cancelled");
    assert_eq!(stage(&end, "after")["state"], "skipped");
    let r = http.post(&format!("/api/v1/pipelines/{id}/cancel"), t, json!({}));
    assert_eq!(r.status, 409, "{}", r.text);
}
