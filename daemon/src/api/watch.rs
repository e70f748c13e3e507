//! `GET /v1/watch`: Server-Sent Events of every change after a sequence number.
//!
//! Each SSE event is named after the change (`ADDED`, `MODIFIED`, `DELETED`), carries the
//! sequence as its `id` (so a client that reconnects with `Last-Event-ID` misses nothing) and
//! the object as JSON data. The stream waits on the store's commit signal; it never polls. A
//! caller sees the changes of the projects its token may read, and of cluster-wide kinds.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::Stream;
use serde::Deserialize;

use super::{ApiError, AppState};
use crate::auth::Principal;
use crate::resource::Kind;
use crate::store::{Event, StoreError};

#[derive(Deserialize)]
pub(super) struct WatchQuery {
    /// Replay changes after this sequence (a list's `sequence`); default: only new changes.
    since: Option<u64>,
    project: Option<String>,
    kind: Option<String>,
}

struct Cursor {
    state: AppState,
    principal: Principal,
    changes: tokio::sync::watch::Receiver<u64>,
    after: u64,
    project: Option<String>,
    kind: Option<Kind>,
    pending: VecDeque<Event>,
    done: bool,
}

impl Cursor {
    fn wanted(&self, event: &Event) -> bool {
        self.kind.is_none_or(|k| k == event.object.kind)
            && self.principal.may_see(&event.object)
            && self.project.as_deref().is_none_or(|p| {
                event.object.project() == p
                    || (event.object.kind == Kind::Project && event.object.name() == p)
            })
    }

    /// The next event to send, waiting for a commit when there is none.
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if self.done {
                return None;
            }
            if let Some(event) = self.pending.pop_front() {
                let name = serde_json::to_value(event.kind).ok()?.as_str()?.to_string();
                let data = super::resources::redacted(event.object);
                return Some(
                    SseEvent::default()
                        .id(event.seq.to_string())
                        .event(name)
                        .data(data.to_string()),
                );
            }
            let after = self.after;
            match self
                .state
                .store
                .read_async(move |r| r.events_after(after, 256))
                .await
            {
                Ok(events) if events.is_empty() => {
                    if self.changes.changed().await.is_err() {
                        return None;
                    }
                }
                Ok(events) => {
                    self.after = events.last().map_or(after, |e| e.seq);
                    let wanted: Vec<Event> =
                        events.into_iter().filter(|e| self.wanted(e)).collect();
                    self.pending.extend(wanted);
                }
                Err(e @ StoreError::Gone { .. }) => {
                    self.done = true;
                    return Some(SseEvent::default().event("error").data(e.to_string()));
                }
                Err(e) => {
                    tracing::error!(error = %e, "watch stopped");
                    self.done = true;
                    return Some(
                        SseEvent::default()
                            .event("error")
                            .data("internal error: see the daemon's log"),
                    );
                }
            }
        }
    }
}

pub(super) async fn watch(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Query(query): Query<WatchQuery>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let kind = query
        .kind
        .as_deref()
        .map(str::parse::<Kind>)
        .transpose()
        .map_err(ApiError::BadRequest)?;
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let after = last_event_id
        .or(query.since)
        .unwrap_or_else(|| state.store.last_seq());
    let cursor = Cursor {
        changes: state.store.subscribe(),
        state,
        principal,
        after,
        project: query.project,
        kind,
        pending: VecDeque::new(),
        done: false,
    };
    let stream = futures_util::stream::unfold(cursor, |mut cursor| async move {
        cursor.next().await.map(|event| (Ok(event), cursor))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
