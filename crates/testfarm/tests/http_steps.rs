//! Server-side HTTP workflow jobs (`http`, `wait_for`, `fail_if`, `always`) against a tiny
//! update backend started in the test on a loopback port: an OTA-style run that passes,
//! one the backend fails, one that never finishes, an unreachable URL, a secret that must
//! never reach the log, submit-time refusals, and a restart in the middle of a wait.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use serde_json::{Value, json};
use support::{Http, Lab, wait_for, wait_job};

const TOKEN: &str = "sums-very-secret-token-1234";

/// How the backend's deployments end.
#[derive(Clone, Copy)]
enum Ending {
    /// COMPLETE at the third poll.
    Complete,
    /// FAILED at the second poll.
    Failed,
    /// IN_PROGRESS forever.
    Never,
}

#[derive(Clone)]
struct Backend {
    calls: Arc<Mutex<Vec<String>>>,
    ending: Ending,
    polls: Arc<Mutex<u32>>,
}

impl Backend {
    fn note(&self, headers: &HeaderMap, call: String) {
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let mark = if auth == format!("Bearer {TOKEN}") {
            ""
        } else {
            " (no token)"
        };
        self.calls.lock().unwrap().push(format!("{call}{mark}"));
    }
}

async fn create_event(
    State(b): State<Backend>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (axum::http::StatusCode, Json<Value>) {
    b.note(
        &headers,
        format!("POST /events {}", body["vin"].as_str().unwrap_or("?")),
    );
    (
        axum::http::StatusCode::CREATED,
        Json(json!({"id": "ev-42", "state": "CREATED"})),
    )
}

async fn deployment(
    State(b): State<Backend>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Json<Value> {
    b.note(&headers, format!("GET /deployments/{id}"));
    let n = {
        let mut p = b.polls.lock().unwrap();
        *p += 1;
        *p
    };
    let state = match b.ending {
        Ending::Complete if n >= 3 => "COMPLETE",
        Ending::Failed if n >= 2 => "FAILED",
        _ => "IN_PROGRESS",
    };
    Json(json!({"id": id, "state": state, "progress": n * 10}))
}

async fn report(
    State(b): State<Backend>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Json<Value> {
    b.note(
        &headers,
        format!(
            "POST /events/{id}/results {}",
            body["result"].as_str().unwrap_or("?")
        ),
    );
    Json(json!({"ok": true}))
}

async fn release(
    State(b): State<Backend>,
    headers: HeaderMap,
    Path(dev): Path<String>,
) -> Json<Value> {
    b.note(&headers, format!("POST /devices/{dev}/release"));
    Json(json!({"released": true}))
}

/// Starts the backend on an ephemeral loopback port, in its own thread and runtime.
fn backend(ending: Ending) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let b = Backend {
        calls: Arc::default(),
        ending,
        polls: Arc::default(),
    };
    let calls = b.calls.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let app = axum::Router::new()
                .route("/events", post(create_event))
                .route("/deployments/{id}", get(deployment))
                .route("/events/{id}/results", post(report))
                .route("/devices/{dev}/release", post(release))
                .with_state(b);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    (rx.recv_timeout(Duration::from_secs(10)).unwrap(), calls)
}

/// A lab whose server knows the `sums_token` secret.
fn lab_with_secret() -> Lab {
    let lab = Lab::new();
    lab.fast();
    let text = std::fs::read_to_string(lab.config()).unwrap();
    let text = text.replacen(
        "\n[secrets]\n",
        &format!("\n[secrets]\nsums_token = \"{TOKEN}\"\n"),
        1,
    );
    std::fs::write(lab.config(), text).unwrap();
    lab
}

/// The OTA flow of seed 003, polling fast.
fn ota_spec(api: &str, timeout: &str) -> String {
    format!(
        r#"name: ota-update
timeout: 2m
vars:
  api: "{api}"
  vin: "KMHTEST0000000001"
steps:
  - http:
      method: POST
      url: "{{{{ vars.api }}}}/events"
      headers: {{ authorization: "Bearer {{{{ secrets.sums_token }}}}" }}
      json: {{ vin: "{{{{ vars.vin }}}}" }}
      expect_status: [201]
      save: {{ event_id: "$.id" }}
  - wait_for:
      http:
        url: "{{{{ vars.api }}}}/deployments/{{{{ event_id }}}}"
        headers: {{ authorization: "Bearer {{{{ secrets.sums_token }}}}" }}
        save: {{ deploy_state: "$.state" }}
      until: "$.state in ['COMPLETE', 'FAILED']"
      interval: 200ms
      timeout: {timeout}
  - fail_if: "$.deploy_state != 'COMPLETE'"
  - http:
      method: POST
      url: "{{{{ vars.api }}}}/events/{{{{ event_id }}}}/results"
      headers: {{ authorization: "Bearer {{{{ secrets.sums_token }}}}" }}
      json: {{ result: PASS }}
always:
  - http:
      method: POST
      url: "{{{{ vars.api }}}}/devices/{{{{ vars.vin }}}}/release"
      headers: {{ authorization: "Bearer {{{{ secrets.sums_token }}}}" }}
"#
    )
}

fn submit(http: &Http, t: &str, spec: &str) -> String {
    let r = http.post("/api/v1/jobs", t, json!({"spec": spec}));
    assert_eq!(r.status, 201, "{}", r.text);
    r.body["id"].as_str().unwrap().to_string()
}

fn log(http: &Http, t: &str, id: &str) -> String {
    http.get(&format!("/api/v1/jobs/{id}/log"), t).text
}

fn outcomes(job: &Value) -> Vec<(String, String, bool)> {
    job["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["kind"].as_str().unwrap().to_string(),
                s["outcome"].as_str().unwrap().to_string(),
                s["always"].as_bool().unwrap(),
            )
        })
        .collect()
}

