//! The dashboard in a real headless Chromium (Debian's `chromium` + `chromedriver`, driven
//! with fantoccini), against a real server and agent process: log in through the form
//! (and Chromium keeps the `Secure` cookie on http://127.0.0.1), the overview loads, a
//! resource's state changes on its page within 5 s of a REST API change without a
//! reload, the register form shows a field error and then creates the resource, a job
//! page shows log lines as they arrive, and no page requests anything outside the server.
//! A screenshot is saved as a test artifact (its path is printed).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod agent_support;
mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agent_support::*;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A chromedriver process on an ephemeral loopback port; killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chromedriver() -> Option<PathBuf> {
    let p = PathBuf::from(CHROMEDRIVER);
    if p.exists() {
        return Some(p);
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("chromedriver"))
            .find(|c| c.exists())
    })
}

fn start_driver(bin: &PathBuf) -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(bin)
        .arg(format!("--port={port}"))
        .arg("--allowed-ips=127.0.0.1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    wait_for("chromedriver to listen", Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    driver
}

fn artifacts_dir() -> PathBuf {
    let dir = std::env::var_os("TESTFARM_TEST_ARTIFACTS")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("CARGO_TARGET_DIR").map(|t| PathBuf::from(t).join("test-artifacts"))
        })
        .unwrap_or_else(|| std::env::temp_dir().join("testfarm-test-artifacts"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Polls `f` every 100 ms until it is true or `within` passes; returns the time it took.
async fn until<F, Fut>(what: &str, within: Duration, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if f().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn text_of(c: &Client, css: &str) -> String {
    match c.find(Locator::Css(css)).await {
        Ok(e) => e.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Every resource the page loaded (scripts, styles, fetches, the event stream) is on
/// the server's origin.
async fn only_own_origin(c: &Client, origin: &str) {
    let names = c
        .execute(
            "return performance.getEntriesByType('resource').map(function (e) { return e.name; })\
               .concat([document.location.href]);",
            vec![],
        )
        .await
        .unwrap();
    for n in names.as_array().unwrap() {
        let n = n.as_str().unwrap();
        assert!(
            n.starts_with(origin),
            "the page requested {n}, outside {origin}"
        );
    }
}

/// Runs a blocking API call (the support client has its own runtime) on a plain thread.
fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| s.spawn(f).join().unwrap())
}

#[test]
fn dashboard_in_headless_chromium() {
    let Some(bin) = chromedriver() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromedriver is missing and CI is set: install chromium and chromium-driver"
        );
        eprintln!(
            "SKIPPED: no chromedriver (apt-get install chromium chromium-driver); CI must run this test"
        );
        return;
    };
    let lab = agent_support::lab("3s", "5s");
    let server = lab.start();
    let http = server.http();
    let op = http.create_token(&lab.token, "op", "operator");
    let at = agent_token(&http, &lab.token, "ag");
    let agent = Agent::start(&server.url, &at, "ag", "");
    wait_registered(&http, &lab.token, &agent.resource());
    let r = http.post(
        "/api/v1/resources",
        &lab.token,
        json!({"name": "bs-live", "kind": "build-server"}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let driver = start_driver(&bin);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let url = server.url.trim_end_matches('/').to_string();
    let shot = artifacts_dir().join("dashboard-job.png");
    rt.block_on(async { tokio::time::timeout(Duration::from_secs(180), async {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({ "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                             "--disable-gpu", "--window-size=1280,1000"] }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let c = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&driver.url)
            .await
            .expect("a chromedriver session");

        // Log in through the form.
        c.goto(&format!("{url}/ui")).await.unwrap();
        assert!(c.current_url().await.unwrap().path().ends_with("/ui/login"));
        c.find(Locator::Css("#token")).await.unwrap().send_keys(&op).await.unwrap();
        c.find(Locator::Css("form[action='/ui/login'] button")).await.unwrap().click().await.unwrap();
        until("the overview after login", Duration::from_secs(10), || async {
            text_of(&c, "h1").await == "Overview"
        })
        .await;
        assert_eq!(c.current_url().await.unwrap().path(), "/ui");
        let cookies = c.get_all_cookies().await.unwrap();
        let session = cookies
            .iter()
            .find(|k| k.name() == "tf_session")
            .expect("Chromium kept the tf_session cookie on http://127.0.0.1");
        assert_eq!(session.secure(), Some(true), "{session:?}");
        assert_eq!(session.http_only(), Some(true), "{session:?}");
        assert!(!text_of(&c, "#resource-count").await.is_empty());
        only_own_origin(&c, &url).await;

        // A REST API change shows on the open page within 5 s, without a reload.
        c.goto(&format!("{url}/ui/resources/bs-live")).await.unwrap();
        assert_eq!(text_of(&c, "#resource-state").await, "available");
        c.execute("window.__not_reloaded = 1;", vec![]).await.unwrap();
        let r = off_runtime(|| {
            http.post(
                "/api/v1/resources/bs-live/maintenance",
                &lab.token,
                json!({"enabled": true, "reason": "browser test"}),
            )
        });
        assert_eq!(r.status, 200, "{}", r.text);
        let took = until("the state change on the page", Duration::from_secs(5), || async {
            text_of(&c, "#resource-state").await == "maintenance"
        })
        .await;
        eprintln!("resource state reached the page in {took:?}");
        let same = c.execute("return window.__not_reloaded === 1;", vec![]).await.unwrap();
        assert_eq!(same, json!(true), "the page was reloaded");
        only_own_origin(&c, &url).await;

        // The register form: a field error, then the resource.
        c.goto(&format!("{url}/ui/register")).await.unwrap();
        c.find(Locator::Css("#name")).await.unwrap().send_keys("no spaces allowed").await.unwrap();
        c.find(Locator::Css("#register button")).await.unwrap().click().await.unwrap();
        until("the name's error", Duration::from_secs(10), || async {
            !text_of(&c, "#error-name").await.is_empty()
        })
        .await;
        let name = c.find(Locator::Css("#name")).await.unwrap();
        name.clear().await.unwrap();
        name.send_keys("qh-browser").await.unwrap();
        c.find(Locator::Css("#kind")).await.unwrap().select_by_value("qemu-host").await.unwrap();
        c.find(Locator::Css("#cpus")).await.unwrap().send_keys("8").await.unwrap();
        c.find(Locator::Css("#register button")).await.unwrap().click().await.unwrap();
        until("the new resource's page", Duration::from_secs(10), || async {
            c.current_url().await.map(|u| u.path() == "/ui/resources/qh-browser").unwrap_or(false)
        })
        .await;
        let r = off_runtime(|| http.get("/api/v1/resources/qh-browser", &lab.token));
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.body["kind"], "qemu-host");

        // A job's page shows its log lines as they arrive.
        let id = off_runtime(|| {
            submit(
                &http,
                &lab.token,
                &spec(
                    &agent.resource(),
                    "steps:\n  - shell: \"sleep 1; for i in 1 2 3 4 5 6; do echo live-line-$i; sleep 0.5; done\"\n",
                ),
            )
        });
        c.goto(&format!("{url}/ui/jobs/{id}")).await.unwrap();
        let first = text_of(&c, "#log").await;
        assert!(!first.contains("live-line-6"), "the log was complete at page load: {first}");
        c.execute("window.__not_reloaded = 1;", vec![]).await.unwrap();
        until("the first live line", Duration::from_secs(60), || async {
            text_of(&c, "#log").await.contains("live-line-1")
        })
        .await;
        until("the last live line", Duration::from_secs(30), || async {
            text_of(&c, "#log").await.contains("live-line-6")
        })
        .await;
        let same = c.execute("return window.__not_reloaded === 1;", vec![]).await.unwrap();
        assert_eq!(same, json!(true), "the job page was reloaded");
        until("the job's end on the page", Duration::from_secs(30), || async {
            text_of(&c, "#job-state").await == "passed"
        })
        .await;
        only_own_origin(&c, &url).await;
        let png = c.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
        std::fs::write(&shot, png).unwrap();
        println!("screenshot: {}", shot.display());
        eprintln!("screenshot: {}", shot.display());
        c.close().await.unwrap();
    }).await })
    .expect("the browser test took longer than 180 s");
    drop(agent);
}
