//! How a join through a ticket ends and what it reports on the way, on loopback: each step as
//! an event, a key already in use refused at once, a dead ticket given up when its dial fails
//! rather than after every join request timed out.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use p2ps::{Identity, JoinError, JoinStep, Node, NodeEvent, Ticket};
use std::time::Duration;
use tokio::sync::broadcast::error::TryRecvError;
use tokio::time::timeout;

mod common;
use common::config;

/// Every event `events` holds now.
fn pending(events: &mut tokio::sync::broadcast::Receiver<NodeEvent>) -> Vec<NodeEvent> {
    let mut out = Vec::new();
    loop {
        match events.try_recv() {
            Ok(e) => out.push(e),
            Err(TryRecvError::Lagged(_)) => continue,
            Err(_) => return out,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_step_of_a_join_is_reported() {
    let a = Node::start(config()).await.unwrap();
    a.create().await.unwrap();
    let b = Node::start(config()).await.unwrap();
    let mut events = b.events();
    let ticket = a.ticket();
    timeout(Duration::from_secs(20), b.join(&ticket))
        .await
        .unwrap()
        .unwrap();
    let seen = pending(&mut events);
    let steps: Vec<&JoinStep> = seen
        .iter()
        .filter_map(|e| match e {
            NodeEvent::Joining(s) => Some(s),
            _ => None,
        })
        .collect();
    assert_eq!(
        steps.first(),
        Some(&&JoinStep::Dialing {
            via: a.id(),
            addrs: ticket.addrs.clone()
        }),
        "{seen:?}"
    );
    assert!(
        matches!(steps.get(1), Some(JoinStep::Connected { via, .. }) if *via == a.id()),
        "{seen:?}"
    );
    assert_eq!(
        steps.get(2),
        Some(&&JoinStep::Requested { attempt: 1, of: 5 }),
        "{seen:?}"
    );
    assert!(seen.contains(&NodeEvent::Joined), "{seen:?}");
    for n in [a, b] {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_node_with_a_members_key_is_told_its_id_is_in_use() {
    let a = Node::start(config()).await.unwrap();
    a.create().await.unwrap();
    let key = Identity::generate().unwrap();
    let b = Node::start(config().with_identity(key.clone()))
        .await
        .unwrap();
    timeout(Duration::from_secs(20), b.join(&a.ticket()))
        .await
        .unwrap()
        .unwrap();

    let twin = Node::start(config().with_identity(key.clone()))
        .await
        .unwrap();
    // Without the refusal this join would wait for five join requests to time out (25 s).
    let err = timeout(Duration::from_secs(15), twin.join(&a.ticket()))
        .await
        .expect("the join should end at the refusal, not after every request")
        .unwrap_err();
    match &err {
        JoinError::IdInUse { id, via } => {
            assert_eq!((*id, *via), (key.node_id(), a.id()));
        }
        other => panic!("expected IdInUse, got {other:?}"),
    }
    // The running member keeps its place: a message to its id reaches it.
    a.send(b.id(), &b"still you"[..]).await.unwrap();
    let m = timeout(Duration::from_secs(5), b.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&m.payload[..], b"still you");
    for n in [a, b, twin] {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_ticket_fails_when_its_dial_fails() {
    // Join requests far apart: without the end at the failed dial, the join would take minutes.
    let mut c = config();
    c.overlay.join_timeout = Duration::from_secs(60);
    let node = Node::start(c).await.unwrap();
    let dead = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = dead.local_addr().unwrap();
    drop(dead);
    let ghost = Ticket::new(Identity::generate().unwrap().node_id(), vec![addr]);
    let err = timeout(Duration::from_secs(40), node.join(&ghost))
        .await
        .expect("the join should end when the dial fails")
        .unwrap_err();
    match &err {
        JoinError::Unreachable {
            attempts: 1,
            source: Some(_),
        } => {}
        other => panic!("expected an unreachable bootstrap after one request, got {other:?}"),
    }
    node.shutdown().await;
}
