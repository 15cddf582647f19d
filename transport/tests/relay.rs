//! Relayed connections on loopback: A and B are connected only to R, which relays. Traffic of
//! every kind flows over the relay, the relay sees only ciphertext, limits end circuits at both
//! ends, refusals are typed, bad circuit requests cost only their stream, a direct connection
//! replaces a relayed one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use p2ps_transport::relay::RefuseCode;
use p2ps_transport::{
    CircuitEnd, CircuitLimits, DisconnectReason, Event, Events, PathKind, RelayError, RelayTap,
    StreamClass, Transport, TransportConfig,
};

/// A marker that would stand out in any plaintext capture.
const MARKER: &[u8] = b"PLAINTEXT-MARKER-the-relay-must-never-see-this-";

fn serving(limits: CircuitLimits, tap: Option<RelayTap>) -> impl FnOnce(&mut TransportConfig) {
    move |c| {
        c.relay.serve = true;
        c.relay.limits.circuit = limits;
        c.relay.tap = tap;
    }
}

/// A, B and a relay R; A and B connected to R only.
async fn triangle(relay_config: impl FnOnce(&mut TransportConfig)) -> (Node, Node, Node) {
    let (a, ea) = node();
    let (b, eb) = node();
    let (r, er) = node_with(relay_config);
    connect_both_to_relay(&a, &b, &r).await;
    ((a, ea), (b, eb), (r, er))
}

/// A and B connect to R, and R sees both.
async fn connect_both_to_relay(a: &Transport<Msg>, b: &Transport<Msg>, r: &Transport<Msg>) {
    bounded("a to r", a.connect(r.node_id(), addr(r)))
        .await
        .unwrap();
    bounded("b to r", b.connect(r.node_id(), addr(r)))
        .await
        .unwrap();
    // The dialer's handshake completes before the relay's side does.
    eventually("relay sees a and b", || r.connected_peers().len() == 2).await;
}

async fn connected_via(events: &mut Events<Msg>, peer: p2ps_transport::NodeId) -> Event<Msg> {
    wait_event(
        events,
        "Connected over the relay",
        |e| matches!(e, Event::Connected { peer: p, .. } if *p == peer),
    )
    .await
}

