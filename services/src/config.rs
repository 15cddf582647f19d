//! How to build a node: identity, addresses, and the overlay's and transport's tunables.

use p2ps_dict::DictConfig;
use p2ps_overlay::cast::CastConfig;
use p2ps_overlay::groups::GroupConfig;
use p2ps_overlay::Config as OverlayConfig;
use p2ps_transport::{AdmissionLimits, Identity, MemoryLimits, NetworkKey};
use p2ps_watcher::WatcherConfig;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Settings of a [`crate::Node`]. Build with [`NodeConfig::new`] and change what you need with
/// the `with_*` setters or by assigning the public fields.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct NodeConfig {
    /// The node's key, and so its id. Load it with `Identity::load_or_create(path)` to keep the
    /// same id across restarts.
    pub identity: Identity,
    /// The UDP address of the node's one socket. Port 0 picks a free port.
    pub listen: SocketAddr,
    /// Addresses put in the node's ticket and told to peers. Default: empty, meaning the bound
    /// address (an unspecified IP such as `0.0.0.0` is replaced by loopback).
    pub advertise: Vec<SocketAddr>,
    /// The overlay's tunables (finger strategy, list length, stabilisation, timeouts).
    pub overlay: OverlayConfig,
    /// Broadcast and range multicast (acknowledgement and count timeouts, casts at once).
    pub cast: CastConfig,
    /// Group trees (refresh period, groups and children per node).
    pub groups: GroupConfig,
    /// The replicated dictionary (replicas, quorums, value limit, quotas).
    pub dict: DictConfig,
    /// The census (waits, limits per origin, most rows).
    pub census: p2ps_census::CensusConfig,
    /// Where the node keeps the dictionary's records: `None` (the default) in memory, lost
    /// when the node stops; `Some(file)` in that redb file (created if missing; its directory
    /// must exist), so that the node restarted with the same file keeps them. Keep one file
    /// per identity: the records a node holds are those of its place on the ring.
    pub dict_path: Option<PathBuf>,
    /// The node watcher (lease, acknowledgement and probe timeouts, bounds).
    pub watcher: WatcherConfig,
    /// A peer silent this long is taken for crashed. Default 5 s.
    pub idle_timeout: Duration,
    /// Keep-alive interval on idle connections (pinged by the side that dialed them). Default
    /// 2 s: a node holds a connection to every member of its routing table, and each idle one
    /// costs about 73 B/s of UDP at 1 s (a PING and its ACK), half that at 2 s; crash
    /// detection is `idle_timeout` either way, and two keep-alives in a row (with QUIC's own
    /// probe retransmissions) must be lost before an idle connection times out.
    pub keep_alive: Duration,
    /// Largest message, in bytes. Default 1 MiB.
    pub max_message_size: usize,
    /// Incoming application messages buffered for the application; beyond it new ones are
    /// dropped and counted. Default 1024.
    pub inbox_capacity: usize,
    /// Protocol version offered during the handshake. Default: this build's
    /// [`p2ps_transport::PROTOCOL_VERSION`]. Nodes of other versions are refused; change it only
    /// to test that.
    pub protocol_version: u32,
    /// Events buffered for each subscriber; a subscriber that falls further behind misses the
    /// oldest. Default 1024.
    pub event_capacity: usize,
    /// Ask the local UPnP gateway to forward the node's port (and keep the mapping alive).
    /// Default: off (discovery sends SSDP multicast on the local network).
    pub upnp: bool,
    /// Relay circuits for other nodes (behind NATs) through this one. Default: off.
    pub relay_serve: bool,
    /// The node that introduces and, if needed, relays for this one while it is behind a NAT;
    /// by default the node it joined through.
    pub relay: Option<crate::Ticket>,
    /// Who may connect to this node (connection cap, per-IP/subnet/node quotas, the reserve
    /// for its routing table's peers, first-frame timeout); defaults in [`AdmissionLimits`].
    pub admission: AdmissionLimits,
    /// What peers can make this node buffer; defaults in [`MemoryLimits`].
    pub memory: MemoryLimits,
    /// Record latency histograms for [`crate::Metrics`] (lookups, dictionary operations).
    /// Default: on (the figures it costs are measured in BENCHMARKS.md).
    pub metrics: bool,
    /// The private network's key. Default `None`: an open network. With a key, only nodes
    /// holding the same key get a connection admitted, and tickets carry the network's public
    /// name (see [`p2ps_transport::network_key`]).
    pub network_key: Option<NetworkKey>,
}

