//! `p2ps node --http ADDR`: the node's HTTP interface, for monitoring and for programs in any
//! language.
//!
//! - `GET /metrics`: the node's metrics in the OpenMetrics text format (see `p2ps::metrics`),
//!   for Prometheus to scrape;
//! - `GET /status`: the node's [`p2ps::Status`] as JSON (what `p2ps status --json` prints);
//! - `GET /census?rows=N`: a census of the network as JSON (what `p2ps census --json` prints);
//! - `GET /ring.svg?colour=nat|load&rows=N`: the picture of the ring from a census, with this
//!   node's lists and fingers as chords (what `p2ps ring --svg` writes).
//!
//! On loopback it answers anyone on this machine; on any other address every request must
//! carry `Authorization: Bearer <token>`, the token read from a file only its owner may read
//! (`--http-token`), made with a random token if missing. Requests are small and answered
//! from the node's state; the server holds at most [`MAX_CONNECTIONS`] connections.

use anyhow::{bail, Context, Result};
use axum::extract::{Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use p2ps::Node;
use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::net::TcpListener;
use tracing::warn;

/// Most connections the HTTP server holds at once.
pub(super) const MAX_CONNECTIONS: usize = 64;

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
            Some(f) => Some(read_or_make_token(f)?),
            None if addr.ip().is_loopback() => None,
            None => bail!(
                "--http {addr} is not a loopback address: give --http-token FILE (a file with \
                 the bearer token requests must carry; made if missing)"
            ),
        };
        Ok(Some(HttpSettings { addr, token }))
    }
}

/// The token in `path` (its first line), or a new random one written there with mode 0600.
fn read_or_make_token(path: &Path) -> Result<String> {
    match std::fs::metadata(path) {
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                bail!(
                    "the HTTP token file {} may be read by others (mode {mode:o}): run `chmod \
                     600 {}`",
                    path.display(),
                    path.display()
                );
            }
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the HTTP token file {}", path.display()))?;
            let token = text.lines().next().unwrap_or("").trim().to_string();
            if token.len() < 16 {
                bail!(
                    "the HTTP token in {} is shorter than 16 characters",
                    path.display()
                );
            }
            Ok(token)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let bytes: [u8; 32] = rand::random();
            let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("creating the HTTP token file {}", path.display()))?;
            use std::io::Write;
            writeln!(f, "{token}")
                .with_context(|| format!("writing the HTTP token file {}", path.display()))?;
            Ok(token)
        }
        Err(e) => Err(e).with_context(|| format!("reading the HTTP token file {}", path.display())),
    }
}

/// Binds the HTTP interface's socket.
pub(super) async fn bind(s: &HttpSettings) -> Result<TcpListener> {
    TcpListener::bind(s.addr)
        .await
        .with_context(|| format!("binding the HTTP interface on {}", s.addr))
}

#[derive(Clone)]
struct AppState {
    node: Node,
    token: Option<Arc<str>>,
}

/// Serves the HTTP interface on `listener` until the task is dropped.
pub(super) async fn serve(listener: TcpListener, node: Node, token: Option<String>) {
    let state = AppState {
        node,
        token: token.map(Arc::from),
    };
    let app = router(state);
    let limited = tower_limit(listener);
    if let Err(e) = axum::serve(limited, app).await {
        warn!("the HTTP interface stopped: {e}");
    }
}

/// The listener, holding at most [`MAX_CONNECTIONS`] connections at once.
fn tower_limit(listener: TcpListener) -> LimitedListener {
    LimitedListener {
        inner: listener,
        permits: Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS)),
    }
}

/// A TCP listener that accepts a connection only while fewer than [`MAX_CONNECTIONS`] are open.
struct LimitedListener {
    inner: TcpListener,
    permits: Arc<tokio::sync::Semaphore>,
}

/// A connection holding one of the listener's permits until it closes.
struct Limited {
    stream: tokio::net::TcpStream,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl tokio::io::AsyncRead for Limited {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Limited {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl axum::serve::Listener for LimitedListener {
    type Io = Limited;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok(permit) = self.permits.clone().acquire_owned().await else {
                // The semaphore is never closed; wait as if it were full.
                std::future::pending::<()>().await;
                continue;
            };
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    return (
                        Limited {
                            stream,
                            _permit: permit,
                        },
                        addr,
                    )
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait a little, go on serving.
                    warn!("HTTP interface: accepting a connection failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/census", get(census))
        .route("/ring.svg", get(ring_svg))
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .with_state(state)
}

/// Refuses requests without the token, when there is one.
async fn authorize(State(s): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(token) = &s.token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !same(given.as_bytes(), token.as_bytes()) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "a bearer token is needed (the one in the node's --http-token file)\n",
            )
                .into_response();
        }
    }
    next.run(req).await
}

/// Compares two byte strings in time that depends only on their lengths.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The node stopped (or is stopping).
fn unavailable(e: impl std::fmt::Display) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("the node cannot answer: {e}\n"),
    )
        .into_response()
}

async fn metrics(State(s): State<AppState>) -> Response {
    match s.node.metrics_text().await {
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

async fn status(State(s): State<AppState>) -> Response {
    match s.node.status().await {
        Ok(st) => axum::Json(st).into_response(),
        Err(e) => unavailable(e),
    }
}

/// The query of `/census` and `/ring.svg`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct CensusQuery {
    /// Per-node rows (`/census`: default 0; `/ring.svg`: default 4096).
    rows: Option<u32>,
    /// `nat` or `load` (`/ring.svg`).
    colour: Option<String>,
}

async fn census(State(s): State<AppState>, Query(q): Query<CensusQuery>) -> Response {
    match s.node.census(q.rows.unwrap_or(0)).await {
        Ok(r) => axum::Json(r).into_response(),
        Err(e) => unavailable(e),
    }
}

async fn ring_svg(State(s): State<AppState>, Query(q): Query<CensusQuery>) -> Response {
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
    let report = match s.node.census(q.rows.unwrap_or(4096)).await {
        Ok(r) => r,
        Err(e) => return unavailable(e),
    };
    let status = match s.node.status().await {
        Ok(st) => st,
        Err(e) => return unavailable(e),
    };
    let svg = crate::census_cmd::picture(&report, Some(&status), colour);
    ([(header::CONTENT_TYPE, "image/svg+xml")], svg).into_response()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"abcd"));
        assert!(!same(b"", b"a"));
    }

    #[test]
    fn a_token_file_is_made_private_and_refused_if_others_may_read_it() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("token");
        let t = read_or_make_token(&f).unwrap();
        assert_eq!(t.len(), 64);
        let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(read_or_make_token(&f).unwrap(), t, "read back");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_or_make_token(&f).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        // Not loopback: a token is required.
        let e = HttpSettings::resolve(Some("0.0.0.0:9100".parse().unwrap()), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--http-token"), "{e}");
        assert!(
            HttpSettings::resolve(Some("127.0.0.1:0".parse().unwrap()), None)
                .unwrap()
                .is_some_and(|s| s.token.is_none())
        );
    }
}