/// A connects to B through the relay R; returns the path of the connection.
async fn connect_a_to_b_via_r(
    a: &Transport<Msg>,
    b: &Transport<Msg>,
    r: &Transport<Msg>,
) -> PathKind {
    bounded(
        "relayed connect",
        a.connect_relayed(b.node_id(), r.node_id()),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn relayed_peers_exchange_everything_and_the_relay_sees_only_ciphertext() {
    let tap = RelayTap::new(4 << 20);
    let limits = CircuitLimits::default()
        .with_max_bytes(Some(64 << 20))
        .with_max_rate(None)
        .with_max_duration(Some(Duration::from_secs(600)));
    let ((a, mut ea), (b, mut eb), (r, _er)) = triangle(serving(limits, Some(tap.clone()))).await;

    let path = connect_a_to_b_via_r(&a, &b, &r).await;
    assert!(matches!(path, PathKind::Relayed { relay, .. } if relay == r.node_id()));
    assert_eq!(a.path(b.node_id()), Some(path));
    assert!(matches!(a.path(r.node_id()), Some(PathKind::Direct(_))));
    // B registers the connection once its side of the handshake completes.
    eventually("relayed path at b", || {
        matches!(b.path(a.node_id()), Some(PathKind::Relayed { relay, .. }) if relay == r.node_id())
    })
    .await;
    // Told to both ends.
    for t in [&a, &b] {
        let circuits = t.relay_circuits();
        assert_eq!(circuits.len(), 1);
        assert_eq!(circuits[0].relay, r.node_id());
        assert_eq!(circuits[0].limits, limits);
    }
    for (events, peer) in [(&mut ea, b.node_id()), (&mut eb, a.node_id())] {
        match connected_via(events, peer).await {
            Event::Connected {
                relay, remote_addr, ..
            } => {
                assert_eq!(relay, Some(r.node_id()));
                assert!(p2ps_transport::is_relayed(&remote_addr));
            }
            _ => unreachable!(),
        }
    }

    // Every class, both ways.
    for class in StreamClass::ALL {
        let m = Msg::Text(format!("{class:?} a->b"));
        a.send(b.node_id(), class, &m).await.unwrap();
        assert_eq!(wait_message(&mut eb, a.node_id()).await, (class, m));
        let m = Msg::Num(class.index() as u64);
        b.send(a.node_id(), class, &m).await.unwrap();
        assert_eq!(wait_message(&mut ea, b.node_id()).await, (class, m));
    }

    // Raw streams work over the relay too.
    let (mut send, mut recv) = a.open_bi(b.node_id()).await.unwrap();
    send.write_all(b"raw over relay").await.unwrap();
    send.finish().unwrap();
    let (mut bsend, mut brecv) = match wait_event(&mut eb, "IncomingStream", |e| {
        matches!(e, Event::IncomingStream { .. })
    })
    .await
    {
        Event::IncomingStream { send, recv, .. } => (send, recv),
        _ => unreachable!(),
    };
    assert_eq!(brecv.read_to_end(1024).await.unwrap(), b"raw over relay");
    bsend.write_all(b"ok").await.unwrap();
    bsend.finish().unwrap();
    assert_eq!(
        bounded("raw reply", recv.read_to_end(16)).await.unwrap(),
        b"ok"
    );

    // The ciphertext proof: 64 KiB of marker text crosses the relay and never shows in its tap.
    let seen_before = tap.bytes_seen();
    let plaintext: Vec<u8> = MARKER.iter().copied().cycle().take(64 * 1024).collect();
    a.send(
        b.node_id(),
        StreamClass::User,
        &Msg::Blob(plaintext.clone()),
    )
    .await
    .unwrap();
    assert_eq!(
        wait_message(&mut eb, a.node_id()).await,
        (StreamClass::User, Msg::Blob(plaintext.clone()))
    );
    let relayed = tap.bytes_seen() - seen_before;
    assert!(
        relayed > plaintext.len() as u64,
        "the relay forwarded {relayed} bytes for {} bytes of plaintext",
        plaintext.len()
    );
    let captured = tap.captured();
    assert!(captured.len() as u64 >= tap.bytes_seen().min(4 << 20) && !captured.is_empty());
    // Any 16-byte window of the marker would reveal plaintext.
    for window in MARKER.windows(16) {
        assert!(
            !captured.windows(16).any(|w| w == window),
            "plaintext visible at the relay"
        );
    }
    let stats = r.stats().relay;
    assert_eq!(stats.circuits_served, 1);
    assert_eq!(stats.circuits_active, 1);
    assert!(stats.bytes_relayed >= relayed);
    assert_eq!(a.stats().relay.client_circuits_opened, 1);
    assert_eq!(b.stats().relay.client_circuits_accepted, 1);
}

#[tokio::test]
async fn byte_limit_ends_the_circuit_at_both_ends() {
    let limits = CircuitLimits::default()
        .with_max_bytes(Some(256 * 1024))
        .with_max_rate(None)
        .with_max_duration(None);
    let ((a, mut ea), (b, mut eb), (r, _er)) = triangle(serving(limits, None)).await;
    connect_a_to_b_via_r(&a, &b, &r).await;
    let blob = Msg::Blob(vec![7u8; 512 * 1024]);
    a.send(b.node_id(), StreamClass::User, &blob).await.unwrap();
    expect_circuit_end(
        [(&mut ea, b.node_id()), (&mut eb, a.node_id())],
        r.node_id(),
        CircuitEnd::ByteLimit,
        "Disconnected by the relay limit",
    )
    .await;
    assert_eq!(r.stats().relay.circuits_limited, 1);
    assert_eq!(a.stats().relay.client_circuits_limited, 1);
    assert_eq!(b.stats().relay.client_circuits_limited, 1);
    eventually("circuits released", || {
        r.stats().relay.circuits_active == 0
            && a.relay_circuits().is_empty()
            && b.relay_circuits().is_empty()
    })
    .await;
    // Only the circuit ended: both still talk to the relay.
    assert_eq!(a.connected_peers(), vec![r.node_id()]);
    assert_eq!(b.connected_peers(), vec![r.node_id()]);
}

#[tokio::test]
async fn a_node_that_does_not_serve_refuses() {
    let ((a, _ea), (b, _eb), (r, _er)) = triangle(|_| {}).await;
    let err = bounded("refusal", a.connect_relayed(b.node_id(), r.node_id()))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RelayError::Refused { code: RefuseCode::NotServing, relay, .. } if relay == r.node_id()),
        "{err}"
    );
    assert_eq!(r.stats().relay.circuits_refused, 1);
    assert!(a.relay_circuits().is_empty());
}

