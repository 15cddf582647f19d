//! `GET /` and `GET /dashboard`: one self-contained page (`dashboard.html`: inline CSS and
//! script, no other asset) that shows the node's key figures and the ring, filled in and
//! refreshed by its own script from `/status`, `/metrics`, `/census` and `/ring.svg`.
//!
//! The page is served without the token even when one is set: it holds no data, only the code
//! that asks for it. With a token, the script reads it from the URL's fragment
//! (`http://HOST:PORT/#token=…`, which the browser never sends to a server) or asks for it, keeps
//! it in the tab's session storage, and sends it as a bearer header with every request.

use axum::http::header;
use axum::response::{IntoResponse, Response};

/// The page.
const PAGE: &str = include_str!("dashboard.html");

/// What the page may do: only talk to this origin and run its own inline script and style;
/// no framing by other sites.
const POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                      connect-src 'self'; img-src 'self' blob:; base-uri 'none'; \
                      form-action 'none'; frame-ancestors 'none'";

/// `GET /`, `GET /dashboard`: the page.
pub(super) async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        PAGE,
    )
        .into_response()
}
