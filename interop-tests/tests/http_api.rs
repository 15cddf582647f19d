//! The node's HTTP API on real node processes: control requests over `POST /api` (put, get,
//! lookup, send), incoming messages over `GET /events`, a dictionary watch over `GET /watch`,
//! the bearer token on all of them (but the page), refusals of bad bodies without harm to the
//! node, and `leave` answered before the node stops.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use p2ps_interop_tests::http::{api, request, EventStream};
use p2ps_interop_tests::{responsible, wait_ring, NodeProc, Start, TestNet, FAST};
use serde_json::json;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);
/// The control protocol's largest request (6 × 1 MiB + 64 KiB).
const MAX_REQUEST_BYTES: usize = 6 * 1024 * 1024 + 64 * 1024;

/// The address the node printed (`http: http://ADDR`).
fn http_addr(n: &mut NodeProc) -> SocketAddr {
    n.http_addr(WAIT)
}

/// The `result` of a successful API answer; panics with the answer otherwise.
fn ok(addr: SocketAddr, token: Option<&str>, req: serde_json::Value) -> serde_json::Value {
    let r = api(addr, token, &req);
    assert_eq!(r.code, 200, "{req}: {r:?}");
    let v = r.json();
    assert_eq!(v["ok"], true, "{req}: {v}");
    v["result"].clone()
}

