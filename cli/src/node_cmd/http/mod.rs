//! `p2ps node --http ADDR`: the node's HTTP interface, for monitoring and for programs in any
//! language.
//!
//! - `GET /` (and `/dashboard`): a page with the node's figures and the ring (`dashboard`);
//! - `GET /metrics`, `/status`, `/census?rows=N`, `/ring.svg?colour=nat|load&rows=N`: the
//!   node's metrics (OpenMetrics), its [`p2ps::Status`] and a census as JSON, and the picture
//!   of the ring (`monitoring`);
//! - `POST /api`: one control-protocol request, answered as on the control socket (`api`);
//! - `GET /events`, `/watch?key=K`, `/watch-node?node=ID`: incoming messages, a dictionary
//!   watch and a node watch as server-sent events (`events`).
//!
//! With a token (`--http-token`, required on any address other than loopback; `auth`) every
//! request but the dashboard page, which holds no data, must carry `Authorization: Bearer
//! <token>`, the token read from a file only its owner may read. Without one, on loopback, it
//! answers anyone on this machine, commands included — unlike the control socket, which
//! admits only the node's own user; the flag's help says to give a token on a shared machine. Everything is bounded:
//! [`listener::MAX_CONNECTIONS`] connections, each cut off when its client stops reading;
//! request bodies (the control protocol's size and read time); event and watch streams.

mod api;
mod auth;
mod dashboard;
pub(super) mod events;
mod listener;
mod monitoring;

use super::requests::Requests;
use anyhow::{bail, Context, Result};
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use events::{DeliveryFeed, MAX_EVENT_STREAMS};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::warn;

/// The HTTP interface's settings.
#[derive(Debug, Clone)]
pub(super) struct HttpSettings {
    /// Where it listens.
    pub(super) addr: SocketAddr,
    /// The token requests must carry; `None` on loopback without `--http-token`.
    pub(super) token: Option<String>,
}

impl HttpSettings {
    /// Checks the address and reads (or makes) the token file.
    pub(super) fn resolve(
        addr: Option<SocketAddr>,
        token_file: Option<PathBuf>,
    ) -> Result<Option<HttpSettings>> {
        let Some(addr) = addr else {
            if token_file.is_some() {
                bail!("--http-token needs --http");
            }
            return Ok(None);
        };
        let token = match &token_file {
            Some(f) => Some(auth::read_or_make_token(f)?),
            None if addr.ip().is_loopback() => None,
            None => bail!(
                "--http {addr} is not a loopback address: give --http-token FILE (a file with \
                 the bearer token requests must carry; made if missing)"
            ),
        };
        Ok(Some(HttpSettings { addr, token }))
    }
}

/// Binds the HTTP interface's socket.
pub(super) async fn bind(s: &HttpSettings) -> Result<TcpListener> {
    TcpListener::bind(s.addr)
        .await
        .with_context(|| format!("binding the HTTP interface on {}", s.addr))
}

/// What the handlers share.
#[derive(Clone)]
struct AppState {
    /// The node's commands (and the node itself, and the places for watches).
    requests: Requests,
    /// The token requests must carry, if any.
    token: Option<Arc<str>>,
    /// Incoming messages, for `/events`.
    deliveries: DeliveryFeed,
    /// Places for `/events` streams.
    event_streams: Arc<Semaphore>,
}

/// Serves the HTTP interface on `listener` until the task is dropped: the node's commands
/// through `requests`, the token `token` (if any) required, incoming messages taken from
/// `deliveries`.
pub(super) async fn serve(
    listener: TcpListener,
    requests: Requests,
    token: Option<String>,
    deliveries: DeliveryFeed,
) {
    let state = AppState {
        requests,
        token: token.map(Arc::from),
        deliveries,
        event_streams: Arc::new(Semaphore::new(MAX_EVENT_STREAMS)),
    };
    let app = router(state);
    if let Err(e) = axum::serve(listener::LimitedListener::new(listener), app).await {
        warn!("the HTTP interface stopped: {e}");
    }
}

fn router(state: AppState) -> Router {
    let guarded = Router::new()
        .route("/metrics", get(monitoring::metrics))
        .route("/status", get(monitoring::status))
        .route("/census", get(monitoring::census))
        .route("/ring.svg", get(monitoring::ring_svg))
        .route("/api", post(api::api))
        .route("/events", get(events::events))
        .route("/watch", get(events::watch))
        .route("/watch-node", get(events::watch_node))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authorize,
        ));
    Router::new()
        .route("/", get(dashboard::page))
        .route("/dashboard", get(dashboard::page))
        .merge(guarded)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::same_site,
        ))
        .with_state(state)
}

/// The node stopped (or is stopping), or cannot do what was asked right now: 503.
fn unavailable(e: impl std::fmt::Display) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("the node cannot answer: {e}\n"),
    )
        .into_response()
}
