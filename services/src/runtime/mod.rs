//! The node's actor: one task that owns the overlay state machine and drives it with the
//! transport.
//!
//! Everything the overlay needs arrives here in one place — transport events (connections,
//! messages), the timer the overlay asks for, and commands from [`crate::Node`] and service
//! handles — and everything it outputs leaves from here: messages go to the transport with
//! `try_send` (the actor never waits on one slow peer; a full queue drops the message and
//! counts it), deliveries go to the application's bounded inbox, events to subscribers.
//!
//! Where things are: [`commands`] (what handles ask), [`transport_events`] (what the transport
//! reports), [`output`] (what the overlay asks for), [`overlay_events`] (what it reports),
//! [`services`] (what services have for their applications), [`join`] (joining through a
//! ticket), [`reachability`] (what this node advertises), [`traversal`] and [`fallback`] (the
//! NAT fallback), [`status`] (the snapshot), [`census`] (what the census is told, and its
//! reports).

mod census;
pub(crate) mod commands;
pub(crate) mod fallback;
mod join;
mod output;
mod overlay_events;
mod reachability;
mod services;
mod status;
mod transport_events;
mod traversal;

use crate::delivery::Delivery;
use crate::error::{JoinError, NodeError};
use crate::event::NodeEvent;
use crate::id::OverlayId;
use crate::report::{CastReport, GroupReport};
use crate::status::Counters;
use crate::ticket::Ticket;
use crate::wire::Wire;
use commands::{Command, Waiting};
use fallback::Fallback;
use p2ps_overlay::{Class, Node as Overlay, RingId, State, Time};
use p2ps_transport::{
    ConnectError, Events, NodeId, PortMapper, StreamClass, Transport, TraverseError,
};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::Instant;
use tracing::warn;

/// How often the connection to the relay is checked (and re-opened).
const RELAY_CHECK: Duration = Duration::from_secs(5);

/// How the node is reached from outside: its port mapping, its relay, whether its advertised
/// addresses are fixed.
#[derive(Default)]
pub(crate) struct Nat {
    /// The UPnP mapper, if enabled.
    pub(crate) mapper: Option<PortMapper>,
    /// The relay introducing this node while it is behind a NAT.
    pub(crate) relay: Option<(NodeId, Vec<SocketAddr>)>,
    /// The advertised addresses are the configured ones, not the observed ones.
    pub(crate) fixed_addrs: bool,
}

/// Results of background NAT traversals, back to the actor.
pub(crate) type TraversalResults = (
    mpsc::Sender<(NodeId, Result<(), TraverseError>)>,
    mpsc::Receiver<(NodeId, Result<(), TraverseError>)>,
);

/// Drains what one user service emitted into its handle's channel.
pub(crate) type Drainer = Box<dyn FnMut(&mut Overlay<OverlayId>) + Send>;

/// What the actor is made of; see [`Actor::new`].
pub(crate) struct Parts {
    pub(crate) overlay: Overlay<OverlayId>,
    pub(crate) transport: Transport<Wire>,
    pub(crate) events: Events<Wire>,
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) inbox: mpsc::Sender<Delivery>,
    pub(crate) subscribers: broadcast::Sender<NodeEvent>,
    pub(crate) addrs: Arc<RwLock<Vec<SocketAddr>>>,
    pub(crate) nat: Nat,
    pub(crate) max_payload: usize,
    pub(crate) protocol_version: u32,
    pub(crate) signer: p2ps_transport::SigningKey,
    pub(crate) drainers: Vec<Drainer>,
}