#[test]
fn commands_messages_and_watches_over_http() {
    let net = TestNet::new();
    let ([mut a, mut b, mut c], addr) = net.spawn_three_with_http(["a0", "a1", "a2"], FAST, WAIT);
    let ids = [a.id(), b.id(), c.id()];

    // Streams first: incoming messages and a key's changes.
    let mut events = EventStream::open(addr, "/events", None).unwrap();
    let ready = events.expect("ready", WAIT).json();
    assert_eq!(ready["node"], ids[0].to_string());
    let mut fate = EventStream::open(addr, &format!("/watch-node?node={}", ids[2]), None).unwrap();
    let watching = fate.expect("watch_node", WAIT).json();
    assert_eq!(watching["result"]["event"], "watching", "{watching}");
    assert_eq!(watching["result"]["node"], ids[2].to_string());
    let mut watch = EventStream::open(addr, "/watch?key=colour", None).unwrap();
    let first = watch.expect("watch", WAIT).json();
    assert_eq!(first["ok"], true, "{first}");
    assert_eq!(first["result"]["state"], "empty", "{first}");

    // The dictionary: put, then get, through the API; the watch sees the put.
    let put = ok(
        addr,
        None,
        json!({"op":"put","key":"colour","value":"blue"}),
    );
    let version = put["version"].as_u64().unwrap();
    assert!(put["replicas"].as_u64().unwrap() >= 2, "{put}");
    let got = ok(addr, None, json!({"op":"get","key":"colour"}));
    assert_eq!(got["value"], "blue");
    assert_eq!(got["version"].as_u64(), Some(version));
    let seen = watch.expect("watch", WAIT).json();
    assert_eq!(seen["result"]["state"], "set", "{seen}");
    assert_eq!(seen["result"]["value"], "blue", "{seen}");
    assert_eq!(seen["result"]["version"].as_u64(), Some(version));
    // The same key read through the control socket of another node: one dispatch.
    let via_b = b.request(&json!({"op":"get","key":"colour"})).unwrap();
    assert_eq!(via_b["value"], "blue");

    // A lookup answers with the node the ring says.
    for k in ["x", "y", "apple"] {
        let l = ok(addr, None, json!({"op":"lookup","key":k}));
        let want = responsible(&ids, p2ps_interop_tests::p2ps::key_of(k.as_bytes()));
        assert_eq!(l["node"], want.to_string(), "lookup {k}: {l}");
    }

    // A send through the API reaches node b.
    let sent = ok(
        addr,
        None,
        json!({"op":"send","to":ids[1].to_string(),"payload":"hello b, from http"}),
    );
    assert_eq!(sent["to"], ids[1].to_string());
    b.wait_line(WAIT, "the message sent over HTTP", |l| {
        l.contains("hello b, from http")
    });

    // A message from node c to node a arrives on a's event stream.
    let out = c.cli(&["send", &ids[0].to_string(), "to a's event stream"]);
    assert!(out.status.success(), "{out:?}");
    let m = events.expect("message", WAIT).json();
    assert_eq!(m["from"], ids[2].to_string(), "{m}");
    assert_eq!(m["payload"], "to a's event stream", "{m}");
    assert_eq!(m["to"], "node", "{m}");
    // And a broadcast from b.
    assert!(b.cli(&["broadcast", "to everyone"]).status.success());
    let m = events.expect("message", WAIT).json();
    assert_eq!(m["payload"], "to everyone", "{m}");
    assert_eq!(m["to"], "everyone", "{m}");

    // A command that fails is answered 200 with ok:false; a request that is not one, 400.
    let r = api(addr, None, &json!({"op":"send","to":"zzzz","payload":"x"}));
    assert_eq!(r.code, 200, "{r:?}");
    assert_eq!(r.json()["ok"], false, "{r:?}");
    let r = request(addr, "POST", "/api", None, Some(b"\x00garbage{"));
    assert_eq!(r.code, 400, "{r:?}");
    assert_eq!(r.json()["ok"], false);
    let r = api(addr, None, &json!({"op":"no_such_op"}));
    assert_eq!(r.code, 400, "{r:?}");
    let r = api(addr, None, &json!({"op":"watch","key":"colour"}));
    assert_eq!(r.code, 400, "{r:?}");
    assert!(r.body.contains("/watch"), "{r:?}");
    assert_eq!(request(addr, "GET", "/api", None, None).code, 405);

    // What a web page of another site could send: a text body (no CORS preflight), or any
    // request through a name of its own resolved to this machine (DNS rebinding). Refused.
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let body = r#"{"op":"broadcast","payload":"from a web page"}"#;
    write!(
        s,
        "POST /api HTTP/1.1\r\nHost: {addr}\r\nContent-Type: text/plain\r\nContent-Length: \
         {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let r = p2ps_interop_tests::http::read_response(s);
    assert_eq!(r.code, 415, "{r:?}");
    for path in ["/status", "/", "/events"] {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: rebound.example:{}\r\nConnection: close\r\n\r\n",
            addr.port()
        )
        .unwrap();
        let r = p2ps_interop_tests::http::read_response(s);
        assert_eq!(r.code, 403, "{path}: {r:?}");
    }
    assert!(
        !b.stdout().iter().any(|l| l.contains("from a web page")),
        "nothing was broadcast"
    );

    // Too large: refused by its declared length, and when it comes chunked, once it passes
    // the bound (413).
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        s,
        "POST /api HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: \
         {}\r\nConnection: close\r\n\r\n",
        MAX_REQUEST_BYTES + 1
    )
    .unwrap();
    let r = p2ps_interop_tests::http::read_response(s);
    assert_eq!(r.code, 413, "{r:?}");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.set_write_timeout(Some(WAIT)).unwrap();
    s.write_all(
        b"POST /api HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
          Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let chunk = vec![b' '; 64 * 1024];
    for _ in 0..(MAX_REQUEST_BYTES / chunk.len() + 2) {
        let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
        framed.extend_from_slice(&chunk);
        framed.extend_from_slice(b"\r\n");
        if s.write_all(&framed).is_err() {
            break; // refused before the end: fine
        }
    }
    let r = p2ps_interop_tests::http::read_response(s);
    assert_eq!(r.code, 413, "{r:?}");

    // The node goes on serving, over HTTP and its control socket.
    let st = ok(addr, None, json!({"op":"status"}));
    assert_eq!(st["id"], ids[0].to_string());
    assert_eq!(request(addr, "GET", "/status", None, None).code, 200);
    assert!(a.cli(&["status"]).status.success());
    // The streams are still open: a second message arrives.
    assert!(c
        .cli(&["send", &ids[0].to_string(), "still streaming"])
        .status
        .success());
    assert_eq!(
        events.expect("message", WAIT).json()["payload"],
        "still streaming"
    );

    // Node c leaves: the node watch says so, and ends.
    c.terminate();
    let left = fate.expect("watch_node", WAIT).json();
    assert_eq!(left["result"]["event"], "left", "{left}");
    assert_eq!(fate.next(Duration::from_secs(5)), None, "the stream ends");
}

