//! `p2ps node --http`: the node's HTTP interface on real node processes — `/metrics` in the
//! OpenMetrics text format with the node's figures, `/status` as JSON, the bearer token on an
//! address other than loopback, and bad requests answered without harm to the node.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use p2ps_interop_tests::{TestNet, FAST};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

/// One HTTP/1.1 GET; the status code and the body.
fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a response");
    let code: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    (code, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    loop {
        let (len, rest) = s.split_once("\r\n").unwrap();
        let n = usize::from_str_radix(len.trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
}

/// The value of the sample `series` in an OpenMetrics text.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{series} in\n{text}"))
        .parse()
        .unwrap()
}

#[test]
fn metrics_and_status_over_http() {
    let net = TestNet::new();
    let ([mut a, _b, _c], addr) = net.spawn_three_with_http(["h0", "h1", "h2"], FAST, WAIT);

    // Work the node: lookups and the dictionary through its control socket.
    for k in ["x", "y", "z"] {
        let out = a.cli(&["lookup", k]);
        assert!(out.status.success());
    }
    assert!(a.cli(&["put", "colour", "blue"]).status.success());
    assert!(a.cli(&["get", "colour"]).status.success());

    let (code, text) = get(addr, "/metrics", None);
    assert_eq!(code, 200, "{text}");
    assert!(text.ends_with("# EOF\n"));
    assert_eq!(sample(&text, "p2ps_up"), 1.0);
    assert!(sample(&text, "p2ps_lookups_total{result=\"ok\"}") >= 3.0);
    assert!(sample(&text, "p2ps_connections{path=\"direct\"}") >= 2.0);
    assert_eq!(
        sample(
            &text,
            "p2ps_dict_operation_seconds_count{op=\"write\",result=\"ok\"}"
        ),
        1.0
    );
    assert!(sample(&text, "p2ps_table_entries{part=\"successors\"}") >= 2.0);

    let (code, body) = get(addr, "/status", None);
    assert_eq!(code, 200);
    let st: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(st["id"].as_str().unwrap(), a.id().to_string());
    assert_eq!(st["state"], "joined");

    // Unknown paths and methods, garbage: refused, and the node goes on.
    assert_eq!(get(addr, "/nothing-here", None).0, 404);
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"\x00\x01garbage\r\n\r\n").unwrap();
    let mut sink = Vec::new();
    let _ = s.read_to_end(&mut sink);
    assert_eq!(get(addr, "/metrics", None).0, 200);
    assert!(a.cli(&["status"]).status.success());
}

#[test]
fn a_token_is_needed_when_one_is_set() {
    let net = TestNet::new();
    let (_a, addr, token) = net.spawn_with_http_token("t0", WAIT);
    let token = token.as_str();
    assert_eq!(get(addr, "/metrics", None).0, 401);
    assert_eq!(get(addr, "/metrics", Some("not-the-token-at-all")).0, 401);
    let (code, text) = get(addr, "/metrics", Some(token));
    assert_eq!(code, 200);
    assert!(text.contains("p2ps_up 1"));

    // Not loopback without a token: refused at start, naming the flag.
    let key = net.path().join("t1.key");
    let sock = net.path().join("t1.sock");
    let out = p2ps_interop_tests::run_p2ps(
        &[
            "node",
            "--create",
            "--key",
            key.to_str().unwrap(),
            "--control",
            sock.to_str().unwrap(),
            "--http",
            "0.0.0.0:0",
        ],
        Duration::from_secs(20),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--http-token"), "{err}");
}