fn assert_no_secret(http: &Http, t: &str, id: &str, job: &Value) {
    let log = log(http, t, id);
    assert!(!log.contains(TOKEN), "the secret is in the log:\n{log}");
    assert!(
        !job.to_string().contains(TOKEN),
        "the secret is in the job: {job}"
    );
    let events = http.get("/api/v1/events?limit=1000", t).text;
    assert!(!events.contains(TOKEN), "the secret is in the events");
}

#[test]
fn ota_flow_passes_and_calls_the_backend_in_order() {
    let (addr, calls) = backend(Ending::Complete);
    let lab = lab_with_secret();
    let server = lab.start();
    let http = server.http();
    let t = &lab.token;
    let id = submit(&http, t, &ota_spec(&format!("http://{addr}"), "20s"));
    let job = wait_job(&http, t, &id, Duration::from_secs(60));
    assert_eq!(job["state"], "passed", "{job}\n{}", log(&http, t, &id));
    let calls = calls.lock().unwrap().clone();
    assert_eq!(
        calls,
        [
            "POST /events KMHTEST0000000001",
            "GET /deployments/ev-42",
            "GET /deployments/ev-42",
            "GET /deployments/ev-42",
            "POST /events/ev-42/results PASS",
            "POST /devices/KMHTEST0000000001/release",
        ]
    );
    let steps = outcomes(&job);
    assert_eq!(steps.len(), 5, "{job}");
    assert!(steps.iter().all(|(_, o, _)| o == "passed"), "{steps:?}");
    assert!(steps[4].2, "the last step is the always step");
    let text = log(&http, t, &id);
    assert!(text.contains("saved event_id = \"ev-42\""), "{text}");
    assert!(text.contains("poll 3:"), "{text}");
    assert_no_secret(&http, t, &id, &job);
}

