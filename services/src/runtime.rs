//! The node's actor: one task that owns the overlay state machine and drives it with the
//! transport.
//!
//! Everything the overlay needs arrives here in one place — transport events (connections,
//! messages), the timer the overlay asks for, and commands from [`crate::Node`] handles — and
//! everything it outputs leaves from here: messages go to the transport with `try_send` (the
//! actor never waits on one slow peer; a full queue drops the message and counts it),
//! deliveries go to the application's bounded inbox, events to subscribers.

use crate::error::{JoinError, LookupError, NodeError};
use crate::id::group_key;
use crate::id::{ring_id_of, OverlayId};
use crate::status::{Counters, FingerEntry, GroupEntry, PeerEntry, Status};
use crate::ticket::Ticket;
use crate::wire::{forward_bytes, forwardable, Wire};
use crate::{Message, NodeEvent, Via};
use bytes::Bytes;
use p2ps_overlay::cast::{CastEvent, CastExt, CastKind, Casts};
use p2ps_overlay::groups::{GroupEvent, GroupExt, Groups};
use p2ps_overlay::messaging::{Addressed, Messaging, MessagingExt};
use p2ps_overlay::RelayHint;
use p2ps_overlay::{
    Class, Contact, Event as OverlayEvent, Node as Overlay, Output, RingId, State, Time,
};
use p2ps_transport::{
    CloseCode, ConnectError, DisconnectReason, Event as TransportEvent, Events, MappingState,
    NodeId, PathKind, PortMapper, Reachability, SendError, StreamClass, Transport, TraverseError,
    TrySendError,
};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// The answer to a lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LookupResult {
    /// The node responsible for the key.
    pub node: NodeId,
    /// Overlay hops the request took.
    pub hops: u16,
}

/// The outcome of a broadcast or range multicast.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CastReport {
    /// The message number this node gave it.
    pub seq: u64,
    /// Nodes that received it (this node not included), as counted back up the tree. A node
    /// whose count was lost to a crash is missing from it.
    pub delivered: u64,
    /// Whether every piece of the tree was acknowledged.
    pub complete: bool,
}

/// What waits for a lookup's answer.
pub(crate) enum Waiting {
    /// The application's lookup.
    Lookup(oneshot::Sender<Result<LookupResult, LookupError>>),
    /// A send to a node this one does not know: it goes once a lookup of the addressee's
    /// position names the addressee; otherwise the sender is told that no such node is there.
    Send {
        to: NodeId,
        payload: Bytes,
        reply: oneshot::Sender<Result<(), NodeError>>,
    },
}

pub(crate) enum Command {
    Broadcast(Bytes, oneshot::Sender<Result<CastReport, NodeError>>),
    Range(
        RingId,
        RingId,
        Bytes,
        oneshot::Sender<Result<CastReport, NodeError>>,
    ),
    JoinGroup(String, oneshot::Sender<Result<(), NodeError>>),
    LeaveGroup(String, oneshot::Sender<Result<(), NodeError>>),
    SendGroup(RingId, Bytes, oneshot::Sender<Result<(), NodeError>>),
    Create(oneshot::Sender<Result<(), NodeError>>),
    Join(Ticket, oneshot::Sender<Result<(), JoinError>>),
    Leave(oneshot::Sender<()>),
    Lookup(RingId, oneshot::Sender<Result<LookupResult, LookupError>>),
    Route(RingId, Bytes, oneshot::Sender<Result<(), NodeError>>),
    Send(NodeId, Bytes, oneshot::Sender<Result<(), NodeError>>),
    Status(oneshot::Sender<Status>),
    Shutdown(oneshot::Sender<()>),
}

/// Most NAT traversals (punch, then relay) running at once.
const MAX_TRAVERSALS: usize = 32;
/// A peer whose traversal failed is not tried again for this long.
const TRAVERSAL_BACKOFF: Duration = Duration::from_secs(10);
/// How long the node with the larger id waits before reaching a peer through its relay: longer
/// than the smaller id's own traversal (1 s direct, 4 s punch, then the relay), so that two
/// traversals of one pair do not cross (two circuits and two handshakes defeat each other).
const TRAVERSAL_DEFER: Duration = Duration::from_millis(6000);
/// How often the connection to the relay is checked (and re-opened).
const RELAY_CHECK: Duration = Duration::from_secs(5);
/// Longest wait, before a join, for the bootstrap connection, the first report of our external
/// address and the UPnP gateway's answer.
const JOIN_SETTLE: Duration = Duration::from_secs(3);
/// Most background dials to peers reached through their relay, at once.
const MAX_DIALING: usize = 64;
/// Messages kept per peer while its first connection is being made (re-sent if the dial fails
/// and a traversal gets through), and peers kept at once.
const WAITING_PER_PEER: usize = 16;
const WAITING_PEERS: usize = 256;

/// NAT traversal state of the actor.
#[derive(Default)]
pub(crate) struct Nat {
    /// The UPnP mapper, if enabled.
    pub(crate) mapper: Option<PortMapper>,
    /// The relay introducing this node while it is behind a NAT.
    pub(crate) relay: Option<(NodeId, Vec<SocketAddr>)>,
    /// Peers being reached through a relay now.
    pub(crate) traversing: BTreeSet<NodeId>,
    /// Peers whose traversal failed, and when.
    pub(crate) failed: BTreeMap<NodeId, Instant>,
    /// The advertised addresses are the configured ones, not the observed ones.
    pub(crate) fixed_addrs: bool,
    /// Copies of the messages sent to peers with no connection yet: the transport drops its
    /// queue when the dial fails, and a traversal that gets through re-sends these.
    pub(crate) waiting: BTreeMap<NodeId, Vec<p2ps_overlay::Message<OverlayId>>>,
    /// Peers behind NATs being dialed directly in the background while their overlay messages
    /// go through their relay (a failed dial starts a traversal).
    pub(crate) dialing: BTreeSet<NodeId>,
}

