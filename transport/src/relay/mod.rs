//! Relayed connections: when no direct path between two nodes works, their traffic goes through
//! a third node both are connected to.
//!
//! The relay never terminates the end-to-end connection. A and B run an ordinary QUIC connection
//! (TLS 1.3, mutual node-id authentication, one connection per peer pair) whose UDP datagrams
//! travel inside a *circuit*: a pair of streams A–R and R–B on their existing authenticated
//! connections to the relay R, which copies bytes between them ([`protocol`]). The relay sees
//! only QUIC ciphertext. Each end's socket gives the circuit a synthetic address
//! ([`is_relayed`]) so that quinn treats it as one more UDP path (`socket`).
//!
//! Serving is opt-in ([`RelayConfig::serve`]) and bounded by [`RelayLimits`]; each circuit's
//! [`CircuitLimits`] are told to both ends. A circuit that hits a limit is ended with a
//! [`CircuitEnd`] code both ends log and report as [`crate::DisconnectReason::Relay`].
//!
//! A relayed peer is an ordinary peer for the rest of the transport (messages, streams, events).
//! When a direct connection to the same peer appears (for example after hole punching) the
//! connection manager keeps it and drains the relayed one (see `connections.rs`, "direct beats
//! relayed"), which then closes its circuit.

mod client;
pub mod limits;
pub mod protocol;
mod server;
pub(crate) mod socket;
pub mod tap;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::{debug, warn};

pub use limits::{CircuitLimits, RelayConfig, RelayLimits};
pub use protocol::{CircuitEnd, RefuseCode};
pub use socket::is_relayed;
pub use tap::RelayTap;

use crate::connections::Shared;
use crate::error::ConnectError;
use crate::event::{Event, StreamStopCode};
use crate::identity::NodeId;
use crate::log_limit::LogLimit;
use crate::stats::bump;
use socket::RelaySocket;

/// How the current connection to a peer travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PathKind {
    /// Straight to the peer's address.
    Direct(SocketAddr),
    /// Through a relay.
    Relayed {
        /// The relaying node.
        relay: NodeId,
        /// The synthetic address standing for the circuit on this node (see [`is_relayed`]).
        addr: SocketAddr,
    },
}

/// One relayed circuit this node is an end of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CircuitInfo {
    /// The node at the other end.
    pub peer: NodeId,
    /// The relaying node.
    pub relay: NodeId,
    /// The synthetic address standing for the circuit on this node.
    pub addr: SocketAddr,
    /// The limits the relay set for the circuit.
    pub limits: CircuitLimits,
    /// Whether this node asked for the circuit.
    pub outbound: bool,
}

/// Why `Transport::connect_relayed` failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// A node cannot connect to itself, nor use itself or the target as relay.
    #[error("invalid relay request: {0}")]
    BadRequest(&'static str),
    /// The transport is shutting down.
    #[error("transport is shut down")]
    ShuttingDown,
    /// We have no connection to the relay.
    #[error("not connected to relay {relay}")]
    RelayNotConnected {
        /// The relay.
        relay: NodeId,
    },
    /// The relay has no connection to the target.
    #[error("relay {relay} is not connected to {target}")]
    TargetNotConnected {
        /// The relay.
        relay: NodeId,
        /// The target.
        target: NodeId,
    },
    /// The relay (or the target, through it) refused the circuit.
    #[error("relay {relay} refused the circuit ({code:?}): {reason}")]
    Refused {
        /// The relay.
        relay: NodeId,
        /// Why, for programs.
        code: RefuseCode,
        /// Why, for people.
        reason: String,
    },
    /// A limit of the relay, or this node's own `max_client_circuits`, is reached.
    #[error("circuit limit reached: {reason}")]
    LimitExceeded {
        /// Which limit.
        reason: String,
    },
    /// The relay did not answer within the connect timeout.
    #[error("relay {relay} did not answer in time")]
    TimedOut {
        /// The relay.
        relay: NodeId,
    },
    /// The circuit request failed on the stream to the relay (connection lost, bad answer).
    #[error("circuit request to relay {relay} failed: {reason}")]
    Protocol {
        /// The relay.
        relay: NodeId,
        /// What went wrong.
        reason: String,
    },
    /// The circuit was set up but the end-to-end QUIC handshake over it failed.
    #[error("handshake over the relay failed: {0}")]
    Connect(#[from] ConnectError),
}

/// Relay counters (see [`RelayStats`]).
#[derive(Debug, Default)]
pub(crate) struct RelayCounters {
    pub circuits_served: AtomicU64,
    pub circuits_active: AtomicU64,
    pub circuits_refused: AtomicU64,
    pub circuits_limited: AtomicU64,
    pub bytes_relayed: AtomicU64,
    pub malformed: AtomicU64,
    pub client_circuits_opened: AtomicU64,
    pub client_circuits_accepted: AtomicU64,
    pub client_circuits_limited: AtomicU64,
    pub packets_sent: AtomicU64,
    pub packets_dropped: AtomicU64,
}

/// Relay numbers of a node, both as relay and as circuit end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Circuits this node relayed (set up successfully).
    pub circuits_served: u64,
    /// Circuits this node relays right now.
    pub circuits_active: u64,
    /// Circuit requests this node refused as relay.
    pub circuits_refused: u64,
    /// Circuits this node ended as relay because of a byte or duration limit.
    pub circuits_limited: u64,
    /// Bytes this node copied between circuit ends, both directions.
    pub bytes_relayed: u64,
    /// Circuit streams closed because of a malformed header.
    pub malformed: u64,
    /// Circuits this node opened through a relay.
    pub client_circuits_opened: u64,
    /// Circuits other nodes opened to this node through a relay.
    pub client_circuits_accepted: u64,
    /// Circuits this node is an end of that a relay ended on a limit.
    pub client_circuits_limited: u64,
    /// Datagrams quinn sent to circuits.
    pub packets_sent: u64,
    /// Datagrams dropped because a circuit queue was full (or too large).
    pub packets_dropped: u64,
}

