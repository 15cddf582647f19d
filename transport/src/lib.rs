//! Authenticated QUIC transport for P2PS.
//!
//! Every node has an Ed25519 key; its [`NodeId`] is the SHA-256 of the public key. Nodes talk
//! over QUIC (quinn) with TLS 1.3 and mutual authentication by self-signed certificates made from
//! those keys, so every connection is to a proven node id ([`tls`]). Each node uses one UDP
//! socket for everything. Between two nodes there is at most one connection, carrying one
//! long-lived stream per [`StreamClass`] in each direction with length-prefixed postcard frames,
//! plus raw bidirectional streams for bulk data. When no direct path works, two nodes connect
//! through a third one they both reach ([`Transport::connect_relayed`], [`relay`]); the relay
//! only carries the ciphertext of their end-to-end connection.
//!
//! Behind NATs, peers tell each other where they see each other ([`observed`]), from which the
//! node derives its [`Reachability`] and the addresses worth advertising
//! ([`Transport::advertised_addrs`]); two nodes connected to a common third one can open a
//! direct connection by coordinated hole punching ([`Transport::punch`]). These messages travel
//! on an internal control stream the application's message type never sees. [`portmap`] asks a
//! UPnP gateway (igd-next) to forward the node's port and keeps the mapping alive.
//! [`Transport::connect_any`] ([`traverse`]) combines it all: direct addresses first, then a
//! punch, then a relay, with background punches to replace a relayed connection later.
//! A [`NetworkKey`] makes a private network: only nodes proving, bound to each TLS session,
//! that they hold the same key get a connection admitted ([`network_key`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use p2ps_transport::{Event, Identity, StreamClass, Transport, TransportConfig};
//!
//! let identity = Identity::load_or_create("/var/lib/p2ps/node.key")?;
//! let config = TransportConfig::new(identity, "0.0.0.0:4433".parse()?);
//! let (transport, mut events) = Transport::<String>::bind(config)?;
//! # let (peer, addr) = (transport.node_id(), "127.0.0.1:4434".parse()?);
//! transport.connect(peer, addr).await?;
//! transport.send(peer, StreamClass::User, &"hello".to_string()).await?;
//! while let Some(event) = events.recv().await {
//!     if let Event::Message { peer, msg, .. } = event {
//!         println!("{} says {msg}", peer.short());
//!     }
//! }
//! # Ok(()) }
//! ```

mod addresses;
pub mod admission;
pub mod budget;
pub mod class;
pub mod config;
mod connections;
mod control;
pub mod endpoint;
pub mod error;
pub mod event;
pub mod frame;
#[doc(hidden)]
pub mod fuzz;
pub mod holepunch;
pub mod identity;
mod instance;
pub mod log_limit;
pub mod network_key;
mod network_proof;
pub mod observed;
pub mod portmap;
pub mod reachability;
pub mod relay;
pub mod secret_file;
pub mod signature;
pub mod stats;
pub mod tls;
pub mod traverse;
pub mod vantage;
mod writer;

pub use admission::AdmissionLimits;
pub use budget::MemoryLimits;
pub use class::{StreamClass, RAW_STREAM_PRIORITY};
pub use config::TransportConfig;
pub use endpoint::Transport;
pub use error::{
    BindError, ConfigError, ConnectError, FrameError, IdentityError, OpenStreamError,
    ParseNodeIdError, PeerCertificateError, SendError, TrySendError,
};
pub use event::{CloseCode, DisconnectReason, Event, Events, StreamStopCode};
pub use frame::{Frame, DEFAULT_MAX_FRAME_SIZE};
pub use holepunch::{PunchError, PunchOptions, PunchOutcome, PunchRefusal, PunchStage};
pub use identity::{Identity, NodeId, ShortNodeId};
pub use network_key::{NetworkKey, NetworkKeyError, NetworkName, NETWORK_KEY_LEN};
pub use network_proof::NetworkProofError;
pub use observed::{ExternalAddr, MappingBehaviour};
pub use portmap::{MappingState, PortMapConfig, PortMapError, PortMapper};
pub use reachability::{PortMapping, PortMappingState, Reachability, ReachabilityStatus};
pub use relay::{
    is_relayed, CircuitEnd, CircuitInfo, CircuitLimits, PathKind, RelayConfig, RelayError,
    RelayLimits, RelayStats, RelayTap,
};
pub use signature::{random_u64, Signature, SigningKey, SigningKeyError};
pub use stats::{ClassStats, PeerStats, TransportStats, UdpStats};
pub use tls::{ALPN, PROTOCOL_VERSION};
pub use traverse::{
    DirectError, Method, NoPath, PathReport, TraverseError, TraverseOptions, TraverseStats,
};

/// The quinn version this crate is built on (stream types appear in the API).
pub use quinn;
