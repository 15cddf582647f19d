//! Transport settings with documented defaults, checked once by [`TransportConfig::validate`]
//! (called by `Transport::bind`) so that a bad value fails at start-up with a clear message
//! instead of misbehaving later.

use std::net::SocketAddr;
use std::time::Duration;

use crate::admission::AdmissionLimits;
use crate::budget::MemoryLimits;
use crate::error::ConfigError;
use crate::frame::{DEFAULT_MAX_FRAME_SIZE, HEADER_LEN};
use crate::identity::Identity;
use crate::network_key::NetworkKey;
use crate::relay::RelayConfig;

/// Settings of one node's transport. Build with [`TransportConfig::new`] and change what you
/// need with the `with_*` setters or by assigning the public fields; every field's default is
/// given in its documentation.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TransportConfig {
    /// The node's key (and so its node id).
    pub identity: Identity,
    /// Local UDP address of the node's single socket. Port 0 picks a free port.
    pub bind_addr: SocketAddr,
    /// Largest frame body accepted or sent, in bytes. Default 1 MiB. A received frame above it
    /// closes the stream it came on.
    pub max_frame_size: usize,
    /// Bytes that may wait in the send queue of one peer, for each traffic class. Default 4 MiB.
    /// `send` waits and `try_send` fails with `QueueFull` beyond it. Each class has its own budget
    /// so user data can never crowd out routing upkeep.
    pub peer_queue_bytes: usize,
    /// Interval of QUIC keep-alive pings on idle connections, sent by the side that dialed
    /// (the other side's acknowledgements keep both ends' idle timers fresh). Default 1 s.
    pub keep_alive: Duration,
    /// A connection with no packet from the peer for this long is closed, which is how a crashed
    /// peer is detected. Default 5 s. Must be larger than `keep_alive`.
    pub idle_timeout: Duration,
    /// Upper bound on one dial (handshake included). Default 10 s.
    pub connect_timeout: Duration,
    /// Who may connect: the total connection cap, per-IP, per-subnet and per-node quotas, the
    /// reserve for wanted peers and the first-frame timeout; see [`AdmissionLimits`].
    pub admission: AdmissionLimits,
    /// What peers can make this node buffer: reassembly budgets per connection and per node,
    /// the event queue in bytes, QUIC windows; see [`MemoryLimits`].
    pub memory: MemoryLimits,
    /// Unidirectional streams a peer may have open towards us at once (one per traffic class is
    /// used, one for the transport's control messages, plus replacements after an error).
    /// Default 16, at least 4.
    pub max_concurrent_uni_streams: u32,
    /// Raw bidirectional streams a peer may have open towards us at once. Default 64.
    pub max_concurrent_bidi_streams: u32,
    /// Capacity of the event channel. When the application does not keep up, readers wait, which
    /// in turn applies QUIC flow control to the senders. Default 4096.
    pub event_capacity: usize,
    /// Peers remembered in the address book used to dial on demand (least recently updated
    /// forgotten first). Default 4096.
    pub address_book_peers: usize,
    /// Addresses remembered per peer (most recent first). Default 8.
    pub addresses_per_peer: usize,
    /// Protocol version offered in TLS ALPN (`p2ps/<version>`). Nodes of different versions
    /// refuse each other during the handshake with a clear error. Default: this build's
    /// [`crate::PROTOCOL_VERSION`]; change it only to test version handling.
    pub protocol_version: u32,
    /// How long `shutdown` waits for queued messages to be delivered and for the endpoint to
    /// drain. Default 2 s.
    pub shutdown_timeout: Duration,
    /// Relaying for other nodes (off by default) and relayed circuits to this node; see
    /// [`RelayConfig`].
    pub relay: RelayConfig,
    /// The private network this node belongs to. Default `None`: an open network. With a key,
    /// the node offers and accepts only the ALPN `p2ps/<version>/net-<name>` and admits a
    /// connection only after the peer proved, bound to that TLS session, that it holds the same
    /// key (see [`crate::network_key`]).
    pub network_key: Option<NetworkKey>,
    /// How long the network proof exchange after a handshake may take before the connection is
    /// closed (only with a [`network_key`](Self::network_key)). Default 3 s.
    pub network_proof_timeout: Duration,
}

impl TransportConfig {
    /// Defaults for everything but the identity and the bind address.
    pub fn new(identity: Identity, bind_addr: SocketAddr) -> Self {
        Self {
            identity,
            bind_addr,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            peer_queue_bytes: 4 * 1024 * 1024,
            keep_alive: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
            admission: AdmissionLimits::default(),
            memory: MemoryLimits::default(),
            max_concurrent_uni_streams: 16,
            max_concurrent_bidi_streams: 64,
            event_capacity: 4096,
            address_book_peers: 4096,
            addresses_per_peer: 8,
            shutdown_timeout: Duration::from_secs(2),
            protocol_version: crate::PROTOCOL_VERSION,
            relay: RelayConfig::default(),
            network_key: None,
            network_proof_timeout: Duration::from_secs(3),
        }
    }

