//! The [`Transport`] handle: one quinn endpoint (one UDP socket) per node, used both to accept
//! and to dial, so that peers see the same address whichever side opened a connection (which
//! NAT traversal relies on).

use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::{debug, info};

use crate::addresses::AddressBook;
use crate::admission::Admission;
use crate::budget::ByteBudget;
use crate::class::StreamClass;
use crate::config::TransportConfig;
use crate::connections::{AdmissionSlot, Shared};
use crate::error::{
    BindError, ConfigError, ConnectError, FrameError, OpenStreamError, SendError, TrySendError,
};
use crate::event::Events;
use crate::frame::{self, Frame};
use crate::identity::NodeId;
use crate::log_limit::LogLimit;
use crate::relay::{CircuitInfo, PathKind, RelayError, RelayState};
use crate::stats::{bump, Counters, TransportStats};
use crate::tls;

/// A node's transport. Cheap to clone: every clone drives the same endpoint.
///
/// `M` is the message type carried on the class streams. Dropping the last clone closes all
/// connections at once; call [`Transport::shutdown`] for a clean exit.
pub struct Transport<M> {
    pub(crate) shared: Arc<Shared<M>>,
    _guard: Arc<DropGuard<M>>,
}

impl<M> Clone for Transport<M> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            _guard: self._guard.clone(),
        }
    }
}

impl<M> std::fmt::Debug for Transport<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("node_id", &self.shared.node_id)
            .field("local_addr", &self.shared.endpoint.local_addr().ok())
            .finish()
    }
}

/// Closes the endpoint when the last user handle goes away (tasks hold `Shared`, not this).
struct DropGuard<M> {
    shared: Arc<Shared<M>>,
    _m: PhantomData<fn() -> M>,
}

impl<M> Drop for DropGuard<M> {
    fn drop(&mut self) {
        self.shared.abort();
    }
}

pub(crate) fn quic_transport_config(
    config: &TransportConfig,
) -> Result<quinn::TransportConfig, ConfigError> {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(config.keep_alive));
    let idle =
        quinn::IdleTimeout::try_from(config.idle_timeout).map_err(|e| ConfigError::Invalid {
            field: "idle_timeout",
            reason: e.to_string(),
        })?;
    t.max_idle_timeout(Some(idle));
    t.max_concurrent_uni_streams(quinn::VarInt::from_u32(config.max_concurrent_uni_streams));
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(config.max_concurrent_bidi_streams));
    // Bounded windows: quinn's default connection window is unlimited, so a peer could make it
    // buffer as much as all its streams' windows together (see `budget`).
    let m = &config.memory;
    t.stream_receive_window(quinn::VarInt::from_u32(m.stream_receive_window));
    t.receive_window(quinn::VarInt::from_u32(m.connection_receive_window));
    t.send_window(m.send_window);
    Ok(t)
}

