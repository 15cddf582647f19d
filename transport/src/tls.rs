//! TLS 1.3 with self-signed Ed25519 certificates: how a peer proves its [`NodeId`].
//!
//! There is no certificate authority in a peer-to-peer network, so the usual WebPKI chain
//! validation does not apply. Instead each node presents a self-signed certificate made from its
//! node key, and both sides (mutual authentication) check, in their own verifiers:
//!
//! 1. exactly one certificate, no intermediates;
//! 2. it parses as X.509 with nothing after it, and has no unknown critical extension;
//! 3. its public key is Ed25519 and it is signed with Ed25519;
//! 4. it is self-issued and its self-signature verifies with its own key;
//! 5. the current time is inside its validity period;
//! 6. the TLS 1.3 handshake signature verifies with that key (this is what proves the peer holds
//!    the private key; a copied certificate without the key fails here). TLS 1.2 is refused.
//!
//! The peer's node id is then the SHA-256 of the certificate's public key. A dialer also checks
//! that this id is the one it wanted to reach, inside the handshake, so a wrong peer never gets
//! past the handshake ([`crate::ConnectError::PeerIdMismatch`]).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use rcgen::{CertificateParams, DnType, KeyUsagePurpose};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use sha2::{Digest, Sha256};
use x509_parser::extensions::ParsedExtension;
use x509_parser::oid_registry::OID_SIG_ED25519;

use crate::error::PeerCertificateError;
use crate::identity::{Identity, NodeId};

/// Protocol version carried in the ALPN identifier.
pub const PROTOCOL_VERSION: u32 = 3;

/// ALPN protocol identifier of P2PS version [`PROTOCOL_VERSION`]. A peer that does not offer it
/// is refused during the handshake.
pub const ALPN: &[u8] = b"p2ps/3";

/// [`ALPN`] as text, for messages.
pub const ALPN_STR: &str = "p2ps/3";

/// The TLS server name a dialer sends. The peer's identity is checked against the node id, not a
/// name, so this is a constant (and it is not sent at all: SNI is disabled).
pub const SERVER_NAME: &str = "p2ps";

/// How long a node certificate is valid after start-up. A new one is made at every start.
pub const CERT_LIFETIME: std::time::Duration = std::time::Duration::from_secs(10 * 365 * 24 * 3600);

/// How far back a new certificate's validity starts, to tolerate peers whose clocks are behind.
pub const CERT_BACKDATE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// The only signature algorithm P2PS accepts (handshake and certificates).
static ED25519_ONLY: WebPkiSupportedAlgorithms = WebPkiSupportedAlgorithms {
    all: &[webpki::ring::ED25519],
    mapping: &[(SignatureScheme::ED25519, &[webpki::ring::ED25519])],
};

/// The rustls crypto provider used by P2PS (ring), built once.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// Makes the self-signed certificate of `identity`, valid from [`CERT_BACKDATE`] ago for
/// [`CERT_LIFETIME`]. Its DNS name is derived from the node id (informational only). Its serial
/// number is random, so that two processes holding the same key present different
/// certificates: a peer tells a second connection of the same process (a simultaneous dial)
/// from one of another process with this key (a restart, or the key in use twice).
pub fn self_signed_certificate(
    identity: &Identity,
) -> Result<CertificateDer<'static>, rcgen::Error> {
    let hex = identity.node_id().to_string();
    // DNS labels are at most 63 characters: split the 64 hex digits in two labels.
    let name = format!("{}.{}.p2ps", &hex[..32], &hex[32..]);
    let mut params = CertificateParams::new(vec![name])?;
    params.distinguished_name.push(
        DnType::CommonName,
        format!("p2ps node {}", identity.node_id().short()),
    );
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    // Positive and at most 20 bytes (RFC 5280).
    let mut serial: [u8; 16] = ring::rand::generate(&ring::rand::SystemRandom::new())
        .map_err(|_| rcgen::Error::RingUnspecified)?
        .expose();
    serial[0] = (serial[0] & 0x7f) | 0x01;
    params.serial_number = Some(serial.to_vec().into());
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - CERT_BACKDATE;
    params.not_after = now + CERT_LIFETIME;
    let cert = params.self_signed(identity.key_pair())?;
    Ok(cert.der().clone())
}