/// Results of background NAT traversals, back to the actor.
pub(crate) type TraversalResults = (
    mpsc::Sender<(NodeId, Result<(), TraverseError>)>,
    mpsc::Receiver<(NodeId, Result<(), TraverseError>)>,
);

pub(crate) struct Actor {
    pub(crate) overlay: Overlay<OverlayId>,
    pub(crate) transport: Transport<Wire>,
    pub(crate) events: Events<Wire>,
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) inbox: mpsc::Sender<Message>,
    pub(crate) subscribers: broadcast::Sender<NodeEvent>,
    pub(crate) start: Instant,
    /// The wall-clock time at `start`: the overlay's clock is the Unix epoch's, so that the
    /// times in signed records mean the same on every node.
    pub(crate) epoch: Time,
    pub(crate) addrs: Arc<RwLock<Vec<SocketAddr>>>,
    pub(crate) nat: Nat,
    pub(crate) traversals: TraversalResults,
    pub(crate) max_payload: usize,
    /// Lookups in flight, by request id: the application's, and those of sends waiting to
    /// learn whether their addressee is in the network.
    pub(crate) lookups: BTreeMap<u64, Waiting>,
    /// Broadcasts and range multicasts waiting for their report, by message number.
    pub(crate) casts: BTreeMap<u64, oneshot::Sender<Result<CastReport, NodeError>>>,
    /// Names of the groups this node joined, by ring position.
    pub(crate) group_names: BTreeMap<RingId, String>,
    pub(crate) join: Option<(NodeId, oneshot::Sender<Result<(), JoinError>>)>,
    /// A join waiting for this node to learn its own address (see [`Actor::settle_before_join`]).
    pub(crate) settling: Option<(Ticket, oneshot::Sender<Result<(), JoinError>>)>,
    /// Signals that the settling is over.
    pub(crate) join_ready: (mpsc::Sender<()>, mpsc::Receiver<()>),
    pub(crate) join_dial_error: Option<ConnectError>,
    pub(crate) join_connected: bool,
    pub(crate) counters: Counters,
    /// The routing table generation last marked as wanted in the transport.
    pub(crate) protected_gen: Option<u64>,
    /// Signs messages handed to a relay ([`Wire::Forward`]).
    pub(crate) signer: p2ps_transport::SigningKey,
}

fn class_of(c: Class) -> StreamClass {
    match c {
        Class::Routing => StreamClass::Routing,
        Class::Tree => StreamClass::Tree,
        Class::User => StreamClass::User,
    }
}

impl Actor {
    fn now(&self) -> Time {
        self.epoch + self.start.elapsed()
    }

    fn instant(&self, t: Time) -> Instant {
        self.start + t.since(self.epoch)
    }

