//! Alerts through the whole system: a real server and agent, a webhook receiver (axum on
//! loopback) and an SMTP sink (a few lines of SMTP on loopback) written here. An agent
//! that stops raises an `unreachable` alert, delivered signed to the webhook and by email,
//! and resolved (and the resolution delivered) when the agent returns; a receiver that
//! fails is retried; an SMTP server that is not there leaves the delivery `undelivered`
//! with the reason while the server keeps answering; people acknowledge and resolve.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod agent_support;
mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agent_support::*;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const SECRET: &str = "hook-secret-42";

/// HMAC-SHA256 (RFC 2104), written out so the test checks the server's signature with
/// code of its own.
fn hmac_sha256(key: &[u8], msg: &[u8]) -> String {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::digest([ipad.as_slice(), msg].concat());
    let outer = Sha256::digest([opad.as_slice(), &inner[..]].concat());
    outer.iter().map(|b| format!("{b:02x}")).collect()
}

/// One accepted POST: its headers and body.
type Post = (axum::http::HeaderMap, Vec<u8>);

/// What the webhook receiver got: every accepted POST.
#[derive(Clone, Default)]
struct Received {
    accepted: Arc<Mutex<Vec<Post>>>,
    calls: Arc<AtomicUsize>,
}

/// A webhook receiver on 127.0.0.1:0 that fails the first `fail_first` calls with 500.
fn webhook_receiver(fail_first: usize) -> (String, Received) {
    let got = Received::default();
    let state = got.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            let app = axum::Router::new().route(
                "/hook",
                axum::routing::post(
                    move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                        let state = state.clone();
                        async move {
                            let n = state.calls.fetch_add(1, Ordering::SeqCst);
                            if n < fail_first {
                                return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                            }
                            state
                                .accepted
                                .lock()
                                .unwrap()
                                .push((headers, body.to_vec()));
                            axum::http::StatusCode::OK
                        }
                    },
                ),
            );
            axum::serve(listener, app).await.unwrap();
        });
    });
    let addr = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    (format!("http://{addr}/hook"), got)
}

impl Received {
    /// Accepted notifications as (event, alert JSON), checking each signature.
    fn notes(&self) -> Vec<(String, Value)> {
        self.accepted
            .lock()
            .unwrap()
            .iter()
            .map(|(h, body)| {
                let sig = h
                    .get("x-testfarm-signature")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                assert_eq!(
                    sig,
                    format!("sha256={}", hmac_sha256(SECRET.as_bytes(), body)),
                    "bad signature"
                );
                assert!(h.get("x-testfarm-delivery").is_some());
                assert!(h.get("x-testfarm-timestamp").is_some());
                let v: Value = serde_json::from_slice(body).unwrap();
                (v["event"].as_str().unwrap().to_string(), v["alert"].clone())
            })
            .collect()
    }
}

/// An SMTP sink on 127.0.0.1:0: speaks enough SMTP for one message per connection and
/// keeps each message's DATA.
fn smtp_sink() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mail: Arc<Mutex<Vec<String>>> = Arc::default();
    let keep = mail.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let keep = keep.clone();
            std::thread::spawn(move || {
                let _ = conn.set_read_timeout(Some(Duration::from_secs(20)));
                let mut w = conn.try_clone().unwrap();
                let mut r = BufReader::new(conn);
                let _ = w.write_all(b"220 sink ESMTP\r\n");
                let mut line = String::new();
                loop {
                    line.clear();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let cmd = line.trim_end().to_ascii_uppercase();
                    let answer: &[u8] = if cmd.starts_with("EHLO") {
                        b"250-sink\r\n250 8BITMIME\r\n"
                    } else if cmd.starts_with("HELO")
                        || cmd.starts_with("MAIL")
                        || cmd.starts_with("RCPT")
                        || cmd.starts_with("RSET")
                        || cmd.starts_with("NOOP")
                    {
                        b"250 OK\r\n"
                    } else if cmd.starts_with("DATA") {
                        let _ = w.write_all(b"354 go on\r\n");
                        let mut data = String::new();
                        loop {
                            line.clear();
                            if r.read_line(&mut line).unwrap_or(0) == 0 {
                                return;
                            }
                            if line == ".\r\n" {
                                break;
                            }
                            data.push_str(&line);
                        }
                        keep.lock().unwrap().push(data);
                        b"250 queued\r\n"
                    } else if cmd.starts_with("QUIT") {
                        let _ = w.write_all(b"221 bye\r\n");
                        return;
                    } else {
                        b"502 what\r\n"
                    };
                    let _ = w.write_all(answer);
                }
            });
        }
    });
    (port, mail)
}

