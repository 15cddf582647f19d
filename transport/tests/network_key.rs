//! Private networks: nodes with the same network key connect; without it, or with another one,
//! every connection is refused with a clear error on both sides, and a hostile peer that knows
//! the network's public name but not its key (no proof, a frame instead of a proof, a proof
//! replayed from another session) gets nothing processed and is closed within the deadline.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use p2ps_transport::tls::{self, PeerServerVerifier};
use p2ps_transport::{
    CloseCode, ConnectError, Event, Identity, NetworkKey, NetworkProofError, StreamClass,
    PROTOCOL_VERSION,
};

fn keyed(key: &NetworkKey) -> Node {
    let key = key.clone();
    node_with(move |c| {
        c.network_key = Some(key);
        c.network_proof_timeout = Duration::from_millis(500);
    })
}

fn network_alpn(key: &NetworkKey) -> Vec<u8> {
    tls::alpn_for_network(PROTOCOL_VERSION, Some(key.name()))
}

/// A raw client with a genuine identity that knows the network's public name (its ALPN) but
/// not its key, connected (handshake done) to `to`.
async fn raw_member_impostor(
    key: &NetworkKey,
    to: std::net::SocketAddr,
) -> (quinn::Endpoint, quinn::Connection) {
    let identity = Identity::generate().unwrap();
    let crypto = tls::client_config(
        tls::certified_key(&identity).unwrap(),
        Arc::new(PeerServerVerifier::new(None)),
        &network_alpn(key),
    )
    .unwrap();
    let (endpoint, config) = raw_client(crypto);
    let conn = bounded(
        "raw handshake",
        endpoint.connect_with(config, to, "p2ps").unwrap(),
    )
    .await
    .unwrap();
    (endpoint, conn)
}

/// The close code and reason the server ended `conn` with.
async fn closed_by_server(conn: &quinn::Connection) -> (CloseCode, String) {
    match bounded("server closes", conn.closed()).await {
        quinn::ConnectionError::ApplicationClosed(a) => (
            CloseCode::from_u64(a.error_code.into_inner()),
            String::from_utf8_lossy(&a.reason).into_owned(),
        ),
        other => panic!("expected an application close, got {other:?}"),
    }
}

#[tokio::test]
async fn nodes_with_the_same_key_connect() {
    let key = NetworkKey::generate().unwrap();
    let (a, mut ea) = keyed(&key);
    let (b, mut eb) = keyed(&key);
    assert_serves(&a, &mut ea, &b, &mut eb).await;
    assert_serves(&b, &mut eb, &a, &mut ea).await;
    assert_eq!(a.stats().network_refused, 0);
    assert_eq!(b.stats().network_refused, 0);
}

#[tokio::test]
async fn a_peer_that_hangs_up_during_the_proof_is_not_a_refusal() {
    // As a member does that closes its connection as soon as it has the other's proof, while
    // the other may still be reading its own: not an outsider, so no refusal is counted.
    let key = NetworkKey::generate().unwrap();
    let (member, mut em) = keyed(&key);
    let (endpoint, conn) = raw_member_impostor(&key, addr(&member)).await;
    conn.close(0u32.into(), b"bye");
    endpoint.close(0u32.into(), b"bye");
    bounded("the member sees the close", async {
        while member.stats().open_connections > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    // Past the proof deadline: had the member still been waiting, it would have refused by now.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(member.stats().network_refused, 0);
    assert_eq!(member.stats().handshakes_failed, 0);
    let (friend, mut ef) = keyed(&key);
    assert_serves(&friend, &mut ef, &member, &mut em).await;
}

#[tokio::test]
async fn another_key_is_refused_on_both_sides() {
    let ours = NetworkKey::generate().unwrap();
    let theirs = NetworkKey::generate().unwrap();
    let (member, mut em) = keyed(&ours);
    let (outsider, _eo) = keyed(&theirs);
    let err = bounded("dial", outsider.connect(member.node_id(), addr(&member)))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ConnectError::Protocol { .. }), "{err:?}");
    assert!(
        text.contains(&format!("private network {}", theirs.name())),
        "{text}"
    );
    assert!(text.contains("network key"), "{text}");
    eventually("the member counts the refusal", || {
        member.stats().network_refused == 1
    })
    .await;
    assert!(member.connected_peers().is_empty());
    assert!(outsider.connected_peers().is_empty());
    // The member keeps serving its own network.
    let (friend, mut ef) = keyed(&ours);
    assert_serves(&friend, &mut ef, &member, &mut em).await;
}