#[tokio::test]
async fn typed_errors_for_missing_relay_and_missing_target() {
    let (a, _ea) = node();
    let (b, _eb) = node();
    let (r, _er) = node_with(serving(CircuitLimits::default(), None));
    let err = a
        .connect_relayed(b.node_id(), r.node_id())
        .await
        .unwrap_err();
    assert!(matches!(err, RelayError::RelayNotConnected { .. }), "{err}");
    bounded("a to r", a.connect(r.node_id(), addr(&r)))
        .await
        .unwrap();
    let err = bounded("no target", a.connect_relayed(b.node_id(), r.node_id()))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RelayError::TargetNotConnected { target, .. } if target == b.node_id()),
        "{err}"
    );
    let err = a
        .connect_relayed(a.node_id(), r.node_id())
        .await
        .unwrap_err();
    assert!(matches!(err, RelayError::BadRequest(_)), "{err}");
}

#[tokio::test]
async fn per_peer_limit_refuses_with_limit_exceeded() {
    let ((a, _ea), (b, _eb), (r, _er)) = triangle(|c| {
        c.relay.serve = true;
        c.relay.limits.max_circuits_per_peer = 1;
    })
    .await;
    let (c, _ec) = node();
    bounded("c to r", c.connect(r.node_id(), addr(&r)))
        .await
        .unwrap();
    bounded("a via r", a.connect_relayed(b.node_id(), r.node_id()))
        .await
        .unwrap();
    // B already has its one circuit.
    let err = bounded("c via r", c.connect_relayed(b.node_id(), r.node_id()))
        .await
        .unwrap_err();
    assert!(matches!(err, RelayError::LimitExceeded { .. }), "{err}");
}

#[tokio::test]
async fn malformed_circuit_request_closes_only_that_stream() {
    let (r, _er) = node_with(serving(CircuitLimits::default(), None));
    let identity = p2ps_transport::Identity::generate().unwrap();
    let (endpoint, client) = genuine_raw_client(&identity);
    let conn = bounded(
        "raw connect",
        endpoint.connect_with(client, addr(&r), "p2ps").unwrap(),
    )
    .await
    .unwrap();
    // Tag "circuit request", then a header length far above the maximum.
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&[0x10, 0xff, 0xff, 1, 2, 3]).await.unwrap();
    let err = bounded("reset", recv.read_to_end(1024)).await.unwrap_err();
    assert!(
        matches!(err, quinn::ReadToEndError::Read(quinn::ReadError::Reset(code)) if code.into_inner() == CircuitEnd::Malformed.to_u64()),
        "{err}"
    );
    // Undecodable body of an acceptable length.
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&[0x10, 0, 3, 0xff, 0xff, 0xff])
        .await
        .unwrap();
    assert!(bounded("reset", recv.read_to_end(1024)).await.is_err());
    assert_eq!(r.stats().relay.malformed, 2);
    // The connection is still served: a well-formed request gets a proper answer.
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let mut request = vec![0x10, 0, 33, 0];
    request.extend_from_slice(&[9u8; 32]);
    send.write_all(&request).await.unwrap();
    let reply = bounded("reply", recv.read_to_end(1024)).await.unwrap();
    assert!(reply.len() > 2, "expected a refusal, got {reply:?}");
    assert!(conn.close_reason().is_none());
    assert!(r.connected_peers().contains(&identity.node_id()));
}

