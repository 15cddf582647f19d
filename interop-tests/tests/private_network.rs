//! Private networks with real `p2ps node` processes on loopback (issue #12, item 4).
//!
//! * `members_serve_and_outsiders_are_refused`: three nodes started with the same
//!   `--network-key` form a network and answer lookups correctly; a node without the key and one
//!   with another key fail to join with an error naming the network key (from the ticket's
//!   network name, before dialing), and so does a keyless node given a ticket without the name
//!   (it dials, and the handshake fails); the member it dialed logs the refusal and counts it,
//!   and the members keep serving. A node with the key fails likewise to join an open node,
//!   which logs the refusal too.
//! * `a_peer_without_the_proof_gets_nothing_processed`: a raw QUIC client with a fresh identity
//!   and the network's public name (its ALPN, which the ticket gives away) skips the proof: a
//!   garbage frame it sends is never read (no frame error counted), it never becomes a peer,
//!   and a connection that stays silent is closed within the proof deadline.
//!
//! Run with `P2PS_BIN=$PWD/target/debug/p2ps cargo test -p p2ps-interop-tests --test
//! private_network`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use p2ps_interop_tests::hostile::address_of;
use p2ps_interop_tests::p2ps::{Identity, Ticket};
use p2ps_interop_tests::{
    check_lookups, random_keys, run_p2ps, wait_for, wait_ring, NodeProc, Start, TestNet, FAST,
};
use p2ps_transport::{quinn, tls, CloseCode, StreamClass, PROTOCOL_VERSION};
use std::sync::Arc;
use std::time::{Duration, Instant};

const JOIN_WAIT: Duration = Duration::from_secs(30);
/// `TransportConfig::network_proof_timeout`'s default, which `p2ps node` keeps.
const PROOF_TIMEOUT: Duration = Duration::from_secs(3);

/// Makes a network key file in the test's directory; returns its path and public name.
fn network_key(net: &TestNet, name: &str) -> (String, String) {
    let path = net.path().join(name);
    let path = path.to_string_lossy().into_owned();
    let out = run_p2ps(&["network-key", "new", &path], Duration::from_secs(10));
    assert!(out.status.success(), "p2ps network-key new: {out:?}");
    let out = run_p2ps(&["network-key", "name", &path], Duration::from_secs(10));
    assert!(out.status.success(), "p2ps network-key name: {out:?}");
    let name = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(name.len(), 16, "{name:?}");
    (path, name)
}

fn args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = FAST.to_vec();
    v.extend_from_slice(extra);
    v
}

/// The node fails to start (exit status not 0) within `timeout`; its stderr.
fn fails(node: &mut NodeProc, timeout: Duration) -> String {
    let status = node.wait_exit(timeout);
    let err = node.stderr();
    assert!(
        !status.success(),
        "the outsider should have failed\n{}",
        node.describe()
    );
    err
}

fn counter(node: &mut NodeProc, name: &str) -> u64 {
    let s = node.status();
    let v = serde_json::to_value(s.counters).expect("counters as JSON");
    v.get(name)
        .and_then(serde_json::Value::as_u64)
        .unwrap_or_else(|| panic!("no counter {name} in {v}"))
}