#[test]
fn a_failed_deployment_fails_the_job_and_still_releases() {
    let (addr, calls) = backend(Ending::Failed);
    let lab = lab_with_secret();
    let server = lab.start();
    let http = server.http();
    let t = &lab.token;
    let id = submit(&http, t, &ota_spec(&format!("http://{addr}"), "20s"));
    let job = wait_job(&http, t, &id, Duration::from_secs(60));
    assert_eq!(job["state"], "failed", "{job}");
    let reason = job["reason"].as_str().unwrap();
    assert!(reason.contains("step 2 (fail_if)"), "{reason}");
    let calls = calls.lock().unwrap().clone();
    assert_eq!(
        calls.last().unwrap(),
        "POST /devices/KMHTEST0000000001/release"
    );
    assert!(!calls.iter().any(|c| c.contains("results")), "{calls:?}");
    let steps = outcomes(&job);
    assert_eq!(steps[2].1, "failed");
    assert_eq!(steps[3].1, "skipped");
    assert_eq!((steps[4].1.as_str(), steps[4].2), ("passed", true));
    assert_no_secret(&http, t, &id, &job);
}

#[test]
fn a_deployment_that_never_ends_times_out_as_failed() {
    let (addr, calls) = backend(Ending::Never);
    let lab = lab_with_secret();
    let server = lab.start();
    let http = server.http();
    let t = &lab.token;
    let id = submit(&http, t, &ota_spec(&format!("http://{addr}"), "1s"));
    let job = wait_job(&http, t, &id, Duration::from_secs(60));
    assert_eq!(job["state"], "failed", "{job}");
    let reason = job["reason"].as_str().unwrap();
    assert!(
        reason.contains("step 1 (wait_for)") && reason.contains("did not hold"),
        "{reason}"
    );
    let calls = calls.lock().unwrap().clone();
    assert!(
        calls.iter().filter(|c| c.starts_with("GET")).count() >= 2,
        "{calls:?}"
    );
    assert_eq!(
        calls.last().unwrap(),
        "POST /devices/KMHTEST0000000001/release"
    );
    assert_no_secret(&http, t, &id, &job);
}

#[test]
fn an_unreachable_backend_is_a_lab_error_and_always_still_runs() {
    // A port nothing listens on: bind one, learn it, close it.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (addr, calls) = backend(Ending::Complete);
    let lab = lab_with_secret();
    let server = lab.start();
    let http = server.http();
    let t = &lab.token;
    let spec = format!(
        r#"name: unreachable
vars: {{ dead: "http://{dead}", api: "http://{addr}" }}
steps:
  - http: {{ method: POST, url: "{{{{ vars.dead }}}}/events", headers: {{ authorization: "Bearer {{{{ secrets.sums_token }}}}" }} }}
always:
  - http: {{ method: POST, url: "{{{{ vars.api }}}}/devices/d1/release", headers: {{ authorization: "Bearer {{{{ secrets.sums_token }}}}" }} }}
"#
    );
    let id = submit(&http, t, &spec);
    let job = wait_job(&http, t, &id, Duration::from_secs(60));
    assert_eq!(job["state"], "error", "{job}");
    let reason = job["reason"].as_str().unwrap();
    assert!(
        reason.contains("step 0 (http)") && reason.contains("connect"),
        "{reason}"
    );
    assert_eq!(*calls.lock().unwrap(), ["POST /devices/d1/release"]);
    let steps = outcomes(&job);
    assert_eq!(steps[0].1, "error");
    assert_eq!(steps[1].1, "passed");
    assert_no_secret(&http, t, &id, &job);
}