/// A loopback port nobody listens on.
fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A lab with fast offline detection and alert evaluation, thresholds out of the way of
/// a busy test machine, a signed webhook and (when `smtp_port` is set) email.
fn alert_lab(hook: &str, smtp_port: Option<u16>, attempts: u32) -> support::Lab {
    let lab = lab("2s", "2s");
    lab.set("alerts", "interval", "\"500ms\"");
    lab.set("alerts", "min_disk_gb", "0");
    lab.set("alerts", "max_cpu_pct", "100");
    lab.set("alerts", "max_memory_pct", "100");
    lab.set("alerts", "retry_initial", "\"200ms\"");
    lab.set("alerts", "retry_attempts", &attempts.to_string());
    lab.set("alerts", "delivery_timeout", "\"3s\"");
    let path = lab.config();
    let mut text = std::fs::read_to_string(&path).unwrap();
    text = text.replacen("[secrets]\n", &format!("[secrets]\nhook = {SECRET:?}\n"), 1);
    text.push_str(&format!(
        "\n[[alerts.webhook]]\nname = \"ops\"\nurl = {hook:?}\nsecret = \"hook\"\n"
    ));
    if let Some(port) = smtp_port {
        text.push_str(&format!(
            "\n[alerts.email]\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\n\
             from = \"testfarm <testfarm@lab.test>\"\nto = [\"ops@lab.test\"]\n"
        ));
    }
    std::fs::write(&path, text).unwrap();
    lab
}

fn alerts(http: &support::Http, t: &str, query: &str) -> Vec<Value> {
    let r = http.get(&format!("/api/v1/alerts?{query}"), t);
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["items"].as_array().unwrap().clone()
}

