//! Helpers shared by the integration tests: loopback nodes, bounded waits, rogue clients.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use p2ps_transport::tls::{self, PeerServerVerifier};
use p2ps_transport::{Event, Events, Identity, NodeId, Transport, TransportConfig};
use serde::{Deserialize, Serialize};

/// Upper bound for any single wait in a test.
pub const WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Msg {
    Text(String),
    Num(u64),
    Blob(Vec<u8>),
}

pub type Node = (Transport<Msg>, Events<Msg>);

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("P2PS_TEST_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

pub fn test_config() -> TransportConfig {
    let mut c = TransportConfig::new(
        Identity::generate().unwrap(),
        "127.0.0.1:0".parse().unwrap(),
    );
    c.keep_alive = Duration::from_millis(500);
    c.idle_timeout = Duration::from_secs(4);
    c.connect_timeout = Duration::from_secs(5);
    c.shutdown_timeout = Duration::from_secs(1);
    c
}

pub fn node() -> Node {
    init_tracing();
    Transport::bind(test_config()).unwrap()
}

pub fn node_with(f: impl FnOnce(&mut TransportConfig)) -> Node {
    init_tracing();
    let mut c = test_config();
    f(&mut c);
    Transport::bind(c).unwrap()
}

pub fn addr(t: &Transport<Msg>) -> SocketAddr {
    t.local_addr().unwrap()
}

/// Awaits `f`, failing the test after [`WAIT`].
pub async fn bounded<T>(what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// The first event matching `pred` (others are skipped), within [`WAIT`].
pub async fn wait_event(
    events: &mut Events<Msg>,
    what: &str,
    mut pred: impl FnMut(&Event<Msg>) -> bool,
) -> Event<Msg> {
    bounded(what, async {
        loop {
            match events.recv().await {
                Some(e) if pred(&e) => return e,
                Some(_) => continue,
                None => panic!("event stream ended while waiting for {what}"),
            }
        }
    })
    .await
}

/// Waits for the next `Message` from `from` and returns it.
pub async fn wait_message(
    events: &mut Events<Msg>,
    from: NodeId,
) -> (p2ps_transport::StreamClass, Msg) {
    match wait_event(
        events,
        "a message",
        |e| matches!(e, Event::Message { peer, .. } if *peer == from),
    )
    .await
    {
        Event::Message { class, msg, .. } => (class, msg),
        _ => unreachable!(),
    }
}

/// Polls `cond` every 20 ms until it holds, within [`WAIT`].
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    bounded(what, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// Checks that `a` and `b` can exchange a message both ways right now.
pub async fn assert_serves(
    a: &Transport<Msg>,
    ea: &mut Events<Msg>,
    b: &Transport<Msg>,
    eb: &mut Events<Msg>,
) {
    bounded("connect", a.connect(b.node_id(), addr(b)))
        .await
        .unwrap();
    let ping = Msg::Text(format!("ping {}", rand::random::<u64>()));
    a.send(b.node_id(), p2ps_transport::StreamClass::User, &ping)
        .await
        .unwrap();
    assert_eq!(wait_message(eb, a.node_id()).await.1, ping);
    let pong = Msg::Text(format!("pong {}", rand::random::<u64>()));
    b.send(a.node_id(), p2ps_transport::StreamClass::User, &pong)
        .await
        .unwrap();
    assert_eq!(wait_message(ea, b.node_id()).await.1, pong);
}

/// A bare quinn client endpoint on loopback with a hand-made rustls client configuration.
pub fn raw_client(crypto: rustls::ClientConfig) -> (quinn::Endpoint, quinn::ClientConfig) {
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(crypto).unwrap();
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    (endpoint, quinn::ClientConfig::new(Arc::new(quic)))
}

/// rustls client builder: TLS 1.3, any valid P2PS server accepted.
pub fn client_builder(
) -> rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert> {
    rustls::ClientConfig::builder_with_provider(tls::crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PeerServerVerifier::new(None)))
}

/// A client resolver presenting an arbitrary certificate with an arbitrary key (no consistency
/// check, unlike `with_client_auth_cert`).
#[derive(Debug)]
pub struct AnyCert(pub Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for AnyCert {
    fn resolve(
        &self,
        _: &[&[u8]],
        _: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
    fn has_certs(&self) -> bool {
        true
    }
}

/// A certified key made of `cert` and the signing key of `signer`.
pub fn certified(
    cert: rustls::pki_types::CertificateDer<'static>,
    signer: &Identity,
) -> Arc<rustls::sign::CertifiedKey> {
    let key = rustls::crypto::ring::sign::any_supported_type(&signer.private_key_der()).unwrap();
    Arc::new(rustls::sign::CertifiedKey::new(vec![cert], key))
}

/// A raw quinn client presenting a genuine P2PS certificate of `identity` (valid handshake).
pub fn genuine_raw_client(identity: &Identity) -> (quinn::Endpoint, quinn::ClientConfig) {
    let key = tls::certified_key(identity).unwrap();
    let crypto = tls::client_config(
        key,
        Arc::new(PeerServerVerifier::new(None)),
        p2ps_transport::ALPN,
    )
    .unwrap();
    raw_client(crypto)
}

/// A raw quinn client with a genuine P2PS identity, connected (handshake done) to `to`; it
/// answers nothing unless the test makes it.
pub async fn connected_raw_peer(
    to: &Transport<Msg>,
) -> (Identity, quinn::Endpoint, quinn::Connection) {
    let identity = Identity::generate().unwrap();
    let (endpoint, config) = genuine_raw_client(&identity);
    let conn = bounded(
        "raw handshake",
        endpoint.connect_with(config, addr(to), "p2ps").unwrap(),
    )
    .await
    .unwrap();
    (identity, endpoint, conn)
}
