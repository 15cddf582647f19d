//! Counters of the transport: numbers go here, not into log lines.
//!
//! Counters are relaxed atomics bumped on the hot paths; [`TransportStats`] is a plain snapshot
//! that the application can print, export or assert on in tests.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::class::StreamClass;
use crate::identity::NodeId;
use crate::relay::RelayStats;

#[derive(Debug, Default)]
pub(crate) struct ClassCounters {
    pub messages_out: AtomicU64,
    pub bytes_out: AtomicU64,
    pub messages_in: AtomicU64,
    pub bytes_in: AtomicU64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub classes: [ClassCounters; 3],
    pub frame_errors: AtomicU64,
    pub streams_stopped_by_peer: AtomicU64,
    pub frames_dropped: AtomicU64,
    pub queue_full: AtomicU64,
    pub connections_dialed: AtomicU64,
    pub connections_accepted: AtomicU64,
    pub handshakes_failed: AtomicU64,
    pub connections_refused: AtomicU64,
    pub connections_silent: AtomicU64,
    pub network_refused: AtomicU64,
    pub streams_over_budget: AtomicU64,
    pub duplicates_closed: AtomicU64,
    pub id_in_use_refused: AtomicU64,
    pub dials_failed: AtomicU64,
    // NAT traversal (control.rs, holepunch.rs).
    pub observed_reports: AtomicU64,
    pub punch_attempts: AtomicU64,
    pub punch_successes: AtomicU64,
    pub punch_failures: AtomicU64,
    pub punch_introductions: AtomicU64,
    pub punch_requests_refused: AtomicU64,
    pub punch_offers: AtomicU64,
    // UDP traffic of connections that have closed (live ones are read from quinn).
    pub udp_closed_bytes_out: AtomicU64,
    pub udp_closed_bytes_in: AtomicU64,
    pub udp_closed_datagrams_out: AtomicU64,
    pub udp_closed_datagrams_in: AtomicU64,
}

pub(crate) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

pub(crate) fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// Reads a counter.
pub(crate) fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

impl Counters {
    pub(crate) fn class(&self, class: StreamClass) -> &ClassCounters {
        &self.classes[class.index()]
    }

    pub(crate) fn snapshot(
        &self,
        open_connections: usize,
        peers: Vec<PeerStats>,
    ) -> TransportStats {
        let class = |c: StreamClass| {
            let k = self.class(c);
            ClassStats {
                messages_out: get(&k.messages_out),
                bytes_out: get(&k.bytes_out),
                messages_in: get(&k.messages_in),
                bytes_in: get(&k.bytes_in),
            }
        };
        TransportStats {
            classes: [
                class(StreamClass::Routing),
                class(StreamClass::Tree),
                class(StreamClass::User),
            ],
            connected_peers: peers.len(),
            open_connections,
            connections_dialed: get(&self.connections_dialed),
            connections_accepted: get(&self.connections_accepted),
            handshakes_failed: get(&self.handshakes_failed),
            connections_refused: get(&self.connections_refused),
            connections_silent: get(&self.connections_silent),
            network_refused: get(&self.network_refused),
            streams_over_budget: get(&self.streams_over_budget),
            duplicates_closed: get(&self.duplicates_closed),
            id_in_use_refused: get(&self.id_in_use_refused),
            dials_failed: get(&self.dials_failed),
            frame_errors: get(&self.frame_errors),
            streams_stopped_by_peer: get(&self.streams_stopped_by_peer),
            frames_dropped: get(&self.frames_dropped),
            queue_full: get(&self.queue_full),
            observed_reports: get(&self.observed_reports),
            punch_attempts: get(&self.punch_attempts),
            punch_successes: get(&self.punch_successes),
            punch_failures: get(&self.punch_failures),
            punch_introductions: get(&self.punch_introductions),
            punch_requests_refused: get(&self.punch_requests_refused),
            punch_offers: get(&self.punch_offers),
            relay: RelayStats::default(),
            udp: UdpStats {
                bytes_out: get(&self.udp_closed_bytes_out),
                bytes_in: get(&self.udp_closed_bytes_in),
                datagrams_out: get(&self.udp_closed_datagrams_out),
                datagrams_in: get(&self.udp_closed_datagrams_in),
            },
            peers,
        }
    }
}

/// Traffic of one class. Bytes count whole frames (length header included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClassStats {
    /// Frames handed to QUIC.
    pub messages_out: u64,
    /// Bytes handed to QUIC.
    pub bytes_out: u64,
    /// Frames received and decoded.
    pub messages_in: u64,
    /// Bytes received in decoded frames.
    pub bytes_in: u64,
}

