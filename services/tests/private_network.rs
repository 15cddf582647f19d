//! A private network through the library: nodes with the same `NodeConfig::network_key` join
//! one another and route lookups; a node without it, or with another key, is refused by
//! `Node::join` before it dials (the ticket names the network), and when it dials anyway (a
//! ticket without the name) the connection fails with an error that names the network key.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use p2ps::{JoinError, Node, NodeConfig};
use p2ps_transport::{ConnectError, NetworkKey};
use std::time::Duration;
use tokio::time::timeout;

fn keyed(key: &NetworkKey) -> impl Fn(&mut NodeConfig) + '_ {
    move |c| c.network_key = Some(key.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_join_and_outsiders_are_refused() {
    let key = NetworkKey::generate().unwrap();
    let nodes = network_with(4, keyed(&key)).await;
    settle(&nodes).await;
    let ticket = nodes[0].ticket();
    assert_eq!(ticket.network, Some(key.name()));
    assert_eq!(nodes[3].network(), Some(key.name()));
    let truth = true_ring(&nodes);
    for k in ["a", "b", "c", "d", "e"] {
        let r = timeout(Duration::from_secs(10), nodes[1].lookup_key(k.as_bytes()))
            .await
            .unwrap()
            .unwrap();
        let want = truth.responsible(p2ps::key_of(k)).unwrap();
        assert_eq!(r.node, want, "lookup of {k}");
    }

    // Without a key, and with another key: refused before any dial.
    let open = Node::start(config()).await.unwrap();
    match open.join(&ticket).await {
        Err(e @ JoinError::OtherNetwork { .. }) => {
            assert!(e.to_string().contains("--network-key"), "{e}");
        }
        other => panic!("expected OtherNetwork, got {other:?}"),
    }
    let other_key = NetworkKey::generate().unwrap();
    let mut c = config();
    c.network_key = Some(other_key.clone());
    let stranger = Node::start(c).await.unwrap();
    match stranger.join(&ticket).await {
        Err(JoinError::OtherNetwork { ticket: t, ours }) => {
            assert_eq!((t, ours), (Some(key.name()), Some(other_key.name())));
        }
        other => panic!("expected OtherNetwork, got {other:?}"),
    }

    // Without a key and without the name in the ticket: the handshake refuses it.
    let mut c = config();
    c.overlay.join_attempts = 2;
    c.overlay.join_timeout = Duration::from_millis(1000);
    let blind = Node::start(c).await.unwrap();
    let bare = ticket.clone().with_network(None);
    let err = timeout(Duration::from_secs(20), blind.join(&bare))
        .await
        .unwrap()
        .unwrap_err();
    match &err {
        JoinError::Unreachable {
            source: Some(ConnectError::Protocol { reason, .. }),
            ..
        } => assert!(reason.contains("--network-key"), "{reason}"),
        other => panic!("expected an unreachable bootstrap node, got {other:?}"),
    }
    for n in [&open, &stranger, &blind] {
        n.shutdown().await;
    }
    for n in &nodes {
        n.shutdown().await;
    }
}