impl RelayCounters {
    pub(crate) fn snapshot(&self) -> RelayStats {
        let g = crate::stats::get;
        RelayStats {
            circuits_served: g(&self.circuits_served),
            circuits_active: g(&self.circuits_active),
            circuits_refused: g(&self.circuits_refused),
            circuits_limited: g(&self.circuits_limited),
            bytes_relayed: g(&self.bytes_relayed),
            malformed: g(&self.malformed),
            client_circuits_opened: g(&self.client_circuits_opened),
            client_circuits_accepted: g(&self.client_circuits_accepted),
            client_circuits_limited: g(&self.client_circuits_limited),
            packets_sent: g(&self.packets_sent),
            packets_dropped: g(&self.packets_dropped),
        }
    }
}

/// Circuits relayed right now, in total and per end node.
#[derive(Debug, Default)]
struct Served {
    total: usize,
    per_peer: HashMap<NodeId, usize>,
}

/// The relay state of one transport.
#[derive(Debug)]
pub(crate) struct RelayState {
    pub(crate) socket: Arc<RelaySocket>,
    pub(crate) counters: Arc<RelayCounters>,
    served: Mutex<Served>,
}

impl RelayState {
    /// Binds the node's UDP socket at `addr` and builds the quinn endpoint on it.
    pub(crate) fn bind_endpoint(
        config: &RelayConfig,
        server_config: quinn::ServerConfig,
        addr: SocketAddr,
    ) -> std::io::Result<(quinn::Endpoint, RelayState)> {
        let std_socket = std::net::UdpSocket::bind(addr)?;
        let runtime: Arc<dyn quinn::Runtime> = Arc::new(quinn::TokioRuntime);
        let inner = runtime.wrap_udp_socket(std_socket)?;
        let counters = Arc::new(RelayCounters::default());
        let socket = Arc::new(RelaySocket::new(inner, config, counters.clone())?);
        let endpoint = quinn::Endpoint::new_with_abstract_socket(
            quinn::EndpointConfig::default(),
            Some(server_config),
            socket.clone(),
            runtime,
        )?;
        Ok((
            endpoint,
            RelayState {
                socket,
                counters,
                served: Mutex::default(),
            },
        ))
    }

    /// Where the connection with remote address `remote` goes through.
    pub(crate) fn path(&self, remote: SocketAddr) -> PathKind {
        match self.socket.relay_of(&remote) {
            Some(relay) if is_relayed(&remote) => PathKind::Relayed {
                relay,
                addr: remote,
            },
            _ => PathKind::Direct(remote),
        }
    }
}

/// Bound on reading the tag byte of a bidirectional stream.
const TAG_TIMEOUT: Duration = Duration::from_secs(10);

impl<M> Shared<M>
where
    M: Serialize + DeserializeOwned + Send + 'static,
{
    /// Routes a bidirectional stream opened by `peer` by its tag byte: application streams become
    /// [`Event::IncomingStream`], circuit streams go to the relay code and are never shown to the
    /// application. An unknown tag closes only that stream.
    pub(crate) async fn dispatch_bi(
        self: Arc<Self>,
        ctx: Arc<crate::connections::ConnCtx>,
        mut send: quinn::SendStream,
        mut recv: quinn::RecvStream,
    ) {
        let peer = ctx.peer;
        let mut tag = [0u8; 1];
        match tokio::time::timeout(TAG_TIMEOUT, recv.read_exact(&mut tag)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                debug!(peer = %peer.short(), error = %e, "bidirectional stream ended before its tag");
                return;
            }
            Err(_) => {
                let _ = recv.stop(StreamStopCode::UnknownClass.varint());
                let _ = send.reset(StreamStopCode::UnknownClass.varint());
                return;
            }
        }
        if matches!(
            tag[0],
            protocol::TAG_RAW | protocol::TAG_CONNECT | protocol::TAG_INCOMING
        ) {
            // A stream the application or the relay code takes: the connection is in use.
            ctx.useful.store(true, std::sync::atomic::Ordering::Release);
        }
        match tag[0] {
            protocol::TAG_RAW => {
                let _ = self
                    .events
                    .send(Event::IncomingStream { peer, send, recv })
                    .await;
            }
            protocol::TAG_CONNECT => self.serve_circuit(peer, send, recv).await,
            protocol::TAG_INCOMING => self.accept_circuit(peer, send, recv).await,
            other => {
                bump(&self.counters.frame_errors);
                static LOG: LogLimit<NodeId> =
                    LogLimit::new(crate::connections::LOG_INTERVAL, 10, 3);
                if let Some(suppressed) = LOG.check(peer) {
                    warn!(peer = %peer.short(), tag = other, suppressed, "unknown bidirectional stream tag: closed that stream");
                }
                let _ = recv.stop(StreamStopCode::UnknownClass.varint());
                let _ = send.reset(StreamStopCode::UnknownClass.varint());
            }
        }
    }
}
