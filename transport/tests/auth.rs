//! Authentication: the peer must prove the node id we dial, impostors and malformed clients are
//! refused with clear errors, and the node keeps serving good peers after every refusal.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::*;
use p2ps_transport::tls::{self, PeerServerVerifier};
use p2ps_transport::{ConnectError, Event, Events, Identity, Transport, ALPN};
use rcgen::{CertificateParams, DnType, Issuer, KeyPair, PKCS_ED25519};
use rustls::pki_types::CertificateDer;

/// Runs a raw client handshake against `server` and returns whether the server let it through
/// (a client may finish its side of the handshake before the server refuses its certificate, so
/// "refused" means: the connection failed or was closed by the server with a TLS error).
async fn raw_handshake_refused(
    (endpoint, config): (quinn::Endpoint, quinn::ClientConfig),
    server: std::net::SocketAddr,
) -> quinn::ConnectionError {
    let connecting = endpoint.connect_with(config, server, "p2ps").unwrap();
    let err = match bounded("raw handshake", connecting).await {
        Err(e) => e,
        Ok(conn) => bounded("server refusal", conn.closed()).await,
    };
    endpoint.close(0u32.into(), b"");
    err
}

fn is_tls_alert(err: &quinn::ConnectionError, alert: u8) -> bool {
    match err {
        quinn::ConnectionError::ConnectionClosed(c) => {
            c.error_code == quinn::TransportErrorCode::crypto(alert)
        }
        _ => false,
    }
}

/// `server` counted `failures` refused handshakes, holds no connection from them, and still
/// serves a genuine node.
async fn refused_then_serves(server: &Transport<Msg>, es: &mut Events<Msg>, failures: u64) {
    eventually("handshake failures counted", || {
        server.stats().handshakes_failed == failures
    })
    .await;
    assert!(server.connected_peers().is_empty());
    let (good, mut eg) = node();
    assert_serves(&good, &mut eg, server, es).await;
}

#[tokio::test]
async fn dialing_the_wrong_node_id_is_a_typed_error() {
    let (a, mut ea) = node();
    let (b, mut eb) = node();
    let someone_else = Identity::generate().unwrap().node_id();
    match bounded("connect", a.connect(someone_else, addr(&b))).await {
        Err(ConnectError::PeerIdMismatch {
            addr: at,
            expected,
            actual,
        }) => {
            assert_eq!(at, addr(&b));
            assert_eq!(expected, someone_else);
            assert_eq!(actual, b.node_id());
        }
        other => panic!("expected PeerIdMismatch, got {other:?}"),
    }
    assert!(a.connected_peers().is_empty());
    assert!(b.connected_peers().is_empty());
    assert_serves(&a, &mut ea, &b, &mut eb).await;
}

#[tokio::test]
async fn client_without_certificate_is_refused() {
    let (server, mut es) = node();
    let crypto = {
        let mut c = client_builder().with_no_client_auth();
        c.alpn_protocols = vec![ALPN.to_vec()];
        c
    };
    let err = raw_handshake_refused(raw_client(crypto), addr(&server)).await;
    // TLS 1.3 alert 116: certificate_required.
    assert!(is_tls_alert(&err, 116), "unexpected error {err:?}");
    refused_then_serves(&server, &mut es, 1).await;
}

#[tokio::test]
async fn wrong_alpn_is_refused() {
    let (server, mut es) = node();
    let me = Identity::generate().unwrap();
    for alpn in [vec![b"h3".to_vec()], vec![b"p2ps/999".to_vec()], vec![]] {
        let key = tls::certified_key(&me).unwrap();
        let mut crypto = client_builder().with_client_cert_resolver(Arc::new(AnyCert(key)));
        crypto.alpn_protocols = alpn.clone();
        let err = raw_handshake_refused(raw_client(crypto), addr(&server)).await;
        // Alert 120: no_application_protocol.
        assert!(
            is_tls_alert(&err, 120),
            "ALPN {alpn:?}: unexpected error {err:?}"
        );
    }
    refused_then_serves(&server, &mut es, 3).await;
}

