//! buildomat-server's factory API, as typed calls.
//!
//! Every call carries the factory token; every failure says which call failed and why,
//! with the causes the factory loop treats differently kept apart: the server could not
//! be reached, refused the token (401/403: retrying will not help until an operator
//! acts), failed (5xx: retry), or answered something we cannot read.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// Why a call to buildomat-server failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No connection, a timeout, or a connection dropped mid-answer.
    #[error("buildomat-server {call}: unreachable: {source}")]
    Unreachable {
        call: &'static str,
        #[source]
        source: reqwest::Error,
    },
    /// The factory token was refused.
    #[error("buildomat-server {call}: token refused ({status}); check the factory token")]
    Unauthorized { call: &'static str, status: u16 },
    /// The server failed (5xx).
    #[error("buildomat-server {call}: server error {status}: {body}")]
    Server {
        call: &'static str,
        status: u16,
        body: String,
    },
    /// The server refused the request (another 4xx).
    #[error("buildomat-server {call}: refused {status}: {body}")]
    Refused {
        call: &'static str,
        status: u16,
        body: String,
    },
    /// The answer was not what the protocol says.
    #[error("buildomat-server {call}: malformed answer: {detail}")]
    Malformed { call: &'static str, detail: String },
    /// The base URL cannot be used.
    #[error("buildomat URL {url:?}: {detail}")]
    BadUrl { url: String, detail: String },
}

impl ClientError {
    /// A stable word for the `/metrics` label of failed calls.
    pub fn cause(&self) -> &'static str {
        match self {
            ClientError::Unreachable { .. } => "unreachable",
            ClientError::Unauthorized { .. } => "unauthorized",
            ClientError::Server { .. } => "server_error",
            ClientError::Refused { .. } => "refused",
            ClientError::Malformed { .. } => "malformed",
            ClientError::BadUrl { .. } => "bad_url",
        }
    }

    /// The call that failed.
    pub fn call(&self) -> &'static str {
        match self {
            ClientError::Unreachable { call, .. }
            | ClientError::Unauthorized { call, .. }
            | ClientError::Server { call, .. }
            | ClientError::Refused { call, .. }
            | ClientError::Malformed { call, .. } => call,
            ClientError::BadUrl { .. } => "config",
        }
    }
}

/// A job the server leased to us for 60 s.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Lease {
    pub job: String,
    pub target: String,
}

#[derive(Deserialize)]
struct LeaseAnswer {
    lease: Option<Lease>,
}

/// A worker as the server describes it to its factory.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Worker {
    pub id: String,
    pub private: Option<String>,
    pub recycle: bool,
    pub bootstrap: String,
    pub online: bool,
    pub hold: bool,
    pub target: String,
}

impl Worker {
    /// The view [`testfarm_core::factory::decide`] needs.
    pub fn view(&self) -> testfarm_core::factory::WorkerView {
        testfarm_core::factory::WorkerView {
            private: self.private.clone(),
            recycle: self.recycle,
            online: self.online,
            hold: self.hold,
        }
    }
}

#[derive(Deserialize)]
struct WorkerAnswer {
    worker: Option<Worker>,
}

#[derive(Deserialize)]
struct AppendAnswer {
    retry: bool,
}

