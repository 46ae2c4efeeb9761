//! `/ui/events`: the dashboard's live stream, cookie-authenticated, served by the same
//! stream builder as `/api/v1/events/stream` ([`crate::routes::events::event_stream`]).

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use testfarm_store::events::EventFilter;

use super::session::Session;
use crate::state::AppState;

#[derive(Deserialize)]
pub struct LiveQuery {
    /// The last event id the page was rendered at (in `data-after` on `<body>`).
    #[serde(default)]
    after: i64,
}

pub async fn events(
    State(state): State<AppState>,
    _session: Session,
    Query(q): Query<LiveQuery>,
) -> Response {
    let filter = EventFilter {
        after: q.after.max(0),
        subject_type: None,
        subject: None,
        limit: 500,
    };
    crate::routes::events::event_stream(&state, filter).into_response()
}

pub async fn js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("assets/live.js"),
    )
        .into_response()
}
