//! The web dashboard through a real server process: login and cookie, every page with a
//! viewer token, redirects without one, 404 pages, escaping, CSRF, revoked tokens, and no
//! reference outside the server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod agent_support;
mod support;

use std::time::Duration;

use serde_json::json;
use support::Lab;

/// A raw client: no redirects followed, no cookie store, so each test sees what a
/// browser would be told.
struct Web {
    url: String,
    client: reqwest::Client,
    rt: tokio::runtime::Runtime,
}

struct Page {
    status: u16,
    location: String,
    set_cookie: String,
    text: String,
}

impl Web {
    fn new(url: &str) -> Web {
        Web {
            url: url.to_string(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        }
    }

    fn send(&self, req: reqwest::RequestBuilder) -> Page {
        self.rt.block_on(async {
            let r = req.send().await.unwrap();
            let h = |n: &str| {
                r.headers()
                    .get(n)
                    .map(|v| v.to_str().unwrap().to_string())
                    .unwrap_or_default()
            };
            let (location, set_cookie) = (h("location"), h("set-cookie"));
            let status = r.status().as_u16();
            Page {
                status,
                location,
                set_cookie,
                text: r.text().await.unwrap(),
            }
        })
    }

    fn get(&self, path: &str, token: Option<&str>) -> Page {
        let mut req = self.client.get(format!("{}{path}", self.url));
        if let Some(t) = token {
            req = req.header("cookie", format!("tf_session={t}"));
        }
        self.send(req)
    }

    fn post(&self, path: &str, token: Option<&str>, form: &[(&str, &str)]) -> Page {
        let body: Vec<String> = form
            .iter()
            .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
            .collect();
        let mut req = self
            .client
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.join("&"));
        if let Some(t) = token {
            req = req.header("cookie", format!("tf_session={t}"));
        }
        self.send(req)
    }
}

/// `application/x-www-form-urlencoded` escaping (reqwest's `form` feature is off).
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn csrf_of(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    page[at..at + 64].to_string()
}

const PAGES: &[&str] = &[
    "/ui",
    "/ui/resources",
    "/ui/resources/bs-1",
    "/ui/jobs",
    "/ui/jobs?state=queued&name=x",
    "/ui/alerts",
    "/ui/alerts?all=1",
    "/ui/pipelines",
    "/ui/pipelines?state=passed",
    "/ui/submit",
    "/ui/pipelines/submit",
    "/ui/buildomat",
    "/ui/buildomat?all=1",
];

