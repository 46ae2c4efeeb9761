//! RFC 9457 problem details, the one error shape of the API.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The media type of error responses.
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// An API error. `type` is stable (clients branch on it), `detail` is for people, and
/// `field` names the part of the request at fault when there is one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    /// A stable URI-like identifier, e.g. `urn:testfarm:problem:conflict`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// The request field at fault (`labels.arch`, `selector`, `body`), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{} (field `{field}`)", self.detail),
            None => f.write_str(&self.detail),
        }
    }
}
