//! `/api/v1/events`: the event log, as pages and as a live SSE stream that resumes from
//! `Last-Event-ID`. The stream reads committed rows from the store and waits on the
//! store's commit notification, so it never shows an event whose change rolled back
//! and never skips one across a reconnect.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::Stream;
use testfarm_api::Event;
use testfarm_api::event::EventQuery;
use testfarm_api::problem::Problem;
use testfarm_core::Action;
use testfarm_store::events::EventFilter;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiQuery;
use crate::state::AppState;

/// Events after an id, oldest first.
#[utoipa::path(get, path = "/api/v1/events", tag = "events", params(EventQuery),
    responses((status = 200, body = Vec<Event>), (status = 400, body = Problem)))]
pub async fn list_events(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<EventQuery>,
) -> ApiResult<Json<Vec<Event>>> {
    caller.require(Action::Read)?;
    let limit =
        u32::try_from(crate::routes::page_limit(q.limit)?).unwrap_or(testfarm_api::page::MAX_LIMIT);
    let events = state
        .store
        .list_events(&EventFilter {
            after: q.after.unwrap_or(0),
            subject_type: q.subject_type,
            subject: q.subject,
            limit,
        })
        .await?;
    Ok(Json(events))
}

/// Live events as Server-Sent Events. Each SSE `id` is the event id; reconnecting with
/// `Last-Event-ID` (or `?after=`) resumes without gaps.
#[utoipa::path(get, path = "/api/v1/events/stream", tag = "events", params(EventQuery),
    responses((status = 200, description = "text/event-stream of Event objects", content_type = "text/event-stream")))]
pub async fn stream_events(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<EventQuery>,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    caller.require(Action::Read)?;
    let from_header = headers
        .get("last-event-id")
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok())
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "Last-Event-ID",
                        "Last-Event-ID must be an event id (an integer)",
                    )
                })
        })
        .transpose()?;
    let after = from_header.or(q.after).unwrap_or(0);
    // `limit` is the size of each catch-up read (checked as on every list; 500 unless set).
    let limit = match q.limit {
        Some(_) => u32::try_from(crate::routes::page_limit(q.limit)?).unwrap_or(500),
        None => 500,
    };
    let filter = EventFilter {
        after,
        subject_type: q.subject_type,
        subject: q.subject,
        limit,
    };
    Ok(event_stream(&state, filter))
}

/// The live SSE stream of events matching `filter`, from `filter.after` on; the API's
/// stream and the dashboard's `/ui/events` both serve this.
pub fn event_stream(
    state: &AppState,
    filter: EventFilter,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>> + use<>> {
    let rx = state.store.subscribe_events();
    let store = state.store.clone();
    let stream = futures::stream::unfold(
        (filter, rx, Vec::<Event>::new().into_iter()),
        move |(mut filter, mut rx, mut pending)| {
            let store = store.clone();
            async move {
                loop {
                    if let Some(e) = pending.next() {
                        filter.after = e.id;
                        let sse = SseEvent::default()
                            .id(e.id.to_string())
                            .event(e.kind.clone())
                            .json_data(&e)
                            .unwrap_or_else(|_| {
                                SseEvent::default().comment("unserialisable event")
                            });
                        return Some((Ok(sse), (filter, rx, pending)));
                    }
                    // Mark the current value seen before reading, so a commit that lands
                    // between the read and the wait still wakes us.
                    rx.borrow_and_update();
                    match store.list_events(&filter).await {
                        Ok(batch) if !batch.is_empty() => {
                            pending = batch.into_iter();
                            continue;
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "event stream read failed; retrying");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            continue;
                        }
                    }
                    if rx.changed().await.is_err() {
                        return None; // the store is shutting down
                    }
                }
            }
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
