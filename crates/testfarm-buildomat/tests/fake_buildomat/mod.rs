//! A small fake buildomat-server: the factory calls of issue #18 plus the agent's
//! bootstrap, over the same paths and JSON shapes, with leases kept in memory (as the real
//! server does) so a "server restart" can forget them.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

#[derive(Debug, Clone, Default)]
pub struct FakeWorker {
    pub id: String,
    pub private: Option<String>,
    pub recycle: bool,
    pub bootstrap: String,
    pub online: bool,
    pub hold: bool,
    pub target: String,
    pub deleted: bool,
}

#[derive(Debug, Default)]
pub struct Inner {
    /// job id → (target id, worker id once created)
    pub jobs: Vec<(String, String, Option<String>)>,
    /// job id, in memory only
    pub leases: Vec<String>,
    pub workers: HashMap<String, FakeWorker>,
    pub appended: Vec<(String, String)>,
    /// (id, name) of the targets `GET /0/admin/targets` lists.
    pub targets: Vec<(String, String)>,
    pub lease_calls: usize,
    pub pings: usize,
    pub refused_renewals: usize,
}

#[derive(Clone)]
pub struct Fake {
    pub token: String,
    pub inner: Arc<Mutex<Inner>>,
    pub url: String,
}

fn id() -> String {
    ulid::Ulid::new().to_string()
}

impl Fake {
    pub async fn start(token: &str) -> Fake {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let fake = Fake {
            token: token.to_string(),
            inner,
            url,
        };
        let app = Router::new()
            .route("/0/factory/ping", get(ping))
            .route("/0/factory/lease", post(lease))
            .route("/0/factory/lease/{job}", post(renew))
            .route("/0/factory/worker", post(create))
            .route("/0/factory/workers", get(workers))
            .route(
                "/0/factory/worker/{w}",
                get(worker).patch(associate).delete(destroy),
            )
            .route("/0/factory/worker/{w}/append", post(append))
            .route("/0/worker/bootstrap", post(bootstrap))
            .route("/0/admin/targets", get(targets))
            .with_state(fake.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        fake
    }

    pub fn add_job(&self, target: &str) -> String {
        let j = id();
        self.inner
            .lock()
            .unwrap()
            .jobs
            .push((j.clone(), target.to_string(), None));
        j
    }

    /// A target `GET /0/admin/targets` lists (with [`ADMIN_TOKEN`]); returns its id.
    pub fn add_target(&self, name: &str) -> String {
        let t = id();
        self.inner
            .lock()
            .unwrap()
            .targets
            .push((t.clone(), name.to_string()));
        t
    }

    /// buildomat-server restarts: leases are forgotten, workers and jobs stay.
    pub fn restart(&self) {
        self.inner.lock().unwrap().leases.clear();
    }

    pub fn with_worker<T>(&self, w: &str, f: impl FnOnce(&mut FakeWorker) -> T) -> T {
        f(self.inner.lock().unwrap().workers.get_mut(w).unwrap())
    }

    pub fn live_workers(&self) -> Vec<FakeWorker> {
        self.inner
            .lock()
            .unwrap()
            .workers
            .values()
            .filter(|w| !w.deleted)
            .cloned()
            .collect()
    }

    /// A worker created outside any instance (the factory crashed before recording it).
    pub fn add_stray_worker(&self, target: &str) -> String {
        let w = FakeWorker {
            id: id(),
            bootstrap: id(),
            target: target.into(),
            ..Default::default()
        };
        let wid = w.id.clone();
        self.inner.lock().unwrap().workers.insert(wid.clone(), w);
        wid
    }
}

/// The user token the admin API takes (the factory token does not list targets).
pub const ADMIN_TOKEN: &str = "fake-admin-token";

async fn targets(State(f): State<Fake>, h: HeaderMap) -> Response {
    let want = format!("Bearer {ADMIN_TOKEN}");
    if h.get("authorization").and_then(|v| v.to_str().ok()) != Some(want.as_str()) {
        return unauthorized();
    }
    let i = f.inner.lock().unwrap();
    let list: Vec<Value> = i
        .targets
        .iter()
        .map(|(id, name)| json!({"id": id, "name": name, "desc": "", "redirect": null, "privilege": null}))
        .collect();
    Json(list).into_response()
}

fn authorized(f: &Fake, h: &HeaderMap) -> bool {
    let want = format!("Bearer {}", f.token);
    h.get("authorization").and_then(|v| v.to_str().ok()) == Some(want.as_str())
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({"message": "unauthorized"})),
    )
        .into_response()
}

fn view(w: &FakeWorker) -> Value {
    json!({
        "id": w.id, "private": w.private, "recycle": !w.hold && w.recycle,
        "bootstrap": w.bootstrap, "online": w.online, "hold": w.hold, "target": w.target,
    })
}