#[test]
fn members_serve_and_outsiders_are_refused() {
    let net = TestNet::new();
    let (key, name) = network_key(&net, "net.key");
    let (other, other_name) = network_key(&net, "other.key");
    let member_args = args(&["--network-key", &key]);
    let mut nodes = net.spawn_network(3, &member_args, JOIN_WAIT);
    let ticket = nodes[0].wait_ticket(JOIN_WAIT);
    let parsed: Ticket = ticket.parse().expect("the member's ticket");
    assert_eq!(parsed.network.map(|n| n.to_string()), Some(name.clone()));
    {
        let mut refs: Vec<&mut NodeProc> = nodes.iter_mut().collect();
        wait_ring(&mut refs, JOIN_WAIT);
        check_lookups(&mut refs, &random_keys(40));
    }
    let handshakes_before = counter(&mut nodes[0], "handshakes_failed");

    // No key, and another key: refused from the ticket, before any dial.
    let mut keyless = net.spawn("keyless", Start::Join(ticket.clone()), FAST);
    let err = fails(&mut keyless, JOIN_WAIT);
    assert!(
        err.contains(&format!("private network {name}")) && err.contains("--network-key"),
        "{err}"
    );
    let mut stranger = net.spawn(
        "stranger",
        Start::Join(ticket.clone()),
        &args(&["--network-key", &other]),
    );
    let err = fails(&mut stranger, JOIN_WAIT);
    assert!(
        err.contains(&format!(
            "this ticket is for private network {name}, but this node's network key is for \
             private network {other_name}"
        )),
        "{err}"
    );

    // No key and a ticket without the network's name: the dial itself is refused, clearly, on
    // both sides.
    let bare = parsed.clone().with_network(None).to_string();
    let mut blind = net.spawn(
        "blind",
        Start::Join(bare),
        &args(&["--join-attempts", "2", "--join-timeout-ms", "1000"]),
    );
    let err = fails(&mut blind, JOIN_WAIT);
    eprintln!("a keyless node dialing a member:\n{err}");
    assert!(
        err.contains("private network") && err.contains("--network-key"),
        "{err}"
    );
    let member = &mut nodes[0];
    let logged = wait_for(Duration::from_secs(10), || {
        let e = member.stderr();
        e.contains("refused a connection from outside this node's network")
            .then_some(e)
    });
    if let Some(e) = &logged {
        eprintln!("the member's log:\n{e}");
    }
    assert!(
        logged.is_some(),
        "the member logged no refusal:\n{}",
        member.stderr()
    );
    assert!(counter(member, "handshakes_failed") > handshakes_before);

    // With the key, towards an open network: refused from the ticket; and, given a ticket
    // that claims the network, by the open node's handshake, clearly on both sides.
    let mut open = net.spawn("open", Start::Create, FAST);
    let open_ticket: Ticket = open.wait_ticket(JOIN_WAIT).parse().expect("a ticket");
    assert_eq!(open_ticket.network, None);
    let mut lost = net.spawn(
        "lost",
        Start::Join(open_ticket.to_string()),
        &args(&["--network-key", &key]),
    );
    let err = fails(&mut lost, JOIN_WAIT);
    assert!(
        err.contains(&format!(
            "this ticket is for an open network, but this node has the network key of private \
             network {name}"
        )),
        "{err}"
    );
    let claimed = open_ticket.with_network(parsed.network).to_string();
    let mut misled = net.spawn(
        "misled",
        Start::Join(claimed),
        &args(&[
            "--network-key",
            &key,
            "--join-attempts",
            "2",
            "--join-timeout-ms",
            "1000",
        ]),
    );
    let err = fails(&mut misled, JOIN_WAIT);
    assert!(
        err.contains(&format!("is not in private network {name}")),
        "{err}"
    );
    let logged = wait_for(Duration::from_secs(10), || {
        let e = open.stderr();
        (e.contains("refused a connection from outside this node's network")
            && e.contains("open network (no network key)"))
        .then_some(())
    });
    assert!(
        logged.is_some(),
        "the open node logged no refusal:\n{}",
        open.stderr()
    );

    // The members never saw the outsiders as peers and keep serving.
    let outsiders = [
        keyless.id(),
        stranger.id(),
        blind.id(),
        lost.id(),
        misled.id(),
    ];
    for n in nodes.iter_mut() {
        let s = n.status();
        assert!(
            s.connections.iter().all(|c| !outsiders.contains(&c.node)),
            "an outsider is connected to {}",
            s.id.short()
        );
    }
    let mut refs: Vec<&mut NodeProc> = nodes.iter_mut().collect();
    check_lookups(&mut refs, &random_keys(40));
}

