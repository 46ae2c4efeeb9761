//! The web dashboard through a real server process: login and cookie, every page with a
//! viewer token, redirects without one, 404 pages, escaping, CSRF, revoked tokens, and no
//! reference outside the server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

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
