//! `POST /api`: the node's commands for programs in any language. The body is one control
//! protocol request (`crate::control::protocol`: `{"op":"lookup","key":"x"}`, `send`, `route`,
//! `range`, `broadcast`, `group_join`, `put`, `get`, `census`, …) and the answer is the same
//! `{"ok":…}` JSON the control socket gives, carried out by the same code
//! (`super::super::requests`).
//!
//! Status codes: 200 whenever the request was understood, including a command that failed
//! (`{"ok":false,"error":…}`, as on the control socket); 400 for a body that is not a request
//! (not JSON, an unknown `op`, a streaming op: `watch` and `watch_node` are `GET /watch` and
//! `GET /watch-node`); 415 for a body not declared `Content-Type: application/json` (so that
//! a web page of another site, which may send only form and text bodies without asking first,
//! cannot command the node: `curl --json` declares it); 408 for a body not sent within the
//! control protocol's read timeout; 413 for a body larger than the control protocol's
//! `MAX_REQUEST_BYTES`; 401 without the token when there is one. Every error body is
//! `{"ok":false,"error":…}` too.

use super::AppState;
use crate::control::protocol::{Request, Response, MAX_REQUEST_BYTES, REQUEST_READ_TIMEOUT};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use futures_util::StreamExt;
use tokio::sync::oneshot;
use tracing::debug;

/// Why a body could not be read.
enum BodyError {
    /// Larger than [`MAX_REQUEST_BYTES`].
    TooLarge,
    /// The connection failed while it was being read.
    Broken(String),
}

/// `POST /api`: carries out one control request.
pub(super) async fn api(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> axum::response::Response {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the request must be sent as Content-Type: application/json (curl --json '…')",
        );
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_REQUEST_BYTES as u64) {
        return refuse(StatusCode::PAYLOAD_TOO_LARGE, too_large());
    }
    let bytes = match tokio::time::timeout(REQUEST_READ_TIMEOUT, read_body(body)).await {
        Err(_) => {
            let e = format!(
                "the request body did not arrive within {} s",
                REQUEST_READ_TIMEOUT.as_secs()
            );
            return refuse(StatusCode::REQUEST_TIMEOUT, e);
        }
        Ok(Err(BodyError::TooLarge)) => return refuse(StatusCode::PAYLOAD_TOO_LARGE, too_large()),
        Ok(Err(BodyError::Broken(e))) => {
            return refuse(StatusCode::BAD_REQUEST, format!("reading the request: {e}"))
        }
        Ok(Ok(b)) => b,
    };
    let req = match serde_json::from_slice::<Request>(bytes.trim_ascii()) {
        Ok(r) => r,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, format!("malformed request: {e}")),
    };
    match req {
        Request::Watch { .. } => refuse(
            StatusCode::BAD_REQUEST,
            "`watch` is a stream: use GET /watch?key=KEY (server-sent events)",
        ),
        Request::WatchNode { .. } => refuse(
            StatusCode::BAD_REQUEST,
            "`watch_node` is a stream: use GET /watch-node?node=ID (server-sent events)",
        ),
        req => {
            debug!(?req, "HTTP API request");
            let (resp, done) = s.requests.execute(req).await;
            answer(StatusCode::OK, &resp, done)
        }
    }
}

/// The error of a body larger than [`MAX_REQUEST_BYTES`].
fn too_large() -> String {
    format!("request larger than {MAX_REQUEST_BYTES} bytes")
}

/// Reads the whole body, refusing it once it passes [`MAX_REQUEST_BYTES`].
async fn read_body(body: Body) -> Result<Vec<u8>, BodyError> {
    let mut stream = body.into_data_stream();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| BodyError::Broken(e.to_string()))?;
        if bytes.len() + chunk.len() > MAX_REQUEST_BYTES {
            return Err(BodyError::TooLarge);
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// A refusal: `code` with `{"ok":false,"error":…}`.
fn refuse(code: StatusCode, error: impl Into<String>) -> axum::response::Response {
    answer(code, &Response::err(error), None)
}

/// `resp` as JSON with status `code`; `done` (a `leave`'s) is told once the body has been
/// handed to the connection, so that the node stops only after answering.
fn answer(
    code: StatusCode,
    resp: &Response,
    done: Option<oneshot::Sender<()>>,
) -> axum::response::Response {
    let mut text = serde_json::to_vec(resp)
        .unwrap_or_else(|_| br#"{"ok":false,"error":"cannot encode the answer"}"#.to_vec());
    text.push(b'\n');
    let body = match done {
        None => Body::from(text),
        Some(done) => {
            // The body's one chunk, then the end, at which `done` fires (also if the client
            // goes before taking it: the stream is dropped, and with it the sender).
            let chunk =
                futures_util::stream::once(
                    async move { Ok::<_, std::io::Error>(Bytes::from(text)) },
                );
            let end = futures_util::stream::once(async move {
                let _ = done.send(());
                Ok::<_, std::io::Error>(Bytes::new())
            });
            Body::from_stream(chunk.chain(end))
        }
    };
    (code, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}
