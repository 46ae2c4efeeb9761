//! CSRF tokens: HMAC-SHA256 of the session's token id under a per-process random key.
//! Nothing to store; a restart invalidates open forms, which is acceptable.

use std::sync::OnceLock;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::session::Session;

fn key() -> &'static [u8; 32] {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    KEY.get_or_init(rand::random)
}

fn mac(token_id: &str) -> Option<Hmac<Sha256>> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key()).ok()?;
    m.update(token_id.as_bytes());
    Some(m)
}

/// The CSRF token for a session.
pub fn token_for(token_id: &str) -> String {
    mac(token_id)
        .map(|m| {
            m.finalize()
                .into_bytes()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        })
        .unwrap_or_default()
}

/// Refuses (403 page) unless `presented` is the session's CSRF token; compared in
/// constant time by `verify_slice`.
#[allow(clippy::result_large_err)]
pub fn check(session: &Session, presented: &str) -> Result<(), Response> {
    let bytes: Option<Vec<u8>> = (presented.len() == 64)
        .then(|| {
            (0..32)
                .map(|i| u8::from_str_radix(presented.get(i * 2..i * 2 + 2)?, 16).ok())
                .collect()
        })
        .flatten();
    let ok = match (bytes, mac(&session.caller.token_id)) {
        (Some(b), Some(m)) => m.verify_slice(&b).is_ok(),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err((
            StatusCode::FORBIDDEN,
            super::layout::page(
                "Refused",
                None,
                maud::html! { h1 { "Refused" } p { "missing or wrong CSRF token; reload the form and try again" } },
            ),
        )
            .into_response())
    }
}