/// The certificate and signing key rustls presents for `identity`.
pub fn certified_key(identity: &Identity) -> Result<Arc<CertifiedKey>, CertifiedKeyError> {
    let cert = self_signed_certificate(identity).map_err(|e| CertifiedKeyError(e.to_string()))?;
    let provider = crypto_provider();
    let key = CertifiedKey::from_der(vec![cert], identity.private_key_der(), &provider)
        .map_err(|e| CertifiedKeyError(e.to_string()))?;
    Ok(Arc::new(key))
}

/// Making the node certificate failed (reason from rcgen or rustls).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct CertifiedKeyError(pub String);

/// Checks a peer certificate as described in the module documentation (steps 1 to 5) and returns
/// the peer's node id.
pub fn verify_peer_certificate(
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
) -> Result<NodeId, PeerCertificateError> {
    if !intermediates.is_empty() {
        return Err(PeerCertificateError::IntermediatesNotAllowed(
            intermediates.len(),
        ));
    }
    let checked = check_certificate(end_entity)?;
    checked.valid_at(now)?;
    Ok(checked.node_id)
}

/// What a successful structural check of a certificate established.
#[derive(Debug, Clone, Copy)]
struct Checked {
    node_id: NodeId,
    not_before: i64,
    not_after: i64,
}

impl Checked {
    fn valid_at(&self, now: UnixTime) -> Result<(), PeerCertificateError> {
        let t = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        if t < self.not_before || t > self.not_after {
            return Err(PeerCertificateError::Expired {
                not_before: self.not_before,
                not_after: self.not_after,
                now: t,
            });
        }
        Ok(())
    }
}

/// Steps 2 to 4 of the module documentation, and the validity window (checked by the caller).
fn check_certificate(end_entity: &CertificateDer<'_>) -> Result<Checked, PeerCertificateError> {
    let (rest, cert) = x509_parser::parse_x509_certificate(end_entity.as_ref())
        .map_err(|e| PeerCertificateError::Unparsable(e.to_string()))?;
    if !rest.is_empty() {
        return Err(PeerCertificateError::TrailingData);
    }
    let key = ed25519_key(&cert)?;
    if cert.signature_algorithm.algorithm != OID_SIG_ED25519
        || cert.tbs_certificate.signature.algorithm != OID_SIG_ED25519
    {
        return Err(PeerCertificateError::NotEd25519Signature);
    }
    if cert.issuer().as_raw() != cert.subject().as_raw() {
        return Err(PeerCertificateError::NotSelfIssued);
    }
    webpki::ring::ED25519
        .verify_signature(
            &key,
            cert.tbs_certificate.as_ref(),
            &cert.signature_value.data,
        )
        .map_err(|_| PeerCertificateError::BadSelfSignature)?;
    let validity = cert.validity();
    let (not_before, not_after) = (
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    );
    for ext in cert.extensions() {
        if ext.critical
            && matches!(
                ext.parsed_extension(),
                ParsedExtension::UnsupportedExtension { .. } | ParsedExtension::ParseError { .. }
            )
        {
            return Err(PeerCertificateError::UnsupportedCriticalExtension);
        }
    }
    Ok(Checked {
        node_id: NodeId::from_public_key(&key),
        not_before,
        not_after,
    })
}

/// Certificates already found well-formed and correctly self-signed, by SHA-256 of their DER
/// bytes, so that reconnecting to a known peer does not verify the same self-signature again
/// (an Ed25519 verification is the most expensive step after the key exchange). Only
/// byte-identical certificates hit; the validity window, and the TLS handshake signature that
/// proves possession of the key, are still checked on every handshake. Bounded; the oldest entry
/// is forgotten first.
pub struct VerifiedCertCache {
    inner: Mutex<CacheInner>,
    capacity: usize,
}

#[derive(Default)]
struct CacheInner {
    map: HashMap<[u8; 32], Checked>,
    order: VecDeque<[u8; 32]>,
}