#[test]
fn bad_workflow_specs_are_refused_at_submit() {
    let lab = lab_with_secret();
    let server = lab.start();
    let http = server.http();
    let t = &lab.token;
    let refuse = |spec: &str, field: &str| {
        let r = http.post("/api/v1/jobs", t, json!({"spec": spec}));
        assert_eq!(r.status, 422, "{}", r.text);
        assert_eq!(r.body["field"], field, "{}", r.text);
        r.body["detail"].as_str().unwrap().to_string()
    };
    let d = refuse(
        "name: x\nsteps:\n  - http: { url: \"http://h/{{ secrets.nope }}\" }\n",
        "spec.steps[0].http.url",
    );
    assert!(
        d.contains("nope") && d.contains("sums_token") && d.contains("line 3"),
        "{d}"
    );
    let d = refuse(
        "name: x\nsteps:\n  - wait_for:\n      http: { url: \"http://h\" }\n      until: \"$.state = 'A'\"\n      timeout: 1m\n",
        "spec.steps[0].wait_for.until",
    );
    assert!(d.contains("column 9") && d.contains("line 5"), "{d}");
    refuse(
        "name: x\nsteps:\n  - http: { url: \"{{ vars.api }}\" }\n",
        "spec.steps[0].http.url",
    );
    refuse(
        "name: x\nsteps:\n  - http: { url: \"http://h\", save: { id: \"$[\" } }\n",
        "spec.steps[0].http.save.id",
    );
}

#[test]
fn the_example_ota_spec_validates_at_submit() {
    let lab = lab_with_secret();
    let server = lab.start();
    let http = server.http();
    let t = &lab.token;
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/ota-update.yaml"
    );
    let spec = std::fs::read_to_string(path).unwrap();
    // Nothing listens on port 9 of loopback: the job ends error, which is not the point.
    let r = http.post(
        "/api/v1/jobs",
        t,
        json!({"spec": spec, "vars": {"api": "http://127.0.0.1:9"}}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
}

#[test]
fn a_restart_mid_wait_ends_the_job_error_after_its_always_steps() {
    let (addr, calls) = backend(Ending::Never);
    let lab = lab_with_secret();
    let server = lab.start();
    let http = server.http();
    let t = &lab.token;
    let id = submit(&http, t, &ota_spec(&format!("http://{addr}"), "10m"));
    wait_for("the wait to poll", Duration::from_secs(30), || {
        calls
            .lock()
            .unwrap()
            .iter()
            .any(|c| c.starts_with("GET"))
            .then_some(())
    });
    server.kill9();
    let server = lab.start();
    let http = server.http();
    let job = wait_job(&http, t, &id, Duration::from_secs(30));
    assert_eq!(job["state"], "error", "{job}");
    let reason = job["reason"].as_str().unwrap();
    assert!(
        reason.contains("server restarted") && reason.contains("step 1"),
        "{reason}"
    );
    assert_eq!(
        calls.lock().unwrap().last().unwrap(),
        "POST /devices/KMHTEST0000000001/release"
    );
    assert_no_secret(&http, t, &id, &job);
}

#[test]
fn a_cancel_mid_wait_runs_always_and_ends_cancelled() {
    let (addr, calls) = backend(Ending::Never);
    let lab = lab_with_secret();
    let server = lab.start();
    let http = server.http();
    let t = &lab.token;
    let id = submit(&http, t, &ota_spec(&format!("http://{addr}"), "10m"));
    wait_for("the wait to poll", Duration::from_secs(30), || {
        calls
            .lock()
            .unwrap()
            .iter()
            .any(|c| c.starts_with("GET"))
            .then_some(())
    });
    let r = http.post(
        &format!("/api/v1/jobs/{id}/cancel"),
        t,
        json!({"reason": "bench needed"}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let job = wait_job(&http, t, &id, Duration::from_secs(30));
    assert_eq!(job["state"], "cancelled", "{job}");
    assert!(
        job["reason"].as_str().unwrap().contains("bench needed"),
        "{job}"
    );
    assert_eq!(
        calls.lock().unwrap().last().unwrap(),
        "POST /devices/KMHTEST0000000001/release"
    );
    let steps = outcomes(&job);
    assert_eq!(steps[1].1, "error", "{steps:?}");
    assert_eq!(steps[4].1, "passed", "{steps:?}");
}
