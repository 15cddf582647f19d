//! Server-sent events: `GET /events` streams the messages this node receives, `GET /watch`
//! a dictionary watch and `GET /watch-node` a node watch, for programs in any language (and
//! `curl -N`).
//!
//! - `/events`: first `event: ready` (`{"node":ID}`, once subscribed), then one `event: message`
//!   per message delivered to the node (direct sends, routes, broadcasts, range casts, group
//!   messages: what the node prints), its data what `p2ps node --json` prints for it. Messages
//!   reach the streams through a bounded channel ([`DELIVERY_BUFFER`] messages): a client that
//!   falls behind loses the oldest and is told how many (`event: lagged`, `{"missed":N}`); the
//!   node never waits for it. At most [`MAX_EVENT_STREAMS`] at once.
//! - `/watch?key=K`: one `event: watch` per line a control-socket `watch` would write
//!   (`{"ok":true,"result":{"key","state","value","version"}}`); `/watch-node?node=ID`: one
//!   `event: watch_node` per `watch_node` line, ending after the final one. Both share the
//!   control socket's places for watches (`MAX_WATCH_STREAMS`); a watch the node ends (it
//!   stops) ends with `event: end` and an error.
//!
//! Refused before any event: 429 when there is no room for another stream, 400 for a node id
//! that names no node, 503 when the watch cannot start. A comment is sent every [`KEEP_ALIVE`],
//! so that a client that went away is noticed; one that stops reading is cut off by the
//! listener.

use super::{unavailable, AppState};
use crate::control::protocol::{NodeWatchLine, Response, WatchEvent, MAX_WATCH_STREAMS};
use crate::node_cmd::output::message_json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response as HttpResponse};
use futures_util::stream::{self, Stream, StreamExt};
use p2ps::Delivery;
use std::convert::Infallible;
use std::sync::Arc;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::OwnedSemaphorePermit;

/// Messages kept for `/events` streams that have not taken them yet (each up to a payload's
/// size, 1 MiB: the bound on what the channel holds).
pub(crate) const DELIVERY_BUFFER: usize = 64;
/// Most `/events` streams served at once.
pub(super) const MAX_EVENT_STREAMS: usize = 16;
/// How often a stream with nothing to say sends a comment: a client that went away is noticed,
/// and the stream is never idle (well under the listener's `IDLE`).
const KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(15);

/// Where the node's main loop hands each delivered message to the `/events` streams.
pub(crate) type DeliveryFeed = broadcast::Sender<Arc<Delivery>>;

/// An SSE event with JSON `data`.
fn event(name: &str, data: impl serde::Serialize) -> Event {
    let text = serde_json::to_string(&data)
        .unwrap_or_else(|_| r#"{"ok":false,"error":"cannot encode the event"}"#.to_string());
    Event::default().event(name).data(text)
}

/// 429: no room for another stream.
fn too_many(what: &str, max: usize) -> HttpResponse {
    (
        StatusCode::TOO_MANY_REQUESTS,
        format!("the node already serves {max} {what}, as many as it may at once; try later\n"),
    )
        .into_response()
}

/// `stream` as a server-sent event response with keep-alive comments.
fn sse(stream: impl Stream<Item = Event> + Send + 'static) -> HttpResponse {
    Sse::new(stream.map(Ok::<_, Infallible>))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response()
}

/// `GET /events`: the messages this node receives.
pub(super) async fn events(State(s): State<AppState>) -> HttpResponse {
    let Ok(slot) = s.event_streams.clone().try_acquire_owned() else {
        return too_many("event streams", MAX_EVENT_STREAMS);
    };
    let rx = s.deliveries.subscribe();
    let ready = event(
        "ready",
        serde_json::json!({"node": s.requests.node.id().to_string()}),
    );
    let messages = stream::unfold((rx, slot), |(mut rx, slot)| async move {
        let ev = match rx.recv().await {
            Ok(m) => event("message", message_json(&m)),
            Err(RecvError::Lagged(n)) => event("lagged", serde_json::json!({"missed": n})),
            Err(RecvError::Closed) => return None,
        };
        Some((ev, (rx, slot)))
    });
    sse(stream::once(async { ready }).chain(messages))
}

/// The query of `/watch`.
#[derive(Debug, serde::Deserialize)]
pub(super) struct WatchQuery {
    /// The dictionary's open key.
    key: String,
}

/// `GET /watch?key=K`: every change of a dictionary key.
pub(super) async fn watch(State(s): State<AppState>, Query(q): Query<WatchQuery>) -> HttpResponse {
    let Ok(slot) = s.requests.watches.clone().try_acquire_owned() else {
        return too_many("watches", MAX_WATCH_STREAMS);
    };
    let key = q.key;
    let w = match s.requests.node.dict().watch(key.clone()).await {
        Ok(w) => w,
        Err(e) => return unavailable(format!("cannot watch {key}: {e}")),
    };
    /// The stream's state: the watch (`None` once it ended), its key and its place.
    type St = (Option<p2ps::KeyWatch>, String, OwnedSemaphorePermit);
    let changes = stream::unfold((Some(w), key, slot), |(w, key, slot): St| async move {
        let mut w = w?;
        match w.next().await {
            Some(record) => {
                let ev = event("watch", Response::ok(WatchEvent::of(&key, record.as_ref())));
                Some((ev, (Some(w), key, slot)))
            }
            None => {
                let ev = event("end", Response::err("the node stopped; the watch ended"));
                Some((ev, (None, key, slot)))
            }
        }
    });
    sse(changes)
}

/// The query of `/watch-node`.
#[derive(Debug, serde::Deserialize)]
pub(super) struct WatchNodeQuery {
    /// The node's id, or a unique prefix of it.
    node: String,
}

/// `GET /watch-node?node=ID`: what becomes of a node.
pub(super) async fn watch_node(
    State(s): State<AppState>,
    Query(q): Query<WatchNodeQuery>,
) -> HttpResponse {
    let Ok(slot) = s.requests.watches.clone().try_acquire_owned() else {
        return too_many("watches", MAX_WATCH_STREAMS);
    };
    let id = match s.requests.addressee(&q.node).await {
        Ok(id) => id,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    let w = match s.requests.node.watch_node(id).await {
        Ok(w) => w,
        Err(e) => return unavailable(format!("cannot watch node {}: {e}", id.short())),
    };
    /// The stream's state: the watch (`None` once it ended) and its place.
    type St = (Option<p2ps::NodeWatch>, OwnedSemaphorePermit);
    let fates = stream::unfold((Some(w), slot), |(w, slot): St| async move {
        let mut w = w?;
        match w.next().await {
            Some(e) => {
                let ev = event("watch_node", Response::ok(NodeWatchLine::of(&e)));
                let next = if e.is_final() { None } else { Some(w) };
                Some((ev, (next, slot)))
            }
            None => {
                let ev = event("end", Response::err("the node stopped; the watch ended"));
                Some((ev, (None, slot)))
            }
        }
    });
    sse(fates)
}
