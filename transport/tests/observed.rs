//! Observed addresses and reachability over real loopback connections, and the control
//! channel's handling of bad input.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use p2ps_transport::{
    Event, MappingBehaviour, PortMappingState, Reachability, StreamClass, Transport,
};

/// Tag of the transport's control stream and the variant index of `Observed` (wire format).
const CONTROL_TAG: u8 = 0xC0;
const OBSERVED: u8 = 0;

/// A control frame: 4-byte big-endian length, then the body.
fn frame(body: &[u8]) -> Vec<u8> {
    let mut f = (body.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(body);
    f
}

/// The body of `Observed(addr)` for an IPv4 address, as postcard writes it.
fn observed_body(addr: SocketAddr) -> Vec<u8> {
    let SocketAddr::V4(v4) = addr else {
        panic!("IPv4 only")
    };
    let mut body = vec![OBSERVED, 0];
    body.extend_from_slice(&v4.ip().octets());
    let mut port = v4.port();
    // LEB128 varint.
    loop {
        let byte = (port & 0x7f) as u8;
        port >>= 7;
        if port == 0 {
            body.push(byte);
            break;
        }
        body.push(byte | 0x80);
    }
    body
}

/// A connects to C and waits for C's report to make it public (both on loopback, no NAT).
async fn connect_until_public(a: &Transport<Msg>, c: &Transport<Msg>) {
    bounded("connect", a.connect(c.node_id(), addr(c)))
        .await
        .unwrap();
    eventually("a is public", || {
        a.reachability().class == Reachability::Public
    })
    .await;
}

#[tokio::test]
async fn each_side_learns_its_address_and_is_public_on_loopback() {
    let (a, _ea) = node();
    let (c, _ec) = node();
    let mut watch_a = a.watch_reachability();
    assert_eq!(a.reachability().class, Reachability::Unknown);
    assert_eq!(a.advertised_addrs(), vec![addr(&a)], "bound address only");

    bounded("connect", a.connect(c.node_id(), addr(&c)))
        .await
        .unwrap();
    bounded("reachability change", watch_a.changed())
        .await
        .unwrap();
    for (t, who) in [(&a, "a"), (&c, "c")] {
        eventually(&format!("{who} learns its address"), || {
            t.reachability().class == Reachability::Public
        })
        .await;
        let status = t.reachability();
        assert_eq!(status.reporters, 1);
        assert_eq!(status.external_addrs.len(), 1);
        assert_eq!(status.external_addrs[0].addr, addr(t));
        assert!(!status.external_addrs[0].confirmed, "only one reporter");
        assert_eq!(status.mapping_behaviour, MappingBehaviour::Unknown);
        assert_eq!(t.advertised_addrs(), vec![addr(t)]);
        assert_eq!(t.stats().observed_reports, 1);
    }

    // A second reporter confirms a's address.
    let (b, _eb) = node();
    bounded("connect", b.connect(a.node_id(), addr(&a)))
        .await
        .unwrap();
    eventually("a's address is confirmed", || {
        let s = a.reachability();
        s.reporters == 2 && s.external_addrs.first().is_some_and(|e| e.confirmed)
    })
    .await;
    assert_eq!(a.reachability().class, Reachability::Public);
}

#[tokio::test]
async fn port_mapping_is_advertised_first_and_can_be_withdrawn() {
    let (a, _ea) = node();
    let (c, _ec) = node();
    connect_until_public(&a, &c).await;

    let mapped: SocketAddr = "203.0.113.7:40000".parse().unwrap();
    let mut watch = a.watch_reachability();
    watch.borrow_and_update();
    a.set_port_mapping(Some(mapped));
    assert!(watch.has_changed().unwrap());
    let status = a.reachability();
    assert_eq!(status.class, Reachability::PortMapped);
    let mapping = status.port_mapping.unwrap();
    assert_eq!(mapping.external, mapped);
    assert_eq!(mapping.state, PortMappingState::Unconfirmed);
    assert_eq!(a.advertised_addrs(), vec![mapped, addr(&a)]);

    a.set_port_mapping(None);
    assert_eq!(a.reachability().class, Reachability::Public);
    assert_eq!(a.advertised_addrs(), vec![addr(&a)]);
}

#[tokio::test]
async fn bad_control_frames_close_only_the_control_stream() {
    let (server, mut es) = node();
    let (_rogue, _endpoint, conn) = connected_raw_peer(&server).await;
    wait_event(&mut es, "Connected", |e| {
        matches!(e, Event::Connected { .. })
    })
    .await;

    // A frame of a variant this version does not know is skipped; the stream goes on and the
    // valid report after it counts.
    let seen = addr(&server);
    let mut s = conn.open_uni().await.unwrap();
    s.write_all(&[CONTROL_TAG]).await.unwrap();
    s.write_all(&frame(&[0x7e, 1, 2, 3])).await.unwrap();
    s.write_all(&frame(&observed_body(seen))).await.unwrap();
    eventually("the report after the unknown one counts", || {
        server.stats().observed_reports == 1
    })
    .await;
    assert_eq!(server.reachability().class, Reachability::Public);
    assert_eq!(server.stats().frame_errors, 0);

    // A truncated body stops that stream with MalformedFrame (2).
    s.write_all(&frame(&[OBSERVED, 0, 127])).await.unwrap();
    let stopped = bounded("stream stopped", s.stopped()).await.unwrap();
    assert_eq!(stopped, Some(quinn::VarInt::from_u32(2)));

    // An oversized header on a fresh control stream: FrameTooLarge (1).
    let mut big = conn.open_uni().await.unwrap();
    big.write_all(&[CONTROL_TAG]).await.unwrap();
    big.write_all(&(1_000_000u32).to_be_bytes()).await.unwrap();
    let stopped = bounded("stream stopped", big.stopped()).await.unwrap();
    assert_eq!(stopped, Some(quinn::VarInt::from_u32(1)));
    assert_eq!(server.stats().frame_errors, 2);

    // The connection and the node still serve: another control stream works...
    let mut again = conn.open_uni().await.unwrap();
    again.write_all(&[CONTROL_TAG]).await.unwrap();
    again.write_all(&frame(&observed_body(seen))).await.unwrap();
    eventually("the next report counts", || {
        server.stats().observed_reports == 2
    })
    .await;
    assert!(conn.close_reason().is_none());
    assert_eq!(server.connected_peers().len(), 1);

    // ...and so do other peers.
    let (other, mut eo) = node();
    assert_serves(&other, &mut eo, &server, &mut es).await;
    other
        .send(server.node_id(), StreamClass::User, &Msg::Num(3))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
}

#[tokio::test]
async fn wildcard_bound_node_finds_its_local_address_for_dialed_connections() {
    let (a, _ea) = node_with(|c| c.bind_addr = "0.0.0.0:0".parse().unwrap());
    let (c, _ec) = node();
    let port = addr(&a).port();
    assert!(a.advertised_addrs().is_empty(), "nothing known yet");
    // a dials: quinn does not know the local IP of an outgoing connection.
    connect_until_public(&a, &c).await;
    let local = SocketAddr::from(([127, 0, 0, 1], port));
    assert_eq!(a.reachability().external_addrs[0].addr, local);
    assert_eq!(a.advertised_addrs(), vec![local]);
}