impl NodeConfig {
    /// Defaults for everything but the identity and the listening address.
    pub fn new(identity: Identity, listen: SocketAddr) -> Self {
        NodeConfig {
            identity,
            listen,
            advertise: Vec::new(),
            overlay: OverlayConfig::default(),
            cast: CastConfig::default(),
            groups: GroupConfig::default(),
            dict: DictConfig::default(),
            census: p2ps_census::CensusConfig::default(),
            dict_path: None,
            watcher: WatcherConfig::default(),
            idle_timeout: Duration::from_secs(5),
            keep_alive: Duration::from_secs(2),
            max_message_size: p2ps_transport::DEFAULT_MAX_FRAME_SIZE,
            inbox_capacity: 1024,
            event_capacity: 1024,
            protocol_version: p2ps_transport::PROTOCOL_VERSION,
            upnp: false,
            relay_serve: false,
            relay: None,
            admission: AdmissionLimits::default(),
            memory: MemoryLimits::default(),
            metrics: true,
            network_key: None,
        }
    }
}

impl NodeConfig {
    /// Sets [`identity`](Self::identity).
    #[must_use]
    pub fn with_identity(mut self, identity: Identity) -> Self {
        self.identity = identity;
        self
    }

    /// Sets [`listen`](Self::listen).
    #[must_use]
    pub fn with_listen(mut self, listen: SocketAddr) -> Self {
        self.listen = listen;
        self
    }

    /// Sets [`advertise`](Self::advertise).
    #[must_use]
    pub fn with_advertise(mut self, advertise: Vec<SocketAddr>) -> Self {
        self.advertise = advertise;
        self
    }

    /// Sets [`overlay`](Self::overlay).
    #[must_use]
    pub fn with_overlay(mut self, overlay: OverlayConfig) -> Self {
        self.overlay = overlay;
        self
    }

    /// Sets [`cast`](Self::cast).
    #[must_use]
    pub fn with_cast(mut self, cast: CastConfig) -> Self {
        self.cast = cast;
        self
    }

    /// Sets [`groups`](Self::groups).
    #[must_use]
    pub fn with_groups(mut self, groups: GroupConfig) -> Self {
        self.groups = groups;
        self
    }

    /// Sets [`dict`](Self::dict).
    #[must_use]
    pub fn with_dict(mut self, dict: DictConfig) -> Self {
        self.dict = dict;
        self
    }

    /// Sets [`dict_path`](Self::dict_path).
    #[must_use]
    pub fn with_dict_path(mut self, dict_path: Option<PathBuf>) -> Self {
        self.dict_path = dict_path;
        self
    }

    /// Sets [`idle_timeout`](Self::idle_timeout).
    #[must_use]
    pub fn with_idle_timeout(mut self, idle_timeout: Duration) -> Self {
        self.idle_timeout = idle_timeout;
        self
    }

    /// Sets [`keep_alive`](Self::keep_alive).
    #[must_use]
    pub fn with_keep_alive(mut self, keep_alive: Duration) -> Self {
        self.keep_alive = keep_alive;
        self
    }

    /// Sets [`max_message_size`](Self::max_message_size).
    #[must_use]
    pub fn with_max_message_size(mut self, max_message_size: usize) -> Self {
        self.max_message_size = max_message_size;
        self
    }

    /// Sets [`inbox_capacity`](Self::inbox_capacity).
    #[must_use]
    pub fn with_inbox_capacity(mut self, inbox_capacity: usize) -> Self {
        self.inbox_capacity = inbox_capacity;
        self
    }

    /// Sets [`protocol_version`](Self::protocol_version).
    #[must_use]
    pub fn with_protocol_version(mut self, protocol_version: u32) -> Self {
        self.protocol_version = protocol_version;
        self
    }

    /// Sets [`event_capacity`](Self::event_capacity).
    #[must_use]
    pub fn with_event_capacity(mut self, event_capacity: usize) -> Self {
        self.event_capacity = event_capacity;
        self
    }

    /// Sets [`upnp`](Self::upnp).
    #[must_use]
    pub fn with_upnp(mut self, upnp: bool) -> Self {
        self.upnp = upnp;
        self
    }

    /// Sets [`relay_serve`](Self::relay_serve).
    #[must_use]
    pub fn with_relay_serve(mut self, relay_serve: bool) -> Self {
        self.relay_serve = relay_serve;
        self
    }

    /// Sets [`relay`](Self::relay).
    #[must_use]
    pub fn with_relay(mut self, relay: Option<crate::Ticket>) -> Self {
        self.relay = relay;
        self
    }

    /// Sets [`admission`](Self::admission).
    #[must_use]
    pub fn with_admission(mut self, admission: AdmissionLimits) -> Self {
        self.admission = admission;
        self
    }

    /// Sets [`metrics`](Self::metrics).
    #[must_use]
    pub fn with_metrics(mut self, metrics: bool) -> Self {
        self.metrics = metrics;
        self
    }

    /// Sets [`memory`](Self::memory).
    #[must_use]
    pub fn with_memory(mut self, memory: MemoryLimits) -> Self {
        self.memory = memory;
        self
    }

    /// Sets [`network_key`](Self::network_key).
    #[must_use]
    pub fn with_network_key(mut self, network_key: Option<NetworkKey>) -> Self {
        self.network_key = network_key;
        self
    }
}
