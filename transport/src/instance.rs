//! Two processes with one key: telling a restart from a key in use twice.
//!
//! Every process makes its certificate with a random serial number (`tls`), so a connection's
//! certificate names the process instance behind it, not just the node id. When a peer
//! connects while another instance with the same node id holds a live connection, that older
//! connection is probed: an instance that still answers keeps its place and the newcomer is
//! refused with [`CloseCode::IdInUse`](crate::CloseCode::IdInUse) (the key is in use twice); a
//! silent one (the process crashed and restarted) is replaced at once instead of blocking the
//! restart until its idle timeout.
//!
//! Only the key's holder can make a node probe (the newcomer must complete a handshake with
//! the key), and one probe costs a datagram and a bounded wait.

use std::time::Duration;

use bytes::Bytes;
use rustls::pki_types::CertificateDer;

/// How often the probe looks at what the old connection received.
const PROBE_POLL: Duration = Duration::from_millis(10);

/// The certificate the peer presented on `conn` (`None` if there is none to read, which a
/// handshake that authenticated the peer never leaves).
pub(crate) fn peer_certificate(conn: &quinn::Connection) -> Option<CertificateDer<'static>> {
    let certs = conn.peer_identity()?;
    let certs = certs.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    certs.first().cloned()
}

/// Whether the peer behind `conn` still answers within `wait`: sends it a datagram (which
/// its QUIC stack acknowledges at once, whatever the application does with it) and watches
/// for any packet back. A live peer also sends keep-alives, so a `wait` longer than its
/// keep-alive interval needs no datagram support.
pub(crate) async fn answers(conn: &quinn::Connection, wait: Duration) -> bool {
    let before = conn.stats().udp_rx.datagrams;
    // An empty datagram is a valid frame; a peer that takes none is still heard through its
    // keep-alives.
    let _ = conn.send_datagram(Bytes::new());
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if conn.close_reason().is_some() {
            return false;
        }
        if conn.stats().udp_rx.datagrams > before {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(PROBE_POLL).await;
    }
}