#[test]
fn pages_need_a_session_and_render_for_a_viewer() {
    let lab = Lab::new();
    let server = lab.start();
    let http = server.http();
    let r = http.post(
        "/api/v1/resources",
        &lab.token,
        json!({"name": "bs-1", "kind": "build-server", "labels": {"arch": "arm64"}}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let viewer = http.create_token(&lab.token, "viewer", "user");
    let web = Web::new(&server.url);

    let root = web.get("/", None);
    assert!(
        root.status / 100 == 3 && root.location == "/ui",
        "{}",
        root.status
    );
    for p in PAGES {
        let anon = web.get(p, None);
        assert_eq!(anon.status, 303, "{p} without a session");
        assert_eq!(anon.location, "/ui/login", "{p}");
        let page = web.get(p, Some(&viewer));
        assert_eq!(page.status, 200, "{p}: {}", page.text);
        assert!(page.text.contains("<meta name=\"viewport\""), "{p}");
        assert!(page.text.contains("arm64") || *p != "/ui/resources", "{p}");
        for attr in ["src=\"", "href=\"", "action=\"", "url("] {
            for (i, _) in page.text.match_indices(attr) {
                let v = &page.text[i + attr.len()..];
                assert!(
                    !(v.starts_with("http:") || v.starts_with("https:") || v.starts_with("//")),
                    "{p} references another origin: {}",
                    &v[..v.len().min(60)]
                );
            }
        }
    }
    let missing = web.get("/ui/resources/nope", Some(&viewer));
    assert_eq!(missing.status, 404);
    assert!(missing.text.contains("Not found"), "{}", missing.text);
    let job = web.get("/ui/jobs/01nosuchjob", Some(&viewer));
    assert_eq!(job.status, 404);
    assert!(job.text.contains("Not found"));
    let bad_filter = web.get("/ui/jobs?state=bogus", Some(&viewer));
    assert_eq!(bad_filter.status, 200);
    assert!(
        bad_filter.text.contains("field-error"),
        "{}",
        bad_filter.text
    );
    let unknown = web.get("/ui/no/such/page", Some(&viewer));
    assert_eq!(unknown.status, 404);
    assert!(unknown.text.contains("Not found"));
}

#[test]
fn login_sets_a_strict_cookie_and_refuses_revoked_tokens() {
    let lab = Lab::new();
    let server = lab.start();
    let http = server.http();
    let viewer = http.create_token(&lab.token, "viewer", "user");
    let web = Web::new(&server.url);

    let login = web.get("/ui/login", None);
    assert_eq!(login.status, 200);
    let ok = web.post("/ui/login", None, &[("token", &viewer)]);
    assert_eq!(ok.status, 303, "{}", ok.text);
    assert_eq!(ok.location, "/ui");
    for part in ["tf_session=", "Secure", "HttpOnly", "SameSite=Strict"] {
        assert!(ok.set_cookie.contains(part), "{}", ok.set_cookie);
    }
    let bad = web.post("/ui/login", None, &[("token", "tf_nope_nope")]);
    assert_eq!(bad.status, 401);
    assert!(bad.text.contains("field-error"), "{}", bad.text);

    let r = http.call("DELETE", "/api/v1/tokens/viewer", Some(&lab.token), None);
    assert!(r.status / 100 == 2, "{}", r.text);
    let revoked = web.post("/ui/login", None, &[("token", &viewer)]);
    assert_eq!(revoked.status, 401, "a revoked token must not log in");
    let page = web.get("/ui", Some(&viewer));
    assert_eq!(page.status, 303, "a revoked token's session ends");
}

#[test]
fn forms_need_csrf_and_escape_what_users_typed() {
    let lab = Lab::new();
    let server = lab.start();
    let http = server.http();
    let r = http.post(
        "/api/v1/resources",
        &lab.token,
        json!({"name": "bs-1", "kind": "build-server"}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let op = http.create_token(&lab.token, "op", "operator");
    let viewer = http.create_token(&lab.token, "viewer", "user");
    let web = Web::new(&server.url);
    let path = "/ui/resources/bs-1/maintenance";
    let form = |csrf: &str| {
        vec![
            ("csrf", csrf.to_string()),
            ("enabled", "true".to_string()),
            ("reason", "<script>alert(1)</script>".to_string()),
        ]
    };
    let post = |token: &str, csrf: &str| {
        let f = form(csrf);
        let f: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
        web.post(path, Some(token), &f)
    };
    let none = web.post(path, Some(&op), &[("enabled", "true"), ("reason", "x")]);
    assert!(none.status / 100 == 4, "no csrf field: {}", none.status);
    let wrong = post(&op, &"0".repeat(64));
    assert_eq!(wrong.status, 403, "wrong csrf");
    let detail = web.get("/ui/resources/bs-1", Some(&op));
    assert!(detail.text.contains("off"));
    // Another session's token is wrong too.
    let viewer_csrf = csrf_of(&web.get("/ui/resources/bs-1", Some(&viewer)).text);
    assert_eq!(post(&op, &viewer_csrf).status, 403);

    let csrf = csrf_of(&detail.text);
    let ok = post(&op, &csrf);
    assert_eq!(ok.status, 303, "{}", ok.text);
    let r = http.get("/api/v1/resources/bs-1", &lab.token);
    assert_eq!(r.body["state"], "maintenance", "{}", r.text);
    let page = web.get("/ui/resources/bs-1", Some(&op));
    assert!(!page.text.contains("<script>alert"), "unescaped");
    assert!(page.text.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));

    // A viewer's valid form is refused with the reason next to the form.
    let refused = post(&viewer, &viewer_csrf);
    assert_eq!(refused.status, 200);
    assert!(refused.text.contains("field-error"), "{}", refused.text);
}

/// Writes an open alert with an undelivered email straight into the server's database
/// (the evaluator is off in these tests, so nothing else touches it); returns its id.
fn seed_alert(web: &Web, db: &std::path::Path, subject: &str) -> String {
    use testfarm_api::alert::{Alert, AlertState, Delivery, DeliveryState, Rule, Severity};
    web.rt.block_on(async {
        let store = testfarm_store::Store::open(db).await.unwrap();
        let now = chrono::Utc::now();
        let id = ulid::Ulid::new().to_string();
        let a = Alert {
            id: id.clone(),
            rule: Rule::CleanupFailed,
            subject: subject.to_string(),
            severity: Severity::Critical,
            state: AlertState::Open,
            summary: "cleanup <b>failed</b>".into(),
            details: serde_json::json!({}),
            first_seen: now,
            last_seen: now,
            count: 3,
            acknowledged_at: None,
            acknowledged_by: None,
            resolved_at: None,
            resolved_by: None,
        };
        let d = Delivery {
            id: ulid::Ulid::new().to_string(),
            channel: "email".into(),
            event: "raised".into(),
            state: DeliveryState::Undelivered,
            attempts: 8,
            last_error: Some("smtp 127.0.0.1:9: connection refused".into()),
            next_attempt_at: None,
            delivered_at: None,
            created_at: now,
        };
        let mut tx = store.begin().await.unwrap();
        tx.insert_alert(&a).await.unwrap();
        tx.insert_delivery(&id, &d).await.unwrap();
        tx.commit().await.unwrap();
        id
    })
}

#[test]
fn alerts_page_shows_delivery_and_acts_for_operators_only() {
    let lab = Lab::new();
    lab.set("alerts", "enabled", "false");
    let server = lab.start();
    let http = server.http();
    let op = http.create_token(&lab.token, "op", "operator");
    let viewer = http.create_token(&lab.token, "viewer", "user");
    let web = Web::new(&server.url);
    let id = seed_alert(&web, &lab.path().join("data.sqlite3"), "bs-<script>");

    let page = web.get("/ui/alerts", Some(&viewer));
    assert_eq!(page.status, 200);
    assert!(page.text.contains("undelivered"), "{}", page.text);
    assert!(page.text.contains("connection refused"), "{}", page.text);
    assert!(page.text.contains("cleanup &lt;b&gt;failed&lt;/b&gt;"));
    assert!(!page.text.contains("bs-<script>"), "unescaped subject");
    let overview = web.get("/ui", Some(&viewer));
    assert!(
        overview.text.contains("id=\"open-alerts\">1<"),
        "{}",
        overview.text
    );

    let ack = format!("/ui/alerts/{id}/acknowledge");
    let viewer_csrf = csrf_of(&page.text);
    let refused = web.post(&ack, Some(&viewer), &[("csrf", &viewer_csrf)]);
    assert_eq!(refused.status, 403, "a viewer may not acknowledge");
    let op_page = web.get("/ui/alerts", Some(&op));
    let op_csrf = csrf_of(&op_page.text);
    assert_eq!(
        web.post(&ack, Some(&op), &[("csrf", &viewer_csrf)]).status,
        403
    );
    assert!(web.post(&ack, Some(&op), &[]).status / 100 == 4, "no csrf");
    let done = web.post(&ack, Some(&op), &[("csrf", &op_csrf)]);
    assert_eq!(done.status, 303, "{}", done.text);
    let r = http.get(&format!("/api/v1/alerts/{id}"), &lab.token);
    assert_eq!(r.body["state"], "acknowledged", "{}", r.text);
    assert_eq!(r.body["acknowledged_by"], "op");
    let resolve = format!("/ui/alerts/{id}/resolve");
    assert_eq!(
        web.post(&resolve, Some(&op), &[("csrf", &op_csrf)]).status,
        303
    );
    let r = http.get(&format!("/api/v1/alerts/{id}"), &lab.token);
    assert_eq!(r.body["state"], "resolved", "{}", r.text);
    // Resolving twice is the API's conflict, shown as a page, not a 500.
    let again = web.post(&resolve, Some(&op), &[("csrf", &op_csrf)]);
    assert_eq!(again.status, 422, "{}", again.text);
    assert!(again.text.contains("already resolved"));
    let all = web.get("/ui/alerts?all=1", Some(&viewer));
    assert!(all.text.contains("resolved"));
}

#[test]
fn register_form_validates_each_field_then_creates() {
    let lab = Lab::new();
    let server = lab.start();
    let http = server.http();
    let op = http.create_token(&lab.token, "op", "operator");
    let viewer = http.create_token(&lab.token, "viewer", "user");
    let web = Web::new(&server.url);
    assert_eq!(web.get("/ui/register", Some(&viewer)).status, 403);
    let form = web.get("/ui/register", Some(&op));
    assert_eq!(form.status, 200);
    let csrf = csrf_of(&form.text);
    let bad = web.post(
        "/ui/register",
        Some(&op),
        &[
            ("csrf", &csrf),
            ("name", "qh-1"),
            ("kind", "qemu-host"),
            ("cpus", "lots"),
            ("labels", "site"),
        ],
    );
    assert_eq!(bad.status, 422, "{}", bad.text);
    assert!(bad.text.contains("id=\"error-cpus\""), "{}", bad.text);
    assert!(bad.text.contains("id=\"error-labels\""), "{}", bad.text);
    assert!(
        bad.text.contains("value=\"qh-1\""),
        "the form keeps what was typed"
    );
    let bad_name = web.post(
        "/ui/register",
        Some(&op),
        &[
            ("csrf", &csrf),
            ("name", "no spaces"),
            ("kind", "qemu-host"),
        ],
    );
    assert_eq!(bad_name.status, 422);
    assert!(
        bad_name.text.contains("id=\"error-name\""),
        "{}",
        bad_name.text
    );
    let no_csrf = web.post(
        "/ui/register",
        Some(&op),
        &[("name", "qh-1"), ("kind", "qemu-host")],
    );
    assert_eq!(no_csrf.status, 403);
    let as_viewer = web.post(
        "/ui/register",
        Some(&viewer),
        &[
            ("csrf", &csrf_of(&web.get("/ui", Some(&viewer)).text)),
            ("name", "qh-1"),
            ("kind", "qemu-host"),
        ],
    );
    assert_eq!(as_viewer.status, 403);
    let ok = web.post(
        "/ui/register",
        Some(&op),
        &[
            ("csrf", &csrf),
            ("name", "qh-1"),
            ("kind", "qemu-host"),
            ("cpus", "64"),
            ("memory_mb", "262144"),
            ("labels", "site=lab2, arch=x86_64"),
            ("toolchains", "gcc, rust"),
        ],
    );
    assert_eq!(ok.status, 303, "{}", ok.text);
    assert_eq!(ok.location, "/ui/resources/qh-1");
    let r = http.get("/api/v1/resources/qh-1", &lab.token);
    assert_eq!(r.status, 200);
    assert_eq!(r.body["capabilities"]["cpus"], 64);
    assert_eq!(r.body["labels"]["site"], "lab2");
    let detail = web.get("/ui/resources/qh-1", Some(&viewer));
    assert!(detail.text.contains("gcc, rust"), "{}", detail.text);
    let taken = web.post(
        "/ui/register",
        Some(&op),
        &[("csrf", &csrf), ("name", "qh-1"), ("kind", "qemu-host")],
    );
    assert_eq!(taken.status, 422);
    assert!(taken.text.contains("id=\"error-name\""), "{}", taken.text);
}

#[test]
fn submit_form_shows_the_spec_error_with_line_and_column() {
    let lab = Lab::new();
    let server = lab.start();
    let http = server.http();
    let r = http.post(
        "/api/v1/resources",
        &lab.token,
        json!({"name": "bs-1", "kind": "build-server", "labels": {"note": "x"}}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let user = http.create_token(&lab.token, "dev", "user");
    let web = Web::new(&server.url);
    let form = web.get("/ui/submit", Some(&user));
    assert_eq!(form.status, 200);
    assert!(form.text.contains("Auto"), "{}", form.text);
    assert!(form.text.contains("bs-1"));
    let csrf = csrf_of(&form.text);
    let bad = web.post(
        "/ui/submit",
        Some(&user),
        &[
            ("csrf", &csrf),
            (
                "spec",
                "name: x\ntimeout: 30\nsteps:\n  - shell: \"true\"\n",
            ),
        ],
    );
    assert_eq!(bad.status, 422, "{}", bad.text);
    assert!(bad.text.contains("id=\"error-spec\""), "{}", bad.text);
    assert!(bad.text.contains("line 2, column"), "{}", bad.text);
    let check = web.post(
        "/ui/submit",
        Some(&user),
        &[
            ("csrf", &csrf),
            (
                "spec",
                "name: m\nrequires:\n  kind: build-server\nsteps:\n  - shell: \"true\"\n",
            ),
            ("check", "1"),
        ],
    );
    assert_eq!(check.status, 200, "{}", check.text);
    assert!(check.text.contains("id=\"matching\""), "{}", check.text);
    assert!(check.text.contains("1 of 1"), "{}", check.text);
    let jobs = http.get("/api/v1/jobs", &lab.token);
    assert_eq!(
        jobs.body["items"].as_array().map(Vec::len),
        Some(0),
        "a check submits nothing: {}",
        jobs.text
    );
    let ok = web.post(
        "/ui/submit",
        Some(&user),
        &[
            ("csrf", &csrf),
            (
                "spec",
                "name: pinned\nrequires:\n  kind: build-server\nsteps:\n  - shell: \"true\"\n",
            ),
            ("resource", "bs-1"),
        ],
    );
    assert_eq!(ok.status, 303, "{}", ok.text);
    let id = ok.location.trim_start_matches("/ui/jobs/").to_string();
    let job = http.get(&format!("/api/v1/jobs/{id}"), &lab.token);
    assert_eq!(job.status, 200, "{}", job.text);
    assert_eq!(
        job.body["spec"]["requires"]["resource"], "bs-1",
        "{}",
        job.text
    );
    let page = web.get(&ok.location, Some(&user));
    assert_eq!(page.status, 200);
    assert!(
        page.text.contains("data-live"),
        "a queued job's log is live"
    );
    assert_eq!(
        web.get("/ui/pipelines/01nosuchpipeline", Some(&user))
            .status,
        404
    );
    let log = web.get(&format!("/ui/jobs/{id}/log"), Some(&user));
    assert_eq!(log.status, 200);

    // A build the job made: its artifacts are listed with their sha256 and download
    // through the cookie session.
    let b = http.post(
        "/api/v1/builds",
        &lab.token,
        json!({"commit": "abc123", "branch": "main", "arch": "arm64", "source_job": id}),
    );
    assert_eq!(b.status, 201, "{}", b.text);
    let build = b.body["id"].as_str().unwrap().to_string();
    let up = http.call_with_headers(
        "PUT",
        &format!("/api/v1/builds/{build}/artifacts/Image?kind=kernel"),
        &lab.token,
        &[("content-type", "application/octet-stream")],
        b"kernel bytes".to_vec(),
    );
    assert_eq!(up.status, 201, "{}", up.text);
    let sha = up.body["sha256"].as_str().unwrap().to_string();
    let page = web.get(&format!("/ui/jobs/{id}"), Some(&user));
    let link = format!("/ui/builds/{build}/artifacts/Image");
    assert!(page.text.contains(&link), "{}", page.text);
    assert!(page.text.contains(&sha), "{}", page.text);
    let dl = web.get(&link, Some(&user));
    assert_eq!(dl.status, 200);
    assert_eq!(dl.text, "kernel bytes");
    assert_eq!(
        web.get(&link, None).status,
        303,
        "downloads need a session too"
    );
}

#[test]
fn action_forms_refuse_without_csrf_and_for_viewers() {
    let lab = Lab::new();
    let server = lab.start();
    let http = server.http();
    let r = http.post(
        "/api/v1/resources",
        &lab.token,
        json!({"name": "bs-1", "kind": "build-server"}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let op = http.create_token(&lab.token, "op", "operator");
    let viewer = http.create_token(&lab.token, "viewer", "user");
    let web = Web::new(&server.url);
    let viewer_csrf = csrf_of(&web.get("/ui", Some(&viewer)).text);
    let op_csrf = csrf_of(&web.get("/ui", Some(&op)).text);
    for path in [
        "/ui/resources/bs-1/power",
        "/ui/leases/01nosuchlease/release",
        "/ui/submit",
    ] {
        assert_eq!(
            web.post(path, Some(&op), &[("csrf", &"0".repeat(64))])
                .status,
            403,
            "{path}"
        );
    }
    let power = web.post(
        "/ui/resources/bs-1/power",
        Some(&viewer),
        &[("csrf", &viewer_csrf), ("action", "cycle")],
    );
    assert_eq!(power.status, 403, "a viewer may not power-cycle");
    let not_board = web.post(
        "/ui/resources/bs-1/power",
        Some(&op),
        &[("csrf", &op_csrf), ("action", "cycle")],
    );
    assert_eq!(not_board.status, 422, "{}", not_board.text);
    let release = web.post(
        "/ui/leases/01nosuchlease/release",
        Some(&op),
        &[("csrf", &op_csrf), ("reason", "stuck")],
    );
    assert_eq!(release.status, 404, "{}", release.text);
    assert!(release.text.contains("Not found"));
}

#[test]
fn a_label_with_markup_renders_as_text() {
    let lab = Lab::new();
    let server = lab.start();
    let http = server.http();
    let viewer = http.create_token(&lab.token, "viewer", "user");
    let web = Web::new(&server.url);
    // The API refuses markup in labels, so the row is written straight into the database,
    // as a hand-edited or older database could hold it: the pages must still escape it.
    web.rt.block_on(async {
        let store = testfarm_store::Store::open(&lab.path().join("data.sqlite3"))
            .await
            .unwrap();
        let mut r = testfarm_core::resource::Resource::new(
            ulid::Ulid::new(),
            "evil".into(),
            testfarm_core::resource::ResourceKind::Board,
            chrono::Utc::now(),
        );
        r.labels
            .0
            .insert("note".into(), "<script>alert(1)</script>".into());
        let mut tx = store.begin().await.unwrap();
        tx.insert_resource(&r).await.unwrap();
        tx.commit().await.unwrap();
    });
    for p in ["/ui/resources", "/ui/resources/evil"] {
        let page = web.get(p, Some(&viewer));
        assert_eq!(page.status, 200, "{p}: {}", page.text);
        assert!(!page.text.contains("<script>alert"), "{p} unescaped");
        assert!(
            page.text.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{p}: {}",
            page.text
        );
    }
}

#[test]
fn pipeline_pages_show_the_stage_timeline() {
    let lab = Lab::new();
    lab.fast();
    let server = lab.start();
    let http = server.http();
    let viewer = http.create_token(&lab.token, "viewer", "user");
    let web = Web::new(&server.url);
    // Server-side stages: no agent needed.
    let spec = "name: halts\nstages:\n  - name: first\n    job: { steps: [ { sleep: 10ms } ] }\n  - name: middle\n    job:\n      steps: [ { fail_if: \"1 == 1\" } ]\n  - name: last\n    job: { steps: [ { sleep: 10ms } ] }\n";
    let r = http.post("/api/v1/pipelines", &lab.token, json!({ "spec": spec }));
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.body["id"].as_str().unwrap().to_string();
    support::wait_for("the pipeline's end", Duration::from_secs(30), || {
        let p = http.get(&format!("/api/v1/pipelines/{id}"), &lab.token);
        (p.body["state"] == "failed").then_some(())
    });
    let list = web.get("/ui/pipelines", Some(&viewer));
    assert_eq!(list.status, 200);
    assert!(list.text.contains(&id), "{}", list.text);
    let failed = web.get("/ui/pipelines?state=failed", Some(&viewer));
    assert!(failed.text.contains(&id));
    let bad = web.get("/ui/pipelines?state=bogus", Some(&viewer));
    assert!(bad.text.contains("field-error"), "{}", bad.text);
    let page = web.get(&format!("/ui/pipelines/{id}"), Some(&viewer));
    assert_eq!(page.status, 200, "{}", page.text);
    assert_eq!(
        page.text.matches("class=\"lane\"").count(),
        3,
        "{}",
        page.text
    );
    assert!(page.text.contains("lane-bar state-passed"), "{}", page.text);
    assert!(page.text.contains("lane-bar state-failed"), "{}", page.text);
    assert!(page.text.contains("skipped"));
    // A stage's job page links back to its pipeline.
    let p = http.get(&format!("/api/v1/pipelines/{id}"), &lab.token);
    let job = p.body["stages"][0]["job"].as_str().unwrap().to_string();
    let jp = web.get(&format!("/ui/jobs/{job}"), Some(&viewer));
    assert!(
        jp.text.contains(&format!("/ui/pipelines/{id}")),
        "{}",
        jp.text
    );
    let ov = web.get("/ui", Some(&viewer));
    assert!(ov.text.contains("Pipelines, 24 h"), "{}", ov.text);
}

#[test]
fn job_page_lists_test_failures_first_and_the_log_tail() {
    use agent_support::*;
    let lab = agent_support::lab("3s", "5s");
    let server = lab.start();
    let http = server.http();
    let viewer = http.create_token(&lab.token, "viewer", "user");
    let at = agent_token(&http, &lab.token, "ag");
    let agent = Agent::start(&server.url, &at, "ag", "");
    wait_registered(&http, &lab.token, &agent.resource());
    let web = Web::new(&server.url);
    let tap = "printf 'TAP version 14\\n1..3\\nok 1 - boots\\nnot ok 2 - dns answers\\nok 3 - shuts down\\n'";
    let id = submit(
        &http,
        &lab.token,
        &spec(
            &agent.resource(),
            &format!("steps:\n  - shell: \"{tap}\"\n"),
        ),
    );
    let end = wait_job(&http, &lab.token, &id, Duration::from_secs(60));
    assert!(
        end["state"] != "queued" && end["state"] != "running",
        "{end}"
    );
    let page = web.get(&format!("/ui/jobs/{id}"), Some(&viewer));
    assert_eq!(page.status, 200, "{}", page.text);
    let tests = &page.text[page.text.find("id=\"tests\"").expect("a tests table")..];
    let failed = tests.find("dns answers").expect("the failing point");
    let passed = tests.find("boots").expect("a passing point");
    assert!(failed < passed, "failures first: {tests}");
    assert!(page.text.contains("3 points, 1 failed"), "{}", page.text);
    assert!(
        page.text.contains("not ok 2 - dns answers"),
        "the log tail: {}",
        page.text
    );
    assert!(
        !page.text.contains("data-live"),
        "an ended job's log is not live"
    );
    let res = web.get(
        &format!("/ui/resources/{}", agent.resource()),
        Some(&viewer),
    );
    assert_eq!(res.status, 200);
    assert!(
        res.text.contains(&id),
        "the job is in the resource's history: {}",
        res.text
    );
    drop(agent);
}

#[test]
fn an_operator_releases_a_lease_from_the_resource_page() {
    let lab = Lab::new();
    let server = lab.start();
    let http = server.http();
    let r = http.post(
        "/api/v1/resources",
        &lab.token,
        json!({"name": "bs-1", "kind": "build-server", "labels": {"pool": "web"}}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let op = http.create_token(&lab.token, "op", "operator");
    let web = Web::new(&server.url);
    let r = http.post(
        "/api/v1/leases",
        &lab.token,
        json!({"selector": "pool=web", "duration": "1h"}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let lease = r.body["id"].as_str().unwrap().to_string();
    let page = web.get("/ui/resources/bs-1", Some(&op));
    assert!(
        page.text.contains(&lease),
        "the lease is shown: {}",
        page.text
    );
    assert!(
        page.text.contains("person:admin") || page.text.contains(":admin"),
        "{}",
        page.text
    );
    let list = web.get("/ui/resources", Some(&op));
    assert!(list.text.contains("state-leased"), "{}", list.text);
    let csrf = csrf_of(&page.text);
    let done = web.post(
        &format!("/ui/leases/{lease}/release"),
        Some(&op),
        &[("csrf", &csrf), ("resource", "bs-1"), ("reason", "stuck")],
    );
    assert_eq!(done.status, 303, "{}", done.text);
    assert_eq!(done.location, "/ui/resources/bs-1");
    let l = http.get(&format!("/api/v1/leases/{lease}"), &lab.token);
    assert_ne!(l.body["state"], "active", "{}", l.text);
    // A resource field that is not a plain name redirects to the list, never echoes it.
    let r = http.post(
        "/api/v1/leases",
        &lab.token,
        json!({"selector": "pool=web", "duration": "1h"}),
    );
    assert_eq!(r.status, 201, "bs-1 is free again: {}", r.text);
    let second = r.body["id"].as_str().unwrap().to_string();
    let odd = web.post(
        &format!("/ui/leases/{second}/release"),
        Some(&op),
        &[
            ("csrf", &csrf),
            ("resource", "x\r\nSet-Cookie: a=b"),
            ("reason", "r"),
        ],
    );
    assert_eq!(odd.status, 303, "{}", odd.text);
    assert_eq!(odd.location, "/ui/resources");
}

/// The pipeline form: a spec error is shown at the spec with its line and nothing runs;
/// a good spec starts the pipeline and lands on its page.
#[test]
fn the_pipeline_form_shows_spec_errors_then_runs_one() {
    let lab = Lab::new();
    let server = lab.start();
    let http = server.http();
    let user = http.create_token(&lab.token, "dev", "user");
    let web = Web::new(&server.url);
    let form = web.get("/ui/pipelines/submit", Some(&user));
    assert_eq!(form.status, 200, "{}", form.text);
    let csrf = csrf_of(&form.text);
    let bad = web.post(
        "/ui/pipelines/submit",
        Some(&user),
        &[
            ("csrf", &csrf),
            (
                "spec",
                "name: p\nstages:\n  - name: a\n    needs: [nowhere]\n    job: { steps: [ { sleep: 10ms } ] }\n",
            ),
        ],
    );
    assert_eq!(bad.status, 422, "{}", bad.text);
    assert!(bad.text.contains("id=\"error-spec\""), "{}", bad.text);
    assert!(bad.text.contains("nowhere"), "{}", bad.text);
    assert!(bad.text.contains("line 4"), "{}", bad.text);
    let none = http.get("/api/v1/pipelines", &lab.token);
    assert_eq!(
        none.body["items"].as_array().map(Vec::len),
        Some(0),
        "{}",
        none.text
    );
    let without_csrf = web.post(
        "/ui/pipelines/submit",
        Some(&user),
        &[(
            "spec",
            "name: p\nstages:\n  - name: a\n    job: { steps: [ { sleep: 10ms } ] }\n",
        )],
    );
    assert_eq!(without_csrf.status, 403, "{}", without_csrf.text);
    let ok = web.post(
        "/ui/pipelines/submit",
        Some(&user),
        &[
            ("csrf", &csrf),
            (
                "spec",
                "name: p\nstages:\n  - name: a\n    job: { steps: [ { sleep: 10ms } ] }\n",
            ),
        ],
    );
    assert_eq!(ok.status, 303, "{}", ok.text);
    let made = http.get("/api/v1/pipelines", &lab.token);
    let items = made.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{}", made.text);
    let id = items[0]["id"].as_str().unwrap();
    assert_eq!(ok.location, format!("/ui/pipelines/{id}"));
    let page = web.get(&ok.location, Some(&user));
    assert_eq!(page.status, 200);
    assert!(page.text.contains(id), "{}", page.text);
}
