//! A network PDU's outlet over HTTP: the URL and body are templates that see `{{ action }}`,
//! credentials come from environment variables named in the config (never the file).

use futures::FutureExt;
use futures::future::BoxFuture;
use minijinja::Value;

use super::{PowerAction, PowerDriver, PowerOutcome, PowerState, parse_status};
use crate::config::{HttpAuth, HttpPower};
use crate::error::{BoardError, Result};
use crate::template::{Context, render};

pub struct HttpPowerDriver {
    board: String,
    config: HttpPower,
    ctx: Context,
}

impl HttpPowerDriver {
    pub fn new(board: &str, config: HttpPower, ctx: Context) -> HttpPowerDriver {
        HttpPowerDriver {
            board: board.to_string(),
            config,
            ctx,
        }
    }

    async fn request(&self, action: PowerAction) -> Result<String> {
        let c = &self.config;
        let what = format!("power {} {}", action.as_str(), self.board);
        let http_err = |detail: String| BoardError::Http {
            what: what.clone(),
            detail,
        };
        let ctx = self
            .ctx
            .clone()
            .with("action", Value::from(action.as_str()));
        let (method, url) = match (action, &c.status_url) {
            (PowerAction::Status, Some(status_url)) => {
                ("GET".to_string(), render(status_url, &ctx)?)
            }
            _ => (c.method.clone(), render(&c.url, &ctx)?),
        };
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|e| http_err(format!("method: {e}")))?;
        let client = reqwest::Client::builder()
            .timeout(c.timeout)
            .build()
            .map_err(|e| http_err(e.to_string()))?;
        let mut req = client.request(method.clone(), &url);
        if method != reqwest::Method::GET
            && let Some(body) = &c.body
        {
            req = req.body(render(body, &ctx)?);
        }
        let env = |name: &str| {
            std::env::var(name)
                .map_err(|_| http_err(format!("environment variable `{name}` is not set")))
        };
        req = match &c.auth {
            HttpAuth::None => req,
            HttpAuth::Basic { user, password_env } => {
                req.basic_auth(user, Some(env(password_env)?))
            }
            HttpAuth::Bearer { token_env } => req.bearer_auth(env(token_env)?),
        };
        let resp = req.send().await.map_err(|e| {
            if e.is_timeout() {
                BoardError::Timeout {
                    what: what.clone(),
                    after: c.timeout,
                }
            } else {
                http_err(format!("{method} {url}: {e}"))
            }
        })?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            let snippet: String = text.chars().take(200).collect();
            return Err(http_err(format!("{method} {url}: {status}: {snippet}")));
        }
        Ok(text)
    }

    async fn act_inner(&self, action: PowerAction) -> Result<PowerOutcome> {
        let state = match action {
            PowerAction::On => {
                self.request(action).await?;
                PowerState::On
            }
            PowerAction::Off => {
                self.request(action).await?;
                PowerState::Off
            }
            PowerAction::Cycle => {
                self.request(PowerAction::Off).await?;
                tokio::time::sleep(self.config.cycle_delay).await;
                self.request(PowerAction::On).await?;
                PowerState::On
            }
            PowerAction::Status => {
                let body = self.request(action).await?;
                parse_status(&body, self.config.status_on.as_ref())
            }
        };
        Ok(PowerOutcome::Done(state))
    }
}

impl PowerDriver for HttpPowerDriver {
    fn act(&self, action: PowerAction) -> BoxFuture<'_, Result<PowerOutcome>> {
        self.act_inner(action).boxed()
    }
}