#[tokio::test]
async fn a_direct_connection_replaces_the_relayed_one() {
    let ((a, mut ea), (b, mut eb), (r, _er)) =
        triangle(serving(CircuitLimits::default(), None)).await;
    connect_a_to_b_via_r(&a, &b, &r).await;
    connected_via(&mut eb, a.node_id()).await;
    // B (not the dialer of the relayed connection) dials directly.
    bounded("direct", b.connect(a.node_id(), addr(&a)))
        .await
        .unwrap();
    eventually("direct path on both sides", || {
        matches!(a.path(b.node_id()), Some(PathKind::Direct(_)))
            && matches!(b.path(a.node_id()), Some(PathKind::Direct(_)))
    })
    .await;
    eventually("relayed circuit closed", || {
        a.relay_circuits().is_empty()
            && b.relay_circuits().is_empty()
            && r.stats().relay.circuits_active == 0
    })
    .await;
    a.send(b.node_id(), StreamClass::Routing, &Msg::Num(1))
        .await
        .unwrap();
    assert_eq!(wait_message(&mut eb, a.node_id()).await.1, Msg::Num(1));
    b.send(a.node_id(), StreamClass::Routing, &Msg::Num(2))
        .await
        .unwrap();
    assert_eq!(wait_message(&mut ea, b.node_id()).await.1, Msg::Num(2));
    // The switch was invisible: no Disconnected for the peer.
    while let Some(e) = ea.try_recv() {
        assert!(
            !matches!(e, Event::Disconnected { peer, .. } if peer == b.node_id()),
            "{e:?}"
        );
    }
}

/// Not an assertion: prints round-trip time and bulk throughput, relayed and direct, on
/// loopback. Run with `cargo test -p p2ps-transport --test relay -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn measure_relayed_against_direct() {
    let limits = CircuitLimits::default()
        .with_max_bytes(None)
        .with_max_rate(None)
        .with_max_duration(None);
    let ((a, mut ea), (b, mut eb), (r, _er)) = triangle(serving(limits, None)).await;
    connect_a_to_b_via_r(&a, &b, &r).await;
    let relayed = measure(&a, &mut ea, &b, &mut eb).await;
    let (c, mut ec) = node();
    let (d, mut ed) = node();
    bounded("direct", c.connect(d.node_id(), addr(&d)))
        .await
        .unwrap();
    let direct = measure(&c, &mut ec, &d, &mut ed).await;
    println!("loopback, median RTT of 200 pings, 16 MiB over one raw stream:");
    println!("  relayed: rtt {:?}, {:.1} MiB/s", relayed.0, relayed.1);
    println!("  direct:  rtt {:?}, {:.1} MiB/s", direct.0, direct.1);
}

async fn measure(
    a: &Transport<Msg>,
    ea: &mut Events<Msg>,
    b: &Transport<Msg>,
    eb: &mut Events<Msg>,
) -> (Duration, f64) {
    let mut rtts = Vec::new();
    for i in 0..200 {
        let t = Instant::now();
        a.send(b.node_id(), StreamClass::Routing, &Msg::Num(i))
            .await
            .unwrap();
        wait_message(eb, a.node_id()).await;
        b.send(a.node_id(), StreamClass::Routing, &Msg::Num(i))
            .await
            .unwrap();
        wait_message(ea, b.node_id()).await;
        rtts.push(t.elapsed());
    }
    rtts.sort();
    let data = vec![0x5au8; 16 << 20];
    let t = Instant::now();
    let (mut send, _recv) = a.open_bi(b.node_id()).await.unwrap();
    let writer = tokio::spawn(async move {
        send.write_all(&data).await.unwrap();
        send.finish().unwrap();
        send
    });
    let mut brecv = match wait_event(eb, "IncomingStream", |e| {
        matches!(e, Event::IncomingStream { .. })
    })
    .await
    {
        Event::IncomingStream { recv, .. } => recv,
        _ => unreachable!(),
    };
    let got = tokio::time::timeout(Duration::from_secs(60), brecv.read_to_end(32 << 20))
        .await
        .unwrap()
        .unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(got.len(), 16 << 20);
    drop(writer.await.unwrap());
    (rtts[rtts.len() / 2], 16.0 / secs)
}

