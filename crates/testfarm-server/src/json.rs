//! A JSON body extractor whose rejections are problem+json naming the field at fault
//! (`labels.arch`, `kind`) or the line and column of a syntax error, instead of axum's
//! plain-text rejections: 415 for another media type, 413 past [`MAX_BODY`], 400 for
//! malformed JSON, 422 for a value of the wrong shape.

use axum::extract::{FromRequest, Request};
use axum::http::header;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Largest request body accepted (job specs and label maps are small).
pub const MAX_BODY: usize = 4 * 1024 * 1024;

pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + utoipa::ToSchema> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| {
                let ct = ct.split(';').next().unwrap_or("").trim();
                ct == "application/json" || ct.ends_with("+json")
            });
        if !is_json {
            return Err(ApiError::UnsupportedMediaType(
                "expected a JSON body with Content-Type: application/json".into(),
            ));
        }
        let bytes = crate::extract::read_body(req, state).await?;
        parse_checked::<T>(&bytes).map(ApiJson)
    }
}

/// Parses a request body once: JSON syntax (400 with line and column), then the
/// document's schema for `T` (422 naming the field), then serde from the parsed value (422
/// with the path of the failing field). A number written with a zero fraction (`700.0`)
/// is an integer to JSON Schema, so it is made one before serde reads it.
pub fn parse_checked<T: DeserializeOwned + utoipa::ToSchema>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request("body", format!("malformed JSON: {e}")))?;
    crate::routes::check_body(&T::name(), &value)
        .map_err(|(field, why)| ApiError::unprocessable(field, why))?;
    integral_floats_to_integers(&mut value);
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." {
            "body".to_string()
        } else {
            path
        };
        ApiError::unprocessable(field, e.into_inner())
    })
}

/// Rewrites `n.0` numbers that fit an `i64`/`u64` as integers.
fn integral_floats_to_integers(v: &mut serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::Number(n) => {
            let Some(f) = n.as_f64().filter(|f| n.is_f64() && f.fract() == 0.0) else {
                return;
            };
            // `u64::MAX as f64` is 2^64, one past the largest u64.
            if f >= 0.0 && f < u64::MAX as f64 {
                *n = serde_json::Number::from(f as u64);
            } else if f < 0.0 && f >= i64::MIN as f64 {
                *n = serde_json::Number::from(f as i64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_floats_to_integers),
        Value::Object(map) => map.values_mut().for_each(integral_floats_to_integers),
        _ => {}
    }
}
