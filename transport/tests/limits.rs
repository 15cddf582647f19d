//! Resource limits seen from outside: first-frame timeout, address quotas, the reserve for
//! wanted peers, and the per-connection buffer budget (issue #12, items 1 and 2).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use p2ps_transport::{CloseCode, StreamClass, StreamStopCode};

/// The application close code a raw connection was closed with, waiting for it.
async fn close_code(conn: &quinn::Connection) -> Option<CloseCode> {
    match bounded("the connection to close", conn.closed()).await {
        quinn::ConnectionError::ApplicationClosed(a) => {
            Some(CloseCode::from_u64(a.error_code.into_inner()))
        }
        _ => None,
    }
}

#[tokio::test]
async fn a_silent_stranger_is_closed_a_talking_or_wanted_peer_is_not() {
    let timeout = Duration::from_millis(300);
    let (hub, mut eh) = node_with(|c| c.admission.first_frame_timeout = Some(timeout));
    // A stranger that completes the handshake and then says nothing.
    let (_id, _ep, silent) = connected_raw_peer(&hub).await;
    // A peer that talks, and a wanted one that does not.
    let (talker, mut et) = node();
    let (wanted, _ew) = node();
    hub.set_protected([wanted.node_id()]);
    assert_serves(&talker, &mut et, &hub, &mut eh).await;
    bounded("wanted connect", wanted.connect(hub.node_id(), addr(&hub)))
        .await
        .unwrap();
    assert_eq!(close_code(&silent).await, Some(CloseCode::Silent));
    // Well past the timeout, the other two are still connected.
    tokio::time::sleep(timeout * 4).await;
    let peers = hub.connected_peers();
    assert!(peers.contains(&talker.node_id()), "{peers:?}");
    assert!(peers.contains(&wanted.node_id()), "{peers:?}");
    assert_eq!(hub.stats().connections_silent, 1);
}

#[tokio::test]
async fn address_quotas_apply_to_loopback_when_asked() {
    let (hub, mut eh) = node_with(|c| {
        c.admission.exempt_loopback = false;
        c.admission.per_ip = 2;
        c.admission.first_frame_timeout = None;
    });
    let (_a, _ea, first) = connected_raw_peer(&hub).await;
    let (_b, _eb, _second) = connected_raw_peer(&hub).await;
    // The third from 127.0.0.1 is refused before its handshake.
    let identity = p2ps_transport::Identity::generate().unwrap();
    let (endpoint, config) = genuine_raw_client(&identity);
    let third = bounded(
        "third handshake",
        endpoint.connect_with(config, addr(&hub), "p2ps").unwrap(),
    )
    .await;
    assert!(
        matches!(&third, Err(quinn::ConnectionError::ConnectionClosed(c))
            if c.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED),
        "{third:?}"
    );
    assert!(hub.stats().connections_refused >= 1);
    // A closed connection frees its place.
    first.close(0u32.into(), b"bye");
    let (p, mut ep) = node();
    let mut tries = 0;
    while p.connect(hub.node_id(), addr(&hub)).await.is_err() {
        tries += 1;
        assert!(tries < 50, "the quota was never freed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_serves(&p, &mut ep, &hub, &mut eh).await;
}

#[tokio::test]
async fn the_reserve_is_kept_for_wanted_peers() {
    let (hub, _eh) = node_with(|c| {
        c.admission.max_connections = 3;
        c.admission.reserved_connections = 1;
        c.admission.first_frame_timeout = None;
    });
    let (_a, _ea, _s1) = connected_raw_peer(&hub).await;
    let (_b, _eb, _s2) = connected_raw_peer(&hub).await;
    // A third stranger completes the handshake but may not take the reserved slot.
    let (_c, _ec, s3) = connected_raw_peer(&hub).await;
    assert_eq!(close_code(&s3).await, Some(CloseCode::TooManyConnections));
    // A wanted peer may.
    let (wanted, _ew) = node();
    hub.set_protected([wanted.node_id()]);
    // (The refused stranger's connection may take a moment to drain from the count.)
    for tries in 0.. {
        assert!(tries < 50, "the wanted peer never got the reserved slot");
        let _ = wanted.connect(hub.node_id(), addr(&hub)).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        if hub.connected_peers().contains(&wanted.node_id()) {
            break;
        }
    }
}

#[tokio::test]
async fn partial_frames_over_the_connection_budget_stop_their_stream_only() {
    const FRAME: usize = 64 * 1024;
    let (hub, mut eh) = node_with(|c| {
        c.max_frame_size = FRAME;
        c.memory.connection_buffer_bytes = 160 * 1024;
        c.memory.node_buffer_bytes = 1024 * 1024;
        c.admission.first_frame_timeout = None;
    });
    let (_id, _ep, conn) = connected_raw_peer(&hub).await;
    // Four streams, each holding most of a largest frame: together over the budget.
    let mut stops = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let conn = conn.clone();
        stops.spawn(async move {
            let mut send = conn.open_uni().await.unwrap();
            let mut bytes = vec![StreamClass::User.tag()];
            bytes.extend_from_slice(&(FRAME as u32).to_be_bytes());
            bytes.extend_from_slice(&vec![1u8; FRAME - 4 * 1024]);
            let _ = send.write_all(&bytes).await;
            send.stopped().await
        });
    }
    let first = bounded("a stream to be stopped", stops.join_next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        first.ok().flatten().map(|c| c.into_inner()),
        Some(u64::from(StreamStopCode::OverBudget.to_u32()))
    );
    assert!(hub.stats().streams_over_budget >= 1);
    // The node still serves everyone else.
    let (p, mut ep) = node();
    assert_serves(&p, &mut ep, &hub, &mut eh).await;
    stops.abort_all();
}