#[test]
fn watches_are_bounded_and_shared_with_the_control_socket() {
    // The control protocol's MAX_WATCH_STREAMS.
    const MAX_WATCHES: usize = 32;
    let net = TestNet::new();
    let mut a = net.spawn(
        "w0",
        Start::Create,
        &[FAST, &["--http", "127.0.0.1:0"]].concat(),
    );
    a.wait_ticket(WAIT);
    let addr = http_addr(&mut a);
    let mut open: Vec<EventStream> = (0..MAX_WATCHES)
        .map(|i| {
            let mut w = EventStream::open(addr, &format!("/watch?key=k{i}"), None).unwrap();
            w.expect("watch", WAIT);
            w
        })
        .collect();
    // One more: refused over HTTP, and on the control socket, whose places these are too.
    let refused = EventStream::open(addr, "/watch?key=more", None)
        .err()
        .unwrap();
    assert_eq!(refused.code, 429, "{refused:?}");
    let line = p2ps_interop_tests::control_raw(&a.control, "{\"op\":\"watch\",\"key\":\"more\"}\n")
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["ok"], false, "{line}");
    assert!(v["error"].as_str().unwrap().contains("watches"), "{line}");
    // Commands go on meanwhile.
    ok(addr, None, json!({"op":"put","key":"k0","value":"v"}));
    assert_eq!(open[0].expect("watch", WAIT).json()["result"]["value"], "v");
    // A watch that ends gives its place back.
    drop(open.pop());
    let again = p2ps_interop_tests::wait_for(WAIT, || {
        EventStream::open(addr, "/watch?key=more", None).ok()
    });
    assert!(
        again.is_some(),
        "the place of a closed watch was not given back"
    );
}

#[test]
fn the_token_guards_the_api_and_the_streams_but_not_the_page() {
    let net = TestNet::new();
    let (mut a, addr, token) = net.spawn_with_http_token("k0", WAIT);
    let token = token.as_str();
    let id = a.id().to_string();

    let status = json!({"op":"status"});
    for bad in [None, Some("not-the-token-at-all")] {
        let r = api(addr, bad, &status);
        assert_eq!(r.code, 401, "{r:?}");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
        for path in ["/events", "/watch?key=k", &format!("/watch-node?node={id}")] {
            let refused = EventStream::open(addr, path, bad).err().map(|r| r.code);
            assert_eq!(refused, Some(401), "{path} with {bad:?}");
        }
    }
    assert_eq!(ok(addr, Some(token), status)["id"], id);
    let mut events = EventStream::open(addr, "/events", Some(token)).unwrap();
    assert_eq!(events.expect("ready", WAIT).json()["node"], id);

    // The page holds no data, so it is served without the token (and does not carry it).
    for path in ["/", "/dashboard"] {
        let page = request(addr, "GET", path, None, None);
        assert_eq!(page.code, 200, "{path}");
        assert!(page
            .header("content-type")
            .unwrap()
            .starts_with("text/html"));
        assert!(page.body.contains("id=\"node-id\""));
        assert!(!page.body.contains(token));
        assert!(!page.body.contains(&id));
        let csp = page.header("content-security-policy").unwrap();
        assert!(csp.contains("connect-src 'self'"), "{csp}");
    }

    // `leave` over the API: answered once the node has left, then the process ends.
    let left = ok(addr, Some(token), json!({"op":"leave"}));
    assert_eq!(left["left"], true);
    assert!(a.wait_exit(WAIT).success(), "{}", a.describe());
}

