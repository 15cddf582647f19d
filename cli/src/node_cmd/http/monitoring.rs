//! The read-only monitoring endpoints: `/metrics` (OpenMetrics), `/status` and `/census` (JSON)
//! and `/ring.svg` (the picture from a census).

use super::{unavailable, AppState};
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

/// Most per-node rows a `/census` or `/ring.svg` asks for (what a census answer may hold).
const MAX_ROWS: u32 = 4096;

/// `GET /metrics`: the node's metrics in the OpenMetrics text format.
pub(super) async fn metrics(State(s): State<AppState>) -> Response {
    match s.requests.node.metrics_text().await {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => unavailable(e),
    }
}

/// `GET /status`: the node's [`p2ps::Status`] as JSON.
pub(super) async fn status(State(s): State<AppState>) -> Response {
    match s.requests.node.status().await {
        Ok(st) => axum::Json(st).into_response(),
        Err(e) => unavailable(e),
    }
}

/// The query of `/census` and `/ring.svg`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub(super) struct CensusQuery {
    /// Per-node rows (`/census`: default 0; `/ring.svg`: default 4096).
    rows: Option<u32>,
    /// `nat` or `load` (`/ring.svg`).
    colour: Option<String>,
}

/// `GET /census?rows=N`: a census of the network as JSON.
pub(super) async fn census(State(s): State<AppState>, Query(q): Query<CensusQuery>) -> Response {
    match s
        .requests
        .node
        .census(q.rows.unwrap_or(0).min(MAX_ROWS))
        .await
    {
        Ok(r) => axum::Json(r).into_response(),
        Err(e) => unavailable(e),
    }
}

/// `GET /ring.svg?colour=nat|load&rows=N`: the ring drawn from a census, with this node's
/// lists and fingers as chords.
pub(super) async fn ring_svg(State(s): State<AppState>, Query(q): Query<CensusQuery>) -> Response {
    let colour = match q.colour.as_deref() {
        None | Some("nat") => p2ps::census::Colouring::Nat,
        Some("load") => p2ps::census::Colouring::Load,
        Some(other) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("colour must be nat or load, not {other:?}\n"),
            )
                .into_response()
        }
    };
    let node = &s.requests.node;
    let report = match node.census(q.rows.unwrap_or(MAX_ROWS).min(MAX_ROWS)).await {
        Ok(r) => r,
        Err(e) => return unavailable(e),
    };
    let status = match node.status().await {
        Ok(st) => st,
        Err(e) => return unavailable(e),
    };
    let svg = crate::census_cmd::picture(&report, Some(&status), colour);
    ([(header::CONTENT_TYPE, "image/svg+xml")], svg).into_response()
}