/// A raw client that knows the network's public name but not its key, connected (handshake
/// done) to `ticket`'s node.
fn impostor(
    rt: &tokio::runtime::Runtime,
    ticket: &Ticket,
    addr: std::net::SocketAddr,
) -> (quinn::Endpoint, quinn::Connection) {
    let identity = Identity::generate().expect("a fresh identity");
    let alpn = tls::alpn_for_network(PROTOCOL_VERSION, ticket.network);
    let crypto = tls::client_config(
        tls::certified_key(&identity).expect("a certificate"),
        Arc::new(tls::PeerServerVerifier::new(Some(ticket.id))),
        &alpn,
    )
    .expect("a client configuration");
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(crypto).expect("QUIC crypto");
    let client = quinn::ClientConfig::new(Arc::new(quic));
    rt.block_on(async {
        let endpoint =
            quinn::Endpoint::client("127.0.0.1:0".parse().expect("an address")).expect("bind");
        let connecting = endpoint
            .connect_with(client, addr, tls::SERVER_NAME)
            .expect("dial");
        let conn = tokio::time::timeout(Duration::from_secs(5), connecting)
            .await
            .expect("handshake within 5 s")
            .expect("the handshake itself succeeds: the network name is public");
        (endpoint, conn)
    })
}

/// How the member closed `conn`, within `within`.
fn closed(
    rt: &tokio::runtime::Runtime,
    conn: &quinn::Connection,
    within: Duration,
) -> (CloseCode, String) {
    rt.block_on(async {
        match tokio::time::timeout(within, conn.closed()).await {
            Ok(quinn::ConnectionError::ApplicationClosed(a)) => (
                CloseCode::from_u64(a.error_code.into_inner()),
                String::from_utf8_lossy(&a.reason).into_owned(),
            ),
            Ok(other) => panic!("closed otherwise: {other}"),
            Err(_) => panic!("the member kept the connection for {within:?}"),
        }
    })
}

#[test]
fn a_peer_without_the_proof_gets_nothing_processed() {
    let net = TestNet::new();
    let (key, _) = network_key(&net, "net.key");
    let mut member = net.spawn("member", Start::Create, &args(&["--network-key", &key]));
    let ticket: Ticket = member
        .wait_ticket(JOIN_WAIT)
        .parse()
        .expect("the member's ticket");
    let (_, addr) = address_of(&member).expect("the member's address");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");

    // A frame instead of the proof: it would count as a frame error if it were ever read.
    let (endpoint, conn) = impostor(&rt, &ticket, addr);
    rt.block_on(async {
        let mut s = conn.open_uni().await.expect("a stream");
        let mut bytes = vec![StreamClass::Routing.tag()];
        bytes.extend_from_slice(&8u32.to_be_bytes());
        bytes.extend_from_slice(&[0xff; 8]);
        s.write_all(&bytes).await.expect("written");
        let _ = s.finish();
    });
    let (code, reason) = closed(&rt, &conn, PROOF_TIMEOUT * 2);
    assert_eq!(code, CloseCode::NetworkKey, "{reason}");
    assert!(reason.contains("not a network proof"), "{reason}");
    endpoint.close(0u32.into(), b"");

    // Silence: closed once the proof deadline passes.
    let start = Instant::now();
    let (endpoint, conn) = impostor(&rt, &ticket, addr);
    let (code, reason) = closed(&rt, &conn, PROOF_TIMEOUT * 3);
    let took = start.elapsed();
    assert_eq!(code, CloseCode::NetworkKey, "{reason}");
    assert!(reason.contains("no network proof"), "{reason}");
    assert!(
        took >= PROOF_TIMEOUT - Duration::from_millis(200) && took < PROOF_TIMEOUT * 2,
        "closed after {took:?}"
    );
    endpoint.close(0u32.into(), b"");

    assert_eq!(counter(&mut member, "frame_errors"), 0);
    assert!(counter(&mut member, "handshakes_failed") >= 2);
    assert!(member.status().connections.is_empty());
    assert!(member.try_exit().is_none(), "the member must keep running");
}