impl VerifiedCertCache {
    /// A cache remembering up to `capacity` certificates.
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(CacheInner::default()),
            capacity: capacity.max(1),
        }
    }

    /// [`verify_peer_certificate`], with the structural checks and the self-signature
    /// remembered per certificate.
    pub fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<NodeId, PeerCertificateError> {
        if !intermediates.is_empty() {
            return Err(PeerCertificateError::IntermediatesNotAllowed(
                intermediates.len(),
            ));
        }
        let key: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        let cached = self.lock().map.get(&key).copied();
        let checked = match cached {
            Some(c) => c,
            None => {
                let c = check_certificate(end_entity)?;
                let mut inner = self.lock();
                if inner.map.insert(key, c).is_none() {
                    inner.order.push_back(key);
                }
                while inner.map.len() > self.capacity {
                    match inner.order.pop_front() {
                        Some(old) => {
                            inner.map.remove(&old);
                        }
                        None => break,
                    }
                }
                c
            }
        };
        checked.valid_at(now)?;
        Ok(checked.node_id)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Default for VerifiedCertCache {
    fn default() -> Self {
        Self::new(1024)
    }
}

impl fmt::Debug for VerifiedCertCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifiedCertCache")
            .field("len", &self.lock().map.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

/// The node id of the holder of an (already verified) certificate.
pub fn node_id_from_certificate(cert: &CertificateDer<'_>) -> Result<NodeId, PeerCertificateError> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| PeerCertificateError::Unparsable(e.to_string()))?;
    Ok(NodeId::from_public_key(&ed25519_key(&cert)?))
}

fn ed25519_key(
    cert: &x509_parser::certificate::X509Certificate<'_>,
) -> Result<[u8; 32], PeerCertificateError> {
    let spki = cert.public_key();
    if spki.algorithm.algorithm != OID_SIG_ED25519 || spki.subject_public_key.unused_bits != 0 {
        return Err(PeerCertificateError::NotEd25519Key);
    }
    spki.subject_public_key
        .data
        .as_ref()
        .try_into()
        .map_err(|_| PeerCertificateError::NotEd25519Key)
}

fn cert_error(e: PeerCertificateError) -> rustls::Error {
    use rustls::CertificateError as C;
    rustls::Error::InvalidCertificate(match e {
        PeerCertificateError::Unparsable(_) | PeerCertificateError::TrailingData => C::BadEncoding,
        PeerCertificateError::Expired { .. } => C::Expired,
        PeerCertificateError::BadSelfSignature => C::BadSignature,
        other => C::Other(rustls::OtherError(Arc::new(other))),
    })
}

/// The error a dialer's verifier reports when the peer proves another node id.
#[derive(Debug, Clone, thiserror::Error)]
#[error("peer is {actual}, expected {expected}")]
pub struct UnexpectedPeer {
    /// The node id dialed.
    pub expected: NodeId,
    /// The node id the certificate belongs to.
    pub actual: NodeId,
}

fn verify_tls13(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    if dss.scheme != SignatureScheme::ED25519 {
        return Err(rustls::PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme.into());
    }
    rustls::crypto::verify_tls13_signature(message, cert, dss, &ED25519_ONLY)
}

fn refuse_tls12() -> Result<HandshakeSignatureValid, rustls::Error> {
    Err(rustls::Error::PeerIncompatible(
        rustls::PeerIncompatible::Tls13RequiredForQuic,
    ))
}

/// Verifies the certificate of the node we dial (the TLS server), and that it is the node we
/// meant to reach.
pub struct PeerServerVerifier {
    expected: Option<NodeId>,
    observed: Arc<OnceLock<NodeId>>,
    cache: Arc<VerifiedCertCache>,
}

impl PeerServerVerifier {
    /// A verifier accepting any valid P2PS certificate whose node id is `expected` (or any node
    /// id when `None`). The id actually seen is recorded in [`Self::observed`].
    pub fn new(expected: Option<NodeId>) -> Self {
        Self::with_cache(expected, Arc::new(VerifiedCertCache::new(1)))
    }

    /// Like [`Self::new`], sharing a cache of verified certificates.
    pub fn with_cache(expected: Option<NodeId>, cache: Arc<VerifiedCertCache>) -> Self {
        Self {
            expected,
            observed: Arc::new(OnceLock::new()),
            cache,
        }
    }

    /// Where the verifier records the node id of the certificate it checked.
    pub fn observed(&self) -> Arc<OnceLock<NodeId>> {
        self.observed.clone()
    }
}

impl fmt::Debug for PeerServerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerServerVerifier")
            .field("expected", &self.expected)
            .finish()
    }
}

impl ServerCertVerifier for PeerServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let actual = self
            .cache
            .verify(end_entity, intermediates, now)
            .map_err(cert_error)?;
        let _ = self.observed.set(actual);
        match self.expected {
            Some(expected) if expected != actual => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Other(rustls::OtherError(Arc::new(UnexpectedPeer {
                    expected,
                    actual,
                }))),
            )),
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        refuse_tls12()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// Verifies the certificate of a node that dials us (the TLS client). A certificate is mandatory.
#[derive(Debug, Default)]
pub struct PeerClientVerifier {
    cache: Arc<VerifiedCertCache>,
}

