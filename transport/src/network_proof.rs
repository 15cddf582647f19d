//! The network proof exchange that opens every connection of a private network.
//!
//! Right after the TLS handshake, before the connection is admitted or registered (so before
//! any overlay message, control message or relay request on it is read), each side opens one
//! unidirectional stream, writes [`PROOF_TAG`] and its 32-byte proof (see `network_key`) and
//! finishes it, then reads the peer's first unidirectional stream and checks its proof in
//! constant time. Both directions run at once, so a dial costs one more round trip. The whole
//! exchange is bounded by `TransportConfig::network_proof_timeout`; a missing, malformed or
//! wrong proof closes the connection with [`CloseCode::NetworkKey`] and a reason that tells the
//! peer what is wrong.

use std::time::Duration;

use crate::event::CloseCode;
use crate::identity::NodeId;
use crate::network_key::{NetworkKey, NetworkName, Role};

/// First byte of the proof stream (distinct from the class and control stream tags).
pub(crate) const PROOF_TAG: u8 = 0xA5;
/// TLS exporter label (RFC 8446 section 7.5) of the value the proof is bound to.
const EXPORTER_LABEL: &[u8] = b"EXPORTER-p2ps-network-proof";
/// Length of a proof (HMAC-SHA256).
const PROOF_LEN: usize = 32;

/// Why a connection failed the network proof exchange.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum NetworkProofError {
    /// Nothing (or not all of a proof) arrived within the proof timeout.
    #[error("no network proof within {0:?}: the peer does not hold this network's key")]
    Missing(Duration),
    /// The proof did not verify: the peer holds another network key (or forged it).
    #[error("wrong network proof: the peer uses another network key")]
    Wrong,
    /// The peer's first stream is not a proof.
    #[error("the peer's first stream is not a network proof ({0})")]
    Malformed(&'static str),
    /// The peer closed the connection with [`CloseCode::NetworkKey`]: it refused our proof.
    #[error("the peer refused our network proof: {reason}")]
    Refused {
        /// The peer's reason text.
        reason: String,
    },
    /// The connection ended for another reason during the exchange.
    #[error("connection lost during the network proof exchange")]
    ConnectionLost(#[source] quinn::ConnectionError),
    /// The TLS session would not give an exporter value (cannot happen after a TLS 1.3
    /// handshake).
    #[error("no TLS exporter value for the network proof")]
    Exporter,
}

impl From<quinn::ConnectionError> for NetworkProofError {
    fn from(e: quinn::ConnectionError) -> Self {
        match e {
            quinn::ConnectionError::ApplicationClosed(a)
                if CloseCode::from_u64(a.error_code.into_inner()) == CloseCode::NetworkKey =>
            {
                NetworkProofError::Refused {
                    reason: String::from_utf8_lossy(&a.reason).into_owned(),
                }
            }
            e => NetworkProofError::ConnectionLost(e),
        }
    }
}

/// Sends our proof and checks the peer's on a connection that just completed its handshake.
/// `role` is ours. On a missing, malformed or wrong proof the connection is closed with
/// [`CloseCode::NetworkKey`].
pub(crate) async fn exchange(
    conn: &quinn::Connection,
    key: &NetworkKey,
    local: NodeId,
    peer: NodeId,
    role: Role,
    timeout: Duration,
) -> Result<(), NetworkProofError> {
    let result = match tokio::time::timeout(timeout, run(conn, key, local, peer, role)).await {
        Ok(result) => result,
        Err(_) => Err(NetworkProofError::Missing(timeout)),
    };
    if let Err(e) = &result {
        let name = key.name();
        let reason = match e {
            NetworkProofError::Missing(t) => format!(
                "private network {name}: no network proof from you within {t:?}; connections \
                 need this network's key"
            ),
            NetworkProofError::Wrong => format!(
                "private network {name}: your network proof is wrong (you use another network key)"
            ),
            NetworkProofError::Malformed(what) => {
                format!("private network {name}: your first stream is not a network proof ({what})")
            }
            NetworkProofError::Exporter => format!("private network {name}: no TLS exporter"),
            // Already closed.
            NetworkProofError::Refused { .. } | NetworkProofError::ConnectionLost(_) => {
                return result
            }
        };
        conn.close(CloseCode::NetworkKey.varint(), reason.as_bytes());
    }
    result
}

async fn run(
    conn: &quinn::Connection,
    key: &NetworkKey,
    local: NodeId,
    peer: NodeId,
    role: Role,
) -> Result<(), NetworkProofError> {
    let mut exporter = [0u8; 32];
    conn.export_keying_material(&mut exporter, EXPORTER_LABEL, &[])
        .map_err(|_| NetworkProofError::Exporter)?;
    let theirs = match role {
        Role::Dialer => Role::Acceptor,
        Role::Acceptor => Role::Dialer,
    };
    let send = async {
        let proof = key.proof(&exporter, role, &local, &peer);
        let mut buf = [0u8; 1 + PROOF_LEN];
        buf[0] = PROOF_TAG;
        buf[1..].copy_from_slice(proof.as_ref());
        let mut stream = conn.open_uni().await?;
        stream.write_all(&buf).await.map_err(|e| match e {
            quinn::WriteError::ConnectionLost(e) => NetworkProofError::from(e),
            _ => NetworkProofError::Malformed("the peer stopped our proof stream"),
        })?;
        let _ = stream.finish();
        Ok::<(), NetworkProofError>(())
    };
    let recv = async {
        let mut stream = conn.accept_uni().await?;
        let mut buf = [0u8; 1 + PROOF_LEN];
        stream.read_exact(&mut buf).await.map_err(|e| match e {
            quinn::ReadExactError::ReadError(quinn::ReadError::ConnectionLost(e)) => {
                NetworkProofError::from(e)
            }
            quinn::ReadExactError::FinishedEarly(_) => {
                NetworkProofError::Malformed("stream ended before a whole proof")
            }
            quinn::ReadExactError::ReadError(_) => {
                NetworkProofError::Malformed("proof stream reset")
            }
        })?;
        if buf[0] != PROOF_TAG {
            return Err(NetworkProofError::Malformed("wrong tag"));
        }
        if !key.verify(&exporter, theirs, &peer, &local, &buf[1..]) {
            return Err(NetworkProofError::Wrong);
        }
        Ok(())
    };
    tokio::try_join!(send, recv).map(|_| ())
}

/// The reason given to a dialer whose handshake found no common ALPN.
pub(crate) fn no_common_alpn(network: Option<NetworkName>) -> String {
    match network {
        Some(name) => format!(
            "no common ALPN: the peer is not in private network {name} (it has no network key \
             or another one) or runs another protocol version"
        ),
        None => "no common ALPN: the peer runs another protocol version, or belongs to a \
                 private network (joining it needs its network key, --network-key)"
            .into(),
    }
}
