//! Webhook delivery: a JSON POST of [`AlertNotification`], signed so the receiver can
//! tell it came from this server and was not changed:
//!
//! - `X-Testfarm-Signature: sha256=<hex HMAC-SHA256 of the exact body, keyed with the
//!   webhook's secret>` (absent when the webhook has no secret);
//! - `X-Testfarm-Delivery`: the delivery id (the same on every retry: deduplicate on it);
//! - `X-Testfarm-Timestamp`: seconds since the epoch when this attempt was sent;
//! - `X-Testfarm-Event`: `alert.raised` or `alert.resolved`.
//!
//! Any 2xx answer is delivered; anything else (or no answer) is retried.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use testfarm_api::alert::AlertNotification;

use crate::config::WebhookConfig;

pub const SIGNATURE_HEADER: &str = "x-testfarm-signature";
pub const DELIVERY_HEADER: &str = "x-testfarm-delivery";
pub const TIMESTAMP_HEADER: &str = "x-testfarm-timestamp";
pub const EVENT_HEADER: &str = "x-testfarm-event";

pub fn client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .build()
        .unwrap_or_default()
}

/// `sha256=<hex>` of `body` keyed with `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    // HMAC takes keys of any length; the error case cannot happen.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    let mut hex = String::with_capacity(7 + bytes.len() * 2);
    hex.push_str("sha256=");
    for b in bytes {
        hex.push_str(&format!("{b:02x}"));
    }
    hex
}

pub async fn send(
    client: &reqwest::Client,
    hook: &WebhookConfig,
    secret: Option<&str>,
    note: &AlertNotification,
) -> Result<(), String> {
    let body = serde_json::to_vec(note).map_err(|e| e.to_string())?;
    let mut req = client
        .post(&hook.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(DELIVERY_HEADER, &note.delivery_id)
        .header(EVENT_HEADER, format!("alert.{}", note.event))
        .header(TIMESTAMP_HEADER, chrono::Utc::now().timestamp().to_string());
    if let Some(s) = secret {
        req = req.header(SIGNATURE_HEADER, signature(s, &body));
    }
    let resp = req
        .body(body)
        .send()
        .await
        .map_err(|e| format!("POST {}: {}", hook.url, error_chain(&e)))?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(format!("POST {}: answered {}", hook.url, resp.status()))
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn signature_is_the_hmac_of_the_body() {
        // RFC 4231 test case 2.
        let s = super::signature("Jefe", b"what do ya want for nothing?");
        assert_eq!(
            s,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