impl PeerClientVerifier {
    /// A verifier sharing a cache of verified certificates.
    pub fn with_cache(cache: Arc<VerifiedCertCache>) -> Self {
        Self { cache }
    }
}

impl ClientCertVerifier for PeerClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.cache
            .verify(end_entity, intermediates, now)
            .map_err(cert_error)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        refuse_tls12()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// The ALPN identifier of protocol version `version` (`p2ps/<version>`).
pub fn alpn_for(version: u32) -> Vec<u8> {
    format!("p2ps/{version}").into_bytes()
}

/// The ALPN identifier of protocol version `version` in an open network (`p2ps/<version>`,
/// `network` `None`) or in the private network named `network`
/// (`p2ps/<version>/net-<name>`), so that nodes of different networks fail in the handshake.
pub fn alpn_for_network(version: u32, network: Option<crate::NetworkName>) -> Vec<u8> {
    match network {
        None => alpn_for(version),
        Some(name) => format!("p2ps/{version}/net-{name}").into_bytes(),
    }
}

/// The rustls server configuration of a node: TLS 1.3 only, ALPN `alpn` (normally [`ALPN`]), mandatory client
/// certificates checked by [`PeerClientVerifier`], no session resumption (every connection
/// proves its identity afresh).
pub fn server_config(
    key: Arc<CertifiedKey>,
    cache: Arc<VerifiedCertCache>,
    alpn: &[u8],
) -> Result<rustls::ServerConfig, rustls::Error> {
    let mut config = rustls::ServerConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(PeerClientVerifier::with_cache(cache)))
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(key)));
    config.alpn_protocols = vec![alpn.to_vec()];
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    config.max_early_data_size = 0;
    Ok(config)
}

