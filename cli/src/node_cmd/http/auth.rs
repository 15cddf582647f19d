//! Who may use the HTTP interface: the bearer token (read from a file only its owner may read,
//! or made there) and the middleware that checks it on every request that reads or changes the
//! node. Without a token (loopback only) anyone on this machine may — but not a web page that a
//! browser on this machine shows: [`same_site`] refuses a `Host` that is not an address
//! (a DNS-rebinding page's own name), and the API takes only `application/json` bodies, which a
//! page of another origin cannot send without a CORS preflight this server never grants.

use super::AppState;
use anyhow::{bail, Context, Result};
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Shortest token accepted from a file.
const MIN_TOKEN_LEN: usize = 16;

/// The token in `path` (its first line), or a new random one written there with mode 0600.
pub(super) fn read_or_make_token(path: &Path) -> Result<String> {
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
            if token.len() < MIN_TOKEN_LEN {
                bail!(
                    "the HTTP token in {} is shorter than {MIN_TOKEN_LEN} characters",
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

/// Refuses requests without the token, when there is one (401, with `WWW-Authenticate`).
pub(super) async fn authorize(State(s): State<AppState>, req: Request, next: Next) -> Response {
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

/// Without a token, refuses (403) a request whose `Host` is a name other than `localhost`: a
/// page of another site whose name was made to resolve to this machine (DNS rebinding) would
/// otherwise read and command the node as if it were the dashboard. With a token it has no
/// token, so any name is let through (to the token check).
pub(super) async fn same_site(State(s): State<AppState>, req: Request, next: Next) -> Response {
    if s.token.is_none() {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !host_is_local(host) {
            return (
                StatusCode::FORBIDDEN,
                "without --http-token the node answers only requests to an IP address or \
                 localhost (Host header)\n",
            )
                .into_response();
        }
    }
    next.run(req).await
}

/// Whether `host` (a `Host` header: name or address, and maybe a port) names this machine by
/// address or as `localhost`; an absent one (HTTP/1.0) is let through.
fn host_is_local(host: &str) -> bool {
    if host.is_empty()
        || host.parse::<std::net::SocketAddr>().is_ok()
        || host.parse::<std::net::IpAddr>().is_ok()
    {
        return true;
    }
    let name = match host.rsplit_once(':') {
        Some((n, port)) if port.bytes().all(|b| b.is_ascii_digit()) => n,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok()
}

/// Compares two byte strings in time that depends only on their lengths.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::HttpSettings;
    use super::*;

    #[test]
    fn only_addresses_and_localhost_are_local_hosts() {
        for ok in [
            "",
            "127.0.0.1:9090",
            "127.0.0.1",
            "[::1]:9090",
            "::1",
            "localhost",
            "LOCALHOST:80",
            "192.0.2.7:1",
        ] {
            assert!(host_is_local(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:9090",
            "localhost.evil.example",
            "127.0.0.1.nip.io:9090",
            "localhost:x",
        ] {
            assert!(!host_is_local(bad), "{bad}");
        }
    }

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
