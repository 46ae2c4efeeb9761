//! One keep-alive HTTP/1.1 connection per benchmark worker, on hyper's connection API.
//!
//! Why not the `reqwest` client the rest of the CLI uses: its pool, per-request timer
//! and request builder cost the load generator about 100 µs of CPU per lease round trip,
//! and on a two-core machine the generator shares the cores with the server it
//! measures. A lean generator leaves the server its CPU, as a separate load machine
//! would. Setup and cleanup still go through `reqwest`.

use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;

/// A request that takes longer than this fails the benchmark instead of hanging it.
const TIMEOUT: Duration = Duration::from_secs(60);

pub struct Conn {
    send: SendRequest<Full<Bytes>>,
    host: HeaderValue,
    auth: HeaderValue,
    /// The URL's path (a server behind a prefix), prepended to every request's path.
    prefix: String,
}

impl Conn {
    /// Connects to `url` (`http://host:port[/prefix]`) and sends `token` as the bearer.
    pub async fn open(url: &str, token: &str) -> anyhow::Result<Conn> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| anyhow!("the benchmark client speaks plain http://, not {url:?}"))?;
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let tcp = tokio::net::TcpStream::connect(authority)
            .await
            .with_context(|| format!("connecting to {authority}"))?;
        tcp.set_nodelay(true)?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .context("HTTP handshake")?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn {
            send,
            host: HeaderValue::from_str(authority).context("the URL's host")?,
            auth: HeaderValue::from_str(&format!("Bearer {token}"))
                .context("the token is not a valid header value")?,
            prefix: prefix.to_string(),
        })
    }

    /// Sends one request and returns the answer's body; anything but 2xx is an error
    /// carrying the server's answer.
    pub async fn call(
        &mut self,
        method: Method,
        path: &str,
        json: Option<Bytes>,
    ) -> anyhow::Result<Bytes> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.prefix))
            .header(HOST, self.host.clone())
            .header(AUTHORIZATION, self.auth.clone());
        if json.is_some() {
            req = req.header(CONTENT_TYPE, "application/json");
        }
        let req = req.body(Full::new(json.unwrap_or_default()))?;
        let exchange = async {
            self.send.ready().await?;
            let resp = self.send.send_request(req).await?;
            let status = resp.status();
            let body = resp.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>((status, body))
        };
        let (status, body) = tokio::time::timeout(TIMEOUT, exchange)
            .await
            .map_err(|_| anyhow!("no answer within {TIMEOUT:?} to {path}"))??;
        if !status.is_success() {
            bail!("HTTP {status}: {}", String::from_utf8_lossy(&body));
        }
        Ok(body)
    }
}