async fn ping(State(f): State<Fake>, h: HeaderMap) -> Response {
    if !authorized(&f, &h) {
        return unauthorized();
    }
    f.inner.lock().unwrap().pings += 1;
    Json(json!({"ok": true})).into_response()
}

async fn lease(State(f): State<Fake>, h: HeaderMap, Json(b): Json<Value>) -> Response {
    if !authorized(&f, &h) {
        return unauthorized();
    }
    let targets: Vec<String> = serde_json::from_value(b["supported_targets"].clone()).unwrap();
    let mut i = f.inner.lock().unwrap();
    i.lease_calls += 1;
    let pick = i
        .jobs
        .iter()
        .find(|(j, t, w)| w.is_none() && targets.contains(t) && !i.leases.contains(j))
        .map(|(j, t, _)| (j.clone(), t.clone()));
    match pick {
        Some((j, t)) => {
            i.leases.push(j.clone());
            Json(json!({"lease": {"job": j, "target": t}})).into_response()
        }
        None => Json(json!({"lease": null})).into_response(),
    }
}

async fn renew(State(f): State<Fake>, h: HeaderMap, Path(job): Path<String>) -> Response {
    if !authorized(&f, &h) {
        return unauthorized();
    }
    let mut i = f.inner.lock().unwrap();
    let ok = i.leases.contains(&job);
    if !ok {
        i.refused_renewals += 1;
    }
    Json(json!(ok)).into_response()
}

async fn create(State(f): State<Fake>, h: HeaderMap, Json(b): Json<Value>) -> Response {
    if !authorized(&f, &h) {
        return unauthorized();
    }
    let target = b["target"].as_str().unwrap_or_default().to_string();
    let job = b["job"].as_str().map(str::to_string);
    let w = FakeWorker {
        id: id(),
        bootstrap: id(),
        target,
        ..Default::default()
    };
    let mut i = f.inner.lock().unwrap();
    if let Some(j) = &job {
        let entry = i.jobs.iter_mut().find(|(id, _, _)| id == j).unwrap();
        // A second worker for the same job is the duplicate the factory must never make.
        assert!(entry.2.is_none(), "second worker for job {j}");
        entry.2 = Some(w.id.clone());
    }
    i.workers.insert(w.id.clone(), w.clone());
    (StatusCode::CREATED, Json(view(&w))).into_response()
}

async fn workers(State(f): State<Fake>, h: HeaderMap) -> Response {
    if !authorized(&f, &h) {
        return unauthorized();
    }
    let i = f.inner.lock().unwrap();
    Json(
        i.workers
            .values()
            .filter(|w| !w.deleted)
            .map(view)
            .collect::<Vec<_>>(),
    )
    .into_response()
}

async fn worker(State(f): State<Fake>, h: HeaderMap, Path(w): Path<String>) -> Response {
    if !authorized(&f, &h) {
        return unauthorized();
    }
    let i = f.inner.lock().unwrap();
    let w = i.workers.get(&w).filter(|w| !w.deleted).map(view);
    Json(json!({ "worker": w })).into_response()
}

async fn associate(
    State(f): State<Fake>,
    h: HeaderMap,
    Path(w): Path<String>,
    Json(b): Json<Value>,
) -> Response {
    if !authorized(&f, &h) {
        return unauthorized();
    }
    let mut i = f.inner.lock().unwrap();
    let Some(w) = i.workers.get_mut(&w) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let p = b["private"].as_str().unwrap_or_default().to_string();
    if w.private.as_ref().is_some_and(|old| old != &p) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    w.private = Some(p);
    StatusCode::NO_CONTENT.into_response()
}

async fn destroy(State(f): State<Fake>, h: HeaderMap, Path(w): Path<String>) -> Response {
    if !authorized(&f, &h) {
        return unauthorized();
    }
    let mut i = f.inner.lock().unwrap();
    let Some(w) = i.workers.get_mut(&w) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    w.deleted = true;
    Json(json!(true)).into_response()
}

async fn append(
    State(f): State<Fake>,
    h: HeaderMap,
    Path(w): Path<String>,
    Json(b): Json<Value>,
) -> Response {
    if !authorized(&f, &h) {
        return unauthorized();
    }
    let mut i = f.inner.lock().unwrap();
    let line = b["payload"].as_str().unwrap_or_default().to_string();
    i.appended.push((w, line));
    Json(json!({"retry": false})).into_response()
}

async fn bootstrap(State(f): State<Fake>, Json(b): Json<Value>) -> Response {
    let mut i = f.inner.lock().unwrap();
    let strap = b["bootstrap"].as_str().unwrap_or_default();
    match i
        .workers
        .values_mut()
        .find(|w| w.bootstrap == strap && !w.deleted)
    {
        Some(w) => {
            w.online = true;
            (StatusCode::CREATED, Json(json!({"id": w.id}))).into_response()
        }
        None => StatusCode::UNAUTHORIZED.into_response(),
    }
}
