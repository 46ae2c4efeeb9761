//! The foundation through a real server process with a real SQLite file: resources,
//! groups, tokens and roles, problems, events (SSE), OpenAPI, metrics, restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader, Read};
use std::time::{Duration, Instant};

use serde_json::json;
use support::{Lab, Resp, cli, stderr, stdout};

fn assert_problem(r: &Resp, status: u16, field: Option<&str>) {
    assert_eq!(r.status, status, "{}", r.text);
    assert!(
        r.content_type.starts_with("application/problem+json"),
        "{}",
        r.content_type
    );
    assert!(
        r.body["type"]
            .as_str()
            .unwrap()
            .starts_with("urn:testfarm:problem:"),
        "{}",
        r.text
    );
    assert!(!r.body["detail"].as_str().unwrap().is_empty(), "{}", r.text);
    if let Some(f) = field {
        assert_eq!(r.body["field"], f, "{}", r.text);
    }
}

#[test]
fn resources_survive_a_restart() {
    let lab = Lab::new();
    let server = lab.start();
    let http = server.http();
    let t = &lab.token;

    let r = http.post(
        "/api/v1/resources",
        t,
        json!({"name": "bs-1", "kind": "build-server", "labels": {"arch": "arm64", "team": "kernel"},
               "capabilities": {"cpus": 16, "memory_mb": 65536, "toolchains": ["aarch64-linux-gnu-gcc"]}}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["state"], "available");
    assert_eq!(r.body["id"].as_str().unwrap().len(), 26, "ULID id");
    let r = http.post(
        "/api/v1/resources",
        t,
        json!({"name": "rpi-1", "kind": "board", "labels": {"arch": "arm64", "team": "bsp"},
               "board": {"board_type": "rpi4", "serial_number": "S1", "power_method": "pdu"}}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let r = http.post(
        "/api/v1/resources",
        t,
        json!({"name": "q-1", "kind": "qemu-host", "capabilities": {"cpus": 8}}),
    );
    assert_eq!(r.status, 201, "{}", r.text);

    // Filters: kind, state, selector (set form), paging.
    let names = |r: &Resp| -> Vec<String> {
        r.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        names(&http.get("/api/v1/resources?kind=board", t)),
        ["rpi-1"]
    );
    let sel = http.get(
        "/api/v1/resources?selector=arch%3Darm64%2Cteam%20in%20(kernel%2Cbsp)",
        t,
    );
    assert_eq!(names(&sel), ["bs-1", "rpi-1"]);
    let p1 = http.get("/api/v1/resources?limit=2", t);
    assert_eq!(names(&p1).len(), 2);
    let cursor = p1.body["next_cursor"].as_str().unwrap().to_string();
    let p2 = http.get(&format!("/api/v1/resources?limit=2&cursor={cursor}"), t);
    assert_eq!(names(&p2), ["q-1"]);
    assert!(p2.body["next_cursor"].is_null());

    // Labels, maintenance with a window, retire, delete.
    let r = http.call(
        "PATCH",
        "/api/v1/resources/rpi-1/labels",
        Some(t),
        Some((
            "application/json",
            &json!({"set": {"rack": "r2"}, "remove": ["team"]}).to_string(),
        )),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["labels"], json!({"arch": "arm64", "rack": "r2"}));
    let r = http.post(
        "/api/v1/resources/rpi-1/maintenance",
        t,
        json!({"enabled": true, "reason": "fan",
        "end": "2099-01-01T00:00:00Z"}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["state"], "maintenance");
    assert_eq!(r.body["maintenance"]["reason"], "fan");
    assert_eq!(
        names(&http.get("/api/v1/resources?state=maintenance", t)),
        ["rpi-1"]
    );
    let r = http.post("/api/v1/resources/q-1/retire", t, json!({"reason": "old"}));
    assert_eq!(r.body["state"], "retired", "{}", r.text);
    let r = http.call("DELETE", "/api/v1/resources/bs-1", Some(t), None);
    assert_problem(&r, 409, None);
    let r = http.call("DELETE", "/api/v1/resources/q-1", Some(t), None);
    assert_eq!(r.status, 204, "{}", r.text);

    // Groups: members and capacity by kind.
    let r = http.post(
        "/api/v1/groups",
        t,
        json!({"name": "arm", "selector": "arch=arm64"}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let g = http.get("/api/v1/groups/arm", t);
    assert_eq!(g.status, 200, "{}", g.text);
    assert_eq!(g.body["members"].as_array().unwrap().len(), 2);
    let caps = g.body["capacity"].as_array().unwrap();
    let bs = caps.iter().find(|c| c["kind"] == "build-server").unwrap();
    assert_eq!(bs["cpus"], 16);
    assert_eq!(bs["available"], 1);
    let board = caps.iter().find(|c| c["kind"] == "board").unwrap();
    assert_eq!(board["maintenance"], 1);

    let events_before = http
        .get("/api/v1/events?limit=1000", t)
        .body
        .as_array()
        .unwrap()
        .len();
    assert!(
        events_before >= 8,
        "every change is an event: {events_before}"
    );

    // A clean stop (SIGTERM) exits 0; a restart finds everything.
    let status = server.stop();
    assert!(
        status.success(),
        "SIGTERM should stop the server cleanly: {status:?}"
    );
    let server = lab.start();
    let http = server.http();
    let r = http.get("/api/v1/resources/rpi-1", t);
    assert_eq!(r.status, 200);
    assert_eq!(r.body["state"], "maintenance");
    assert_eq!(r.body["labels"]["rack"], "r2");
    assert_eq!(r.body["board"]["board_type"], "rpi4");
    assert_eq!(names(&http.get("/api/v1/resources", t)), ["bs-1", "rpi-1"]);
    assert_eq!(http.get("/api/v1/groups/arm", t).status, 200);
    let events = http.get("/api/v1/events?limit=1000", t).body;
    assert_eq!(events.as_array().unwrap().len(), events_before);
    let kinds: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    for k in [
        "resource.created",
        "resource.labels_changed",
        "resource.maintenance_on",
        "resource.retired",
        "resource.deleted",
        "group.created",
    ] {
        assert!(kinds.contains(&k), "missing event {k} in {kinds:?}");
    }
    assert!(lab.path().join("data.sqlite3").exists());
}

#[test]
fn auth_roles_and_problems() {
    let lab = Lab::new();
    let server = lab.start();
    let http = server.http();
    let t = &lab.token;

    // Health checks need no token; everything else does.
    assert_eq!(http.call("GET", "/healthz", None, None).status, 200);
    assert_eq!(http.call("GET", "/readyz", None, None).status, 200);
    for path in [
        "/api/v1/resources",
        "/api/v1/events",
        "/metrics",
        "/api/v1/openapi.json",
    ] {
        assert_problem(&http.call("GET", path, None, None), 401, None);
    }
    assert_problem(
        &http.call("GET", "/api/v1/resources", Some("tf_x_y"), None),
        401,
        None,
    );
    let bogus = format!("tf_{}_{}", "0".repeat(26), "a".repeat(64));
    assert_problem(
        &http.call("GET", "/api/v1/resources", Some(&bogus), None),
        401,
        None,
    );

    // Roles: a user reads but cannot change resources; an operator cannot make tokens.
    let user = http.post(
        "/api/v1/tokens",
        t,
        json!({"name": "alice", "role": "user"}),
    );
    assert_eq!(user.status, 201, "{}", user.text);
    let user = user.body["token"].as_str().unwrap().to_string();
    let op = http
        .post(
            "/api/v1/tokens",
            t,
            json!({"name": "ops", "role": "operator"}),
        )
        .body["token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(http.get("/api/v1/resources", &user).status, 200);
    assert_problem(
        &http.post(
            "/api/v1/resources",
            &user,
            json!({"name": "x", "kind": "board"}),
        ),
        403,
        None,
    );
    assert_problem(
        &http.post("/api/v1/tokens", &op, json!({"name": "y", "role": "admin"})),
        403,
        None,
    );
    assert_eq!(
        http.post(
            "/api/v1/resources",
            &op,
            json!({"name": "x", "kind": "board"})
        )
        .status,
        201
    );
    assert_eq!(
        http.get("/api/v1/whoami", &op).body,
        json!({"name": "ops", "role": "operator"})
    );

    // Tokens are stored hashed: the secret is nowhere in the database file.
    let db = std::fs::read(lab.path().join("data.sqlite3")).unwrap();
    let wal = std::fs::read(lab.path().join("data.sqlite3-wal")).unwrap_or_default();
    let secret = user.rsplit('_').next().unwrap();
    for bytes in [&db, &wal] {
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "secret stored in clear"
        );
    }
    // Revocation takes effect at once.
    assert_eq!(
        http.call("DELETE", "/api/v1/tokens/alice", Some(t), None)
            .status,
        200
    );
    assert_problem(&http.get("/api/v1/resources", &user), 401, None);
    let listed = http.get("/api/v1/tokens", t);
    assert!(!listed.text.contains(secret));

    // Bad input: problem+json naming the field, never a 500, nothing stored.
    let raw = |body: &str| {
        http.call(
            "POST",
            "/api/v1/resources",
            Some(t),
            Some(("application/json", body)),
        )
    };
    assert_problem(&raw("{\"name\": \"a\", "), 400, Some("body"));
    assert_problem(&raw("not json"), 400, Some("body"));
    assert_problem(
        &http.call(
            "POST",
            "/api/v1/resources",
            Some(t),
            Some(("text/plain", "{}")),
        ),
        415,
        Some("body"),
    );
    assert_problem(
        &http.post(
            "/api/v1/resources",
            t,
            json!({"name": "a", "kind": "toaster"}),
        ),
        422,
        Some("kind"),
    );
    assert_problem(
        &http.post(
            "/api/v1/resources",
            t,
            json!({"name": "a", "kind": "board", "labels": {"arch": 5}}),
        ),
        422,
        Some("labels.arch"),
    );
    assert_problem(
        &http.post(
            "/api/v1/resources",
            t,
            json!({"name": "a", "kind": "board", "colour": "red"}),
        ),
        422,
        None,
    );
    assert_problem(
        &http.post(
            "/api/v1/resources",
            t,
            json!({"name": "Bad Name", "kind": "board"}),
        ),
        422,
        Some("name"),
    );
    assert_problem(
        &http.post(
            "/api/v1/resources",
            t,
            json!({"name": "a", "kind": "board", "labels": {"bad key": "x"}}),
        ),
        422,
        Some("labels.bad key"),
    );
    assert_problem(
        &http.post(
            "/api/v1/resources",
            t,
            json!({"name": "x", "kind": "board"}),
        ),
        409,
        Some("name"),
    );
    assert_problem(
        &http.get("/api/v1/resources?selector=team%20in%20a", t),
        400,
        Some("selector"),
    );
    assert!(
        http.get("/api/v1/resources?selector=team%20in%20a", t).body["detail"]
            .as_str()
            .unwrap()
            .contains("column 9")
    );
    assert_problem(&http.get("/api/v1/resources?kind=vm", t), 400, Some("kind"));
    assert_problem(
        &http.get("/api/v1/resources?limit=0", t),
        400,
        Some("limit"),
    );
    assert_problem(&http.get("/api/v1/resources/nope", t), 404, None);
    assert_problem(&http.get("/api/v1/nothing-here", t), 404, None);
    let inverted =
        json!({"enabled": true, "start": "2030-01-02T00:00:00Z", "end": "2030-01-01T00:00:00Z"});
    assert_problem(
        &http.post("/api/v1/resources/x/maintenance", t, inverted),
        422,
        Some("end"),
    );
    assert_problem(
        &http.post(
            "/api/v1/resources/x/maintenance",
            t,
            json!({"enabled": false}),
        ),
        409,
        None,
    );
    let after = http.get("/api/v1/resources", t);
    assert_eq!(
        after.body["items"].as_array().unwrap().len(),
        1,
        "nothing half-written: {}",
        after.text
    );
    assert!(
        server
            .stderr_lines()
            .iter()
            .all(|l| !l.contains("panicked"))
    );
}

#[test]
fn openapi_lists_every_served_route() {
    let lab = Lab::new();
    let server = lab.start();
    let http = server.http();
    let doc = http.get("/api/v1/openapi.json", &lab.token);
    assert_eq!(doc.status, 200);
    assert!(doc.body["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc.body["paths"].as_object().unwrap();
    // Every route of the foundation is documented...
    for (method, path) in [
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/metrics"),
        ("get", "/api/v1/openapi.json"),
        ("get", "/api/v1/whoami"),
        ("post", "/api/v1/tokens"),
        ("get", "/api/v1/tokens"),
        ("delete", "/api/v1/tokens/{name}"),
        ("post", "/api/v1/resources"),
        ("get", "/api/v1/resources"),
        ("get", "/api/v1/resources/{name}"),
        ("delete", "/api/v1/resources/{name}"),
        ("patch", "/api/v1/resources/{name}/labels"),
        ("post", "/api/v1/resources/{name}/maintenance"),
        ("post", "/api/v1/resources/{name}/retire"),
        ("post", "/api/v1/groups"),
        ("get", "/api/v1/groups"),
        ("get", "/api/v1/groups/{name}"),
        ("delete", "/api/v1/groups/{name}"),
        ("get", "/api/v1/events"),
        ("get", "/api/v1/events/stream"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing from the document"
        );
    }
    // ...and every documented operation is served (not the router's fallback, not 405).
    let mut checked = 0;
    for (path, ops) in paths {
        for method in ops.as_object().unwrap().keys() {
            if path.ends_with("/stream") {
                continue; // an endless body; covered by the SSE test
            }
            let concrete = path.replace("{name}", "no-such-thing");
            let body =
                (method != "get" && method != "delete").then_some(("application/json", "{}"));
            let r = http.call(&method.to_uppercase(), &concrete, Some(&lab.token), body);
            assert_ne!(r.status, 405, "{method} {path}");
            assert!(
                !r.text.contains("no such route"),
                "{method} {path} is documented but not served"
            );
            checked += 1;
        }
    }
    assert!(checked >= 20, "{checked}");
}

#[test]
fn events_stream_resumes_from_last_event_id() {
    let lab = Lab::new();
    let server = lab.start();
    let http = server.http();
    let t = &lab.token;
    for i in 0..3 {
        assert_eq!(
            http.post(
                "/api/v1/resources",
                t,
                json!({"name": format!("b{i}"), "kind": "board"})
            )
            .status,
            201
        );
    }
    let all = http.get("/api/v1/events", t).body;
    let ids: Vec<i64> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    let resume_from = ids[ids.len() - 2];

    // Raw HTTP so the test sees exactly what a browser's EventSource sees.
    let addr = server.url.trim_start_matches("http://").to_string();
    let mut sock = std::net::TcpStream::connect(&addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    use std::io::Write;
    write!(sock, "GET /api/v1/events/stream HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {t}\r\nLast-Event-ID: {resume_from}\r\nAccept: text/event-stream\r\n\r\n").unwrap();
    let mut reader = BufReader::new(sock.try_clone().unwrap());
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut created_live = false;
    let mut line = String::new();
    while Instant::now() < deadline && seen.len() < 2 {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        if let Some(id) = line.trim().strip_prefix("id:") {
            seen.push(id.trim().parse::<i64>().unwrap());
            if !created_live {
                created_live = true;
                // A change made while the stream is open arrives on it.
                assert_eq!(
                    http.post(
                        "/api/v1/resources",
                        t,
                        json!({"name": "live", "kind": "board"})
                    )
                    .status,
                    201
                );
            }
        }
    }
    assert_eq!(
        seen[0],
        ids[ids.len() - 1],
        "resumes right after Last-Event-ID"
    );
    assert!(seen[1] > seen[0], "then the live event: {seen:?}");
    let _ = sock.shutdown(std::net::Shutdown::Both);
    let mut rest = Vec::new();
    let _ = reader.read_to_end(&mut rest);
}

#[test]
fn metrics_are_prometheus_text() {
    let lab = Lab::new();
    let server = lab.start();
    let http = server.http();
    assert_eq!(
        http.post(
            "/api/v1/resources",
            &lab.token,
            json!({"name": "b", "kind": "board"})
        )
        .status,
        201
    );
    let m = http.get("/metrics", &lab.token);
    assert_eq!(m.status, 200);
    assert!(
        m.text
            .contains("testfarm_resources{kind=\"board\",state=\"available\"} 1"),
        "{}",
        m.text
    );
    // Counted per method, route template and status; a second request to the same
    // route (another resource's name in the path) counts on the same series.
    assert_eq!(http.get("/api/v1/resources/b", &lab.token).status, 200);
    assert_eq!(http.get("/api/v1/resources/nope", &lab.token).status, 404);
    assert_eq!(http.get("/api/v1/resources/b", &lab.token).status, 200);
    let m = http.get("/metrics", &lab.token);
    for line in [
        r#"testfarm_http_requests_total{method="POST",route="/api/v1/resources",status="201"} 1"#,
        r#"testfarm_http_requests_total{method="GET",route="/api/v1/resources/{name}",status="200"} 2"#,
        r#"testfarm_http_requests_total{method="GET",route="/api/v1/resources/{name}",status="404"} 1"#,
        r#"testfarm_http_request_duration_seconds_count{method="GET",route="/api/v1/resources/{name}"} 3"#,
    ] {
        assert!(m.text.contains(line), "{line} missing from\n{}", m.text);
    }
}

#[test]
fn config_typo_stops_the_server_with_line_and_column() {
    let lab = Lab::new();
    let config = lab.config();
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("[log]\n", "[log]\nformt = \"json\"\n");
    std::fs::write(&config, &text).unwrap();
    let line = text.lines().position(|l| l.starts_with("formt")).unwrap() + 1;
    let out = std::process::Command::new(support::BIN)
        .arg("server")
        .arg("-f")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains(&format!("config.toml:{line}:1:")), "{err}");
    assert!(err.contains("did you mean `format`"), "{err}");
}

#[test]
fn init_never_overwrites_without_force() {
    let lab = Lab::new();
    let token_path = lab.path().join("admin.token");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&token_path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(lab.path().join("work").is_dir());
    std::fs::write(lab.config(), "# mine\n").unwrap();
    let again = std::process::Command::new(support::BIN)
        .args(["init", "--non-interactive", "--base-dir"])
        .arg(lab.path())
        .output()
        .unwrap();
    assert!(again.status.success());
    assert_eq!(std::fs::read_to_string(lab.config()).unwrap(), "# mine\n");
    assert_eq!(
        std::fs::read_to_string(&token_path).unwrap().trim(),
        lab.token
    );
    let forced = std::process::Command::new(support::BIN)
        .args(["init", "--non-interactive", "--force", "--base-dir"])
        .arg(lab.path())
        .output()
        .unwrap();
    assert!(forced.status.success());
    assert_ne!(
        std::fs::read_to_string(&token_path).unwrap().trim(),
        lab.token
    );
    assert!(
        std::fs::read_to_string(lab.config())
            .unwrap()
            .contains("[server]")
    );
    assert!(stdout(&forced).contains("admin token"));
}

#[test]
fn cli_manages_resources_groups_and_tokens() {
    let lab = Lab::new();
    let server = lab.start();
    let (url, t) = (&server.url, &lab.token);
    let ok = |args: &[&str]| {
        let o = cli(url, t, args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        stdout(&o)
    };
    ok(&[
        "resource",
        "add",
        "bs-1",
        "--kind",
        "build-server",
        "-l",
        "arch=x86_64",
        "--cpus",
        "8",
        "--toolchain",
        "gcc",
    ]);
    ok(&[
        "resource",
        "add",
        "rpi-1",
        "--kind",
        "board",
        "-l",
        "team=bsp",
        "--board-type",
        "rpi4",
        "--serial-number",
        "S9",
    ]);
    let table = ok(&["resource", "list"]);
    assert!(table.lines().next().unwrap().starts_with("NAME"), "{table}");
    assert!(table.contains("bs-1") && table.contains("rpi-1"), "{table}");
    let listed: serde_json::Value =
        serde_json::from_str(&ok(&["resource", "list", "--json", "-s", "team=bsp"])).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["board"]["serial_number"], "S9");
    let show = ok(&["resource", "show", "bs-1"]);
    assert!(
        show.contains("toolchains") && show.contains("gcc"),
        "{show}"
    );
    let labelled = ok(&["resource", "label", "rpi-1", "rack=r1", "team-"]);
    assert!(
        labelled.contains("rack=r1") && !labelled.contains("team"),
        "{labelled}"
    );
    assert!(
        ok(&[
            "resource",
            "maintenance",
            "rpi-1",
            "on",
            "--reason",
            "reflash"
        ])
        .contains("maintenance")
    );
    assert!(ok(&["resource", "maintenance", "rpi-1", "off"]).contains("available"));
    assert!(ok(&["resource", "retire", "bs-1", "--reason", "eol"]).contains("retired"));
    ok(&["group", "add", "boards", "-s", "kind=board"]);
    let g = ok(&["group", "show", "boards"]);
    assert!(g.contains("rpi-1") && g.contains("UTILIZATION"), "{g}");
    let tok = ok(&["token", "create", "--name", "ci", "--role", "user"]);
    assert!(tok.trim().starts_with("tf_"), "{tok}");
    assert!(ok(&["token", "list"]).contains("ci"));
    ok(&["token", "revoke", "ci"]);

    // Refusals exit 1 with the server's detail; usage errors exit 2.
    let dup = cli(url, t, &["resource", "add", "rpi-1", "--kind", "board"]);
    assert_eq!(dup.status.code(), Some(1));
    assert!(stderr(&dup).contains("already exists"), "{}", stderr(&dup));
    let bad = cli(url, t, &["resource", "list", "-s", "a in"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(stderr(&bad).contains("selector"), "{}", stderr(&bad));
    assert_eq!(cli(url, t, &["resource", "add"]).status.code(), Some(2));
    assert_eq!(
        cli(url, t, &["resource", "add", "x", "--kind", "vm"])
            .status
            .code(),
        Some(2)
    );
    let weak = cli(url, "tf_nope_nope", &["resource", "list"]);
    assert_eq!(weak.status.code(), Some(1));
    assert!(stderr(&weak).contains("401"), "{}", stderr(&weak));
}

#[test]
fn init_on_a_terminal_asks_for_listen_and_url() {
    // `script` gives init a real pseudo-terminal, as a person would have.
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("lab");
    let mut child = std::process::Command::new("script")
        .arg("-qec")
        .arg(format!(
            "{} init --base-dir {}",
            support::BIN,
            base.display()
        ))
        .arg("/dev/null")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("script (util-linux) is installed");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"nonsense\n127.0.0.1:9191\nhttp://lab.example:9191\n")
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "init did not finish");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(out.contains("Listen address [127.0.0.1:8080]"), "{out}");
    assert!(
        out.contains("not an address:port"),
        "a bad answer is asked again: {out}"
    );
    let config = std::fs::read_to_string(base.join("config.toml")).unwrap();
    assert!(config.contains("listen = \"127.0.0.1:9191\""), "{config}");
    assert!(
        config.contains("url = \"http://lab.example:9191\""),
        "{config}"
    );
}

/// `server.workers` above the default one: the same API, with lease round trips from
/// several clients at once all ending and every board back in the pool.
#[test]
fn a_server_with_several_workers_serves_concurrent_lease_round_trips() {
    let lab = Lab::new();
    lab.set("server", "workers", "3");
    let server = lab.start();
    let http = server.http();
    for i in 0..4 {
        let r = http.post(
            "/api/v1/resources",
            &lab.token,
            json!({"name": format!("w{i}"), "kind": "board", "labels": {"pool": "workers"}}),
        );
        assert_eq!(r.status, 201, "{}", r.text);
    }
    let clients: Vec<_> = (0..4).map(|_| server.http()).collect();
    let token = lab.token.as_str();
    std::thread::scope(|s| {
        for http in clients {
            s.spawn(move || {
                for _ in 0..20 {
                    let l = http.post(
                        "/api/v1/leases",
                        token,
                        json!({"selector": "pool=workers", "kind": "board", "duration": "5m", "wait": "10s"}),
                    );
                    assert_eq!(l.status, 201, "{}", l.text);
                    let (id, epoch) = (l.body["id"].as_str().unwrap(), l.body["epoch"].as_u64().unwrap());
                    let r = http.call(
                        "DELETE",
                        &format!("/api/v1/leases/{id}?epoch={epoch}"),
                        Some(token),
                        None,
                    );
                    assert_eq!(r.status, 200, "{}", r.text);
                }
            });
        }
    });
    let active = http.get("/api/v1/leases", &lab.token);
    assert_eq!(
        active.body.as_array().map(Vec::len),
        Some(0),
        "{}",
        active.text
    );
    let boards = http.get("/api/v1/resources?kind=board", &lab.token);
    let states: Vec<&str> = boards.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, vec!["available"; 4], "{}", boards.text);
}

/// Output piped into a reader that stops early (`testfarm resource list --json | head -1`)
/// ends the command quietly with success, not with a panic about a broken pipe.
#[test]
fn a_reader_that_goes_away_ends_the_output_quietly() {
    let lab = Lab::new();
    let server = lab.start();
    let http = server.http();
    let t = &lab.token;
    let long = "x".repeat(60);
    for i in 0..200 {
        let r = http.post(
            "/api/v1/resources",
            t,
            json!({"name": format!("pipe-{i:03}"), "kind": "build-server",
                   "labels": {"a": long, "b": long, "c": long, "d": long, "e": long}}),
        );
        assert_eq!(r.status, 201, "{}", r.text);
    }
    let mut child = std::process::Command::new(support::BIN)
        .args(["resource", "list", "--json"])
        .env("TESTFARM_URL", &server.url)
        .env("TESTFARM_TOKEN", t)
        .env_remove("TESTFARM_TOKEN_FILE")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert_eq!(first.trim(), "[");
    // The read end is closed here, with more than a pipe's buffer still to write.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the CLI did not end");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "{status:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
}
