//! A JSON body extractor whose rejections are problem+json naming the field at fault
//! (`labels.arch`, `kind`) or the line and column of a syntax error, instead of axum's
//! plain-text rejections.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Largest request body accepted (job specs and label maps are small).
pub const MAX_BODY: usize = 4 * 1024 * 1024;

pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
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
            return Err(ApiError::BadRequest {
                detail: "expected a JSON body with Content-Type: application/json".into(),
                field: Some("body".into()),
            });
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::bad_request("body", format!("cannot read the body: {e}")))?;
        parse(&bytes).map(ApiJson)
    }
}

/// Deserialises with the path of the failing field.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::bad_request("body", format!("malformed JSON: {inner}"))
        } else {
            let field = if path == "." {
                "body".to_string()
            } else {
                path
            };
            ApiError::unprocessable(field, inner)
        }
    })
}

/// A query string extractor whose rejections are problem+json (axum's `Query` answers
/// plain text).
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> axum::extract::FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|e| ApiError::bad_request("query", e.body_text()))
    }
}
