//! [`Node`]: the one entry point for applications.

use crate::config::NodeConfig;
use crate::error::{JoinError, LookupError, NodeError, StartError};
use crate::id::{group_key, key_of};
use crate::runtime::{Actor, CastReport, Command, LookupResult};
use crate::status::{Counters, Status};
use crate::ticket::Ticket;
use crate::wire::Wire;
use bytes::Bytes;
use p2ps_overlay::{Node as Overlay, RingId};
use p2ps_transport::{NodeId, Transport, TransportConfig};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc, oneshot, Mutex};
use tokio::time::Instant;

/// An application message delivered to this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The node that sent it.
    pub from: NodeId,
    /// The key it was routed to (this node's own position for a send to its id).
    pub key: RingId,
    /// Overlay hops it took.
    pub hops: u16,
    /// How it was addressed.
    pub via: Via,
    /// The payload.
    pub payload: Bytes,
}

/// How a delivered message was addressed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Via {
    /// To this node's id ([`Node::send`]).
    Node,
    /// To a key this node is responsible for ([`Node::route`]).
    Key,
    /// To every node ([`Node::broadcast`]).
    Broadcast,
    /// To the nodes responsible for the keys in `[lo, hi]` ([`Node::multicast_range`]).
    Range {
        /// Lower end of the key range.
        lo: RingId,
        /// Upper end of the key range.
        hi: RingId,
    },
    /// To the members of the named group ([`Node::send_group`]).
    Group(String),
}

/// Something that happened to the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeEvent {
    /// The node is part of a network.
    Joined,
    /// Joining failed.
    JoinFailed,
    /// The node left its network.
    Left,
    /// The node lost every neighbour (a partition, a suspended machine) and is joining again
    /// through the nodes it knew; [`NodeEvent::Joined`] follows when it is back.
    Isolated,
    /// A peer became a ring neighbour (successor or predecessor list).
    NeighbourUp(NodeId),
    /// A peer is no longer a ring neighbour (it left, crashed, or someone nearer arrived).
    NeighbourDown(NodeId),
    /// A child in a group tree could not keep up with the group's traffic and was dropped
    /// (it re-joins through the tree refresh once it catches up).
    GroupChildDropped {
        /// The group's ring position.
        group: RingId,
        /// The slow peer.
        peer: NodeId,
    },
}

/// A running P2PS node. Cheap to clone; every clone talks to the same node. The node stops
/// when [`Node::shutdown`] is called or when the last clone is dropped (leaving gracefully
/// either way).
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use p2ps::{Node, NodeConfig};
/// use p2ps_transport::Identity;
///
/// let node = Node::start(NodeConfig::new(Identity::generate()?, "127.0.0.1:0".parse()?)).await?;
/// node.create().await?;
/// println!("join me with: {}", node.ticket());
/// let answer = node.lookup_key(b"some key").await?;
/// println!("{} holds it ({} hops)", answer.node, answer.hops);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

struct Inner {
    id: NodeId,
    addrs: Arc<std::sync::RwLock<Vec<SocketAddr>>>,
    commands: mpsc::Sender<Command>,
    inbox: Mutex<mpsc::Receiver<Message>>,
    subscribers: broadcast::Sender<NodeEvent>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.inner.id.short())
            .finish()
    }
}

