//! Cursor pages: lists return at most `limit` items and a cursor for the next page, so
//! clients never miss or repeat items while the list changes under them.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Default and largest page sizes.
pub const DEFAULT_LIMIT: u32 = 100;
pub const MAX_LIMIT: u32 = 1000;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}