#[tokio::test]
async fn no_key_and_key_refuse_each_other_on_both_sides() {
    let key = NetworkKey::generate().unwrap();
    let (member, mut em) = keyed(&key);
    let (open, mut eo) = node();

    // Without a key, towards a private network.
    let err = bounded("dial", open.connect(member.node_id(), addr(&member)))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("--network-key"), "{text}");
    eventually("the member counts the refusal", || {
        member.stats().network_refused == 1
    })
    .await;

    // With a key, towards an open node.
    let err = bounded("dial", member.connect(open.node_id(), addr(&open)))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(&format!("not in private network {}", key.name())),
        "{text}"
    );
    eventually("the open node counts the refusal", || {
        open.stats().network_refused == 1
    })
    .await;
    assert!(member.connected_peers().is_empty());
    assert!(open.connected_peers().is_empty());

    let (friend, mut ef) = keyed(&key);
    assert_serves(&friend, &mut ef, &member, &mut em).await;
    let (other_open, mut eoo) = node();
    assert_serves(&other_open, &mut eoo, &open, &mut eo).await;
}

#[tokio::test]
async fn a_peer_that_sends_no_proof_is_closed_within_the_deadline() {
    let key = NetworkKey::generate().unwrap();
    let (member, mut em) = keyed(&key);
    let start = Instant::now();
    let (endpoint, conn) = raw_member_impostor(&key, addr(&member)).await;
    let (code, reason) = closed_by_server(&conn).await;
    let took = start.elapsed();
    assert_eq!(code, CloseCode::NetworkKey);
    assert!(reason.contains("no network proof"), "{reason}");
    // Proof timeout 500 ms; generous slack for a loaded machine, far below any idle timeout.
    assert!(took < Duration::from_secs(3), "closed after {took:?}");
    assert_eq!(member.stats().network_refused, 1);
    assert_eq!(member.stats().connections_accepted, 0);
    assert!(member.connected_peers().is_empty());
    endpoint.close(0u32.into(), b"");
    let (friend, mut ef) = keyed(&key);
    assert_serves(&friend, &mut ef, &member, &mut em).await;
}

#[tokio::test]
async fn a_frame_instead_of_a_proof_is_never_processed() {
    let key = NetworkKey::generate().unwrap();
    let (member, mut em) = keyed(&key);
    let (endpoint, conn) = raw_member_impostor(&key, addr(&member)).await;
    let mut stream = conn.open_uni().await.unwrap();
    let frame = p2ps_transport::frame::encode(&Msg::Text("let me in".into()), 1024).unwrap();
    stream.write_all(&[StreamClass::User.tag()]).await.unwrap();
    stream.write_all(frame.as_bytes()).await.unwrap();
    let _ = stream.finish();
    let (code, reason) = closed_by_server(&conn).await;
    assert_eq!(code, CloseCode::NetworkKey);
    assert!(reason.contains("not a network proof"), "{reason}");
    endpoint.close(0u32.into(), b"");
    // No event at all came from the impostor: the first one is the friend's connection.
    let (friend, mut ef) = keyed(&key);
    bounded(
        "friend connects",
        friend.connect(member.node_id(), addr(&member)),
    )
    .await
    .unwrap();
    match bounded("first event", em.recv()).await {
        Some(Event::Connected { peer, .. }) => assert_eq!(peer, friend.node_id()),
        other => panic!("expected the friend's Connected first, got {other:?}"),
    }
    assert_eq!(member.stats().network_refused, 1);
    assert_serves(&friend, &mut ef, &member, &mut em).await;
}