impl Node {
    /// Binds the node's socket and starts its actor. The node is not part of a network yet:
    /// call [`Node::create`] or [`Node::join`]. Must run inside a tokio runtime.
    pub async fn start(config: NodeConfig) -> Result<Node, StartError> {
        config.overlay.validate()?;
        let mut tc = TransportConfig::new(config.identity.clone(), config.listen);
        tc.idle_timeout = config.idle_timeout;
        tc.keep_alive = config.keep_alive;
        tc.protocol_version = config.protocol_version;
        // Room for the routing envelope around the largest payload.
        tc.max_frame_size = config.max_message_size.saturating_add(1024);
        tc.relay.serve = config.relay_serve;
        tc.admission = config.admission.clone();
        tc.memory = config.memory.clone();
        // A dial that gets no answer may be blocked by a NAT: give up soon enough for the
        // fallback (hole punching, relay) to run within the overlay's timeouts.
        tc.connect_timeout = std::time::Duration::from_secs(4);
        let (transport, events) = Transport::<Wire>::bind(tc)?;
        let id = transport.node_id();
        let bound = transport.local_addr().map_err(|source| {
            StartError::Bind(p2ps_transport::BindError::Io {
                addr: config.listen,
                source,
            })
        })?;
        let addrs = if config.advertise.is_empty() {
            vec![advertised(bound)]
        } else {
            config.advertise.clone()
        };
        let signing_key =
            || p2ps_transport::SigningKey::new(&config.identity).map_err(StartError::Signing);
        let signer = crate::id::KeySigner(signing_key()?);
        // Request ids and message numbers must be unpredictable: key them from the OS.
        let mut overlay_config = config.overlay.clone();
        overlay_config.seed ^= p2ps_transport::random_u64();
        config.cast.validate()?;
        config.groups.validate()?;
        let mut overlay = Overlay::new(signer, overlay_config);
        p2ps_overlay::standard::register_with(
            &mut overlay,
            config.cast.clone(),
            config.groups.clone(),
        )
        .map_err(StartError::Service)?;
        overlay.set_local_addrs(addrs.clone());
        let mapper = if config.upnp {
            match p2ps_transport::PortMapper::start(
                p2ps_transport::PortMapConfig::default(),
                bound.port(),
            ) {
                Ok(m) => Some(m),
                Err(e) => {
                    tracing::warn!(error = %e, "UPnP port mapping not started");
                    None
                }
            }
        } else {
            None
        };
        let nat = crate::runtime::Nat {
            mapper,
            relay: config.relay.as_ref().map(|t| (t.id, t.addrs.clone())),
            fixed_addrs: !config.advertise.is_empty(),
            ..Default::default()
        };
        let shared_addrs = Arc::new(std::sync::RwLock::new(addrs.clone()));
        let (cmd_tx, cmd_rx) = mpsc::channel(1024);
        let (inbox_tx, inbox_rx) = mpsc::channel(config.inbox_capacity.max(1));
        let (ev_tx, _) = broadcast::channel(config.event_capacity.max(1));
        let actor = Actor {
            overlay,
            transport,
            events,
            commands: cmd_rx,
            inbox: inbox_tx,
            subscribers: ev_tx.clone(),
            start: Instant::now(),
            epoch: crate::runtime::wall_clock(),
            addrs: shared_addrs.clone(),
            nat,
            traversals: mpsc::channel(64),
            max_payload: config.max_message_size,
            lookups: BTreeMap::new(),
            casts: BTreeMap::new(),
            group_names: BTreeMap::new(),
            join: None,
            settling: None,
            join_ready: mpsc::channel(1),
            join_dial_error: None,
            join_connected: false,
            counters: Counters::default(),
            protected_gen: None,
            signer: signing_key()?,
        };
        tokio::spawn(actor.run());
        Ok(Node {
            inner: Arc::new(Inner {
                id,
                addrs: shared_addrs,
                commands: cmd_tx,
                inbox: Mutex::new(inbox_rx),
                subscribers: ev_tx,
            }),
        })
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// The addresses this node advertises now (they follow what peers observe and the UPnP
    /// mapping, unless fixed by [`NodeConfig::advertise`]).
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.inner
            .addrs
            .read()
            .map(|a| a.clone())
            .unwrap_or_default()
    }

    /// A ticket others can join through.
    pub fn ticket(&self) -> Ticket {
        Ticket::new(self.inner.id, self.addrs())
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .commands
            .send(make(tx))
            .await
            .map_err(|_| NodeError::Stopped)?;
        rx.await.map_err(|_| NodeError::Stopped)
    }

    /// Starts a new network with this node as its only member.
    pub async fn create(&self) -> Result<(), NodeError> {
        self.ask(Command::Create).await?
    }

    /// Joins the network of the node named by `ticket`; returns once this node is in (or
    /// joining failed after the overlay's bounded retries).
    pub async fn join(&self, ticket: &Ticket) -> Result<(), JoinError> {
        let t = ticket.clone();
        self.ask(|tx| Command::Join(t, tx)).await?
    }

    /// Leaves the network gracefully (neighbours take over at once). The node then stops
    /// taking part; shut it down to release its socket.
    pub async fn leave(&self) -> Result<(), NodeError> {
        self.ask(Command::Leave).await
    }

    /// Who is responsible for ring position `key`?
    pub async fn lookup(&self, key: RingId) -> Result<LookupResult, LookupError> {
        self.ask(|tx| Command::Lookup(key, tx)).await?
    }

    /// Who is responsible for application key `key` (placed at the first 128 bits of its
    /// SHA-256)?
    pub async fn lookup_key(&self, key: impl AsRef<[u8]>) -> Result<LookupResult, LookupError> {
        self.lookup(key_of(key)).await
    }

    /// Sends `payload` to whichever node is responsible for ring position `key` (best effort).
    pub async fn route(&self, key: RingId, payload: impl Into<Bytes>) -> Result<(), NodeError> {
        let p: Bytes = payload.into();
        self.ask(|tx| Command::Route(key, p, tx)).await?
    }

