//! The agent's side of the protocol in `testfarm_api::agent`: one method per endpoint,
//! bearer token, problem+json errors. A 409 is its own error, [`ClientError::StaleEpoch`],
//! because it is not a failure to retry but an order: the lease moved on, drop the work.

use std::time::Duration;

use bytes::Bytes;
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use testfarm_api::agent::{
    EPOCH_HEADER, Fenced, FinishRequest, Heartbeat, HeartbeatResponse, LogAck, RegisterRequest,
    RegisterResponse, StepReport, WorkResponse,
};
use testfarm_api::artifact::{Artifact, Build, CreateBuild};
use testfarm_api::{API_PREFIX, Page, Problem};

use crate::executor::ArtifactUpload;

/// Why a request did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server could not be reached or the connection broke: retry later.
    #[error("cannot reach the server: {0}")]
    Connect(String),
    /// 409: the job's lease ended or moved on.
    #[error("stale epoch: {0}")]
    StaleEpoch(String),
    /// Any other refusal, with the server's explanation.
    #[error("{status}: {detail}")]
    Api {
        status: u16,
        kind: String,
        detail: String,
    },
    #[error("unexpected answer from the server: {0}")]
    Decode(String),
}

impl ClientError {
    /// Worth retrying: the server was unreachable, restarting, or overloaded.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Connect(_) => true,
            ClientError::Api { status, .. } => matches!(status, 429 | 500 | 502 | 503 | 504),
            _ => false,
        }
    }
}

/// A protocol client; cheap to clone (one connection pool).
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

/// Longest any single request may take, besides the long poll's own wait.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest one artifact upload may take (a rootfs of gigabytes on a slow link).
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(3600);