/// The rustls client configuration for one dial: TLS 1.3 only, ALPN `alpn` (normally [`ALPN`]), our certificate
/// as client certificate, the server checked by `verifier`, no resumption and no SNI.
pub fn client_config(
    key: Arc<CertifiedKey>,
    verifier: Arc<PeerServerVerifier>,
    alpn: &[u8],
) -> Result<rustls::ClientConfig, rustls::Error> {
    let mut config = rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(key)));
    config.alpn_protocols = vec![alpn.to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    config.enable_sni = false;
    config.enable_early_data = false;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{Issuer, KeyPair, PKCS_ED25519};

    #[test]
    fn alpn_constants_match_the_protocol_version() {
        assert_eq!(alpn_for(PROTOCOL_VERSION), ALPN);
        assert_eq!(ALPN_STR.as_bytes(), ALPN);
    }

    fn now() -> UnixTime {
        UnixTime::now()
    }

    #[test]
    fn own_certificate_verifies_to_own_id() {
        let id = Identity::generate().unwrap();
        let cert = self_signed_certificate(&id).unwrap();
        assert_eq!(
            verify_peer_certificate(&cert, &[], now()).unwrap(),
            id.node_id()
        );
        assert_eq!(node_id_from_certificate(&cert).unwrap(), id.node_id());
    }

    #[test]
    fn each_certificate_of_one_key_is_another() {
        let id = Identity::generate().unwrap();
        let a = self_signed_certificate(&id).unwrap();
        let b = self_signed_certificate(&id).unwrap();
        assert_ne!(a, b);
        assert_eq!(node_id_from_certificate(&b).unwrap(), id.node_id());
    }

    #[test]
    fn intermediates_refused() {
        let id = Identity::generate().unwrap();
        let cert = self_signed_certificate(&id).unwrap();
        assert_eq!(
            verify_peer_certificate(&cert, std::slice::from_ref(&cert), now()),
            Err(PeerCertificateError::IntermediatesNotAllowed(1))
        );
    }

    #[test]
    fn garbage_and_trailing_refused() {
        let garbage = CertificateDer::from(vec![0x30, 0x03, 0x01, 0x02, 0x03]);
        assert!(matches!(
            verify_peer_certificate(&garbage, &[], now()),
            Err(PeerCertificateError::Unparsable(_))
        ));
        let id = Identity::generate().unwrap();
        let mut bytes = self_signed_certificate(&id).unwrap().to_vec();
        bytes.push(0);
        assert_eq!(
            verify_peer_certificate(&CertificateDer::from(bytes), &[], now()),
            Err(PeerCertificateError::TrailingData)
        );
    }

    #[test]
    fn flipped_signature_bit_refused() {
        let id = Identity::generate().unwrap();
        let mut bytes = self_signed_certificate(&id).unwrap().to_vec();
        let last = bytes.len() - 1; // the signature is the last field
        bytes[last] ^= 0x01;
        assert_eq!(
            verify_peer_certificate(&CertificateDer::from(bytes), &[], now()),
            Err(PeerCertificateError::BadSelfSignature)
        );
    }

    #[test]
    fn victim_key_signed_by_attacker_refused() {
        let victim = Identity::generate().unwrap();
        let attacker = KeyPair::generate_for(&PKCS_ED25519).unwrap();
        let params = CertificateParams::new(vec!["p2ps".to_string()]).unwrap();
        // Same subject and issuer name, victim's public key, attacker's signature.
        let issuer = Issuer::from_params(&params, &attacker);
        let cert = params.signed_by(victim.key_pair(), &issuer).unwrap();
        assert_eq!(
            verify_peer_certificate(cert.der(), &[], now()),
            Err(PeerCertificateError::BadSelfSignature)
        );
    }

    #[test]
    fn non_ed25519_refused() {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = CertificateParams::new(vec!["p2ps".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        assert_eq!(
            verify_peer_certificate(cert.der(), &[], now()),
            Err(PeerCertificateError::NotEd25519Key)
        );
    }

    #[test]
    fn validity_window_enforced() {
        let id = Identity::generate().unwrap();
        let cert = self_signed_certificate(&id).unwrap();
        let past = UnixTime::since_unix_epoch(std::time::Duration::from_secs(1_000_000));
        assert!(matches!(
            verify_peer_certificate(&cert, &[], past),
            Err(PeerCertificateError::Expired { .. })
        ));
        let far = UnixTime::since_unix_epoch(
            std::time::Duration::from_secs(now().as_secs()) + CERT_LIFETIME * 2,
        );
        assert!(matches!(
            verify_peer_certificate(&cert, &[], far),
            Err(PeerCertificateError::Expired { .. })
        ));
    }

    #[test]
    fn not_self_issued_refused() {
        let key = KeyPair::generate_for(&PKCS_ED25519).unwrap();
        let mut issuer_params = CertificateParams::new(vec!["p2ps".to_string()]).unwrap();
        issuer_params
            .distinguished_name
            .push(DnType::CommonName, "issuer");
        let issuer = Issuer::from_params(&issuer_params, &key);
        let mut subject = CertificateParams::new(vec!["p2ps".to_string()]).unwrap();
        subject
            .distinguished_name
            .push(DnType::CommonName, "subject");
        let cert = subject.signed_by(&key, &issuer).unwrap();
        assert_eq!(
            verify_peer_certificate(cert.der(), &[], now()),
            Err(PeerCertificateError::NotSelfIssued)
        );
    }

    #[test]
    fn cache_remembers_only_good_certificates_and_still_checks_time() {
        let cache = VerifiedCertCache::new(2);
        let ids: Vec<Identity> = (0..3).map(|_| Identity::generate().unwrap()).collect();
        let certs: Vec<_> = ids
            .iter()
            .map(|i| self_signed_certificate(i).unwrap())
            .collect();
        for (i, c) in ids.iter().zip(&certs) {
            assert_eq!(cache.verify(c, &[], now()).unwrap(), i.node_id());
            assert_eq!(cache.verify(c, &[], now()).unwrap(), i.node_id());
        }
        assert_eq!(cache.lock().map.len(), 2);
        let past = UnixTime::since_unix_epoch(std::time::Duration::from_secs(1_000_000));
        assert!(matches!(
            cache.verify(&certs[2], &[], past),
            Err(PeerCertificateError::Expired { .. })
        ));
        let mut bad = certs[0].to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        let bad = CertificateDer::from(bad);
        for _ in 0..2 {
            assert_eq!(
                cache.verify(&bad, &[], now()),
                Err(PeerCertificateError::BadSelfSignature)
            );
        }
        assert_eq!(
            cache.verify(&certs[0], std::slice::from_ref(&certs[1]), now()),
            Err(PeerCertificateError::IntermediatesNotAllowed(1))
        );
    }
}