/// What went over UDP for QUIC connections (headers, acknowledgements, keep-alives, handshakes
/// and retransmissions included, which frame counters do not see): live connections plus the
/// ones that have closed. Handshakes that never completed are not counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UdpStats {
    /// UDP payload bytes sent.
    pub bytes_out: u64,
    /// UDP payload bytes received.
    pub bytes_in: u64,
    /// Datagrams sent.
    pub datagrams_out: u64,
    /// Datagrams received.
    pub datagrams_in: u64,
}

impl UdpStats {
    /// Adds one connection's quinn statistics.
    pub(crate) fn add(&mut self, s: &quinn::ConnectionStats) {
        self.bytes_out += s.udp_tx.bytes;
        self.bytes_in += s.udp_rx.bytes;
        self.datagrams_out += s.udp_tx.datagrams;
        self.datagrams_in += s.udp_rx.datagrams;
    }
}

/// One connected peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStats {
    /// The peer.
    pub peer: NodeId,
    /// Its address.
    pub remote_addr: SocketAddr,
    /// Whether the kept connection was dialed by us.
    pub outbound: bool,
    /// Smoothed round-trip time estimated by quinn.
    pub rtt: Duration,
}

/// A snapshot of the transport's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Per traffic class, indexed by [`StreamClass::index`]; see [`TransportStats::class`].
    pub classes: [ClassStats; 3],
    /// Peers with a live connection.
    pub connected_peers: usize,
    /// QUIC connections in the endpoint, including ones being set up, closed as duplicates or
    /// draining.
    pub open_connections: usize,
    /// Connections we dialed successfully.
    pub connections_dialed: u64,
    /// Incoming connections that completed the handshake and authentication.
    pub connections_accepted: u64,
    /// Incoming handshakes that failed (bad or missing certificate, wrong ALPN, timeouts, a
    /// missing or wrong network proof).
    pub handshakes_failed: u64,
    /// Incoming connections refused by admission (connection limit, per-IP, per-subnet or
    /// per-node quota, reserve for wanted peers; see `AdmissionLimits`) or while shutting down.
    pub connections_refused: u64,
    /// Incoming connections closed because no message arrived within the first-frame timeout
    /// (see `AdmissionLimits::first_frame_timeout`).
    pub connections_silent: u64,
    /// Incoming connections refused for the private network: no common ALPN (the peer has no
    /// network key, another one, or runs another protocol version), or a missing, malformed or
    /// wrong network proof. Also counted in `handshakes_failed`.
    pub network_refused: u64,
    /// Received streams stopped because their partial frames would have exceeded the
    /// connection's or the node's buffer budget (see `MemoryLimits`).
    pub streams_over_budget: u64,
    /// Connections closed because another connection to the same peer was kept.
    pub duplicates_closed: u64,
    /// Connections refused because another process with the same node id held a live
    /// connection and still answered (the same key in use twice; see `CloseCode::IdInUse`).
    pub id_in_use_refused: u64,
    /// Dials that failed.
    pub dials_failed: u64,
    /// Received frames refused (oversized, undecodable, unknown class, truncated); each one
    /// closed the stream it came on.
    pub frame_errors: u64,
    /// Our class streams that a peer stopped (then replaced by fresh streams).
    pub streams_stopped_by_peer: u64,
    /// Queued frames dropped because their peer went away or refused them.
    pub frames_dropped: u64,
    /// `try_send` calls refused with `QueueFull`.
    pub queue_full: u64,
    /// Observed-address reports received from peers (`Transport::reachability`).
    pub observed_reports: u64,
    /// Hole punches started by `Transport::punch` (not counting "already connected").
    pub punch_attempts: u64,
    /// Hole punches that ended with a direct connection.
    pub punch_successes: u64,
    /// Hole punches that failed (refused, timed out, introducer lost).
    pub punch_failures: u64,
    /// Punch requests we forwarded to their target as introducer.
    pub punch_introductions: u64,
    /// Punch requests we refused as introducer (rate limit, target not connected).
    pub punch_requests_refused: u64,
    /// Punch offers we received as target (accepted or declined).
    pub punch_offers: u64,
    /// Relay numbers (as relay and as circuit end).
    pub relay: RelayStats,
    /// UDP traffic of all connections, as quinn counts it.
    pub udp: UdpStats,
    /// The connected peers, with RTT.
    pub peers: Vec<PeerStats>,
}

impl TransportStats {
    /// Counters of one traffic class.
    pub fn class(&self, class: StreamClass) -> &ClassStats {
        &self.classes[class.index()]
    }
}