impl<M> Transport<M>
where
    M: Serialize + DeserializeOwned + Send + 'static,
{
    /// Binds the node's UDP socket and starts accepting connections. Must be called inside a
    /// tokio runtime. Returns the handle and the event stream.
    pub fn bind(config: TransportConfig) -> Result<(Self, Events<M>), BindError> {
        config.validate()?;
        tokio::runtime::Handle::try_current().map_err(|_| BindError::NoRuntime)?;
        let certified_key =
            tls::certified_key(&config.identity).map_err(|e| BindError::Certificate(e.0))?;
        let cert_cache = Arc::new(tls::VerifiedCertCache::default());
        let network = config.network_key.as_ref().map(crate::NetworkKey::name);
        let alpn = tls::alpn_for_network(config.protocol_version, network);
        let server_crypto = tls::server_config(certified_key.clone(), cert_cache.clone(), &alpn)?;
        let server_crypto = quinn::crypto::rustls::QuicServerConfig::try_from(server_crypto)
            .map_err(|e| BindError::Tls(rustls::Error::General(e.to_string())))?;
        let quic = Arc::new(quic_transport_config(&config)?);
        // Keep-alives come from the side that dialed only: its pings keep the accepting side's
        // idle timer fresh, and the acknowledgements they draw keep the dialer's fresh and any
        // NAT binding on the accepting side open. Pinging from both ends would double what an
        // idle connection costs and detect a crash no sooner (either end still times out
        // `idle_timeout` after the last packet it received).
        let mut accepted = quic_transport_config(&config)?;
        accepted.keep_alive_interval(None);
        let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(server_crypto));
        server_config.transport_config(Arc::new(accepted));
        // The socket under the endpoint also carries relayed circuits (see `relay`).
        let (endpoint, relay) =
            RelayState::bind_endpoint(&config.relay, server_config, config.bind_addr).map_err(
                |source| BindError::Io {
                    addr: config.bind_addr,
                    source,
                },
            )?;
        let (closed_tx, closed_rx) = tokio::sync::watch::channel(false);
        let (tx, events) = crate::event::channel(config.event_capacity, closed_rx);
        let node_id = config.identity.node_id();
        let addresses = AddressBook::new(config.address_book_peers, config.addresses_per_peer);
        let admission = Arc::new(Mutex::new(Admission::new(config.admission.clone())));
        let buffers = Arc::new(ByteBudget::new(config.memory.node_buffer_bytes));
        let event_bytes = Arc::new(tokio::sync::Semaphore::new(config.memory.event_queue_bytes));
        let shared = Arc::new(Shared {
            node_id,
            admission,
            buffers,
            event_bytes,
            config,
            endpoint,
            certified_key,
            cert_cache,
            quic,
            table: Mutex::new(Default::default()),
            addresses: Mutex::new(addresses),
            events: tx,
            counters: Arc::new(Counters::default()),
            traversal: Default::default(),
            relay,
            // One line per 10 s, however many knock.
            network_refusals: LogLimit::new(Duration::from_secs(10), 1, 1),
            closing: AtomicBool::new(false),
            closed: closed_tx,
        });
        tokio::spawn(accept_loop(shared.clone()));
        info!(
            node = %node_id.short(),
            addr = ?shared.endpoint.local_addr().ok(),
            "transport bound"
        );
        let guard = Arc::new(DropGuard {
            shared: shared.clone(),
            _m: PhantomData,
        });
        Ok((
            Self {
                shared,
                _guard: guard,
            },
            events,
        ))
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.shared.node_id
    }

    /// The local address of the node's UDP socket.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.shared.endpoint.local_addr()
    }

    /// The largest frame body this transport sends or accepts.
    pub fn max_frame_size(&self) -> usize {
        self.shared.config.max_frame_size
    }

    /// Records addresses where `peer` may be reached, most preferred first. Used when sending to
    /// a peer without a connection. The book is bounded (see [`TransportConfig`]).
    pub fn add_addresses(&self, peer: NodeId, addrs: impl IntoIterator<Item = SocketAddr>) {
        if peer == self.shared.node_id {
            return;
        }
        self.shared
            .addresses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .add(peer, addrs);
    }

    /// [`Transport::connect`] with several addresses of `peer`, raced (the next one starts when
    /// the one before failed or took a moment); fails with the last error once every one
    /// failed. Only direct dials, unlike [`Transport::connect_any`].
    pub async fn connect_addrs(
        &self,
        peer: NodeId,
        addrs: Vec<SocketAddr>,
    ) -> Result<(), ConnectError> {
        self.shared.connect(peer, addrs).await
    }

    /// Connects to `peer` at `addr` and authenticates it; returns once the connection is usable.
    /// Succeeds at once if already connected; waits for a dial already in progress. If `peer` is
    /// connected through a relay, dials `addr` anyway: a direct connection replaces the relayed
    /// one (this is the hook for hole punching).
    pub async fn connect(&self, peer: NodeId, addr: SocketAddr) -> Result<(), ConnectError> {
        self.shared.connect(peer, vec![addr]).await
    }

    /// Connects to `peer` through `relay`, for when no direct path works: asks the relay (which
    /// must be connected to both nodes and serve, see [`crate::RelayConfig`]) for a circuit,
    /// then runs the usual authenticated QUIC handshake with `peer` over it. The relay only
    /// carries ciphertext. Returns the path of the connection to `peer`; if `peer` is already
    /// connected, nothing is set up and its current path is returned.
    pub async fn connect_relayed(
        &self,
        peer: NodeId,
        relay: NodeId,
    ) -> Result<PathKind, RelayError> {
        self.shared.connect_relayed(peer, relay).await
    }

    /// How the current connection to `peer` travels, if connected.
    pub fn path(&self, peer: NodeId) -> Option<PathKind> {
        self.shared.path(&peer)
    }

    /// Whether the live connection to `peer` is one this node dialed (`Some(false)`: the peer
    /// dialed it; `None`: no live connection). After a simultaneous dial this is the direction
    /// of the connection that was kept.
    pub fn dialed(&self, peer: NodeId) -> Option<bool> {
        self.shared.dialed(&peer)
    }

    /// The relayed circuits this node is an end of, with the limits their relays set.
    pub fn relay_circuits(&self) -> Vec<CircuitInfo> {
        self.shared.relay.socket.circuits()
    }

    /// Encodes `msg` once, for sending the same frame to several peers with
    /// [`Transport::send_frame`] / [`Transport::try_send_frame`].
    pub fn encode(&self, msg: &M) -> Result<Frame, FrameError> {
        frame::encode(msg, self.shared.config.max_frame_size)
    }

    /// Queues `msg` for `peer` on the `class` stream, waiting while the peer's queue for that
    /// class is full. Dials the peer from the address book if not connected. Returns once the
    /// message is queued (delivery is not confirmed).
    pub async fn send(&self, peer: NodeId, class: StreamClass, msg: &M) -> Result<(), SendError> {
        // Moved, not cloned: cloning a freshly built `Bytes` would allocate a shared header.
        let frame = self.encode(msg)?;
        self.shared
            .send_bytes(peer, class, frame.into_bytes())
            .await
    }

    /// Like [`Transport::send`] but never waits: fails with [`TrySendError::QueueFull`] when the
    /// peer's queue for that class has no room (so an actor never stalls on one slow peer).
    pub fn try_send(&self, peer: NodeId, class: StreamClass, msg: &M) -> Result<(), TrySendError> {
        let frame = self.encode(msg).map_err(SendError::from)?;
        self.shared.try_send_bytes(peer, class, frame.into_bytes())
    }

    /// [`Transport::send`] for an already encoded frame.
    pub async fn send_frame(
        &self,
        peer: NodeId,
        class: StreamClass,
        frame: &Frame,
    ) -> Result<(), SendError> {
        self.check_frame(frame)?;
        self.shared
            .send_bytes(peer, class, frame.clone().into_bytes())
            .await
    }

    /// [`Transport::try_send`] for an already encoded frame.
    pub fn try_send_frame(
        &self,
        peer: NodeId,
        class: StreamClass,
        frame: &Frame,
    ) -> Result<(), TrySendError> {
        self.check_frame(frame)?;
        self.shared
            .try_send_bytes(peer, class, frame.clone().into_bytes())
    }

    fn check_frame(&self, frame: &Frame) -> Result<(), SendError> {
        let max = self.shared.config.max_frame_size;
        if frame.body_len() > max {
            return Err(FrameError::TooLarge {
                len: frame.body_len(),
                max,
            }
            .into());
        }
        Ok(())
    }

    /// Opens a raw bidirectional stream to `peer` for bulk data (dialing from the address book
    /// if needed). The peer receives it as [`crate::Event::IncomingStream`] (a tag byte written
    /// here tells it apart from the transport's internal streams). Its priority is below every
    /// class stream.
    pub async fn open_bi(
        &self,
        peer: NodeId,
    ) -> Result<(quinn::SendStream, quinn::RecvStream), OpenStreamError> {
        self.shared.open_bi(peer).await
    }

    /// Closes the connection to `peer` with [`crate::CloseCode::Normal`] and `reason`, dropping
    /// frames still queued for it. Returns whether the peer was known.
    pub async fn disconnect(&self, peer: NodeId, reason: &str) -> bool {
        self.shared.disconnect(peer, reason).await
    }

    /// Peers with a live connection, sorted.
    pub fn connected_peers(&self) -> Vec<NodeId> {
        self.shared.connected_peers()
    }

    /// Marks the peers this node wants connections with (for an overlay: its ring neighbours
    /// and fingers), replacing the previous set. Wanted peers may take the connections reserved
    /// from strangers (`AdmissionLimits::reserved_connections`) and are never closed for
    /// silence (`AdmissionLimits::first_frame_timeout`). Call it whenever the set may have
    /// changed; an unchanged set costs one comparison.
    pub fn set_protected(&self, peers: impl IntoIterator<Item = NodeId>) {
        let peers: std::collections::HashSet<NodeId> = peers.into_iter().collect();
        let n = peers.len();
        if crate::connections::lock(&self.shared.admission).set_protected(peers) {
            debug!(peers = n, "wanted peers updated");
        }
    }

    /// A snapshot of the counters, with per-peer RTT.
    pub fn stats(&self) -> TransportStats {
        self.shared.stats()
    }

    /// Stops accepting connections, delivers queued frames (bounded by
    /// `TransportConfig::shutdown_timeout`), closes every connection with
    /// [`crate::CloseCode::Shutdown`] and `reason`, and waits (bounded) for the endpoint to drain.
    /// Every later operation fails with a `ShuttingDown` error.
    pub async fn shutdown(&self, reason: &str) {
        self.shared.shutdown(reason).await;
    }
}

async fn accept_loop<M>(shared: Arc<Shared<M>>)
where
    M: Serialize + DeserializeOwned + Send + 'static,
{
    while let Some(incoming) = shared.endpoint.accept().await {
        if shared.is_closing() {
            incoming.refuse();
            continue;
        }
        let remote = incoming.remote_address();
        // Counted from here until the connection ends (the slot is released on drop).
        let slot = AdmissionSlot::admit_source(
            &shared.admission,
            remote,
            shared.endpoint.open_connections(),
        );
        match slot {
            Ok(slot) => {
                tokio::spawn(shared.clone().handle_incoming(incoming, slot));
            }
            Err(refusal) => {
                bump(&shared.counters.connections_refused);
                // Debug, not info: a flood of refusals must not flood the log.
                debug!(%remote, %refusal, "refused incoming connection before the handshake");
                incoming.refuse();
            }
        }
    }
}