#[tokio::test]
async fn other_protocol_version_is_refused_with_a_clear_error() {
    let (server, mut es) = node();
    let (newer, _en) = node_with(|c| c.protocol_version = p2ps_transport::PROTOCOL_VERSION + 1);
    let err = bounded("dial", newer.connect(server.node_id(), addr(&server)))
        .await
        .unwrap_err();
    match &err {
        ConnectError::Protocol {
            protocol, reason, ..
        } => {
            let theirs = format!("p2ps/{}", p2ps_transport::PROTOCOL_VERSION + 1);
            assert_eq!(protocol, &theirs);
            assert!(reason.contains("protocol version"), "{reason}");
        }
        other => panic!("expected a protocol error, got {other:?}"),
    }
    assert!(server.connected_peers().is_empty());
    let (good, mut eg) = node();
    assert_serves(&good, &mut eg, &server, &mut es).await;
}

#[tokio::test]
async fn garbled_certificate_is_refused() {
    let (server, mut es) = node();
    let me = Identity::generate().unwrap();
    let mut garbage = tls::self_signed_certificate(&me).unwrap().to_vec();
    let mid = garbage.len() / 2;
    for b in &mut garbage[mid..mid + 16] {
        *b ^= 0x5a;
    }
    for cert in [
        garbage,
        vec![0x30, 0x00],
        b"not a certificate at all".to_vec(),
    ] {
        let mut crypto = client_builder().with_client_cert_resolver(Arc::new(AnyCert(certified(
            CertificateDer::from(cert),
            &me,
        ))));
        crypto.alpn_protocols = vec![ALPN.to_vec()];
        let err = raw_handshake_refused(raw_client(crypto), addr(&server)).await;
        // 42 bad_certificate / 50 decode_error / 51 decrypt_error, all TLS alerts.
        assert!(
            [42, 50, 51].iter().any(|a| is_tls_alert(&err, *a)),
            "unexpected error {err:?}"
        );
    }
    refused_then_serves(&server, &mut es, 3).await;
}

/// A certificate carrying the victim's public key, with a valid-looking structure but signed by
/// the attacker (who does not have the victim's key).
fn forged_certificate(victim: &Identity, attacker: &KeyPair) -> CertificateDer<'static> {
    let mut params = CertificateParams::new(vec!["p2ps".to_string()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "p2ps node");
    let issuer = Issuer::from_params(&params, attacker);
    params
        .signed_by(&PublicOnly(*victim.public_key()), &issuer)
        .unwrap()
        .der()
        .clone()
}

/// Just an Ed25519 public key, as an attacker would know it.
struct PublicOnly([u8; 32]);

impl rcgen::PublicKeyData for PublicOnly {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &PKCS_ED25519
    }
}

#[tokio::test]
async fn impostor_client_with_forged_certificate_is_refused() {
    // The victim is a real node; the attacker only knows its public key.
    let (server, mut es) = node();
    let target = Identity::generate().unwrap();
    let (victim, mut ev) = node_with(|c| c.identity = target.clone());
    let attacker = Identity::generate().unwrap();
    let attacker_key = KeyPair::generate_for(&PKCS_ED25519).unwrap();
    let forged = forged_certificate(&target, &attacker_key);
    assert!(
        tls::verify_peer_certificate(&forged, &[], rustls::pki_types::UnixTime::now()).is_err()
    );

    // 1. Forged self-signature, handshake signed by the attacker's key.
    let mut crypto = client_builder()
        .with_client_cert_resolver(Arc::new(AnyCert(certified(forged.clone(), &attacker))));
    crypto.alpn_protocols = vec![ALPN.to_vec()];
    let err = raw_handshake_refused(raw_client(crypto), addr(&server)).await;
    assert!(
        is_tls_alert(&err, 42) || is_tls_alert(&err, 51),
        "unexpected {err:?}"
    );

    // 2. The victim's genuine certificate, but the handshake signed with the attacker's key.
    let genuine = tls::self_signed_certificate(&target).unwrap();
    let mut crypto = client_builder()
        .with_client_cert_resolver(Arc::new(AnyCert(certified(genuine, &attacker))));
    crypto.alpn_protocols = vec![ALPN.to_vec()];
    let err = raw_handshake_refused(raw_client(crypto), addr(&server)).await;
    // 51 decrypt_error (bad CertificateVerify signature) or 42 bad_certificate.
    assert!(
        is_tls_alert(&err, 51) || is_tls_alert(&err, 42),
        "unexpected {err:?}"
    );

    eventually("handshake failures counted", || {
        server.stats().handshakes_failed == 2
    })
    .await;
    assert!(server.connected_peers().is_empty());
    assert_serves(&victim, &mut ev, &server, &mut es).await;
}