impl Client {
    pub fn new(url: &str, token: &str) -> Result<Client, ClientError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| ClientError::Connect(e.to_string()))?;
        Ok(Client {
            http,
            base: format!("{}{API_PREFIX}", url.trim_end_matches('/')),
            token: token.to_string(),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn register(&self, req: &RegisterRequest) -> Result<RegisterResponse, ClientError> {
        self.json(Method::POST, "/agents/register", Some(req), REQUEST_TIMEOUT)
            .await
    }

    pub async fn heartbeat(&self, hb: &Heartbeat) -> Result<HeartbeatResponse, ClientError> {
        self.json(Method::POST, "/agents/heartbeat", Some(hb), REQUEST_TIMEOUT)
            .await
    }

    /// Long-polls for work for up to `wait`; an empty answer is normal.
    pub async fn work(&self, wait: Duration) -> Result<WorkResponse, ClientError> {
        let path = format!("/agents/work?wait={}", wait.as_secs().max(1));
        self.json::<(), _>(Method::GET, &path, None, wait + REQUEST_TIMEOUT)
            .await
    }

    pub async fn start(&self, job: &str, epoch: u64) -> Result<(), ClientError> {
        let path = format!("/jobs/{}/start", seg(job));
        self.json_ignore(Method::POST, &path, &Fenced { epoch })
            .await
    }

    pub async fn renew(&self, lease: &str, epoch: u64) -> Result<(), ClientError> {
        let path = format!("/leases/{}/renew", seg(lease));
        self.json_ignore(Method::POST, &path, &Fenced { epoch })
            .await
    }

    pub async fn step(&self, job: &str, report: &StepReport) -> Result<(), ClientError> {
        let path = format!("/jobs/{}/steps", seg(job));
        self.json_ignore(Method::POST, &path, report).await
    }

    pub async fn finish(&self, job: &str, req: &FinishRequest) -> Result<(), ClientError> {
        let path = format!("/jobs/{}/finish", seg(job));
        self.json_ignore(Method::POST, &path, req).await
    }

    /// `POST /agents/boards/{name}/report`: something the agent did to a board on its own.
    pub async fn board_report(
        &self,
        board: &str,
        report: &testfarm_api::board::BoardReport,
    ) -> Result<(), ClientError> {
        let path = format!("/agents/boards/{}/report", seg(board));
        self.json_ignore(Method::POST, &path, report).await
    }

    /// `POST /agents/board-actions/{id}`: how a board action ended (once per action).
    pub async fn board_action_result(
        &self,
        id: &str,
        result: &testfarm_api::board::BoardActionResult,
    ) -> Result<(), ClientError> {
        let path = format!("/agents/board-actions/{}", seg(id));
        self.json_ignore(Method::POST, &path, result).await
    }

    /// The WebSocket address of console session `session` (`ws://…/agents/console/ID`)
    /// and the bearer token to dial it with.
    pub fn console_session(&self, session: &str) -> (String, String) {
        let base = if let Some(rest) = self.base.strip_prefix("https://") {
            format!("wss://{rest}")
        } else if let Some(rest) = self.base.strip_prefix("http://") {
            format!("ws://{rest}")
        } else {
            self.base.clone()
        };
        (
            format!("{base}/agents/console/{}", seg(session)),
            self.token.clone(),
        )
    }

    /// Sends log chunk `seq`. The server stores a retried `seq` once.
    pub async fn put_log(
        &self,
        job: &str,
        seq: u64,
        epoch: u64,
        body: Bytes,
    ) -> Result<Option<LogAck>, ClientError> {
        let path = format!("/jobs/{}/logs/{seq}", seg(job));
        let resp = self.raw_put(&path, epoch, body).await?;
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| ClientError::Connect(e.to_string()))?;
        Ok(serde_json::from_slice(&bytes).ok())
    }

    /// Stores one output file of a job.
    pub async fn put_output(
        &self,
        job: &str,
        name: &str,
        epoch: u64,
        body: Bytes,
    ) -> Result<(), ClientError> {
        let path = format!("/jobs/{}/outputs/{}", seg(job), seg(name));
        self.raw_put(&path, epoch, body).await.map(|_| ())
    }

    /// Records a build in the artifact repository (`POST /builds`).
    pub async fn create_build(&self, req: &CreateBuild) -> Result<Build, ClientError> {
        self.json(Method::POST, "/builds", Some(req), REQUEST_TIMEOUT)
            .await
    }

    /// Streams a file into a build (`PUT /builds/{id}/artifacts/{name}`) with the sha256
    /// the agent computed, so the server refuses bytes that changed on the way.
    pub async fn put_artifact(
        &self,
        build: &str,
        file: &ArtifactUpload,
    ) -> Result<Artifact, ClientError> {
        use futures::TryStreamExt as _;
        use tokio::io::AsyncReadExt as _;
        let f = tokio::fs::File::open(&file.path).await.map_err(|e| {
            ClientError::Decode(format!("cannot open {}: {e}", file.path.display()))
        })?;
        let stream = futures::stream::try_unfold(f, |mut f| async move {
            let mut buf = vec![0u8; 256 * 1024];
            let n = f.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(None);
            }
            buf.truncate(n);
            Ok(Some((Bytes::from(buf), f)))
        })
        .into_stream();
        let path = format!("/builds/{}/artifacts/{}", seg(build), seg(&file.name));
        let resp = self
            .http
            .put(self.url(&path))
            .bearer_auth(&self.token)
            .query(&[
                ("kind", file.kind.as_str()),
                ("sha256", file.sha256.as_str()),
            ])
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .header(reqwest::header::CONTENT_LENGTH, file.size)
            .timeout(UPLOAD_TIMEOUT)
            .body(reqwest::Body::wrap_stream(stream))
            .send()
            .await
            .map_err(connect_error)?;
        let resp = check(resp).await?;
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| ClientError::Connect(e.to_string()))?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(format!("{path}: {e}")))
    }

    /// One page of `GET /artifacts` with these filters (newest build first).
    pub async fn list_artifacts(
        &self,
        filters: &[(&str, &str)],
    ) -> Result<Page<Artifact>, ClientError> {
        self.get_query("/artifacts", filters).await
    }

    /// `GET /artifacts/latest`: the artifact of `kind` in the newest build of `branch`.
    pub async fn latest_artifact(
        &self,
        branch: &str,
        kind: &str,
        arch: Option<&str>,
    ) -> Result<Artifact, ClientError> {
        let mut q = vec![("branch", branch), ("kind", kind)];
        if let Some(a) = arch {
            q.push(("arch", a));
        }
        self.get_query("/artifacts/latest", &q).await
    }

    /// Starts downloading the artifact with this sha256; the caller streams the body
    /// (artifacts are large) and checks it against `X-Checksum-Sha256`. No overall timeout:
    /// a big image takes what it takes, and a stalled connection fails on its own.
    pub async fn open_artifact(&self, sha256: &str) -> Result<reqwest::Response, ClientError> {
        let resp = self
            .http
            .get(self.url(&format!("/artifacts/{}", seg(sha256))))
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(connect_error)?;
        check(resp).await
    }

    async fn get_query<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<T, ClientError> {
        let resp = self
            .http
            .get(self.url(path))
            .query(query)
            .bearer_auth(&self.token)
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(connect_error)?;
        let bytes = check(resp)
            .await?
            .bytes()
            .await
            .map_err(|e| ClientError::Connect(e.to_string()))?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(format!("{path}: {e}")))
    }

    async fn raw_put(
        &self,
        path: &str,
        epoch: u64,
        body: Bytes,
    ) -> Result<reqwest::Response, ClientError> {
        let resp = self
            .http
            .put(self.url(path))
            .bearer_auth(&self.token)
            .header(EPOCH_HEADER, epoch.to_string())
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .timeout(REQUEST_TIMEOUT)
            .body(body)
            .send()
            .await
            .map_err(connect_error)?;
        check(resp).await
    }

    async fn json_ignore<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: &B,
    ) -> Result<(), ClientError> {
        let resp = self
            .http
            .request(method, self.url(path))
            .bearer_auth(&self.token)
            .timeout(REQUEST_TIMEOUT)
            .json(body)
            .send()
            .await
            .map_err(connect_error)?;
        check(resp).await.map(|_| ())
    }

    async fn json<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        timeout: Duration,
    ) -> Result<T, ClientError> {
        let mut req = self
            .http
            .request(method, self.url(path))
            .bearer_auth(&self.token)
            .timeout(timeout);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = check(req.send().await.map_err(connect_error)?).await?;
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| ClientError::Connect(e.to_string()))?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(format!("{path}: {e}")))
    }
}