    /// Checks every setting; `Transport::bind` calls it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn bad(field: &'static str, reason: impl Into<String>) -> Result<(), ConfigError> {
            Err(ConfigError::Invalid {
                field,
                reason: reason.into(),
            })
        }
        if self.max_frame_size == 0 || self.max_frame_size > u32::MAX as usize {
            return bad("max_frame_size", "must be between 1 and 4 GiB - 1");
        }
        if self.peer_queue_bytes == 0 || self.peer_queue_bytes > u32::MAX as usize {
            return bad("peer_queue_bytes", "must be between 1 and 4 GiB - 1");
        }
        if self.keep_alive.is_zero() {
            return bad("keep_alive", "must be positive");
        }
        if self.idle_timeout <= self.keep_alive {
            return bad(
                "idle_timeout",
                format!(
                    "{:?} must be larger than keep_alive {:?}",
                    self.idle_timeout, self.keep_alive
                ),
            );
        }
        // QUIC carries the idle timeout in milliseconds as a 62-bit integer.
        if self.idle_timeout > Duration::from_secs(24 * 3600) {
            return bad("idle_timeout", "must be at most one day");
        }
        if self.connect_timeout.is_zero() {
            return bad("connect_timeout", "must be positive");
        }
        if self.network_proof_timeout.is_zero() {
            return bad("network_proof_timeout", "must be positive");
        }
        self.validate_limits()?;
        if self.max_concurrent_uni_streams < 4 {
            return bad(
                "max_concurrent_uni_streams",
                "must be at least 4 (one per traffic class and one for control messages)",
            );
        }
        if self.event_capacity == 0 {
            return bad("event_capacity", "must be at least 1");
        }
        if self.address_book_peers == 0 || self.addresses_per_peer == 0 {
            return bad(
                "address_book_peers",
                "address book sizes must be at least 1",
            );
        }
        self.relay.validate()
    }

    fn validate_limits(&self) -> Result<(), ConfigError> {
        fn bad(field: &'static str, reason: impl Into<String>) -> Result<(), ConfigError> {
            Err(ConfigError::Invalid {
                field,
                reason: reason.into(),
            })
        }
        let a = &self.admission;
        if a.max_connections == 0 {
            return bad("admission.max_connections", "must be at least 1");
        }
        if a.reserved_connections >= a.max_connections {
            return bad(
                "admission.reserved_connections",
                format!(
                    "{} leaves no connection for strangers (max_connections is {}), so no node \
                     could ever join through this one",
                    a.reserved_connections, a.max_connections
                ),
            );
        }
        if a.per_ip == 0 || a.per_subnet == 0 || a.per_node == 0 {
            return bad(
                "admission.per_ip",
                "per-IP, per-subnet and per-node quotas must be at least 1",
            );
        }
        if a.first_frame_timeout.is_some_and(|t| t.is_zero()) {
            return bad(
                "admission.first_frame_timeout",
                "must be positive (None turns it off)",
            );
        }
        let m = &self.memory;
        let frame = self.max_frame_size.saturating_add(HEADER_LEN);
        if m.connection_buffer_bytes < frame.saturating_mul(2) {
            return bad(
                "memory.connection_buffer_bytes",
                format!(
                    "{} is less than twice the largest frame ({frame} bytes)",
                    m.connection_buffer_bytes
                ),
            );
        }
        if m.node_buffer_bytes < m.connection_buffer_bytes {
            return bad(
                "memory.node_buffer_bytes",
                "must be at least connection_buffer_bytes",
            );
        }
        if m.event_queue_bytes < frame || m.event_queue_bytes > u32::MAX as usize {
            return bad(
                "memory.event_queue_bytes",
                format!("must be between the largest frame ({frame} bytes) and 4 GiB - 1"),
            );
        }
        if m.stream_receive_window == 0 || m.connection_receive_window < m.stream_receive_window {
            return bad(
                "memory.connection_receive_window",
                "windows must be positive, the connection's at least the stream's",
            );
        }
        if m.send_window == 0 {
            return bad("memory.send_window", "must be positive");
        }
        Ok(())
    }
}

impl TransportConfig {
    /// Sets [`identity`](Self::identity).
    #[must_use]
    pub fn with_identity(mut self, identity: Identity) -> Self {
        self.identity = identity;
        self
    }

    /// Sets [`bind_addr`](Self::bind_addr).
    #[must_use]
    pub fn with_bind_addr(mut self, bind_addr: SocketAddr) -> Self {
        self.bind_addr = bind_addr;
        self
    }

    /// Sets [`max_frame_size`](Self::max_frame_size).
    #[must_use]
    pub fn with_max_frame_size(mut self, max_frame_size: usize) -> Self {
        self.max_frame_size = max_frame_size;
        self
    }

    /// Sets [`peer_queue_bytes`](Self::peer_queue_bytes).
    #[must_use]
    pub fn with_peer_queue_bytes(mut self, peer_queue_bytes: usize) -> Self {
        self.peer_queue_bytes = peer_queue_bytes;
        self
    }