    /// Runs until the node is shut down or every handle is gone.
    pub(crate) async fn run(mut self) {
        let mut reach = self.transport.watch_reachability();
        let mut mapping = self.nat.mapper.as_ref().map(|m| m.watch());
        let mut relay_check = tokio::time::interval(RELAY_CHECK);
        relay_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.update_reachability();
        loop {
            let deadline = self.overlay.poll_timeout().map(|t| self.instant(t));
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                cmd = self.commands.recv() => match cmd {
                    Some(Command::Shutdown(done)) => {
                        self.shutdown().await;
                        let _ = done.send(());
                        return;
                    }
                    Some(cmd) => self.on_command(cmd),
                    None => {
                        self.shutdown().await;
                        return;
                    }
                },
                ev = self.events.recv() => match ev {
                    Some(ev) => self.on_transport(ev),
                    None => return,
                },
                _ = sleep => {
                    let now = self.now();
                    self.overlay.handle_timeout(now);
                }
                Ok(()) = reach.changed() => self.update_reachability(),
                Ok(()) = async {
                    match mapping.as_mut() {
                        Some(m) => m.changed().await,
                        None => std::future::pending().await,
                    }
                } => {
                    let external = self.nat.mapper.as_ref().and_then(|m| m.external());
                    self.transport.set_port_mapping(external);
                    self.update_reachability();
                }
                _ = relay_check.tick() => self.keep_relay(),
                Some((peer, result)) = self.traversals.1.recv() => self.traversal_done(peer, result),
                Some(()) = self.join_ready.1.recv() => self.start_join(),
            }
            self.flush();
        }
    }

    async fn shutdown(&mut self) {
        if self.overlay.state() == State::Joined {
            let now = self.now();
            self.overlay.leave(now);
            self.flush();
        }
        if let Some(m) = self.nat.mapper.take() {
            if let Err(e) = m.shutdown().await {
                warn!(error = %e, "removing the UPnP port mapping");
            }
        }
        self.transport.shutdown("node shut down").await;
    }

    /// Reachability or the port mapping changed: advertise what is useful now, and tell peers
    /// where to find this node's relay while it is behind a NAT.
    fn update_reachability(&mut self) {
        let r = self.transport.reachability();
        if !self.nat.fixed_addrs {
            let addrs = self.transport.advertised_addrs();
            if !addrs.is_empty() {
                self.advertise(addrs);
            }
        }
        let hint = match r.class {
            Reachability::Public | Reachability::PortMapped => None,
            _ => self.nat.relay.as_ref().map(|(id, addrs)| RelayHint {
                id: OverlayId(*id),
                addrs: addrs.clone(),
            }),
        };
        self.overlay.set_relay_hint(hint);
    }

    /// Before any peer has reported our address, a socket bound to a wildcard address
    /// advertises the IP of the interface that routes to the node we are about to join: on a
    /// machine without a default route (or with several interfaces) that is the one the rest
    /// of the network can reach, where the default-route guess made at start-up is not.
    fn guess_addrs_towards(&mut self, peer_addrs: &[SocketAddr]) {
        if self.nat.fixed_addrs || !self.transport.advertised_addrs().is_empty() {
            return;
        }
        let Ok(bound) = self.transport.local_addr() else {
            return;
        };
        if !bound.ip().is_unspecified() {
            return;
        }
        let Some(ip) = peer_addrs
            .iter()
            .find_map(|a| crate::node::route_ip(bound, *a))
        else {
            return;
        };
        self.advertise(vec![SocketAddr::new(ip, bound.port())]);
    }

    /// The addresses this node hands out: in its overlay contacts and its ticket.
    fn advertise(&mut self, addrs: Vec<SocketAddr>) {
        self.overlay.set_local_addrs(addrs.clone());
        if let Ok(mut a) = self.addrs.write() {
            *a = addrs;
        }
    }

    /// Whether a traversal to `peer` failed less than [`TRAVERSAL_BACKOFF`] ago.
    fn failed_lately(&self, peer: NodeId) -> bool {
        self.nat
            .failed
            .get(&peer)
            .is_some_and(|t| t.elapsed() < TRAVERSAL_BACKOFF)
    }

    /// Keeps the connection to this node's relay open while it is behind a NAT.
    fn keep_relay(&mut self) {
        let Some((relay, addrs)) = self.nat.relay.clone() else {
            return;
        };
        if matches!(
            self.transport.reachability().class,
            Reachability::Public | Reachability::PortMapped
        ) || self.transport.path(relay).is_some()
        {
            return;
        }
        self.transport.add_addresses(relay, addrs.iter().copied());
        let t = self.transport.clone();
        tokio::spawn(async move {
            if let Some(a) = addrs.first() {
                if let Err(e) = t.connect(relay, *a).await {
                    debug!(relay = %relay.short(), error = %e, "reconnecting to the relay");
                }
            }
        });
    }

    /// `peer` could not be dialed directly: if it announced a relay, reach it through that
    /// (hole punching, then a relayed circuit) in the background. Returns whether a traversal
    /// runs (the overlay is told of the failure only if it fails).
    fn traverse(&mut self, peer: NodeId) -> bool {
        let Some(hint) = self.overlay.relay_hint(&OverlayId(peer)).cloned() else {
            return false;
        };
        let relay = hint.id.0;
        if relay == self.transport.node_id() {
            // We are its relay and not connected to it: nothing to go through.
            return false;
        }
        if self.nat.traversing.contains(&peer) {
            return true;
        }
        if self.nat.traversing.len() >= MAX_TRAVERSALS || self.failed_lately(peer) {
            return false;
        }
        self.nat.traversing.insert(peer);
        self.counters.traversals += 1;
        if !self.can_forward(peer) {
            // Nothing reaches the peer meanwhile: its silence is not a crash.
            let now = self.now();
            self.overlay.handle_link_pending(now, OverlayId(peer));
        }
        let addrs = self.overlay.addresses(&OverlayId(peer)).to_vec();
        let t = self.transport.clone();
        let done = self.traversals.0.clone();
        let defer = self.transport.node_id() > peer;
        tokio::spawn(async move {
            let result = async {
                if defer {
                    // Both ends often need each other at once (stabilisation runs both ways);
                    // two traversals crossing (two relay circuits, two handshakes) can defeat
                    // each other. The larger id gives the smaller one a head start.
                    tokio::time::sleep(TRAVERSAL_DEFER).await;
                    if t.path(peer).is_some() {
                        return Ok(());
                    }
                }
                if t.path(relay).is_none() {
                    t.add_addresses(relay, hint.addrs.iter().copied());
                    if let Some(a) = hint.addrs.first() {
                        let _ = t.connect(relay, *a).await;
                    }
                }
                // The direct dial just failed: try it briefly once more while the punch starts.
                let options = p2ps_transport::TraverseOptions {
                    direct_timeout: Duration::from_secs(1),
                    punch_head_start: Some(Duration::from_millis(150)),
                    punch: p2ps_transport::PunchOptions {
                        timeout: Duration::from_secs(4),
                        ..Default::default()
                    },
                    ..Default::default()
                };
                t.connect_any_with(peer, &addrs, Some(relay), options)
                    .await
                    .map(|_| ())
            }
            .await;
            let _ = done.send((peer, result)).await;
        });
        true
    }

    /// The join request carries this node's contact, which the ring then passes around: first
    /// learn what to put in it. Connects to the bootstrap node and waits (bounded by
    /// [`JOIN_SETTLE`]) for the first report of our external address and for the UPnP
    /// gateway's answer, then [`Actor::start_join`] runs.
    fn settle_before_join(&mut self, ticket: &Ticket) {
        let t = self.transport.clone();
        let boot = ticket.id;
        let addr = ticket.addrs.first().copied();
        let mut reach = t.watch_reachability();
        let mapping = self.nat.mapper.as_ref().map(|m| m.watch());
        let ready = self.join_ready.0.clone();
        tokio::spawn(async move {
            let settle = async {
                if let Some(a) = addr {
                    if t.connect(boot, a).await.is_ok() {
                        let _ = reach.wait_for(|s| s.reporters > 0).await;
                    }
                }
                if let Some(mut m) = mapping {
                    let _ = m.wait_for(|s| !matches!(s, MappingState::Searching)).await;
                }
            };
            let _ = tokio::time::timeout(JOIN_SETTLE, settle).await;
            let _ = ready.send(()).await;
        });
    }

    /// Sends the join request, with the addresses and relay hint learnt meanwhile.
    fn start_join(&mut self) {
        let Some((ticket, reply)) = self.settling.take() else {
            return;
        };
        self.update_reachability();
        let now = self.now();
        let contact = Contact {
            addrs: ticket.addrs,
            ..Contact::bare(OverlayId(ticket.id))
        };
        match self.overlay.join(now, contact) {
            Ok(()) => {
                self.join_dial_error = None;
                self.join_connected = self.transport.path(ticket.id).is_some();
                self.join = Some((ticket.id, reply));
            }
            Err(e) => {
                let _ = reply.send(Err(JoinError::Node(e.into())));
            }
        }
    }

    fn traversal_done(&mut self, peer: NodeId, result: Result<(), TraverseError>) {
        self.nat.traversing.remove(&peer);
        match result {
            Ok(()) => {
                self.nat.failed.remove(&peer);
                // What the failed dial dropped goes out on the new connection.
                for msg in self.nat.waiting.remove(&peer).unwrap_or_default() {
                    self.send(peer, msg);
                }
            }
            Err(e) => {
                self.nat.waiting.remove(&peer);
                debug!(peer = %peer.short(), error = %e, "NAT traversal failed");
                self.counters.traversals_failed += 1;
                self.nat.failed.insert(peer, Instant::now());
                if self.nat.failed.len() > 4096 {
                    self.nat
                        .failed
                        .retain(|_, t| t.elapsed() < TRAVERSAL_BACKOFF);
                }
                self.unreachable(peer);
            }
        }
    }

    fn on_command(&mut self, cmd: Command) {
        let now = self.now();
        match cmd {
            Command::Create(reply) => {
                let _ = reply.send(self.overlay.create(now).map_err(NodeError::from));
            }
            Command::Join(ticket, reply) => {
                if ticket.id == self.transport.node_id() {
                    let _ = reply.send(Err(JoinError::OwnTicket));
                    return;
                }
                if self.overlay.state() != State::Idle || self.settling.is_some() {
                    let e = p2ps_overlay::CommandError::AlreadyStarted;
                    let _ = reply.send(Err(JoinError::Node(e.into())));
                    return;
                }
                self.transport
                    .add_addresses(ticket.id, ticket.addrs.iter().copied());
                self.guess_addrs_towards(&ticket.addrs);
                if self.nat.relay.is_none() {
                    // The node we join through introduces us while we are behind a NAT.
                    self.nat.relay = Some((ticket.id, ticket.addrs.clone()));
                    self.update_reachability();
                }
                self.settle_before_join(&ticket);
                self.settling = Some((ticket, reply));
            }
            Command::Leave(reply) => {
                self.overlay.leave(now);
                let _ = reply.send(());
            }
            Command::Lookup(key, reply) => match self.overlay.lookup(now, key) {
                Ok(req) => {
                    self.lookups.insert(req, Waiting::Lookup(reply));
                }
                Err(e) => {
                    let _ = reply.send(Err(LookupError::Node(e.into())));
                }
            },
            Command::Route(key, payload, reply) => {
                let r = self.check_size(&payload).and_then(|()| {
                    self.overlay
                        .route(now, key, &payload)
                        .map_err(NodeError::from)
                });
                let _ = reply.send(r);
            }
            Command::Send(to, payload, reply) => {
                if let Err(e) = self.check_size(&payload) {
                    let _ = reply.send(Err(e));
                    return;
                }
                let known =
                    to == self.overlay.id().0 || self.overlay.table().contains(&OverlayId(to));
                if known {
                    let r = self
                        .overlay
                        .send(now, OverlayId(to), &payload)
                        .map_err(NodeError::from);
                    let _ = reply.send(r);
                    return;
                }
                // Not a node this one knows: first ask who is responsible for its position
                // (a signed answer with its predecessor's word); send only if that is it.
                match self.overlay.lookup(now, ring_id_of(&to)) {
                    Ok(req) => {
                        self.lookups
                            .insert(req, Waiting::Send { to, payload, reply });
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.into()));
                    }
                }
            }
            Command::Broadcast(payload, reply) => {
                self.start_cast(payload, reply, |o, p| o.broadcast(now, p, true))
            }
            Command::Range(lo, hi, payload, reply) => self.start_cast(payload, reply, |o, p| {
                o.multicast_range(now, lo, hi, p, true)
            }),
            Command::JoinGroup(name, reply) => {
                let key = group_key(&name);
                let r = self.overlay.join_group(now, key).map_err(NodeError::from);
                if r.is_ok() {
                    self.group_names.insert(key, name);
                }
                let _ = reply.send(r);
            }
            Command::LeaveGroup(name, reply) => {
                let key = group_key(&name);
                let r = if self.overlay.is_group_member(key) {
                    self.overlay.leave_group(now, key);
                    self.group_names.remove(&key);
                    Ok(())
                } else {
                    Err(NodeError::NotMember(name))
                };
                let _ = reply.send(r);
            }
            Command::SendGroup(key, payload, reply) => {
                let r = self.check_size(&payload).and_then(|()| {
                    self.overlay
                        .send_group(now, key, &payload)
                        .map(|_| ())
                        .map_err(NodeError::from)
                });
                let _ = reply.send(r);
            }
            Command::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Command::Shutdown(_) => {}
        }
    }

    /// Starts a broadcast or range multicast; `reply` is answered when its report comes.
    fn start_cast(
        &mut self,
        payload: Bytes,
        reply: oneshot::Sender<Result<CastReport, NodeError>>,
        start: impl FnOnce(&mut Overlay<OverlayId>, &[u8]) -> Result<u64, p2ps_overlay::CommandError>,
    ) {
        match self
            .check_size(&payload)
            .and_then(|()| start(&mut self.overlay, &payload).map_err(NodeError::from))
        {
            Ok(seq) => {
                self.casts.insert(seq, reply);
            }
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    fn check_size(&self, payload: &[u8]) -> Result<(), NodeError> {
        if payload.len() > self.max_payload {
            return Err(NodeError::TooLarge {
                len: payload.len(),
                max: self.max_payload,
            });
        }
        Ok(())
    }

    fn on_transport(&mut self, ev: TransportEvent<Wire>) {
        let now = self.now();
        match ev {
            TransportEvent::Connected {
                peer,
                remote_addr,
                outbound,
                relay,
            } => {
                debug!(peer = %peer.short(), %remote_addr, outbound, relayed = relay.is_some(), "connected");
                if self.join.as_ref().is_some_and(|(b, _)| *b == peer) {
                    self.join_connected = true;
                }
                // One socket per node dials and accepts, so the address a connection comes
                // from is where the peer can be reached: remember it for the overlay's
                // contacts and for later dials. A relayed connection's address is synthetic.
                if relay.is_none() {
                    self.overlay.add_addresses(OverlayId(peer), &[remote_addr]);
                    self.transport.add_addresses(peer, [remote_addr]);
                }
                if !self.nat.traversing.contains(&peer) {
                    // The dial got through: nothing to re-send.
                    self.nat.waiting.remove(&peer);
                }
                self.nat.dialing.remove(&peer);
                self.overlay.handle_link_up(now, OverlayId(peer));
            }
            TransportEvent::Disconnected { peer, reason } => {
                debug!(peer = %peer.short(), ?reason, "disconnected");
                if matches!(reason, DisconnectReason::TimedOut) {
                    self.counters.peers_timed_out += 1;
                }
                // A connection either side closed as no longer needed says nothing about
                // whether the peer lives; everything else (a timeout, an error, a shutdown) is
                // taken for a crash.
                let unneeded = matches!(
                    reason,
                    DisconnectReason::Local {
                        code: CloseCode::Normal,
                        ..
                    } | DisconnectReason::Remote {
                        code: CloseCode::Normal,
                        ..
                    }
                );
                if unneeded {
                    self.overlay.handle_link_closed(now, OverlayId(peer));
                } else {
                    self.overlay.handle_link_down(now, OverlayId(peer));
                }
            }
            TransportEvent::DialFailed { peer, error } => {
                debug!(peer = %peer.short(), %error, "dial failed");
                if self.join.as_ref().is_some_and(|(b, _)| *b == peer) {
                    self.join_dial_error = Some(error);
                }
                self.nat.dialing.remove(&peer);
                if !self.traverse(peer) {
                    self.nat.waiting.remove(&peer);
                    self.unreachable(peer);
                }
            }
            TransportEvent::Message {
                peer,
                msg: Wire::Overlay(msg),
                ..
            } => {
                self.overlay.handle_message(now, OverlayId(peer), msg);
            }
            TransportEvent::Message {
                peer,
                msg: Wire::Forward { to, msg, proof },
                ..
            } => self.forward_for(peer, to.0, msg, proof),
            TransportEvent::Message {
                peer,
                msg: Wire::Forwarded { from, msg, proof },
                ..
            } => {
                // Only this node's own relay passes messages on, only overlay upkeep, and only
                // as the sender signed it.
                let me = OverlayId(self.transport.node_id());
                let from_relay = self.nat.relay.as_ref().is_some_and(|(r, _)| *r == peer);
                if from_relay
                    && forwardable(&msg)
                    && from != me
                    && proof.verify(&from.0, &forward_bytes(&me, &msg))
                {
                    self.overlay.handle_message(now, from, msg);
                } else {
                    self.counters.forwards_refused += 1;
                    debug!(peer = %peer.short(), "refused a forwarded message: not our relay, or not signed by its sender");
                }
            }
            TransportEvent::IncomingStream { peer, .. } => {
                // No service uses raw streams yet; dropping them resets the stream.
                debug!(peer = %peer.short(), "refused a raw stream: no handler");
            }
        }
    }

    /// Carries out everything the overlay asked for.
    fn flush(&mut self) {
        while let Some(out) = self.overlay.poll_output() {
            match out {
                Output::Send { to, msg } => self.send(to.0, msg),
                Output::Disconnect { peer } => {
                    if self.nat.relay.as_ref().is_some_and(|(r, _)| *r == peer.0) {
                        // The link to our relay stays open while we are behind a NAT.
                        continue;
                    }
                    if self.transport.dialed(peer.0) == Some(false) {
                        // A connection belongs to the side that dialed it, which closes it when
                        // it no longer needs it: the peer may hold us in its table and would
                        // only dial again.
                        continue;
                    }
                    let t = self.transport.clone();
                    tokio::spawn(async move {
                        t.disconnect(peer.0, "idle").await;
                    });
                }
                Output::Event(e) => self.on_overlay_event(e),
            }
        }
        self.drain_services();
        // The routing table's peers may take the connections reserved from strangers.
        let generation = self.overlay.table().generation();
        if self.protected_gen != Some(generation) {
            self.protected_gen = Some(generation);
            let wanted = self.overlay.table().distinct_peers();
            self.transport
                .set_protected(wanted.into_iter().map(|p| p.0));
        }
    }

    fn send(&mut self, to: NodeId, msg: p2ps_overlay::Message<OverlayId>) {
        let unconnected = self.transport.path(to).is_none();
        let msg = if unconnected && forwardable(&msg) {
            match self.forward_via_relay(to, msg) {
                None => return,
                Some(msg) => msg,
            }
        } else {
            msg
        };
        if unconnected && self.overlay.relay_hint(&OverlayId(to)).is_some() {
            // First contact with a peer behind a NAT: keep a copy in case the dial fails.
            if self.nat.waiting.len() < WAITING_PEERS || self.nat.waiting.contains_key(&to) {
                let w = self.nat.waiting.entry(to).or_default();
                if w.len() < WAITING_PER_PEER {
                    w.push(msg.clone());
                }
            }
        }
        let known = self.overlay.addresses(&OverlayId(to));
        if !known.is_empty() {
            self.transport.add_addresses(to, known.iter().copied());
        }
        let class = class_of(msg.class());
        match self.transport.try_send(to, class, &Wire::Overlay(msg)) {
            Ok(()) => {}
            Err(TrySendError::QueueFull { .. }) => {
                self.counters.send_queue_full += 1;
                debug!(peer = %to.short(), ?class, "send queue full: message dropped");
                if class == StreamClass::Tree {
                    // A slow tree neighbour must not hold back the others: the overlay drops
                    // it from its trees if this keeps happening.
                    self.counters.tree_queue_full += 1;
                    let now = self.now();
                    self.overlay.handle_congestion(now, OverlayId(to));
                }
            }
            Err(TrySendError::Send(SendError::NoAddress { .. })) => {
                self.counters.send_failed += 1;
                if !self.traverse(to) {
                    self.unreachable(to);
                }
            }
            Err(e) => {
                self.counters.send_failed += 1;
                debug!(peer = %to.short(), error = %e, "send failed");
            }
        }
    }

    /// The relay `peer` announced, if messages for it can go through that relay (not this
    /// node, not the peer itself).
    fn forwarding_relay(&self, peer: NodeId) -> Option<&RelayHint<OverlayId>> {
        self.overlay
            .relay_hint(&OverlayId(peer))
            .filter(|h| h.id.0 != self.transport.node_id() && h.id.0 != peer)
    }

    /// Whether messages for `peer` can go through the relay it announced.
    fn can_forward(&self, peer: NodeId) -> bool {
        self.forwarding_relay(peer).is_some()
    }

    /// No direct, punched or relayed connection to `peer` could be made. If its relay still
    /// passes our messages on, the overlay's own timeouts judge whether it lives; otherwise it
    /// is taken for crashed.
    fn unreachable(&mut self, peer: NodeId) {
        if !self.can_forward(peer) {
            let now = self.now();
            self.overlay.handle_link_down(now, OverlayId(peer));
        }
    }

    /// `to` (not connected) is behind a NAT: hands `msg` to its relay, which is connected to
    /// it, and starts reaching `to` itself in the background (a dial, then a traversal if the
    /// dial fails), so that later messages go straight. Gives `msg` back if there is no relay
    /// to use (`None`: it went to the relay).
    fn forward_via_relay(
        &mut self,
        to: NodeId,
        msg: p2ps_overlay::Message<OverlayId>,
    ) -> Option<p2ps_overlay::Message<OverlayId>> {
        let Some(hint) = self.forwarding_relay(to).cloned() else {
            return Some(msg);
        };
        let relay = hint.id.0;
        if self.transport.path(relay).is_none() {
            self.transport
                .add_addresses(relay, hint.addrs.iter().copied());
        }
        let class = class_of(msg.class());
        let proof = self.signer.sign(&forward_bytes(&OverlayId(to), &msg));
        let wire = Wire::Forward {
            to: OverlayId(to),
            msg,
            proof,
        };
        if let Err(e) = self.transport.try_send(relay, class, &wire) {
            debug!(peer = %to.short(), relay = %relay.short(), error = %e, "could not forward through the relay");
            return match wire {
                Wire::Forward { msg, .. } | Wire::Forwarded { msg, .. } | Wire::Overlay(msg) => {
                    Some(msg)
                }
            };
        }
        self.counters.forwarded_via_relay += 1;
        self.reach_in_background(to);
        None
    }

    /// Starts a direct dial to `to` unless one, or a traversal, already runs (or failed lately).
    fn reach_in_background(&mut self, to: NodeId) {
        if self.nat.dialing.contains(&to)
            || self.nat.traversing.contains(&to)
            || self.nat.dialing.len() >= MAX_DIALING
            || self.failed_lately(to)
        {
            return;
        }
        let Some(addr) = self.overlay.addresses(&OverlayId(to)).first().copied() else {
            // No address to dial: go straight to punching and relaying.
            self.traverse(to);
            return;
        };
        self.nat.dialing.insert(to);
        let t = self.transport.clone();
        // A failure comes back as `DialFailed`, which starts the traversal.
        tokio::spawn(async move {
            let _ = t.connect(to, addr).await;
        });
    }

    /// `peer` asks this node to pass `msg` on to `to`, one of the nodes it relays for.
    fn forward_for(
        &mut self,
        peer: NodeId,
        to: NodeId,
        msg: p2ps_overlay::Message<OverlayId>,
        proof: p2ps_transport::Signature,
    ) {
        if !forwardable(&msg) || to == self.transport.node_id() || self.transport.path(to).is_none()
        {
            self.counters.forwards_refused += 1;
            debug!(peer = %peer.short(), to = %to.short(), "refused to forward: not connected or not upkeep");
            return;
        }
        let class = class_of(msg.class());
        let wire = Wire::Forwarded {
            from: OverlayId(peer),
            msg,
            proof,
        };
        match self.transport.try_send(to, class, &wire) {
            Ok(()) => self.counters.forwarded_for_peers += 1,
            Err(e) => {
                self.counters.forwards_refused += 1;
                debug!(to = %to.short(), error = %e, "could not forward");
            }
        }
    }

    /// Takes what the standard services have for the application: deliveries go to the
    /// inbox, reports to the commands waiting for them, group events to subscribers.
    fn drain_services(&mut self) {
        let mut out = Vec::new();
        if let Some(m) = self.overlay.service_mut::<Messaging<OverlayId>>() {
            while let Some(d) = m.poll_delivery() {
                let via = match d.addressed {
                    Addressed::Node => Via::Node,
                    Addressed::Key => Via::Key,
                };
                out.push(Message {
                    from: d.origin.0,
                    key: d.key,
                    hops: d.hops,
                    via,
                    payload: d.payload,
                });
            }
        }
        let me = self.overlay.pos();
        let mut done = Vec::new();
        if let Some(c) = self.overlay.service_mut::<Casts<OverlayId>>() {
            while let Some(e) = c.poll_event() {
                match e {
                    CastEvent::Delivered {
                        origin,
                        kind,
                        hops,
                        payload,
                    } => {
                        let (key, via) = match kind {
                            CastKind::Broadcast => (me, Via::Broadcast),
                            CastKind::Range { lo, hi } => (lo, Via::Range { lo, hi }),
                        };
                        out.push(Message {
                            from: origin.0,
                            key,
                            hops,
                            via,
                            payload,
                        });
                    }
                    CastEvent::Done {
                        seq,
                        delivered,
                        complete,
                    } => done.push(CastReport {
                        seq,
                        delivered: delivered.unwrap_or(0),
                        complete,
                    }),
                }
            }
        }
        let mut dropped = Vec::new();
        if let Some(g) = self.overlay.service_mut::<Groups<OverlayId>>() {
            while let Some(e) = g.poll_event() {
                match e {
                    GroupEvent::Delivered {
                        origin,
                        group,
                        hops,
                        payload,
                    } => {
                        let name = self
                            .group_names
                            .get(&group)
                            .cloned()
                            .unwrap_or_else(|| group.to_string());
                        out.push(Message {
                            from: origin.0,
                            key: group,
                            hops,
                            via: Via::Group(name),
                            payload,
                        });
                    }
                    GroupEvent::ChildDropped { group, peer } => dropped.push((group, peer.0)),
                }
            }
        }
        for m in out {
            if self.inbox.try_send(m).is_err() {
                self.counters.inbox_dropped += 1;
                warn!("application inbox full: message dropped");
            }
        }
        for report in done {
            if let Some(reply) = self.casts.remove(&report.seq) {
                let _ = reply.send(Ok(report));
            }
        }
        for (group, peer) in dropped {
            warn!(peer = %peer.short(), %group, "slow child dropped from a group tree");
            let _ = self
                .subscribers
                .send(NodeEvent::GroupChildDropped { group, peer });
        }
    }

    fn on_overlay_event(&mut self, e: OverlayEvent<OverlayId>) {
        let public = match e {
            OverlayEvent::Joined => {
                if let Some((_, reply)) = self.join.take() {
                    let _ = reply.send(Ok(()));
                }
                info!(id = %self.transport.node_id().short(), "joined");
                Some(NodeEvent::Joined)
            }
            OverlayEvent::JoinFailed => {
                if let Some((_, reply)) = self.join.take() {
                    let attempts = self.overlay.config().join_attempts;
                    let err = match (self.join_dial_error.take(), self.join_connected) {
                        (_, true) => JoinError::NoAnswer { attempts },
                        (source, false) => JoinError::Unreachable { attempts, source },
                    };
                    let _ = reply.send(Err(err));
                }
                Some(NodeEvent::JoinFailed)
            }
            OverlayEvent::Left => Some(NodeEvent::Left),
            OverlayEvent::Isolated => {
                warn!("lost every neighbour: joining again through the nodes known");
                Some(NodeEvent::Isolated)
            }
            OverlayEvent::NeighbourUp(p) => Some(NodeEvent::NeighbourUp(p.0)),
            OverlayEvent::NeighbourDown(p) => {
                debug!(peer = %p.0.short(), path = ?self.transport.path(p.0), "neighbour down");
                Some(NodeEvent::NeighbourDown(p.0))
            }
            OverlayEvent::LookupDone { req, result, .. } => {
                let r = result.map(|(node, hops)| LookupResult { node: node.0, hops });
                match self.lookups.remove(&req) {
                    Some(Waiting::Lookup(reply)) => {
                        let _ = reply.send(r.map_err(LookupError::from));
                    }
                    Some(Waiting::Send { to, payload, reply }) => {
                        let sent = match r {
                            Ok(found) if found.node == to => self
                                .overlay
                                .send(self.now(), OverlayId(to), &payload)
                                .map_err(NodeError::from),
                            Ok(found) => Err(NodeError::NoSuchNode {
                                to,
                                responsible: found.node,
                            }),
                            Err(p2ps_overlay::LookupError::Left) => Err(NodeError::Stopped),
                            Err(p2ps_overlay::LookupError::Timeout) => {
                                Err(NodeError::Unreachable(to))
                            }
                        };
                        let _ = reply.send(sent);
                    }
                    None => {}
                }
                None
            }
        };
        if let Some(ev) = public {
            // No subscriber is fine.
            let _ = self.subscribers.send(ev);
        }
    }

    fn status(&self) -> Status {
        let t = self.overlay.table();
        let ids = |v: &[p2ps_overlay::Peer<OverlayId>]| v.iter().map(|p| p.id.0).collect();
        let ts = self.transport.stats();
        let os = self.overlay.stats();
        let reach = self.transport.reachability();
        Status {
            id: self.transport.node_id(),
            ring_position: self.overlay.pos(),
            addrs: self.addrs.read().map(|a| a.clone()).unwrap_or_default(),
            reachability: reach.class.into(),
            external_addrs: reach.external_addrs.iter().map(|e| e.addr).collect(),
            port_mapping: match &self.nat.mapper {
                None => crate::status::PortMapping::Off,
                Some(m) => (&m.state()).into(),
            },
            relay: match reach.class {
                Reachability::Public | Reachability::PortMapped => Vec::new(),
                _ => self.nat.relay.iter().map(|(id, _)| *id).collect(),
            },
            state: self.overlay.state().into(),
            strategy: self.overlay.config().strategy,
            successors: ids(t.successors()),
            predecessors: ids(t.predecessors()),
            fingers: t
                .finger_slots()
                .filter_map(|(dir, level, p)| {
                    p.map(|p| FingerEntry {
                        dir,
                        level,
                        node: p.id.0,
                    })
                })
                .collect(),
            distinct_neighbours: t.distinct_peers().len(),
            connections: ts
                .peers
                .iter()
                .map(|p| PeerEntry {
                    node: p.peer,
                    addr: p.remote_addr,
                    outbound: p.outbound,
                    relayed_by: match self.transport.path(p.peer) {
                        Some(PathKind::Relayed { relay, .. }) => vec![relay],
                        _ => Vec::new(),
                    },
                    rtt_ms: p.rtt.as_secs_f64() * 1000.0,
                })
                .collect(),
            groups: self
                .overlay
                .group_roles()
                .into_iter()
                .map(|r| GroupEntry {
                    name: self.group_names.get(&r.group).cloned(),
                    position: r.group,
                    member: r.member,
                    root: r.root,
                    parent: r.parent.map(|p| p.0).into_iter().collect(),
                    children: r.children.into_iter().map(|p| p.0).collect(),
                })
                .collect(),
            casts_in_progress: self.overlay.casts_in_progress(),
            counters: Counters {
                messages_out: ts.classes.iter().map(|c| c.messages_out).sum(),
                messages_in: ts.classes.iter().map(|c| c.messages_in).sum(),
                bytes_out: ts.classes.iter().map(|c| c.bytes_out).sum(),
                bytes_in: ts.classes.iter().map(|c| c.bytes_in).sum(),
                udp_bytes_out: ts.udp.bytes_out,
                udp_bytes_in: ts.udp.bytes_in,
                routing_bytes_out: ts.class(StreamClass::Routing).bytes_out,
                user_bytes_out: ts.class(StreamClass::User).bytes_out,
                tree_bytes_out: ts.class(StreamClass::Tree).bytes_out,
                forwarded: os.forwarded,
                delivered: self.delivered(),
                dropped: os.dropped,
                lookups_ok: os.lookups_ok,
                lookups_failed: os.lookups_failed,
                peers_failed: os.peers_failed,
                forged: os.forged,
                stale: os.stale,
                unverified: os.unverified,
                bad_answers: os.bad_answers,
                rejoins: os.rejoins,
                connections_dialed: ts.connections_dialed,
                frame_errors: ts.frame_errors,
                handshakes_failed: ts.handshakes_failed,
                ..self.counters
            },
            uptime_secs: self.start.elapsed().as_secs_f64(),
        }
    }
}

/// The overlay's clock: microseconds since the Unix epoch (the epoch itself on a clock set
/// before 1970). Signed records and envelopes carry times of this clock.
pub fn wall_clock() -> Time {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Time::ZERO + since
}

impl Actor {
    /// Payloads delivered to the application by the standard services.
    fn delivered(&self) -> u64 {
        let messages = self
            .overlay
            .service::<Messaging<OverlayId>>()
            .map_or(0, |m| m.counts().0);
        let casts = self
            .overlay
            .service::<Casts<OverlayId>>()
            .map_or(0, |c| c.stats().delivered);
        let groups = self
            .overlay
            .service::<Groups<OverlayId>>()
            .map_or(0, |g| g.stats().delivered);
        messages + casts + groups
    }
}