fn connect_error(e: reqwest::Error) -> ClientError {
    ClientError::Connect(e.to_string())
}

/// Turns a non-2xx answer into its typed error, reading problem+json when present.
async fn check(resp: reqwest::Response) -> Result<reqwest::Response, ClientError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let text = resp.text().await.unwrap_or_default();
    let problem: Option<Problem> = serde_json::from_str(&text).ok();
    let detail = problem
        .as_ref()
        .map(|p| p.to_string())
        .unwrap_or_else(|| text.chars().take(300).collect());
    if status == StatusCode::CONFLICT {
        return Err(ClientError::StaleEpoch(detail));
    }
    Err(ClientError::Api {
        status: status.as_u16(),
        kind: problem.map(|p| p.kind).unwrap_or_default(),
        detail,
    })
}

/// Percent-encodes one path segment (ids are ULIDs, output names are file names).
fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_encoded() {
        assert_eq!(seg("01HX-a.b_c"), "01HX-a.b_c");
        assert_eq!(seg("out/report 1.html"), "out%2Freport%201.html");
    }

    #[tokio::test]
    async fn unreachable_server_is_retryable() {
        // A port nobody listens on: bind then drop.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c = Client::new(&format!("http://127.0.0.1:{port}"), "t").unwrap();
        let e = c.start("j", 1).await.unwrap_err();
        assert!(e.is_retryable(), "{e}");
    }
}
