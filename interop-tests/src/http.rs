//! A minimal HTTP/1.1 client for the tests of a node's HTTP interface (`p2ps node --http`):
//! one request per connection ([`request`]), and a reader of server-sent event streams
//! ([`EventStream`]). Written on `std::net` so that the tests check the server, not a client
//! library's leniency; every read is bounded in time.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// How long one response may take.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// The receive buffer of an event stream's socket.
pub const EVENT_RECV_BUFFER: usize = 64 * 1024;

/// An HTTP response: status code, headers (names lowercase) and body.
#[derive(Debug)]
pub struct HttpResponse {
    /// The status code.
    pub code: u16,
    /// The headers, names in lowercase.
    pub headers: Vec<(String, String)>,
    /// The body (chunked transfer decoded).
    pub body: String,
}

impl HttpResponse {
    /// The body as JSON; panics with the body if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.code, self.body))
    }

    /// The first header named `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `method path` with `body` (and `Authorization: Bearer token` if given) on a new
/// connection and reads the whole response; panics if the server does not answer in time.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&[u8]>,
) -> HttpResponse {
    let mut s = connect(addr);
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(t) = token {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    if let Some(b) = body {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body.unwrap_or_default());
    // The server may answer (and close) before taking a body it refuses.
    let _ = s.write_all(&bytes);
    read_response(s)
}

/// `POST /api` with the JSON `req`.
pub fn api(addr: SocketAddr, token: Option<&str>, req: &serde_json::Value) -> HttpResponse {
    request(
        addr,
        "POST",
        "/api",
        token,
        Some(req.to_string().as_bytes()),
    )
}

/// A connection with read and write timeouts.
fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    let _ = s.set_read_timeout(Some(RESPONSE_TIMEOUT));
    let _ = s.set_write_timeout(Some(RESPONSE_TIMEOUT));
    s
}

/// A connection like [`connect`]'s, with a receive buffer of [`EVENT_RECV_BUFFER`] (set
/// before connecting, so that the window stays small).
fn connect_small(addr: SocketAddr) -> TcpStream {
    use rustix::net::{AddressFamily, SocketType};
    let family = if addr.is_ipv4() {
        AddressFamily::INET
    } else {
        AddressFamily::INET6
    };
    let fd = rustix::net::socket(family, SocketType::STREAM, None)
        .unwrap_or_else(|e| panic!("a socket for {addr}: {e}"));
    rustix::net::sockopt::set_socket_recv_buffer_size(&fd, EVENT_RECV_BUFFER)
        .unwrap_or_else(|e| panic!("setting the receive buffer: {e}"));
    rustix::net::connect(&fd, &addr).unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    let s = TcpStream::from(fd);
    let _ = s.set_read_timeout(Some(RESPONSE_TIMEOUT));
    let _ = s.set_write_timeout(Some(RESPONSE_TIMEOUT));
    s
}

/// Reads a whole response (the server closes the connection after it).
pub fn read_response(mut s: TcpStream) -> HttpResponse {
    let mut raw = Vec::new();
    if let Err(e) = s.read_to_end(&mut raw) {
        // A reset after a complete answer (the server closed with unread request bytes).
        if raw.is_empty() {
            panic!("reading the response: {e}");
        }
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    let (code, headers) = parse_head(head);
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    HttpResponse {
        code,
        headers,
        body,
    }
}

/// The status code and headers of a response head.
fn parse_head(head: &str) -> (u16, Vec<(String, String)>) {
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    let code = status
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP status line: {status:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (code, headers)
}

/// A chunked body, decoded.
fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((len, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// An open server-sent event stream. It is asked for with HTTP/1.0, so that the body comes
/// without chunk framing, as the bare `text/event-stream` lines, on a socket with a small
/// receive buffer ([`EVENT_RECV_BUFFER`]), so that a test that stops reading is soon a slow
/// client (loopback sockets otherwise buffer tens of MiB).
pub struct EventStream {
    reader: BufReader<TcpStream>,
    line: Vec<u8>,
}

/// One server-sent event: its name and data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field (`message` when absent).
    pub name: String,
    /// The `data:` lines, joined.
    pub data: String,
}

impl SseEvent {
    /// The data as JSON; panics if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("event data is not JSON ({e}): {self:?}"))
    }
}

impl EventStream {
    /// Opens `GET path`; the response when the server refuses it (any status but 200).
    pub fn open(
        addr: SocketAddr,
        path: &str,
        token: Option<&str>,
    ) -> Result<EventStream, HttpResponse> {
        let mut s = connect_small(addr);
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}\r\n");
        s.write_all(req.as_bytes())
            .unwrap_or_else(|e| panic!("sending GET {path}: {e}"));
        let mut reader = BufReader::new(s);
        let mut head = String::new();
        loop {
            let mut l = String::new();
            match reader.read_line(&mut l) {
                Ok(0) => break,
                Ok(_) if l == "\r\n" => break,
                Ok(_) => head.push_str(&l),
                Err(e) => panic!("reading the head of GET {path}: {e}"),
            }
        }
        let (code, headers) = parse_head(head.trim_end());
        if code != 200 {
            let mut body = String::new();
            let _ = reader.read_to_string(&mut body);
            return Err(HttpResponse {
                code,
                headers,
                body,
            });
        }
        Ok(EventStream {
            reader,
            line: Vec::new(),
        })
    }

    /// The next event within `timeout` (comments skipped); `None` if none came in time or the
    /// stream ended.
    pub fn next(&mut self, timeout: Duration) -> Option<SseEvent> {
        let deadline = Instant::now() + timeout;
        let mut name = String::new();
        let mut data: Vec<String> = Vec::new();
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let _ = self
                .reader
                .get_ref()
                .set_read_timeout(Some(left.max(Duration::from_millis(1))));
            match self.reader.read_until(b'\n', &mut self.line) {
                Ok(0) => return None,
                Ok(_) if self.line.ends_with(b"\n") => {}
                // A partial line, kept for the next read.
                Ok(_) => continue,
                Err(_) => return None,
            }
            let text = String::from_utf8_lossy(&self.line).trim_end().to_string();
            self.line.clear();
            if text.is_empty() {
                if !data.is_empty() {
                    let name = if name.is_empty() {
                        "message".to_string()
                    } else {
                        name
                    };
                    return Some(SseEvent {
                        name,
                        data: data.join("\n"),
                    });
                }
                name.clear();
            } else if let Some(v) = text.strip_prefix("event:") {
                name = v.trim().to_string();
            } else if let Some(v) = text.strip_prefix("data:") {
                data.push(v.strip_prefix(' ').unwrap_or(v).to_string());
            }
            // Comments (`:` keep-alives) and other fields are skipped.
        }
    }

    /// The next event named `name` within `timeout`, skipping others; panics if none comes.
    pub fn expect(&mut self, name: &str, timeout: Duration) -> SseEvent {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left) {
                Some(e) if e.name == name => return e,
                Some(e) => seen.push(e),
                None => panic!("no `{name}` event within {timeout:?}; saw {seen:?}"),
            }
        }
    }
}
