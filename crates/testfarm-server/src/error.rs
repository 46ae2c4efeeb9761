//! The one place errors become HTTP: every handler returns [`ApiError`], which renders as
//! `application/problem+json` with a stable type, a detail a person can act on, and the
//! field at fault. Internal failures are logged with their cause and shown as a generic
//! 500 without internals.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use testfarm_api::Problem;
use testfarm_api::problem::PROBLEM_CONTENT_TYPE;
use testfarm_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{detail}")]
    BadRequest {
        detail: String,
        field: Option<String>,
    },
    #[error("{detail}")]
    Unprocessable {
        detail: String,
        field: Option<String>,
    },
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{detail}")]
    Conflict {
        detail: String,
        field: Option<String>,
    },
    /// 416, with `Content-Range: bytes */{size}`.
    #[error("the requested range is outside the {size} bytes of the artifact")]
    RangeNotSatisfiable { size: u64 },
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn bad_request(field: impl Into<String>, detail: impl ToString) -> Self {
        ApiError::BadRequest {
            detail: detail.to_string(),
            field: Some(field.into()),
        }
    }

    pub fn unprocessable(field: impl Into<String>, detail: impl ToString) -> Self {
        ApiError::Unprocessable {
            detail: detail.to_string(),
            field: Some(field.into()),
        }
    }

    pub fn conflict(detail: impl ToString) -> Self {
        ApiError::Conflict {
            detail: detail.to_string(),
            field: None,
        }
    }

    fn parts(&self) -> (StatusCode, &'static str, &'static str, Option<&str>) {
        match self {
            ApiError::BadRequest { field, .. } => (
                StatusCode::BAD_REQUEST,
                "bad-request",
                "Bad request",
                field.as_deref(),
            ),
            ApiError::Unprocessable { field, .. } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                "Invalid value",
                field.as_deref(),
            ),
            ApiError::Unauthorized(_) => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Unauthorized",
                None,
            ),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", "Forbidden", None),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not-found", "Not found", None),
            ApiError::Conflict { field, .. } => (
                StatusCode::CONFLICT,
                "conflict",
                "Conflict",
                field.as_deref(),
            ),
            ApiError::RangeNotSatisfiable { .. } => (
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range-not-satisfiable",
                "Range not satisfiable",
                Some("Range"),
            ),
            ApiError::MethodNotAllowed(_) => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
                None,
            ),
            ApiError::PayloadTooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-large",
                "Payload too large",
                Some("body"),
            ),
            ApiError::UnsupportedMediaType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
                Some("body"),
            ),
            ApiError::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Unavailable",
                None,
            ),
            ApiError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
                None,
            ),
        }
    }

    pub fn problem(&self) -> Problem {
        let (status, kind, title, field) = self.parts();
        let detail = match self {
            ApiError::Internal(_) => "the server failed; the cause is in its log".to_string(),
            other => other.to_string(),
        };
        Problem {
            kind: format!("urn:testfarm:problem:{kind}"),
            title: title.to_string(),
            status: status.as_u16(),
            detail,
            field: field.map(str::to_string),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(cause) = &self {
            tracing::error!(%cause, "request failed");
        }
        let problem = self.problem();
        let status =
            StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut resp = (status, body).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(PROBLEM_CONTENT_TYPE),
        );
        if let ApiError::RangeNotSatisfiable { size } = &self
            && let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}"))
        {
            resp.headers_mut().insert(header::CONTENT_RANGE, v);
        }
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Duplicate { .. } => ApiError::Conflict {
                detail: e.to_string(),
                field: Some("name".into()),
            },
            StoreError::NotFound { .. } => ApiError::NotFound(e.to_string()),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<testfarm_core::resource::Refused> for ApiError {
    fn from(e: testfarm_core::resource::Refused) -> Self {
        use testfarm_core::resource::Refused::*;
        match e {
            ForceWithoutReason => ApiError::unprocessable("reason", e),
            WindowInverted { .. } => ApiError::unprocessable("end", e),
            _ => ApiError::conflict(e),
        }
    }
}

impl From<testfarm_artifacts::BlobError> for ApiError {
    fn from(e: testfarm_artifacts::BlobError) -> Self {
        use testfarm_artifacts::BlobError::*;
        match e {
            NotFound(d) => ApiError::NotFound(format!("the bytes of sha256 {d} are not stored")),
            Mismatch { .. } => ApiError::unprocessable("sha256", e),
            TooLarge { .. } => ApiError::PayloadTooLarge(e.to_string()),
            RangeNotSatisfiable { size, .. } => ApiError::RangeNotSatisfiable { size },
            Source(_) => ApiError::bad_request("body", e),
            Io(_) => ApiError::Internal(e.to_string()),
            // The bucket is down or refuses us: the lab's fault, worth a retry.
            Remote(_) => ApiError::Unavailable(e.to_string()),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