/// A server that accepts with the network's ALPN and hands over the first 33 bytes of the
/// dialer's first stream: a genuine member's proof, addressed to this attacker.
fn capturing_server(
    identity: &Identity,
    key: &NetworkKey,
) -> (quinn::Endpoint, tokio::sync::mpsc::Receiver<Vec<u8>>) {
    let cache = Arc::new(tls::VerifiedCertCache::default());
    let crypto = tls::server_config(
        tls::certified_key(identity).unwrap(),
        cache,
        &network_alpn(key),
    )
    .unwrap();
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(crypto).unwrap();
    let config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    let endpoint = quinn::Endpoint::server(config, "127.0.0.1:0".parse().unwrap()).unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let accepting = endpoint.clone();
    tokio::spawn(async move {
        if let Some(incoming) = accepting.accept().await {
            if let Ok(conn) = incoming.await {
                if let Ok(mut recv) = conn.accept_uni().await {
                    let mut buf = vec![0u8; 33];
                    if recv.read_exact(&mut buf).await.is_ok() {
                        let _ = tx.send(buf).await;
                    }
                }
                let _ = conn.closed().await;
            }
        }
    });
    (endpoint, rx)
}

#[tokio::test]
async fn a_proof_replayed_from_another_session_is_refused() {
    let key = NetworkKey::generate().unwrap();
    let (member, mut em) = keyed(&key);
    let (victim, _ev) = keyed(&key);
    // The attacker gets a genuine proof by letting a member dial it.
    let attacker = Identity::generate().unwrap();
    let (trap, mut captured) = capturing_server(&attacker, &key);
    let err = bounded(
        "victim dials the trap",
        victim.connect(attacker.node_id(), trap.local_addr().unwrap()),
    )
    .await
    .unwrap_err();
    // The trap cannot answer with a proof of its own: the victim gives up, clearly.
    assert!(
        matches!(
            err,
            ConnectError::NetworkKey {
                source: NetworkProofError::Missing(_),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(victim.connected_peers().is_empty());
    let proof = bounded("captured proof", captured.recv()).await.unwrap();
    assert_eq!(proof[0], 0xA5, "the first stream carries the proof");

    // Replayed in a new session to another member.
    let (endpoint, conn) = raw_member_impostor(&key, addr(&member)).await;
    let mut stream = conn.open_uni().await.unwrap();
    stream.write_all(&proof).await.unwrap();
    let _ = stream.finish();
    let (code, reason) = closed_by_server(&conn).await;
    assert_eq!(code, CloseCode::NetworkKey);
    assert!(reason.contains("wrong"), "{reason}");
    assert_eq!(member.stats().network_refused, 1);
    assert!(member.connected_peers().is_empty());
    endpoint.close(0u32.into(), b"");
    trap.close(0u32.into(), b"");
    let (friend, mut ef) = keyed(&key);
    assert_serves(&friend, &mut ef, &member, &mut em).await;
}

#[tokio::test]
async fn relayed_connections_inside_a_private_network_work() {
    let key = NetworkKey::generate().unwrap();
    let (a, mut ea) = keyed(&key);
    let (b, mut eb) = keyed(&key);
    let relay_key = key.clone();
    let (r, _er) = node_with(move |c| {
        c.network_key = Some(relay_key);
        c.relay.serve = true;
    });
    for n in [&a, &b] {
        bounded("to the relay", n.connect(r.node_id(), addr(&r)))
            .await
            .unwrap();
    }
    eventually("relay sees a and b", || r.connected_peers().len() == 2).await;
    // The end-to-end connection through the relay runs its own handshake and network proof.
    let path = bounded("relayed", a.connect_relayed(b.node_id(), r.node_id()))
        .await
        .unwrap();
    assert!(
        matches!(path, p2ps_transport::PathKind::Relayed { .. }),
        "{path:?}"
    );
    let hello = Msg::Text("through the relay".into());
    a.send(b.node_id(), StreamClass::User, &hello)
        .await
        .unwrap();
    assert_eq!(wait_message(&mut eb, a.node_id()).await.1, hello);
    b.send(a.node_id(), StreamClass::User, &hello)
        .await
        .unwrap();
    assert_eq!(wait_message(&mut ea, b.node_id()).await.1, hello);
    for n in [&a, &b, &r] {
        assert_eq!(n.stats().network_refused, 0);
    }
}