    /// Sets [`keep_alive`](Self::keep_alive).
    #[must_use]
    pub fn with_keep_alive(mut self, keep_alive: Duration) -> Self {
        self.keep_alive = keep_alive;
        self
    }

    /// Sets [`idle_timeout`](Self::idle_timeout).
    #[must_use]
    pub fn with_idle_timeout(mut self, idle_timeout: Duration) -> Self {
        self.idle_timeout = idle_timeout;
        self
    }

    /// Sets [`connect_timeout`](Self::connect_timeout).
    #[must_use]
    pub fn with_connect_timeout(mut self, connect_timeout: Duration) -> Self {
        self.connect_timeout = connect_timeout;
        self
    }

    /// Sets [`network_key`](Self::network_key).
    #[must_use]
    pub fn with_network_key(mut self, network_key: Option<NetworkKey>) -> Self {
        self.network_key = network_key;
        self
    }

    /// Sets [`admission`](Self::admission).
    #[must_use]
    pub fn with_admission(mut self, admission: AdmissionLimits) -> Self {
        self.admission = admission;
        self
    }

    /// Sets [`memory`](Self::memory).
    #[must_use]
    pub fn with_memory(mut self, memory: MemoryLimits) -> Self {
        self.memory = memory;
        self
    }

    /// Sets [`max_concurrent_uni_streams`](Self::max_concurrent_uni_streams).
    #[must_use]
    pub fn with_max_concurrent_uni_streams(mut self, max_concurrent_uni_streams: u32) -> Self {
        self.max_concurrent_uni_streams = max_concurrent_uni_streams;
        self
    }

    /// Sets [`max_concurrent_bidi_streams`](Self::max_concurrent_bidi_streams).
    #[must_use]
    pub fn with_max_concurrent_bidi_streams(mut self, max_concurrent_bidi_streams: u32) -> Self {
        self.max_concurrent_bidi_streams = max_concurrent_bidi_streams;
        self
    }

    /// Sets [`event_capacity`](Self::event_capacity).
    #[must_use]
    pub fn with_event_capacity(mut self, event_capacity: usize) -> Self {
        self.event_capacity = event_capacity;
        self
    }

    /// Sets [`address_book_peers`](Self::address_book_peers).
    #[must_use]
    pub fn with_address_book_peers(mut self, address_book_peers: usize) -> Self {
        self.address_book_peers = address_book_peers;
        self
    }

    /// Sets [`addresses_per_peer`](Self::addresses_per_peer).
    #[must_use]
    pub fn with_addresses_per_peer(mut self, addresses_per_peer: usize) -> Self {
        self.addresses_per_peer = addresses_per_peer;
        self
    }

    /// Sets [`protocol_version`](Self::protocol_version).
    #[must_use]
    pub fn with_protocol_version(mut self, protocol_version: u32) -> Self {
        self.protocol_version = protocol_version;
        self
    }

    /// Sets [`shutdown_timeout`](Self::shutdown_timeout).
    #[must_use]
    pub fn with_shutdown_timeout(mut self, shutdown_timeout: Duration) -> Self {
        self.shutdown_timeout = shutdown_timeout;
        self
    }

    /// Sets [`relay`](Self::relay).
    #[must_use]
    pub fn with_relay(mut self, relay: RelayConfig) -> Self {
        self.relay = relay;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> TransportConfig {
        TransportConfig::new(
            Identity::generate().unwrap(),
            "127.0.0.1:0".parse().unwrap(),
        )
    }

    #[test]
    fn defaults_are_valid() {
        config().validate().unwrap();
    }

    #[test]
    fn bad_values_are_named() {
        let mut c = config();
        c.idle_timeout = c.keep_alive;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::Invalid {
                field: "idle_timeout",
                ..
            })
        ));
        let mut c = config();
        c.max_concurrent_uni_streams = 3;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::Invalid {
                field: "max_concurrent_uni_streams",
                ..
            })
        ));
        let mut c = config();
        c.max_frame_size = 0;
        assert!(c.validate().is_err());
        let mut c = config();
        c.event_capacity = 0;
        assert!(c.validate().is_err());
    }

    #[test]
    fn limits_are_checked() {
        let mut c = config();
        c.admission.reserved_connections = c.admission.max_connections;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::Invalid {
                field: "admission.reserved_connections",
                ..
            })
        ));
        let mut c = config();
        c.memory.connection_buffer_bytes = c.max_frame_size;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::Invalid {
                field: "memory.connection_buffer_bytes",
                ..
            })
        ));
        let mut c = config();
        c.memory.node_buffer_bytes = c.memory.connection_buffer_bytes - 1;
        assert!(c.validate().is_err());
        let mut c = config();
        c.memory.connection_receive_window = c.memory.stream_receive_window - 1;
        assert!(c.validate().is_err());
        let mut c = config();
        c.admission.first_frame_timeout = Some(Duration::ZERO);
        assert!(c.validate().is_err());
        let mut c = config();
        c.network_proof_timeout = Duration::ZERO;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::Invalid {
                field: "network_proof_timeout",
                ..
            })
        ));
    }
}
