//! Helpers shared by the loopback tests: a small network of in-process nodes.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use p2ps::{Identity, Node, NodeConfig, NodeId};
use p2ps_overlay::TrueRing;
use std::time::Duration;
use tokio::time::timeout;

pub fn config() -> NodeConfig {
    let mut c = NodeConfig::new(
        Identity::generate().unwrap(),
        "127.0.0.1:0".parse().unwrap(),
    );
    c.overlay.stabilize_interval = Duration::from_millis(300);
    c.overlay.stabilize_timeout = Duration::from_millis(1500);
    c.overlay.finger_refresh_period = Duration::from_secs(5);
    c
}

pub async fn network(n: usize) -> Vec<Node> {
    network_with(n, |_| {}).await
}

/// A network of `n` nodes whose configurations `tune` adjusts.
pub async fn network_with(n: usize, tune: impl Fn(&mut NodeConfig)) -> Vec<Node> {
    let configured = || {
        let mut c = config();
        tune(&mut c);
        c
    };
    let mut nodes = Vec::new();
    let first = Node::start(configured()).await.unwrap();
    first.create().await.unwrap();
    nodes.push(first);
    for i in 1..n {
        let node = Node::start(configured()).await.unwrap();
        let via = nodes[i / 2].ticket();
        timeout(Duration::from_secs(20), node.join(&via))
            .await
            .unwrap()
            .unwrap();
        nodes.push(node);
    }
    nodes
}

/// The ring as it should be for `nodes`, from their ids alone.
pub fn true_ring(nodes: &[Node]) -> TrueRing<NodeId> {
    nodes
        .iter()
        .map(|n| (p2ps::id::ring_id_of(&n.id()), n.id()))
        .collect()
}

/// Waits until every node's successor is the true one.
pub async fn settle(nodes: &[Node]) {
    let truth = true_ring(nodes);
    for _ in 0..100 {
        let mut ok = true;
        for n in nodes {
            let s = n.status().await.unwrap();
            let want = truth.successors(&n.id(), 1);
            if s.successors.first() != want.first() {
                ok = false;
            }
        }
        if ok {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("ring did not settle");
}
