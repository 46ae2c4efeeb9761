//! The HTTP client the CLI commands share: base URL and token from the global options,
//! JSON in and out, and the server's problem+json turned into an error that prints its
//! detail and field.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, anyhow};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use testfarm_api::Problem;

/// Where the server is and who we are: the global options every client command takes.
#[derive(Debug, Clone, clap::Args)]
pub struct Connection {
    /// Server URL.
    #[arg(
        long,
        global = true,
        env = "TESTFARM_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub url: String,
    /// API token (prefer --token-file or TESTFARM_TOKEN_FILE: command lines are visible to
    /// other users of the machine).
    #[arg(long, global = true, env = "TESTFARM_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// File holding the API token (e.g. the admin.token written by `testfarm init`).
    #[arg(long, global = true, env = "TESTFARM_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
}

/// The server refused the request; carries its problem document.
#[derive(Debug, thiserror::Error)]
#[error("{problem} [HTTP {}]", problem.status)]
pub struct Refused {
    pub problem: Problem,
}

pub struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Connection {
    pub fn token(&self) -> anyhow::Result<String> {
        if let Some(t) = &self.token {
            return Ok(t.trim().to_string());
        }
        if let Some(path) = &self.token_file {
            let t = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the token file {}", path.display()))?;
            return Ok(t.trim().to_string());
        }
        Err(anyhow!(
            "no API token: pass --token-file FILE (e.g. BASE_DIR/admin.token), or set TESTFARM_TOKEN_FILE or TESTFARM_TOKEN"
        ))
    }

    pub fn client(&self) -> anyhow::Result<Client> {
        Client::new(&self.url, self.token()?)
    }
}

impl Client {
    pub fn new(url: &str, token: String) -> anyhow::Result<Client> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Client {
            base: url.trim_end_matches('/').to_string(),
            token,
            http,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.url(path))
            .bearer_auth(&self.token)
    }

    /// Sends and decodes JSON; a non-2xx answer becomes [`Refused`].
    pub async fn send<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> anyhow::Result<T> {
        let resp = req
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .with_context(|| format!("cannot reach the testfarm server at {}", self.base))?;
        let status = resp.status();
        let bytes = resp.bytes().await.context("reading the response")?;
        if !status.is_success() {
            return Err(problem(status, &bytes).into());
        }
        let body: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
        serde_json::from_slice(body)
            .with_context(|| format!("unexpected response from the server (HTTP {status})"))
    }

    /// Sends without an overall deadline (uploads and downloads take as long as their
    /// bytes do) and returns the response once its status says success; a non-2xx answer
    /// becomes [`Refused`].
    pub async fn open(&self, req: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach the testfarm server at {}", self.base))?;
        let status = resp.status();
        if !status.is_success() {
            let bytes = resp.bytes().await.context("reading the response")?;
            return Err(problem(status, &bytes).into());
        }
        Ok(resp)
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send(self.request(Method::GET, path)).await
    }

    pub async fn post<T: DeserializeOwned, B: Serialize + ?Sized>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        self.send(self.request(Method::POST, path).json(body)).await
    }

    pub async fn patch<T: DeserializeOwned, B: Serialize + ?Sized>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        self.send(self.request(Method::PATCH, path).json(body))
            .await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send(self.request(Method::DELETE, path)).await
    }
}

fn problem(status: StatusCode, body: &[u8]) -> Refused {
    let problem = serde_json::from_slice::<Problem>(body).unwrap_or_else(|_| Problem {
        kind: "about:blank".into(),
        title: status.canonical_reason().unwrap_or("error").into(),
        status: status.as_u16(),
        detail: String::from_utf8_lossy(body).chars().take(500).collect(),
        field: None,
    });
    Refused { problem }
}

/// Percent-encodes one path segment or query value.
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
