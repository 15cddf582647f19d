//! Nodes on loopback in one process: a network forms through tickets, every node agrees on who
//! holds a key, messages reach their targets, and a graceful leave is repaired.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use p2ps::{Identity, Node, NodeEvent};
use std::time::Duration;
use tokio::time::timeout;

mod common;
use common::{config, network, network_with, settle, true_ring};

/// Steered lookups over QUIC: every node finds the true responsible node of every key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steered_lookups_find_the_true_responsible_node() {
    let nodes = network_with(12, |c| c.overlay.lookup_mode = p2ps::LookupMode::Steered).await;
    settle(&nodes).await;
    let truth = true_ring(&nodes);
    for k in 0..30u32 {
        let key = format!("steered-{k}");
        let pos = p2ps::key_of(&key);
        let want = truth.responsible(pos).unwrap();
        for n in &nodes {
            let got = n.lookup_key(&key).await.unwrap().node;
            assert_eq!(got, want, "{key} from {}", n.id().short());
        }
    }
    for n in nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_nodes_agree_and_deliver() {
    let nodes = network(10).await;
    settle(&nodes).await;

    // Every node finds the same responsible node for each key.
    for k in 0..50u32 {
        let key = format!("key-{k}");
        let mut answers = Vec::new();
        for n in &nodes {
            answers.push(n.lookup_key(&key).await.unwrap().node);
        }
        assert!(
            answers.windows(2).all(|w| w[0] == w[1]),
            "{key}: {answers:?}"
        );
    }

    // A send reaches the named node; a route reaches the responsible node.
    let (a, b) = (&nodes[3], &nodes[8]);
    a.send(b.id(), &b"hello"[..]).await.unwrap();
    let m = timeout(Duration::from_secs(5), b.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (m.from, m.via.clone(), &m.payload[..]),
        (a.id(), p2ps::Via::Node, &b"hello"[..])
    );

    // A send to an id no node has fails: the lookup of its position (a signed answer) names
    // another node, and nothing is sent.
    let nobody = p2ps::Identity::generate().unwrap().node_id();
    match a.send(nobody, &b"into the void"[..]).await {
        Err(p2ps::NodeError::NoSuchNode { to, responsible }) => {
            assert_eq!(to, nobody);
            assert_eq!(
                responsible,
                a.lookup(p2ps::id::ring_id_of(&nobody)).await.unwrap().node
            );
        }
        other => panic!("a send to a node that is not there: {other:?}"),
    }

    let key = p2ps::key_of("routed");
    let holder = a.lookup(key).await.unwrap().node;
    a.route(key, &b"to whoever holds it"[..]).await.unwrap();
    let h = nodes.iter().find(|n| n.id() == holder).unwrap();
    let m = timeout(Duration::from_secs(5), h.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.key, key);
    assert_eq!(m.via, p2ps::Via::Key);

    // A graceful leave: its neighbours drop it at once and the rest still agree.
    let mut ev = nodes[0].events();
    let leaver = nodes[5].clone();
    leaver.shutdown().await;
    let rest: Vec<Node> = nodes
        .iter()
        .filter(|n| n.id() != leaver.id())
        .cloned()
        .collect();
    settle(&rest).await;
    for k in 0..20u32 {
        let key = format!("after-{k}");
        let first = rest[0].lookup_key(&key).await.unwrap().node;
        assert_ne!(first, leaver.id());
        for n in &rest[1..] {
            assert_eq!(n.lookup_key(&key).await.unwrap().node, first);
        }
    }
    // Events are delivered to subscribers (node 0 saw at least some neighbour change or none
    // if the leaver was not its neighbour; either way the channel works).
    while let Ok(e) = ev.try_recv() {
        assert!(matches!(
            e,
            NodeEvent::NeighbourUp(_) | NodeEvent::NeighbourDown(_)
        ));
    }
    for n in rest {
        n.shutdown().await;
    }
}

#[tokio::test]
async fn bad_joins_fail_clearly() {
    // Unreachable bootstrap: a ticket for a node that does not exist.
    let mut c = config();
    c.overlay.join_attempts = 2;
    c.overlay.join_timeout = Duration::from_millis(500);
    let node = Node::start(c).await.unwrap();
    let ghost = p2ps::Ticket::new(
        Identity::generate().unwrap().node_id(),
        vec!["127.0.0.1:9".parse().unwrap()],
    );
    let err = timeout(Duration::from_secs(30), node.join(&ghost))
        .await
        .unwrap()
        .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, p2ps::JoinError::Unreachable { attempts: 2, .. }),
        "{text}"
    );
    // The connection error, when one came, is the cause, and the message does not repeat it.
    if let Some(cause) = std::error::Error::source(&err) {
        assert!(cause.downcast_ref::<p2ps::error::ConnectError>().is_some());
        assert!(!text.contains(&cause.to_string()), "{text}");
    }

    // Its own ticket.
    let node2 = Node::start(config()).await.unwrap();
    let own = node2.ticket();
    assert!(matches!(
        node2.join(&own).await,
        Err(p2ps::JoinError::OwnTicket)
    ));
    // Commands before joining.
    assert_eq!(
        node2.lookup_key("x").await,
        Err(p2ps::LookupError::Node(p2ps::NodeError::NotJoined))
    );
    // And after leaving: a lookup on a node that left fails, saying why.
    node2.create().await.unwrap();
    assert!(node2.lookup_key("x").await.is_ok());
    node2.leave().await.unwrap();
    let err = node2.lookup_key("x").await.unwrap_err();
    assert_eq!(
        err,
        p2ps::LookupError::Node(p2ps::NodeError::NotJoined),
        "{err}"
    );
    assert!(err.to_string().contains("not part of a network"), "{err}");
}