#[test]
fn idle_connections_are_closed_but_event_streams_live_on() {
    // The listener's idle limit (cli/src/node_cmd/http/listener.rs), and a margin.
    const IDLE: Duration = Duration::from_secs(30);
    let net = TestNet::new();
    let mut a = net.spawn(
        "i0",
        Start::Create,
        &[FAST, &["--http", "127.0.0.1:0"]].concat(),
    );
    let ticket = a.wait_ticket(WAIT);
    let mut b = net.spawn("i1", Start::Join(ticket), FAST);
    b.wait_ticket(WAIT);
    wait_ring(&mut [&mut a, &mut b], WAIT);
    let addr = http_addr(&mut a);
    let a_id = a.id().to_string();

    let mut events = EventStream::open(addr, "/events", None).unwrap();
    events.expect("ready", WAIT);
    // A connection that never sends a request, and one that stops half-way through its head.
    let start = std::time::Instant::now();
    let silent = TcpStream::connect(addr).unwrap();
    let mut half = TcpStream::connect(addr).unwrap();
    half.write_all(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .unwrap();
    for mut s in [silent, half] {
        s.set_read_timeout(Some(IDLE * 2)).unwrap();
        let mut sink = [0u8; 64];
        let n = std::io::Read::read(&mut s, &mut sink);
        let waited = start.elapsed();
        // Closed (end of file or reset), not timed out on our side.
        assert!(
            matches!(n, Ok(0))
                || n.as_ref()
                    .is_err_and(|e| e.kind() != std::io::ErrorKind::WouldBlock),
            "{n:?}"
        );
        assert!(
            waited >= IDLE - Duration::from_secs(1) && waited < IDLE + Duration::from_secs(10),
            "closed after {waited:?}"
        );
    }
    // The event stream, quiet all along but for its comments, still delivers.
    assert!(b
        .cli(&["send", &a_id, "after the idle limit"])
        .status
        .success());
    assert_eq!(
        events.expect("message", WAIT).json()["payload"],
        "after the idle limit"
    );
    assert_eq!(request(addr, "GET", "/status", None, None).code, 200);
}

#[test]
fn a_slow_event_reader_is_told_what_it_missed_and_the_node_does_not_wait() {
    let net = TestNet::new();
    let http = ["--http", "127.0.0.1:0"];
    let mut a = net.spawn("s0", Start::Create, &[FAST, &http].concat());
    let ticket = a.wait_ticket(WAIT);
    let mut b = net.spawn("s1", Start::Join(ticket), &[FAST, &http].concat());
    b.wait_ticket(WAIT);
    wait_ring(&mut [&mut a, &mut b], WAIT);
    let (a_addr, b_addr) = (http_addr(&mut a), http_addr(&mut b));
    let a_id = a.id().to_string();

    let mut events = EventStream::open(a_addr, "/events", None).unwrap();
    events.expect("ready", WAIT);
    // A reader that keeps up: the newest message node a got is the last one it reads. (Node
    // a's own output shows only the first 20 messages of each second of a flood.)
    let mut fast = EventStream::open(a_addr, "/events", None).unwrap();
    fast.expect("ready", WAIT);
    let fast = std::thread::spawn(move || {
        let mut last = None;
        while let Some(e) = fast.next(Duration::from_secs(5)) {
            if e.name == "message" {
                let p = e.json()["payload"].as_str().unwrap_or_default().to_string();
                last = p.split(' ').next().and_then(|n| n.parse::<u64>().ok());
            }
        }
        last
    });
    // Far more than the socket buffers and the node's buffer of 64 messages hold, while the
    // reader reads nothing.
    let big = "x".repeat(64 * 1024);
    let sent = 300;
    for i in 0..sent {
        let payload = format!("{i} {big}");
        ok(
            b_addr,
            None,
            json!({"op":"send","to":a_id,"payload":payload}),
        );
    }
    // Node a has them all (but those b's send queue dropped: a send is best effort), and went
    // on meanwhile: it answers at once.
    let delivered = p2ps_interop_tests::wait_for(WAIT, || {
        let got = a.status().counters.delivered;
        (got + b.status().counters.send_queue_full >= sent).then_some(got)
    })
    .expect("node a got every message b did not drop");
    // The newest message node a got, as the reader that kept up saw it (it stops after 5 s
    // without a message).
    let newest = fast.join().expect("the fast reader");
    assert!(newest.is_some(), "the fast reader got messages");
    // Node a's output summarised the flood instead of printing each of them (issue 12).
    let summary = p2ps_interop_tests::wait_for(WAIT, || {
        a.stdout()
            .into_iter()
            .find(|l| l.starts_with("… ") && l.contains("not shown"))
    })
    .expect("a line summarising the flood");
    let printed = a
        .stdout()
        .iter()
        .filter(|l| l.starts_with("message from"))
        .count() as u64;
    assert!(
        printed < delivered,
        "{printed} of {delivered} printed; {summary}"
    );
    let t = std::time::Instant::now();
    ok(a_addr, None, json!({"op":"status"}));
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    // Now read: what the buffers held, then how many were missed, then the newest.
    let mut got = 0u64;
    let mut missed = 0u64;
    let mut last = None;
    while let Some(e) = events.next(Duration::from_secs(5)) {
        match e.name.as_str() {
            "message" => {
                got += 1;
                let p = e.json()["payload"].as_str().unwrap().to_string();
                last = p.split(' ').next().map(|n| n.parse::<u64>().unwrap());
            }
            "lagged" => missed += e.json()["missed"].as_u64().unwrap(),
            other => panic!("unexpected event {other}"),
        }
    }
    assert!(missed > 0, "got {got} of {delivered}, none reported missed");
    assert_eq!(
        got + missed,
        delivered,
        "every message either streamed or counted missed"
    );
    assert_eq!(last, newest, "the newest message is never lost");
}