/// Stop an agent: within 30 s the webhook gets a signed `raised` and the SMTP sink an
/// email; the agent returns: the alert resolves by itself and that is delivered too.
#[test]
fn an_unreachable_agent_is_alerted_by_webhook_and_email_and_resolves_when_it_returns() {
    let (hook, got) = webhook_receiver(0);
    let (smtp, mail) = smtp_sink();
    let lab = alert_lab(&hook, Some(smtp), 5);
    let server = lab.start();
    let http = server.http();
    let t = lab.token.clone();
    let at = agent_token(&http, &t, "al1");
    let mut agent = Agent::start(&server.url, &at, "al1", "");
    let res = agent.resource();
    wait_registered(&http, &t, &res);

    agent.kill9();
    let stopped = Instant::now();
    let raised = wait_for("the webhook's alert", Duration::from_secs(30), || {
        got.notes().into_iter().find(|(e, a)| {
            e == "raised" && a["rule"] == "unreachable" && a["subject"] == res.as_str()
        })
    });
    let latency = stopped.elapsed();
    eprintln!(
        "alert delivered {latency:?} after the agent stopped: {}",
        raised.1
    );
    assert!(latency < Duration::from_secs(30));
    assert_eq!(raised.1["severity"], "critical");
    let id = raised.1["id"].as_str().unwrap().to_string();
    wait_for("the email", Duration::from_secs(30), || {
        mail.lock()
            .unwrap()
            .iter()
            .find(|m| m.contains("unreachable") && m.contains(&res))
            .cloned()
    });
    // One open alert for the resource, however many evaluations saw it.
    std::thread::sleep(Duration::from_millis(1500));
    let open = alerts(
        &http,
        &t,
        &format!("state=active&rule=unreachable&subject={res}"),
    );
    assert_eq!(open.len(), 1, "{open:?}");
    assert!(open[0]["count"].as_u64().unwrap() > 1, "{:?}", open[0]);
    // The dashboard's live feed has it.
    let ev = http.get("/api/v1/events?limit=1000", &t).body;
    assert!(
        ev.as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "alert.raised" && e["subject"] == id.as_str()),
        "{ev}"
    );
    // Acknowledged through the API: still open, until the agent returns.
    let r = http.post(
        &format!("/api/v1/alerts/{id}/acknowledge"),
        &t,
        json!({"note": "looking"}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["state"], "acknowledged");

    agent.spawn();
    wait_for("the resolution's webhook", Duration::from_secs(30), || {
        got.notes()
            .into_iter()
            .find(|(e, a)| e == "resolved" && a["id"] == id.as_str())
    });
    let d = http.get(&format!("/api/v1/alerts/{id}"), &t).body;
    assert_eq!(d["state"], "resolved", "{d}");
    assert_eq!(d["resolved_by"], "auto", "{d}");
    wait_for("both emails delivered", Duration::from_secs(30), || {
        let d = http.get(&format!("/api/v1/alerts/{id}"), &t).body;
        let delivered = d["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| x["state"] == "delivered")
            .count();
        (delivered == 4).then_some(())
    });
    assert_eq!(mail.lock().unwrap().len(), 2);
}

/// A receiver that answers 500 twice then 200 gets the alert exactly once, on the third
/// attempt.
#[test]
fn a_failing_webhook_is_retried_and_gets_the_alert_exactly_once() {
    let (hook, got) = webhook_receiver(2);
    let lab = alert_lab(&hook, None, 5);
    let server = lab.start();
    let http = server.http();
    let t = lab.token.clone();
    let at = agent_token(&http, &t, "al2");
    let mut agent = Agent::start(&server.url, &at, "al2", "");
    let res = agent.resource();
    wait_registered(&http, &t, &res);
    agent.kill9();
    let (_, a) = wait_for("the retried alert", Duration::from_secs(30), || {
        got.notes()
            .into_iter()
            .find(|(e, a)| e == "raised" && a["subject"] == res.as_str())
    });
    let id = a["id"].as_str().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let raised: Vec<_> = got
        .notes()
        .into_iter()
        .filter(|(e, a)| e == "raised" && a["id"] == id)
        .collect();
    assert_eq!(raised.len(), 1);
    let d = http.get(&format!("/api/v1/alerts/{id}"), &t).body;
    let hookd = d["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["channel"] == "webhook:ops" && x["event"] == "raised")
        .cloned()
        .unwrap();
    assert_eq!(hookd["state"], "delivered", "{d}");
    assert_eq!(hookd["attempts"], 3, "{d}");
}

/// An SMTP server that is not there: the email delivery ends `undelivered` with the
/// reason, visible in the alert, and the server goes on answering. Then people
/// acknowledge and resolve alerts through the CLI and the API.
#[test]
fn an_unreachable_smtp_server_leaves_the_delivery_undelivered_and_people_ack_and_resolve() {
    let (hook, _got) = webhook_receiver(0);
    let lab = alert_lab(&hook, Some(closed_port()), 2);
    let server = lab.start();
    let http = server.http();
    let t = lab.token.clone();
    let at = agent_token(&http, &t, "al3");
    let mut agent = Agent::start(&server.url, &at, "al3", "");
    let res = agent.resource();
    wait_registered(&http, &t, &res);
    agent.kill9();
    let a = wait_for("the alert", Duration::from_secs(30), || {
        alerts(&http, &t, &format!("rule=unreachable&subject={res}"))
            .into_iter()
            .next()
    });
    let id = a["id"].as_str().unwrap().to_string();
    let email = wait_for("the undelivered email", Duration::from_secs(30), || {
        let d = http.get(&format!("/api/v1/alerts/{id}"), &t).body;
        d["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["channel"] == "email" && x["state"] == "undelivered")
            .cloned()
    });
    eprintln!("{email}");
    assert_eq!(email["attempts"], 2);
    assert!(
        email["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("smtp 127.0.0.1"),
        "{email}"
    );
    assert_eq!(http.get("/healthz", "").status, 200);

    // The CLI lists, shows, acknowledges.
    let out = support::cli(&server.url, &t, &["alerts", "list"]);
    assert!(out.status.success(), "{}", support::stderr(&out));
    assert!(
        support::stdout(&out).contains(&id),
        "{}",
        support::stdout(&out)
    );
    let out = support::cli(&server.url, &t, &["alerts", "show", &id]);
    assert!(
        support::stdout(&out).contains("undelivered"),
        "{}",
        support::stdout(&out)
    );
    let out = support::cli(&server.url, &t, &["alerts", "ack", &id, "--note", "on it"]);
    assert!(out.status.success(), "{}", support::stderr(&out));
    assert!(support::stdout(&out).contains("acknowledged"));
    // Only operators act on alerts; anyone may read them.
    let user = http.create_token(&t, "al3-user", "user");
    let r = http.post(&format!("/api/v1/alerts/{id}/resolve"), &user, json!({}));
    assert_eq!(r.status, 403, "{}", r.text);
    assert_eq!(http.get(&format!("/api/v1/alerts/{id}"), &user).status, 200);
    // Resolved by hand through the CLI; a second resolve is a conflict.
    let out = support::cli(&server.url, &t, &["alerts", "resolve", &id]);
    assert!(out.status.success(), "{}", support::stderr(&out));
    let d = http.get(&format!("/api/v1/alerts/{id}"), &t).body;
    assert_eq!(d["state"], "resolved", "{d}");
    assert_eq!(d["resolved_by"], "admin", "{d}");
    let r = http.post(&format!("/api/v1/alerts/{id}/resolve"), &t, json!({}));
    assert_eq!(r.status, 409, "{}", r.text);
    // The condition still holds: the next evaluation raises a new alert.
    let again = wait_for("a new alert", Duration::from_secs(10), || {
        alerts(&http, &t, &format!("state=open&subject={res}"))
            .into_iter()
            .next()
    });
    assert_ne!(again["id"], id.as_str());
    // Resolved through the API.
    let id2 = again["id"].as_str().unwrap();
    let r = http.post(
        &format!("/api/v1/alerts/{id2}/resolve"),
        &t,
        json!({"note": "known"}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["state"], "resolved");
}

/// Unknown ids and bad filters are problems a person can act on.
#[test]
fn unknown_alerts_and_bad_filters_are_problems() {
    let lab = support::Lab::new();
    let server = lab.start();
    let http = server.http();
    let t = lab.token.clone();
    for path in [
        "/api/v1/alerts/01J00000000000000000000000",
        "/api/v1/alerts/not-an-id",
    ] {
        let r = http.get(path, &t);
        assert_eq!(r.status, 404, "{}", r.text);
        assert!(
            r.body["detail"].as_str().unwrap().contains("not found"),
            "{}",
            r.text
        );
    }
    let r = http.post(
        "/api/v1/alerts/01J00000000000000000000000/acknowledge",
        &t,
        json!({}),
    );
    assert_eq!(r.status, 404, "{}", r.text);
    let r = http.get("/api/v1/alerts?severity=loud", &t);
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("severity"), "{}", r.text);
    let r = http.get("/api/v1/alerts?rule=nope", &t);
    assert_eq!(r.status, 400, "{}", r.text);
    let r = http.get("/api/v1/alerts?state=active", &t);
    assert_eq!(r.status, 200, "{}", r.text);
    let out = support::cli(
        &server.url,
        &t,
        &["alerts", "show", "01J00000000000000000000000"],
    );
    assert!(!out.status.success());
}

/// A misspelt key or a webhook secret given by value stops the server with the field.
#[test]
fn bad_alert_config_names_the_field() {
    for (extra, want) in [
        (
            "\n[alerts.email]\nhost = \"h\"\nfrom = \"a@b.c\"\nto = [\"c@d.e\"]\nprot = 25\n",
            "port",
        ),
        (
            "\n[[alerts.webhook]]\nname = \"x\"\nurl = \"http://127.0.0.1:9/\"\nsecret = \"s3cr3t-value\"\n",
            "alerts.webhook[0].secret",
        ),
    ] {
        let lab = support::Lab::new();
        let mut text = std::fs::read_to_string(lab.config()).unwrap();
        text.push_str(extra);
        std::fs::write(lab.config(), text).unwrap();
        let out = std::process::Command::new(support::BIN)
            .args(["server", "-f"])
            .arg(lab.config())
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = support::stderr(&out);
        assert!(err.contains(want), "{err}");
        assert!(
            !err.contains("s3cr3t-value"),
            "a secret typed in place must not be echoed: {err}"
        );
    }
}

/// A job running when its agent stops is re-queued (`retry_on_error`), and that retry is
/// recorded on the `unreachable` alert as a recovery attempt; the alert metrics count the
/// raise and the delivery.
#[test]
fn work_sent_elsewhere_is_a_recovery_attempt_on_the_alert_and_alerts_are_counted() {
    let (hook, got) = webhook_receiver(0);
    let lab = alert_lab(&hook, None, 5);
    let server = lab.start();
    let http = server.http();
    let t = lab.token.clone();
    let at = agent_token(&http, &t, "al3");
    let mut agent = Agent::start(&server.url, &at, "al3", "");
    let res = agent.resource();
    wait_registered(&http, &t, &res);
    let id = submit(
        &http,
        &t,
        &spec(
            &res,
            "retry_on_error: 1\nsteps:\n  - shell: \"sleep 1000\"\n",
        ),
    );
    wait_state(&http, &t, &id, "running", Duration::from_secs(15));
    agent.kill9();
    let raised = wait_for("the webhook's alert", Duration::from_secs(30), || {
        got.notes().into_iter().find(|(e, a)| {
            e == "raised" && a["rule"] == "unreachable" && a["subject"] == res.as_str()
        })
    });
    let alert = raised.1["id"].as_str().unwrap().to_string();
    let d = wait_for("the retry on the alert", Duration::from_secs(30), || {
        let d = http.get(&format!("/api/v1/alerts/{alert}"), &t).body;
        d["recovery_attempts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["action"] == format!("re-queue job {id}").as_str())
            .then_some(d)
    });
    assert!(
        d["recovery_attempts"][0]["result"]
            .as_str()
            .unwrap()
            .contains("another resource"),
        "{d}"
    );
    // Its second attempt waits: the silent agent's resource gets no new work, even
    // before the health monitor calls it offline.
    let j = job(&http, &t, &id);
    assert_eq!(j["attempt"], 2, "{j}");
    assert_eq!(
        j["state"], "queued",
        "not placed on the silent resource again: {j}"
    );
    let why = http.get(&format!("/api/v1/jobs/{id}/why"), &t).text;
    assert!(
        why.contains("offline") || why.contains("silent"),
        "why pending says so: {why}"
    );
    // The dashboard's alerts page shows what was tried.
    let page = http.call_with_headers(
        "GET",
        "/ui/alerts",
        &t,
        &[("cookie", &format!("tf_session={t}"))],
        Vec::new(),
    );
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(
        page.text.contains(&format!("re-queue job {id}")),
        "{}",
        page.text
    );
    let m = http.get("/metrics", &t).text;
    assert!(
        m.lines()
            .any(|l| l.starts_with("testfarm_alerts_raised_total{rule=\"unreachable\"}")),
        "{m}"
    );
    assert!(
        m.lines().any(|l| l.starts_with(
            "testfarm_alert_delivery_attempts_total{channel=\"webhook\",result=\"delivered\"}"
        )),
        "{m}"
    );
    assert!(
        m.lines()
            .any(|l| l.starts_with("testfarm_alerts_active{state=\"open\"}")),
        "{m}"
    );
}