/// The node's actor. See the module documentation.
pub(crate) struct Actor {
    pub(crate) overlay: Overlay<OverlayId>,
    pub(crate) transport: Transport<Wire>,
    pub(crate) events: Events<Wire>,
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) inbox: mpsc::Sender<Delivery>,
    pub(crate) subscribers: broadcast::Sender<NodeEvent>,
    pub(crate) start: Instant,
    /// The wall-clock time at `start`: the overlay's clock is the Unix epoch's, so that the
    /// times in signed records mean the same on every node.
    pub(crate) epoch: Time,
    pub(crate) addrs: Arc<RwLock<Vec<SocketAddr>>>,
    pub(crate) nat: Nat,
    /// What the NAT fallback is doing (traversals, dials, copies to re-send).
    pub(crate) fallback: Fallback<NodeId, p2ps_overlay::Message<OverlayId>>,
    pub(crate) traversals: TraversalResults,
    pub(crate) max_payload: usize,
    /// Lookups in flight, by request id: the application's, and those of sends waiting to
    /// learn whether their addressee is in the network.
    pub(crate) lookups: BTreeMap<u64, Waiting>,
    /// Broadcasts and range multicasts waiting for their report, by message number.
    pub(crate) casts: BTreeMap<u64, oneshot::Sender<Result<CastReport, NodeError>>>,
    /// Group messages waiting for their count, by message number.
    pub(crate) group_sends: BTreeMap<u64, oneshot::Sender<Result<GroupReport, NodeError>>>,
    /// Names of the groups this node joined, by ring position.
    pub(crate) group_names: BTreeMap<RingId, String>,
    /// The closed groups this node joined, by name.
    pub(crate) closed_groups: BTreeMap<String, p2ps_overlay::groups::ClosedGroup>,
    pub(crate) join: Option<(NodeId, oneshot::Sender<Result<(), JoinError>>)>,
    /// A join waiting for this node to learn its own address (see [`Actor::settle_before_join`]).
    pub(crate) settling: Option<(Ticket, oneshot::Sender<Result<(), JoinError>>)>,
    /// Signals that the settling is over.
    pub(crate) join_ready: (mpsc::Sender<()>, mpsc::Receiver<()>),
    /// The last failed dial to the join's bootstrap.
    pub(crate) join_dial_error: Option<ConnectError>,
    /// Whether the join's bootstrap was connected at some point.
    pub(crate) join_connected: bool,
    /// Join requests the overlay sent so far.
    pub(crate) join_requests: u32,
    pub(crate) counters: Counters,
    /// The routing table generation last marked as wanted in the transport.
    pub(crate) protected_gen: Option<u64>,
    /// Signs messages handed to a relay ([`Wire::Forward`]).
    pub(crate) signer: p2ps_transport::SigningKey,
    /// The user services' drainers.
    pub(crate) drainers: Vec<Drainer>,
    /// Dictionary requests waiting for their end, by request id.
    pub(crate) dict_waiting: BTreeMap<u64, commands::DictReply>,
    /// Watches of keys, by watch id: where their changes go.
    pub(crate) dict_watchers: BTreeMap<u64, mpsc::Sender<Option<p2ps_dict::Record<OverlayId>>>>,
    /// Watches of nodes, by watch id: where their events go.
    pub(crate) node_watchers: BTreeMap<u64, mpsc::Sender<crate::node_watch::NodeWatchEvent>>,
    /// The protocol version this node speaks (told to the census).
    pub(crate) protocol_version: u32,
    /// Censuses this node started, waiting for their end, by message number.
    pub(crate) censuses: BTreeMap<u64, census::CensusReply>,
    /// Messages handled and when, at the last refresh of the census's figures (for the load).
    pub(crate) load_mark: (u64, Instant),
}

fn class_of(c: Class) -> StreamClass {
    match c {
        Class::Routing => StreamClass::Routing,
        Class::Tree => StreamClass::Tree,
        Class::User => StreamClass::User,
    }
}

impl Actor {
    /// The actor of a node made of `parts`, not running yet ([`Actor::run`]).
    pub(crate) fn new(parts: Parts) -> Self {
        Actor {
            overlay: parts.overlay,
            transport: parts.transport,
            events: parts.events,
            commands: parts.commands,
            inbox: parts.inbox,
            subscribers: parts.subscribers,
            start: Instant::now(),
            epoch: wall_clock(),
            addrs: parts.addrs,
            nat: parts.nat,
            fallback: Fallback::new(fallback::Limits::default()),
            traversals: mpsc::channel(64),
            max_payload: parts.max_payload,
            lookups: BTreeMap::new(),
            casts: BTreeMap::new(),
            group_sends: BTreeMap::new(),
            group_names: BTreeMap::new(),
            closed_groups: BTreeMap::new(),
            join: None,
            settling: None,
            join_ready: mpsc::channel(1),
            join_dial_error: None,
            join_connected: false,
            join_requests: 0,
            counters: Counters::default(),
            protected_gen: None,
            signer: parts.signer,
            drainers: parts.drainers,
            dict_waiting: BTreeMap::new(),
            dict_watchers: BTreeMap::new(),
            node_watchers: BTreeMap::new(),
            protocol_version: parts.protocol_version,
            censuses: BTreeMap::new(),
            load_mark: (0, Instant::now()),
        }
    }

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
        let mut census_figures = tokio::time::interval(census::REFRESH);
        census_figures.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
                        // Closes the dictionary's file before the answer: a node started
                        // again on it right after finds it free.
                        drop(self);
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
                _ = census_figures.tick() => self.refresh_census_figures(),
                Some((peer, result)) = self.traversals.1.recv() => self.traversal_done(peer, result),
                Some(()) = self.join_ready.1.recv() => self.start_join(),
            }
            self.flush();
        }
    }

    pub(super) async fn shutdown(&mut self) {
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
}

/// The overlay's clock: microseconds since the Unix epoch (the epoch itself on a clock set
/// before 1970). Signed records and envelopes carry times of this clock.
pub fn wall_clock() -> Time {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Time::ZERO + since
}