    /// Sends `payload` to the node `to` (best effort): routed through the overlay and delivered
    /// only if that node is a member. A node this one does not know is looked up first: if the
    /// signed answer names another node as responsible for its position, nothing is sent and
    /// the result is [`NodeError::NoSuchNode`].
    pub async fn send(&self, to: NodeId, payload: impl Into<Bytes>) -> Result<(), NodeError> {
        let p: Bytes = payload.into();
        self.ask(|tx| Command::Send(to, p, tx)).await?
    }

    /// Sends `payload` to every other node of the network, each exactly once, over a tree of
    /// disjoint ring segments; returns when the tree has reported back, with the number of
    /// nodes that received it.
    pub async fn broadcast(&self, payload: impl Into<Bytes>) -> Result<CastReport, NodeError> {
        let p: Bytes = payload.into();
        self.ask(|tx| Command::Broadcast(p, tx)).await?
    }

    /// Sends `payload` to every node responsible for a ring position in `[lo, hi]` (clockwise);
    /// returns when the nodes reached have reported back.
    pub async fn multicast_range(
        &self,
        lo: RingId,
        hi: RingId,
        payload: impl Into<Bytes>,
    ) -> Result<CastReport, NodeError> {
        let p: Bytes = payload.into();
        self.ask(|tx| Command::Range(lo, hi, p, tx)).await?
    }

    /// Joins group `name`: this node receives the group's messages (with
    /// [`Via::Group`]) until it leaves the group or the network.
    pub async fn join_group(&self, name: &str) -> Result<(), NodeError> {
        check_group_name(name)?;
        let n = name.to_string();
        self.ask(|tx| Command::JoinGroup(n, tx)).await?
    }

    /// Leaves group `name` (the node may stay a forwarder in the group's tree for others);
    /// [`NodeError::NotMember`] if it is not a member.
    pub async fn leave_group(&self, name: &str) -> Result<(), NodeError> {
        check_group_name(name)?;
        let n = name.to_string();
        self.ask(|tx| Command::LeaveGroup(n, tx)).await?
    }

    /// Sends `payload` to every member of group `name` (best effort, each member once); this
    /// node need not be a member.
    pub async fn send_group(&self, name: &str, payload: impl Into<Bytes>) -> Result<(), NodeError> {
        check_group_name(name)?;
        let p: Bytes = payload.into();
        let key = group_key(name);
        self.ask(|tx| Command::SendGroup(key, p, tx)).await?
    }

    /// The next application message for this node; `None` once the node has stopped.
    pub async fn recv(&self) -> Option<Message> {
        self.inner.inbox.lock().await.recv().await
    }

    /// Subscribes to the node's events from now on.
    pub fn events(&self) -> broadcast::Receiver<NodeEvent> {
        self.inner.subscribers.subscribe()
    }

    /// A snapshot of the node's state and counters.
    pub async fn status(&self) -> Result<Status, NodeError> {
        self.ask(Command::Status).await
    }

    /// Leaves gracefully if joined, closes every connection and releases the socket.
    pub async fn shutdown(&self) {
        let _ = self.ask(Command::Shutdown).await;
    }
}

fn check_group_name(name: &str) -> Result<(), NodeError> {
    if name.is_empty() || name.len() > 255 {
        return Err(NodeError::BadGroupName(format!(
            "{} bytes (1 to 255 allowed)",
            name.len()
        )));
    }
    Ok(())
}

/// The address to advertise for a socket bound to `a` until peers report what they see: an
/// unspecified IP becomes the address of the interface that holds the default route (found by
/// a route lookup, no packet is sent), or loopback on a machine without one.
fn advertised(a: SocketAddr) -> SocketAddr {
    let probe: SocketAddr = if a.is_ipv4() {
        SocketAddr::from(([203, 0, 113, 1], 9))
    } else {
        SocketAddr::from((Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1), 9))
    };
    if !a.ip().is_unspecified() {
        return a;
    }
    let loopback: IpAddr = if a.is_ipv4() {
        Ipv4Addr::LOCALHOST.into()
    } else {
        Ipv6Addr::LOCALHOST.into()
    };
    SocketAddr::new(route_ip(a, probe).unwrap_or(loopback), a.port())
}

/// The local IP the kernel would use from a socket bound like `bound` to reach `probe`
/// (connecting a UDP socket only looks the route up; no packet is sent).
pub(crate) fn route_ip(bound: SocketAddr, probe: SocketAddr) -> Option<IpAddr> {
    if bound.is_ipv4() != probe.is_ipv4() {
        return None;
    }
    let any: SocketAddr = if bound.is_ipv4() {
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))
    } else {
        SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0))
    };
    let s = std::net::UdpSocket::bind(any).ok()?;
    s.connect(probe).ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}