/// Client of one buildomat-server, for one factory token.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    /// A client for `base_url` (e.g. `http://buildomat:8000`) using the factory `token`.
    pub fn new(base_url: &str, token: &str, timeout: Duration) -> Result<Client, ClientError> {
        let base = base_url.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ClientError::BadUrl {
                url: base_url.to_string(),
                detail: "must start with http:// or https://".into(),
            });
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| ClientError::BadUrl {
                url: base_url.to_string(),
                detail: e.to_string(),
            })?;
        Ok(Client {
            http,
            base,
            token: token.trim().to_string(),
        })
    }

    /// `GET /0/factory/ping`: tells the server we are alive when not asking for work,
    /// and checks URL and token (setup uses it).
    pub async fn ping(&self) -> Result<(), ClientError> {
        let _: serde_json::Value = self
            .call("ping", Method::GET, "/0/factory/ping", None::<&()>)
            .await?;
        Ok(())
    }

    /// `POST /0/factory/lease`: asks for a job for one of `targets` (ids). `None`: no work.
    pub async fn lease(&self, targets: &[String]) -> Result<Option<Lease>, ClientError> {
        let body = serde_json::json!({ "supported_targets": targets });
        let a: LeaseAnswer = self
            .call("lease", Method::POST, "/0/factory/lease", Some(&body))
            .await?;
        Ok(a.lease)
    }

    /// `POST /0/factory/lease/{job}`: renews the job's lease; `false` when refused (the
    /// server forgot it, e.g. after a restart, or the job went to another worker).
    pub async fn renew(&self, job: &str) -> Result<bool, ClientError> {
        let path = format!("/0/factory/lease/{}", seg(job));
        self.call("renew lease", Method::POST, &path, None::<&()>)
            .await
    }

    /// `POST /0/factory/worker`: creates a worker for `target`, tied to `job`.
    pub async fn create_worker(&self, target: &str, job: &str) -> Result<Worker, ClientError> {
        let body = serde_json::json!({ "target": target, "job": job, "wait_for_flush": false });
        self.call(
            "create worker",
            Method::POST,
            "/0/factory/worker",
            Some(&body),
        )
        .await
    }

    /// `PATCH /0/factory/worker/{w}`: records our instance id on the worker.
    pub async fn associate(&self, worker: &str, private: &str) -> Result<(), ClientError> {
        let path = format!("/0/factory/worker/{}", seg(worker));
        let body = serde_json::json!({ "private": private });
        self.call_empty("associate worker", Method::PATCH, &path, Some(&body))
            .await
    }

    /// `GET /0/factory/worker/{w}`: `None` when the server does not know it (any more).
    pub async fn worker(&self, worker: &str) -> Result<Option<Worker>, ClientError> {
        let path = format!("/0/factory/worker/{}", seg(worker));
        let a: WorkerAnswer = self
            .call("get worker", Method::GET, &path, None::<&()>)
            .await?;
        Ok(a.worker)
    }

    /// `GET /0/factory/workers`: every worker of this factory.
    pub async fn workers(&self) -> Result<Vec<Worker>, ClientError> {
        self.call(
            "list workers",
            Method::GET,
            "/0/factory/workers",
            None::<&()>,
        )
        .await
    }

    /// `DELETE /0/factory/worker/{w}`.
    pub async fn delete_worker(&self, worker: &str) -> Result<(), ClientError> {
        let path = format!("/0/factory/worker/{}", seg(worker));
        self.call_empty("delete worker", Method::DELETE, &path, None::<&()>)
            .await
    }

    /// `POST /0/factory/worker/{w}/append`: one console line into the job's log.
    /// `true`: the server has no job to put it in yet; keep it and try again.
    pub async fn append(
        &self,
        worker: &str,
        stream: &str,
        time: DateTime<Utc>,
        payload: &str,
    ) -> Result<bool, ClientError> {
        let path = format!("/0/factory/worker/{}/append", seg(worker));
        let body = serde_json::json!({ "stream": stream, "time": time, "payload": payload });
        let a: AppendAnswer = self
            .call("append", Method::POST, &path, Some(&body))
            .await?;
        Ok(a.retry)
    }

    async fn call<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        call: &'static str,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let bytes = self.send(call, method, path, body).await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Malformed {
            call,
            detail: format!("{e}: {}", excerpt(&bytes)),
        })
    }

    async fn call_empty<B: Serialize + ?Sized>(
        &self,
        call: &'static str,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<(), ClientError> {
        self.send(call, method, path, body).await.map(|_| ())
    }

    async fn send<B: Serialize + ?Sized>(
        &self,
        call: &'static str,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<Vec<u8>, ClientError> {
        let mut req = self
            .http
            .request(method, format!("{}{}", self.base, path))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(b);
        }
        let res = req
            .send()
            .await
            .map_err(|source| ClientError::Unreachable { call, source })?;
        let status = res.status();
        let bytes = res
            .bytes()
            .await
            .map_err(|source| ClientError::Unreachable { call, source })?;
        if status.is_success() {
            return Ok(bytes.to_vec());
        }
        let body = excerpt(&bytes);
        let code = status.as_u16();
        Err(match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                ClientError::Unauthorized { call, status: code }
            }
            s if s.is_server_error() => ClientError::Server {
                call,
                status: code,
                body,
            },
            _ => ClientError::Refused {
                call,
                status: code,
                body,
            },
        })
    }
}

/// A path segment: ids are ULIDs, but a malformed one must not change the path.
fn seg(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

fn excerpt(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    let s = s.trim();
    if s.chars().count() > 200 {
        format!("{}…", s.chars().take(200).collect::<String>())
    } else {
        s.to_string()
    }
}
