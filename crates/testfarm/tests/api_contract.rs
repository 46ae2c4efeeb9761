//! The OpenAPI document is the contract (docs/api.md): what it documents is what the server
//! answers, roles are checked before bodies are read, and the last admin token stays.
//! schemathesis checks the whole document in CI (`.ci/api-conformance`); these pin the
//! rules it found broken, against a real server on a real SQLite file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{Value, json};
use support::{Lab, Resp};

fn problem(r: &Resp, status: u16) {
    assert_eq!(r.status, status, "{}", r.text);
    assert!(
        r.content_type.starts_with("application/problem+json"),
        "{} {}",
        r.content_type,
        r.text
    );
}

#[test]
fn the_role_is_checked_before_the_body_is_read() {
    let lab = Lab::new();
    let server = lab.start();
    let http = server.http();
    let user = http.create_token(&lab.token, "alice", "user");
    // Whatever a caller without the role sends, the answer is 403: not 400, 415 or 422.
    for path in [
        "/api/v1/policies",
        "/api/v1/agents/register",
        "/api/v1/agents/heartbeat",
        "/api/v1/resources",
        "/api/v1/tokens",
        "/api/v1/alerts/01J00000000000000000000000/acknowledge",
        "/api/v1/alerts/01J00000000000000000000000/resolve",
    ] {
        for (ct, body) in [
            ("application/json", "{\"nonsense\": ["),
            ("application/json", "{\"name\": 5}"),
            ("text/plain", "hello"),
        ] {
            problem(&http.call("POST", path, Some(&user), Some((ct, body))), 403);
        }
    }
    // With the role, the same bodies get what is wrong with them.
    let admin = &lab.token;
    let r = http.call(
        "POST",
        "/api/v1/policies",
        Some(admin),
        Some(("application/json", "{\"nonsense\": [")),
    );
    problem(&r, 400);
    let r = http.call(
        "POST",
        "/api/v1/policies",
        Some(admin),
        Some(("text/plain", "hello")),
    );
    problem(&r, 415);
}

#[test]
fn the_last_admin_token_cannot_be_revoked() {
    let lab = Lab::new();
    let server = lab.start();
    let http = server.http();
    let admin = &lab.token;
    let r = http.call("DELETE", "/api/v1/tokens/admin", Some(admin), None);
    problem(&r, 409);
    let detail = r.body["detail"].as_str().unwrap();
    assert!(
        detail.contains("--role admin") && detail.contains("admin.token"),
        "{detail}"
    );
    // Still in charge.
    assert_eq!(http.get("/api/v1/tokens", admin).status, 200);
    // Rotation: make another admin first, then the old one may go.
    let second = http.create_token(admin, "admin-2", "admin");
    let r = http.call("DELETE", "/api/v1/tokens/admin", Some(&second), None);
    assert_eq!(r.status, 200, "{}", r.text);
    problem(&http.get("/api/v1/tokens", admin), 401);
    // And now admin-2 is the last one.
    problem(
        &http.call("DELETE", "/api/v1/tokens/admin-2", Some(&second), None),
        409,
    );
}

