//! Two processes with one key: a second one is refused while the first still answers
//! (`CloseCode::IdInUse`), and a restart replaces the silent connection of a crashed one at
//! once instead of after its idle timeout.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use common::*;
use p2ps_transport::{CloseCode, DisconnectReason, Event, Identity};
use tokio::net::UdpSocket;

/// Whether `e` is the close of the connection to `peer` because its id is in use.
fn id_in_use(e: &Event<Msg>, peer: p2ps_transport::NodeId) -> bool {
    matches!(
        e,
        Event::Disconnected {
            peer: p,
            reason: DisconnectReason::Remote {
                code: CloseCode::IdInUse,
                ..
            },
        } if *p == peer
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_with_a_live_key_is_refused() {
    let (a, mut ea) = node();
    let key = Identity::generate().unwrap();
    let (b1, mut eb1) = node_with(|c| c.identity = key.clone());
    assert_serves(&b1, &mut eb1, &a, &mut ea).await;

    let (b2, mut eb2) = node_with(|c| c.identity = key.clone());
    let dialed = bounded("the second dial", b2.connect(a.node_id(), addr(&a))).await;
    // The handshake succeeds (the key is genuine); the node closes the connection right after.
    dialed.unwrap();
    wait_event(&mut eb2, "the IdInUse close", |e| id_in_use(e, a.node_id())).await;
    assert_eq!(a.stats().id_in_use_refused, 1);
    // The first process keeps its place: messages to the id still reach it, both ways.
    assert_serves(&a, &mut ea, &b1, &mut eb1).await;
    assert_eq!(a.stats().duplicates_closed, 0);
}

/// Forwards datagrams between one client and `to` until the task is aborted; returns the
/// address the client should use.
async fn forwarder(to: SocketAddr) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let sock = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let at = sock.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut client = None;
        let mut buf = vec![0u8; 65536];
        loop {
            let Ok((n, from)) = sock.recv_from(&mut buf).await else {
                return;
            };
            let dest = if from == to {
                match client {
                    Some(c) => c,
                    None => continue,
                }
            } else {
                client = Some(from);
                to
            };
            let _ = sock.send_to(&buf[..n], dest).await;
        }
    });
    (at, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_replaces_the_silent_connection_of_the_crashed_process() {
    let (a, mut ea) = node();
    // A key above `a`'s id: of two connections in opposite directions, `a` would keep the one
    // it dialed, the old one, if it did not notice that its process is gone.
    let key = loop {
        let k = Identity::generate().unwrap();
        if k.node_id() > a.node_id() {
            break k;
        }
    };
    // `a` reaches the first process through a forwarder; cutting it makes that process vanish
    // without a word, as a crash does (from `a`'s side).
    let (b1, _eb1) = node_with(|c| c.identity = key.clone());
    let (via, cut) = forwarder(addr(&b1)).await;
    bounded("the first dial", a.connect(key.node_id(), via))
        .await
        .unwrap();
    cut.abort();

    let (b2, mut eb2) = node_with(|c| c.identity = key.clone());
    bounded("the restart's dial", b2.connect(a.node_id(), addr(&a)))
        .await
        .unwrap();
    // `a` now talks to the restarted process, on the connection the restart dialed.
    eventually("a's connection to the restarted process", || {
        a.path(key.node_id()) == Some(p2ps_transport::relay::PathKind::Direct(addr(&b2)))
    })
    .await;
    assert_serves(&a, &mut ea, &b2, &mut eb2).await;
    assert_eq!(a.stats().id_in_use_refused, 0);
    drop(b1);
}