#[tokio::test]
async fn duration_limit_ends_the_circuit_at_both_ends() {
    let limits = CircuitLimits::default()
        .with_max_bytes(None)
        .with_max_rate(None)
        .with_max_duration(Some(Duration::from_millis(500)));
    let ((a, mut ea), (b, mut eb), (r, _er)) = triangle(serving(limits, None)).await;
    connect_a_to_b_via_r(&a, &b, &r).await;
    expect_circuit_end(
        [(&mut ea, b.node_id()), (&mut eb, a.node_id())],
        r.node_id(),
        CircuitEnd::DurationLimit,
        "Disconnected by the duration limit",
    )
    .await;
    assert_eq!(r.stats().relay.circuits_limited, 1);
}

#[tokio::test]
async fn rate_limit_throttles_without_cutting_off() {
    let rate = 256 * 1024;
    let limits = CircuitLimits::default()
        .with_max_bytes(None)
        .with_max_rate(Some(rate))
        .with_max_duration(None);
    let ((a, _ea), (b, mut eb), (r, _er)) = triangle(serving(limits, None)).await;
    connect_a_to_b_via_r(&a, &b, &r).await;
    let blob = Msg::Blob(vec![3u8; 512 * 1024]);
    let start = Instant::now();
    a.send(b.node_id(), StreamClass::User, &blob).await.unwrap();
    assert_eq!(wait_message(&mut eb, a.node_id()).await.1, blob);
    // 512 KiB at 256 KiB/s with a 64 KiB burst takes at least 1.75 s; only a lower bound is
    // checked (a slow machine may take longer, never shorter).
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(1500), "took {took:?}");
    assert!(a.path(b.node_id()).is_some());
}

#[tokio::test]
async fn a_target_that_does_not_accept_circuits_refuses_through_the_relay() {
    let (a, _ea) = node();
    let (b, _eb) = node_with(|c| c.relay.accept = false);
    let (r, _er) = node_with(serving(CircuitLimits::default(), None));
    connect_both_to_relay(&a, &b, &r).await;
    let err = bounded("refusal", a.connect_relayed(b.node_id(), r.node_id()))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            RelayError::Refused {
                code: RefuseCode::TargetRefused,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(r.stats().relay.circuits_active, 0);
    assert!(b.relay_circuits().is_empty());
}

#[tokio::test]
async fn losing_the_relay_disconnects_the_relayed_peer_at_both_ends() {
    let ((a, mut ea), (b, mut eb), (r, _er)) =
        triangle(serving(CircuitLimits::default(), None)).await;
    connect_a_to_b_via_r(&a, &b, &r).await;
    connected_via(&mut ea, b.node_id()).await;
    connected_via(&mut eb, a.node_id()).await;
    r.shutdown("relay going away").await;
    expect_circuit_end(
        [(&mut ea, b.node_id()), (&mut eb, a.node_id())],
        r.node_id(),
        CircuitEnd::RelayConnectionLost,
        "Disconnected with the relay",
    )
    .await;
    assert!(a.connected_peers().is_empty() && b.connected_peers().is_empty());
}

/// Both ends see their relayed connection to the other end with `end`, told by `relay`.
async fn expect_circuit_end(
    ends: [(&mut Events<Msg>, p2ps_transport::NodeId); 2],
    relay: p2ps_transport::NodeId,
    end: CircuitEnd,
    what: &str,
) {
    for (events, peer) in ends {
        match wait_event(
            events,
            what,
            |e| matches!(e, Event::Disconnected { peer: p, .. } if *p == peer),
        )
        .await
        {
            Event::Disconnected { reason, .. } => {
                assert_eq!(reason, DisconnectReason::Relay { relay, end })
            }
            _ => unreachable!(),
        }
    }
}