/// A fake server presenting `cert` and signing the handshake with `signer`.
fn fake_server(cert: CertificateDer<'static>, signer: &Identity) -> quinn::Endpoint {
    let key = certified(cert, signer);
    let mut crypto = rustls::ServerConfig::builder_with_provider(tls::crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(key)));
    crypto.alpn_protocols = vec![ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(crypto).unwrap();
    let config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    let endpoint = quinn::Endpoint::server(config, "127.0.0.1:0".parse().unwrap()).unwrap();
    let accepting = endpoint.clone();
    tokio::spawn(async move {
        while let Some(incoming) = accepting.accept().await {
            tokio::spawn(async move {
                if let Ok(conn) = incoming.await {
                    let _ = conn.closed().await;
                }
            });
        }
    });
    endpoint
}

#[tokio::test]
async fn impostor_server_is_refused_by_the_dialer() {
    let (a, mut ea) = node();
    let victim = Identity::generate().unwrap();
    let attacker = Identity::generate().unwrap();

    // Genuine victim certificate, attacker's key: the handshake signature does not verify.
    let fake = fake_server(tls::self_signed_certificate(&victim).unwrap(), &attacker);
    let at = fake.local_addr().unwrap();
    match bounded("connect", a.connect(victim.node_id(), at)).await {
        Err(ConnectError::BadPeerCertificate { addr, reason }) => {
            assert_eq!(addr, at);
            assert!(!reason.is_empty());
        }
        other => panic!("expected BadPeerCertificate, got {other:?}"),
    }

    // Forged certificate with the victim's key and a bad self-signature.
    let attacker_key = KeyPair::generate_for(&PKCS_ED25519).unwrap();
    let fake2 = fake_server(forged_certificate(&victim, &attacker_key), &attacker);
    let at2 = fake2.local_addr().unwrap();
    match bounded("connect", a.connect(victim.node_id(), at2)).await {
        Err(ConnectError::BadPeerCertificate { addr, reason }) => {
            assert_eq!(addr, at2);
            assert!(reason.contains("ignature"), "reason: {reason}");
        }
        other => panic!("expected BadPeerCertificate, got {other:?}"),
    }
    assert!(a.connected_peers().is_empty());
    assert!(a.stats().dials_failed >= 2);
    // Each failed dial is also reported as an event.
    wait_event(&mut ea, "DialFailed", |e| {
        matches!(e, Event::DialFailed { .. })
    })
    .await;

    let (good, mut eg) = node();
    assert_serves(&a, &mut ea, &good, &mut eg).await;
    fake.close(0u32.into(), b"");
    fake2.close(0u32.into(), b"");
}

#[tokio::test]
async fn verifier_with_expected_id_accepts_the_right_node() {
    // The public verifier building blocks work for a genuine raw client too.
    let (server, mut es) = node();
    let me = Identity::generate().unwrap();
    let (endpoint, config) = genuine_raw_client(&me);
    let conn = bounded(
        "raw handshake",
        endpoint
            .connect_with(config, addr(&server), "p2ps")
            .unwrap(),
    )
    .await
    .unwrap();
    match wait_event(&mut es, "Connected", |e| {
        matches!(e, Event::Connected { .. })
    })
    .await
    {
        Event::Connected { peer, outbound, .. } => {
            assert_eq!(peer, me.node_id());
            assert!(!outbound);
        }
        _ => unreachable!(),
    }
    let _ = PeerServerVerifier::new(Some(server.node_id()));
    conn.close(0u32.into(), b"done");
    endpoint.close(0u32.into(), b"");
}