#[test]
fn shared_refusals_are_problems_with_the_right_status() {
    let lab = Lab::new();
    let server = lab.start();
    let http = server.http();
    let t = &lab.token;
    // A query parameter that does not parse names itself (was a plain-text 400).
    let r = http.call("DELETE", "/api/v1/leases/x?epoch=-1", Some(t), None);
    problem(&r, 400);
    assert_eq!(r.body["field"], "epoch", "{}", r.text);
    // A path segment that does not parse.
    let r = http.call_with_headers(
        "PUT",
        "/api/v1/jobs/x/logs/abc",
        &http.create_token(t, "agent-1", "agent"),
        &[("x-testfarm-epoch", "1")],
        b"log".to_vec(),
    );
    problem(&r, 400);
    // A method the route does not take: 405 with Allow.
    let r = http.call("PUT", "/api/v1/whoami", Some(t), None);
    problem(&r, 405);
    assert!(r.headers.get("allow").is_some(), "{:?}", r.headers);
    // An array where an object belongs is refused (serde alone took it).
    let r = http.post(
        "/api/v1/resources",
        t,
        json!({"name": "b1", "kind": "build-server", "capabilities": [null, null]}),
    );
    problem(&r, 422);
    assert_eq!(r.body["field"], "capabilities", "{}", r.text);
    // An integer written as 1.0 is an integer, as JSON Schema says.
    let r = http.post(
        "/api/v1/resources",
        t,
        json!({"name": "b1", "kind": "build-server", "capabilities": {"cpus": 4.0}}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["capabilities"]["cpus"], 4);
    // A lease can not be asked for past 366 days (it once stored an unreadable date).
    let r = http.post(
        "/api/v1/leases",
        t,
        json!({"selector": "", "duration": "999999999d"}),
    );
    problem(&r, 422);
    // A body over the limit (last: the server closes that connection).
    let big = format!("{{\"name\": \"{}\"}}", "a".repeat(5 * 1024 * 1024));
    let r = http.call(
        "POST",
        "/api/v1/groups",
        Some(t),
        Some(("application/json", &big)),
    );
    problem(&r, 413);
    assert!(
        server
            .stderr_lines()
            .iter()
            .all(|l| !l.contains("panicked") && !l.contains("corrupt")),
        "{:?}",
        server.stderr_lines()
    );
}

#[test]
fn the_document_states_every_answer() {
    let lab = Lab::new();
    let server = lab.start();
    let http = server.http();
    let doc: Value = http.get("/api/v1/openapi.json", &lab.token).body;
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            operations += 1;
            let responses = op["responses"].as_object().unwrap();
            let open = path == "/healthz" || path == "/readyz";
            if open {
                assert_eq!(op["security"], json!([]), "{method} {path} is open");
            } else {
                assert!(responses.contains_key("401"), "{method} {path}: no 401");
            }
            if path.contains('{') {
                assert!(responses.contains_key("404"), "{method} {path}: no 404");
            }
            if op
                .pointer("/requestBody/content/application~1json")
                .is_some()
            {
                for code in ["400", "413", "415", "422"] {
                    assert!(responses.contains_key(code), "{method} {path}: no {code}");
                }
            }
            for (code, r) in responses {
                if code.starts_with('4') || code.starts_with('5') {
                    assert_eq!(
                        r.pointer("/content/application~1problem+json/schema/$ref"),
                        Some(&json!("#/components/schemas/Problem")),
                        "{method} {path} {code}"
                    );
                    assert!(r.get("content").unwrap().get("application/json").is_none());
                }
            }
        }
    }
    assert!(operations > 40, "{operations}");
    assert!(
        doc.pointer("/components/securitySchemes/bearer").is_some(),
        "bearer scheme"
    );
    // Rules the validators enforce are stated.
    let name = &doc["components"]["schemas"]["CreateResource"]["properties"]["name"];
    assert_eq!(name["pattern"], testfarm_core::patterns::NAME);
    let sel = doc.pointer("/components/schemas/AcquireLease/properties/selector/pattern");
    assert_eq!(sel, Some(&json!(testfarm_core::patterns::SELECTOR)));
}

/// The fuzzer's find: resources reporting huge capabilities overflowed a group's totals
/// (a panic in a debug build, a wrapped number in a release one). They saturate.
#[test]
fn group_capacity_saturates_on_huge_capabilities() {
    let lab = Lab::new();
    let server = lab.start();
    let http = server.http();
    let t = &lab.token;
    for name in ["big-1", "big-2"] {
        let r = http.post(
            "/api/v1/resources",
            t,
            json!({"name": name, "kind": "build-server", "labels": {"size": "huge"},
                   "capabilities": {"memory_mb": u64::MAX, "disk_gb": u64::MAX}}),
        );
        assert_eq!(r.status, 201, "{}", r.text);
    }
    let r = http.post(
        "/api/v1/groups",
        t,
        json!({"name": "huge", "selector": "size=huge"}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let r = http.get("/api/v1/groups/huge", t);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.body["capacity"][0]["memory_mb"],
        json!(u64::MAX),
        "{}",
        r.text
    );
    assert!(
        server
            .stderr_lines()
            .iter()
            .all(|l| !l.contains("panicked")),
        "{:?}",
        server.stderr_lines()
    );
}
