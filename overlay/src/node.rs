//! The Tango node: ring upkeep, joins and leaves, fingers, routing and lookups as a
//! deterministic state machine.
//!
//! [`Node`] does no I/O and reads no clock. Whoever drives it (the QUIC runtime, the simulator,
//! a test) feeds it inputs and drains its outputs, in this order, the way one drives
//! quinn-proto's `Connection`:
//!
//! 1. Feed inputs as they happen: [`Node::handle_message`] for a message from a peer (the peer
//!    id must be the authenticated sender), [`Node::handle_link_down`] when a peer cannot be
//!    reached, [`Node::handle_link_up`] when a connection opens, and the application commands
//!    ([`Node::create`], [`Node::join`], [`Node::leave`], [`Node::lookup`], and the messaging
//!    service's [`route`](crate::messaging::MessagingExt::route) and
//!    [`send`](crate::messaging::MessagingExt::send)). Each takes `now`.
//! 2. When the time returned by [`Node::poll_timeout`] is reached, call [`Node::handle_timeout`].
//! 3. After every input, drain [`Node::poll_output`] until it returns `None`, and re-read
//!    [`Node::poll_timeout`]: any input may move the next deadline.
//!
//! Given the same inputs at the same times and the same [`Config::seed`], a node produces the
//! same outputs: nothing iterates in hash order and all randomness comes from the seed.

use crate::adjacency::Adjacency;
use crate::config::{Config, LookupMode};
use crate::message::{Body, Envelope, Message, Routed, Sealed};
use crate::peer::{Contact, Peer, PeerId, RelayHint};
use crate::proof::Signer;
use crate::rate::TokenBuckets;
use crate::ring::{Dir, RingId};
use crate::rng::{mix64, SplitMix64};
use crate::routing_table::{ListChange, NextHop, RoutingTable};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;
use thiserror::Error;

use crate::service::{NeighbourChange, Registry, Work};
use crate::time::Time;

mod dispatch;
mod heal;
mod neighbour_news;
mod records;
pub(crate) mod requests;
mod steered;
mod verify;

pub use dispatch::RegisterError;

/// Where a node is in its life.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum State {
    /// Not part of a network yet.
    Idle,
    /// Waiting for the answer to a join request.
    Joining,
    /// Part of a network.
    Joined,
    /// Was part of a network, lost every neighbour (a partition, a suspended machine), and is
    /// joining again through the nodes it knew and its bootstrap.
    Rejoining,
    /// Left (or gave up joining); the node does nothing more.
    Left,
}

/// Something the driver must do, or tell the application.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum Output<P: PeerId> {
    /// Send `msg` to `to` on the stream class `msg.class()`, connecting first if needed (the
    /// addresses the node knows for `to` are in [`Node::addresses`]).
    Send {
        /// Destination.
        to: P,
        /// The message.
        msg: Message<P>,
    },
    /// The node no longer needs its connection to `peer`.
    Disconnect {
        /// The peer.
        peer: P,
    },
    /// Something the application may want to know.
    Event(Event<P>),
}

/// An event for the application and for monitoring.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum Event<P> {
    /// The node is part of a network.
    Joined,
    /// A join request went to the bootstrap node: attempt `attempt` of `of`.
    JoinRequested {
        /// This attempt, from 1.
        attempt: u32,
        /// Attempts in all ([`Config::join_attempts`]).
        of: u32,
    },
    /// Joining failed after every attempt, or was abandoned ([`Node::abandon_join`]).
    JoinFailed,
    /// The node left.
    Left,
    /// The node lost every neighbour and is joining again ([`State::Rejoining`]);
    /// [`Event::Joined`] follows when it is back.
    Isolated,
    /// A peer entered this node's successor or predecessor list.
    NeighbourUp(P),
    /// A peer left this node's successor and predecessor lists.
    NeighbourDown(P),
    /// A lookup finished.
    LookupDone {
        /// The request id [`Node::lookup`] returned.
        req: u64,
        /// The key looked up.
        key: RingId,
        /// The responsible node and the hops it took, or why there is no answer.
        result: Result<(P, u16), LookupError>,
    },
}

/// Why a lookup has no answer.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Error)]
#[non_exhaustive]
pub enum LookupError {
    /// No answer after every attempt.
    #[error("no answer after every attempt")]
    Timeout,
    /// The node left before the answer came.
    #[error("the node left the network")]
    Left,
}

/// Why an application command was refused.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Error)]
#[non_exhaustive]
pub enum CommandError {
    /// The node is not part of a network.
    #[error("the node is not part of a network")]
    NotJoined,
    /// `create` or `join` on a node that already has a network (or left one).
    #[error("the node has already created, joined or left a network")]
    AlreadyStarted,
    /// Too many lookups are waiting for answers.
    #[error("too many lookups in flight")]
    TooManyPending,
    /// Joining through oneself.
    #[error("cannot join through this node itself")]
    SelfBootstrap,
    /// No service of that kind is registered on this node.
    #[error("no such service on this node")]
    NoService,
    /// The network's policy does not let this node start more of these now (see
    /// [`crate::cast_policy`]); other nodes would drop them.
    #[error("rate limited: this node started as many casts as the network allows for now")]
    RateLimited,
}

/// Counters a node keeps about itself.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct NodeStats {
    /// Messages handed to the driver to send.
    pub sent: u64,
    /// Of those, ring and finger upkeep (not lookups, joins or data).
    pub maintenance_sent: u64,
    /// Messages received.
    pub received: u64,
    /// Routed messages forwarded for others.
    pub forwarded: u64,
    /// Routed messages dropped: too many hops, no route, addressed to a node that is not here,
    /// or for a service this node does not run.
    pub dropped: u64,
    /// Lookups answered / failed.
    pub lookups_ok: u64,
    /// Lookups that failed after every attempt.
    pub lookups_failed: u64,
    /// Peers declared dead (timeout or link down).
    pub peers_failed: u64,
    /// Envelopes and records whose signature did not check out (forgeries), dropped.
    pub forged: u64,
    /// Envelopes too old or too far in the future (possible replays), dropped.
    pub stale: u64,
    /// Contacts not taken into the tables: unsigned, stale, or about an unknown node.
    pub unverified: u64,
    /// Answers refused: unasked, for another key, or contradicted by known nodes.
    pub bad_answers: u64,
    /// Times the node lost every neighbour and joined again.
    pub rejoins: u64,
    /// Messages dropped unread because their sender (the linked peer) sent more than
    /// [`Config::peer_message_rate`] allows.
    pub rate_limited: u64,
}

/// What a request in flight is for.
#[derive(Clone, Copy, Debug)]
enum Purpose {
    /// An application lookup.
    Lookup,
    /// Filling finger slot `(dir, level)`.
    Finger { dir: Dir, level: usize },
}

#[derive(Clone, Debug)]
struct PendingLookup {
    key: RingId,
    attempts: u32,
    deadline: Time,
    purpose: Purpose,
}

/// Timers that exist once per node.
#[derive(Clone, Copy, Default, Debug)]
struct Timers {
    stabilize: Option<Time>,
    refresh: Option<Time>,
    repair: Option<Time>,
    join: Option<Time>,
    housekeeping: Option<Time>,
    rejoin: Option<Time>,
    merge: Option<Time>,
}

const HOUSEKEEPING: Duration = Duration::from_secs(10);
/// Least time between two stabilisation rounds brought forward by a new first neighbour.
const STABILIZE_GAP: Duration = Duration::from_millis(100);
const MAX_ADDRS_PER_PEER: usize = 8;
/// Peers at once whose link the driver is still setting up.
const MAX_PENDING_LINKS: usize = 1024;
/// Peers whose message rate is tracked at once (more than a node holds connections; quiet
/// peers are forgotten first, see [`TokenBuckets`]).
const MAX_RATED_PEERS: usize = 4096;

/// A Tango overlay node. See the module documentation for how to drive it.
#[derive(Debug)]
pub struct Node<P: PeerId> {
    pub(crate) me: Peer<P>,
    pub(crate) signer: Box<dyn Signer<P>>,
    /// This node's own signed contact record.
    record: Contact<P>,
    /// Verified records of other nodes, passed on in contacts.
    records: BTreeMap<P, Contact<P>>,
    /// Request ids and message numbers.
    pub(crate) nonces: requests::Nonces,
    /// The id of the join request in flight.
    join_req: u64,
    /// Nodes to join through again if every neighbour is lost.
    fallback: heal::Fallback<P>,
    my_addrs: Vec<SocketAddr>,
    cfg: Config,
    state: State,
    table: RoutingTable<P>,
    neighbours: Vec<P>,
    /// The neighbours the application was told of (see `neighbour_news.rs`).
    announced: Vec<P>,
    /// Peers out of the lists whose departure is announced if they stay out until then.
    settling: BTreeMap<P, Time>,
    addrs: BTreeMap<P, Vec<SocketAddr>>,
    /// Relay hints of peers behind NATs, passed on in contacts.
    hints: BTreeMap<P, RelayHint<P>>,
    /// Peers whose addresses and hint housekeeping found unneeded last time (neither in the
    /// table nor linked): forgotten only if still unneeded at the next housekeeping, so that
    /// what a node just learnt of a stranger (the origin of a routed request) stays at least
    /// one housekeeping period, long enough for a service's answer to it.
    unneeded: BTreeSet<P>,
    /// This node's own relay hint, if it is behind a NAT.
    my_relay: Option<RelayHint<P>>,
    tombstones: BTreeMap<P, Time>,
    awaiting: BTreeMap<P, Time>,
    /// Peers the driver is still trying to reach (NAT traversal): silence is not failure yet.
    pending_links: BTreeSet<P>,
    links: BTreeMap<P, Time>,
    lookups: BTreeMap<u64, PendingLookup>,
    lookup_deadlines: BTreeSet<(Time, u64)>,
    join_bootstrap: Option<Contact<P>>,
    join_attempt: u32,
    timers: Timers,
    refresh_cursor: usize,
    repair: BTreeSet<(Dir, usize)>,
    pub(crate) rng: SplitMix64,
    out: VecDeque<Output<P>>,
    stats: NodeStats,
    lists_dirty: bool,
    /// The services running on this node, and the work waiting for them.
    pub(crate) services: Registry<P>,
    /// Steered lookups in flight.
    steers: steered::Steers<P>,
    /// The lowest mean gap between nodes seen lately (steered lookups judge answers by it).
    gap_floor: steered::GapFloor,
    /// Merge probes in flight: request id -> when it expires.
    merge_probes: BTreeMap<u64, Time>,
    /// Records handed to each neighbour lately (see `record_for`).
    sent_records: records::Sent<P>,
    /// The latest signed word of a predecessor that this node follows it: the proof of
    /// responsibility that answers carry (see [`crate::adjacency`]).
    adjacency_in: Option<Adjacency<P>>,
    /// Responders' proofs (their predecessors' words) checked lately: answers from the same
    /// responder carry the same proof until it is renewed, and a signature check costs more
    /// than the rest of an answer's handling.
    proofs_checked: std::collections::VecDeque<Adjacency<P>>,
    /// This node's signed word that its successor follows it, re-signed when the successor
    /// changes or a quarter of `adjacency_ttl` has passed.
    adjacency_out: Option<Adjacency<P>>,
    /// To whom `adjacency_out` was last sent, which one (its time), and how many clockwise
    /// stabilisations went without it since.
    adjacency_sent: Option<(P, Time, u32)>,
    /// Records of nodes new to us that each peer handed us lately: (window start, count).
    new_records: BTreeMap<P, (Time, u32)>,
    /// Liveness checks in flight: query id -> (peer, deadline).
    checks: BTreeMap<u64, (P, Time)>,
    /// The table generation whose members all have a link or a check under way (`None`:
    /// look again).
    linked_gen: Option<u64>,
    /// The first neighbour each way (successor, predecessor) at the last stabilisation, and
    /// when it ran: a new first neighbour brings the next round forward (see
    /// `hurry_stabilize`).
    stabilized: ([Option<P>; 2], Time),
    /// Peers linked because they are in the table: once out of it and silent for a
    /// stabilisation timeout, their link is closed (see `close_idle_links`).
    table_links: BTreeSet<P>,
    /// What each linked peer may still send (see [`Config::peer_message_rate`]); a peer is
    /// forgotten once its link is gone and its bucket full again.
    peer_rates: TokenBuckets<P>,
    /// The `now` of the latest input, for code paths reached without one.
    pub(crate) now: Time,
}

impl<P: PeerId> Node<P> {
    /// A node that signs as `signer`, not yet part of any network. `cfg` must be valid
    /// ([`Config::validate`]); zero values are treated as their smallest sensible value.
    pub fn new(signer: impl Signer<P> + 'static, cfg: Config) -> Self {
        let signer: Box<dyn Signer<P>> = Box::new(signer);
        let me = Peer::new(signer.id());
        let seed = mix64(cfg.seed ^ mix64(me.pos.0 as u64 ^ (me.pos.0 >> 64) as u64));
        let record = Contact::signed(&*signer, Vec::new(), None, Time::ZERO);
        Node {
            me,
            signer,
            record,
            records: BTreeMap::new(),
            nonces: requests::Nonces::new(cfg.seed, me.pos),
            join_req: 0,
            fallback: heal::Fallback::default(),
            my_addrs: Vec::new(),
            table: RoutingTable::new(me, cfg.strategy, cfg.list_len),
            state: State::Idle,
            neighbours: Vec::new(),
            announced: Vec::new(),
            settling: BTreeMap::new(),
            addrs: BTreeMap::new(),
            hints: BTreeMap::new(),
            unneeded: BTreeSet::new(),
            my_relay: None,
            tombstones: BTreeMap::new(),
            awaiting: BTreeMap::new(),
            pending_links: BTreeSet::new(),
            links: BTreeMap::new(),
            lookups: BTreeMap::new(),
            lookup_deadlines: BTreeSet::new(),
            join_bootstrap: None,
            join_attempt: 0,
            timers: Timers::default(),
            refresh_cursor: 0,
            repair: BTreeSet::new(),
            rng: SplitMix64::new(seed),
            out: VecDeque::new(),
            stats: NodeStats::default(),
            lists_dirty: false,
            services: Registry::default(),
            steers: steered::Steers::default(),
            gap_floor: steered::GapFloor::default(),
            merge_probes: BTreeMap::new(),
            sent_records: records::Sent::default(),
            adjacency_in: None,
            proofs_checked: std::collections::VecDeque::new(),
            adjacency_out: None,
            adjacency_sent: None,
            new_records: BTreeMap::new(),
            checks: BTreeMap::new(),
            linked_gen: None,
            stabilized: ([None, None], Time::ZERO),
            table_links: BTreeSet::new(),
            peer_rates: TokenBuckets::new(cfg.peer_message_rate, MAX_RATED_PEERS),
            now: Time::ZERO,
            cfg,
        }
    }

    /// A node that is already part of a network, with routing table `table`: for simulators
    /// and tests that start from a known ring instead of replaying every join. The signer
    /// must be the table's owner; timers start at `now`.
    pub fn from_table(
        signer: impl Signer<P> + 'static,
        cfg: Config,
        table: RoutingTable<P>,
        now: Time,
    ) -> Self {
        let mut node = Node::new(signer, cfg);
        debug_assert!(
            node.me.id == table.me().id,
            "the signer is not the table's owner"
        );
        node.now = now;
        node.resign_record(now);
        node.table = table;
        // A node of a known ring has talked to the members of its table.
        for p in node.table.distinct_peers() {
            node.links.insert(p, now);
            node.table_links.insert(p);
        }
        node.linked_gen = Some(node.table.generation());
        node.become_joined(now);
        node.out.clear();
        node.lists_dirty = true;
        node.emit_neighbour_events();
        node.out.clear();
        node
    }

    /// This node's identity.
    pub fn id(&self) -> P {
        self.me.id
    }

    /// This node's ring position.
    pub fn pos(&self) -> RingId {
        self.me.pos
    }

    /// Where the node is in its life.
    pub fn state(&self) -> State {
        self.state
    }

    /// The routing table (neighbour lists and fingers).
    pub fn table(&self) -> &RoutingTable<P> {
        &self.table
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Counters.
    pub fn stats(&self) -> NodeStats {
        self.stats
    }

    /// The addresses this node advertises for itself.
    pub fn set_local_addrs(&mut self, addrs: Vec<SocketAddr>) {
        self.my_addrs = addrs;
        self.my_addrs.truncate(MAX_ADDRS_PER_PEER);
        if self.record.addrs != self.my_addrs {
            self.resign_record(self.now);
        }
    }

    /// Sets the node through which this node can be reached when behind a NAT (`None` when it
    /// is reachable directly); it travels in this node's contacts.
    pub fn set_relay_hint(&mut self, relay: Option<RelayHint<P>>) {
        self.my_relay = relay.filter(|r| r.id != self.me.id);
        if self.record.relay != self.my_relay {
            self.resign_record(self.now);
        }
    }

    /// This node's own signed contact record.
    pub fn record(&self) -> &Contact<P> {
        &self.record
    }

    /// The relay hint known for `peer`, if it announced one.
    pub fn relay_hint(&self, peer: &P) -> Option<&RelayHint<P>> {
        self.hints.get(peer)
    }

    /// The addresses this node knows for `peer` (empty if none).
    pub fn addresses(&self, peer: &P) -> &[SocketAddr] {
        self.addrs.get(peer).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Peers with a live link (heard from recently, or in the table).
    pub fn links(&self) -> impl Iterator<Item = &P> {
        self.links.keys()
    }

    /// Lookups waiting for an answer.
    pub fn pending_lookups(&self) -> usize {
        self.lookups.len() + self.steers.len()
    }

    /// The next output for the driver.
    pub fn poll_output(&mut self) -> Option<Output<P>> {
        self.out.pop_front()
    }

    /// When [`Node::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Time> {
        let t = &self.timers;
        [
            t.stabilize,
            t.refresh,
            t.repair,
            t.join,
            t.housekeeping,
            t.rejoin,
            t.merge,
        ]
        .into_iter()
        .flatten()
        .chain(self.awaiting.values().copied())
        .chain(self.lookup_deadlines.first().map(|(t, _)| *t))
        .chain(self.services.next_deadline())
        .chain(self.steers.next_deadline())
        .chain(self.checks.values().map(|(_, t)| *t).min())
        .chain(self.next_settle())
        .min()
    }

    // ----- application commands -----

    /// Starts a new network with this node as its only member.
    pub fn create(&mut self, now: Time) -> Result<(), CommandError> {
        self.now = self.now.max(now);
        if self.state != State::Idle {
            return Err(CommandError::AlreadyStarted);
        }
        self.become_joined(now);
        Ok(())
    }

    /// Joins the network `bootstrap` belongs to. `Event::Joined` or `Event::JoinFailed` follows.
    pub fn join(&mut self, now: Time, bootstrap: Contact<P>) -> Result<(), CommandError> {
        self.now = self.now.max(now);
        if self.state != State::Idle {
            return Err(CommandError::AlreadyStarted);
        }
        if bootstrap.id == self.me.id {
            return Err(CommandError::SelfBootstrap);
        }
        learn(
            &mut self.addrs,
            &mut self.hints,
            self.me.id,
            &bootstrap,
            false,
        );
        self.state = State::Joining;
        self.fallback.remember(&bootstrap);
        self.join_bootstrap = Some(bootstrap);
        self.join_attempt = 0;
        self.send_join(now);
        Ok(())
    }

    /// Gives up a join in progress before its attempts are used up (the runtime learnt that
    /// it cannot succeed, for example that the node id is in use): the node is idle again,
    /// sends no further request, and [`Event::JoinFailed`] follows. A late answer to the
    /// abandoned request changes nothing. Does nothing unless joining.
    pub fn abandon_join(&mut self, now: Time) {
        self.now = self.now.max(now);
        if self.state != State::Joining {
            return;
        }
        self.state = State::Idle;
        self.join_bootstrap = None;
        self.timers.join = None;
        self.out.push_back(Output::Event(Event::JoinFailed));
    }

    /// Leaves gracefully: every known peer is told, with this node's lists so that they can
    /// repair at once. Pending lookups fail with [`LookupError::Left`].
    pub fn leave(&mut self, now: Time) {
        self.now = self.now.max(now);
        if self.state == State::Joined {
            let succs = self.table.successors().to_vec();
            let succs = self.contacts(&succs);
            let preds = self.table.predecessors().to_vec();
            let preds = self.contacts(&preds);
            let mut tell: BTreeSet<P> = self.table.entries().map(|p| p.id).collect();
            tell.extend(self.links.keys().copied());
            for to in tell {
                self.push_send(
                    to,
                    Message::Leave {
                        succs: succs.clone(),
                        preds: preds.clone(),
                    },
                );
            }
        }
        let reqs: Vec<(u64, RingId)> = self.lookups.iter().map(|(r, l)| (*r, l.key)).collect();
        for (req, key) in reqs {
            self.out.push_back(Output::Event(Event::LookupDone {
                req,
                key,
                result: Err(LookupError::Left),
            }));
        }
        self.lookups.clear();
        self.lookup_deadlines.clear();
        self.steers_leave();
        self.services_leave();
        self.timers = Timers::default();
        self.awaiting.clear();
        if self.state != State::Left {
            self.state = State::Left;
            self.out.push_back(Output::Event(Event::Left));
        }
    }

    /// Asks who is responsible for `key`. Returns the request id that the matching
    /// `Event::LookupDone` carries.
    pub fn lookup(&mut self, now: Time, key: RingId) -> Result<u64, CommandError> {
        self.now = self.now.max(now);
        if self.state != State::Joined {
            return Err(CommandError::NotJoined);
        }
        if self.lookups.len() + self.steers.len() >= self.cfg.max_pending_lookups {
            return Err(CommandError::TooManyPending);
        }
        if self.cfg.lookup_mode == LookupMode::Steered {
            let req = self.nonces.next();
            self.start_steered(req, key);
            return Ok(req);
        }
        Ok(self.send_request(key, Purpose::Lookup, Body::Lookup))
    }

    // ----- network inputs -----

    /// `peer` can be reached at `addrs` (for example the address its connection came from).
    /// They are kept while the peer is in the table and passed on in contacts.
    pub fn add_addresses(&mut self, peer: P, addrs: &[SocketAddr]) {
        if peer == self.me.id || addrs.is_empty() {
            return;
        }
        // Addresses the driver saw work go first; the peer's own advertised ones stay after
        // them. They say nothing of whether the peer is behind a NAT: its relay hint stays.
        let old = self.addrs.remove(&peer).unwrap_or_default();
        self.addrs.insert(peer, merge_addrs(addrs, &old));
    }

    /// The driver could not reach `peer` directly and is trying other paths (hole punching, a
    /// relay): until [`Node::handle_link_up`] or [`Node::handle_link_down`], an unanswered
    /// request to it does not make it count as crashed.
    pub fn handle_link_pending(&mut self, now: Time, peer: P) {
        self.now = self.now.max(now);
        if peer != self.me.id && self.pending_links.len() < MAX_PENDING_LINKS {
            self.pending_links.insert(peer);
        }
    }

    /// A connection to `peer` opened.
    pub fn handle_link_up(&mut self, now: Time, peer: P) {
        self.now = self.now.max(now);
        self.pending_links.remove(&peer);
        if peer != self.me.id && self.state != State::Left {
            self.links.insert(peer, now);
        }
    }

    /// `peer` cannot be reached (its connection failed or closed). It is taken for crashed.
    pub fn handle_link_down(&mut self, now: Time, peer: P) {
        self.now = self.now.max(now);
        self.pending_links.remove(&peer);
        if self.state == State::Left || peer == self.me.id {
            self.links.remove(&peer);
            self.peer_rates.release(&peer, now);
            return;
        }
        self.peer_failed(now, peer);
        self.links.remove(&peer);
        self.peer_rates.release(&peer, now);
        self.table_links.remove(&peer);
        self.emit_neighbour_events();
        self.link_table();
        self.run_services();
    }

    /// The connection to `peer` was closed on purpose, by this node or by the peer, because
    /// one side no longer needed it (not a crash, not a leave). The peer is not taken for
    /// failed. If it is still in the table at the next stabilisation round, that round links
    /// it again (while a ring forms, the peer that closed is often right that neither needs
    /// the other any more: this node's entry is about to go too).
    pub fn handle_link_closed(&mut self, now: Time, peer: P) {
        self.now = self.now.max(now);
        self.pending_links.remove(&peer);
        self.links.remove(&peer);
        self.peer_rates.release(&peer, now);
        self.table_links.remove(&peer);
    }

    /// A message `msg` arrived from `from` (the authenticated sender). What it carries on
    /// behalf of others is checked first: an envelope whose signature or age does not hold is
    /// dropped (and counted) before anything changes, and only verified contacts are learnt.
    pub fn handle_message(&mut self, now: Time, from: P, msg: Message<P>) {
        self.now = self.now.max(now);
        if from == self.me.id || self.state == State::Left {
            return;
        }
        self.stats.received += 1;
        // Charged to the link it came over before anything else (signatures included) costs.
        if !self.peer_rates.take(from, now) {
            self.stats.rate_limited += 1;
            return;
        }
        let mut msg = msg;
        if !self.signed_content_ok(from, &mut msg) {
            return;
        }
        match self.links.get_mut(&from) {
            Some(t) => *t = now,
            None => {
                self.links.insert(from, now);
            }
        }
        if !self.awaiting.is_empty() {
            self.awaiting.remove(&from);
        }
        if !self.pending_links.is_empty() {
            self.pending_links.remove(&from);
        }
        if !self.tombstones.is_empty() {
            self.tombstones.remove(&from);
        }
        msg.for_each_contact(|c| {
            self.vouch(from, c);
        });
        let joining = matches!(
            &msg,
            Message::Routed(r) if r.sealed.env.body == Body::Join && r.origin() == from
        );
        if joining && self.state == State::Joined && self.table.contains(&from) {
            // A member asks, itself and signed, to join: it restarted (after a crash that
            // nobody noticed yet), so its entry is stale. Left in place, the request would be
            // routed back to the joiner, the node responsible for its position. A sender can
            // only remove itself this way. Not isolated if it was the only neighbour: it is
            // about to be one again.
            self.forget_failed(now, from);
        }
        let from_joined = !joining && !matches!(msg, Message::Leave { .. });
        // Neighbours lie inside the lists' span, where no finger slot is stored, and are in
        // the lists already: only other senders can improve the table.
        if self.state == State::Joined && from_joined && !self.table.is_neighbour(&from) {
            let peer = Peer::new(from);
            self.table.consider_for_fingers(peer);
            let change = self.table.offer(peer);
            self.note_lists(change);
        }
        match msg {
            Message::Stabilize {
                dir, list, follows, ..
            } => self.on_stabilize(from, dir, list, follows),
            Message::StabilizeReply {
                dir, back, list, ..
            } => self.on_stabilize_reply(from, dir, back, list),
            Message::JoinReply { req, succs, preds } => {
                self.on_join_reply(now, from, req, succs, preds)
            }
            Message::Leave { succs, preds } => self.on_leave(now, from, succs, preds),
            Message::FingerNotify {
                new,
                dir,
                level,
                stop,
            } => self.on_finger_notify(from, new, dir, level, stop),
            Message::Routed(r) => self.on_routed(now, r),
            Message::Answer(a) => self.on_answer(a),
            Message::FindNear { req, key } => self.on_find_near(from, req, key),
            Message::Near { req, nodes } => self.on_near(from, req, nodes),
            Message::Ping { nonce } => self.push_send(from, Message::Pong { nonce }),
            Message::Pong { nonce } => self.on_pong(from, nonce),
            Message::Service(m) => self.on_service_message(from, m),
            Message::PassBack(m) => {
                if self.state == State::Joined {
                    self.pass_service_answer(Some(from), m)
                }
            }
            Message::Query(q) => self.on_query(from, q),
        }
        self.hurry_stabilize(now);
        self.emit_neighbour_events();
        self.link_table();
        self.run_services();
    }

    /// Checks the envelope a message carries for its origin: recent, of a kind that may travel
    /// that way, and signed by the origin, where this node acts on it.
    ///
    /// Signature checks are most of a hop's cost, so they are made where they matter: a routed
    /// message's where it arrives (or a service takes it on its way, see
    /// [`Node::origin_checked`]), never by the nodes that only pass it on (the next node is no
    /// more bound to believe them than the origin); an answer's by its asker. What comes straight
    /// from its origin is the origin's word already: the link is authenticated.
    fn signed_content_ok(&mut self, from: P, msg: &mut Message<P>) -> bool {
        match msg {
            Message::Routed(r) => {
                if matches!(r.sealed.env.body, Body::Answer { .. }) {
                    self.stats.dropped += 1;
                    return false;
                }
                r.checked = r.origin() == from;
                return self.envelope_fresh(&r.sealed);
            }
            Message::Answer(a) => {
                let Body::Answer { asker, .. } = a.sealed.env.body else {
                    self.stats.dropped += 1;
                    return false;
                };
                if asker != self.me.id || a.sealed.env.origin.id == from {
                    return self.envelope_fresh(&a.sealed);
                }
            }
            _ => {}
        }
        let (sealed, fits) = match &*msg {
            Message::Routed(r) => (&r.sealed, !matches!(r.sealed.env.body, Body::Answer { .. })),
            Message::Service(m) => match &m.sealed {
                None => return true,
                Some(sealed) => (
                    &**sealed,
                    matches!(sealed.env.body, Body::Service { service, .. } if service == m.service),
                ),
            },
            Message::Answer(a) => (&a.sealed, matches!(a.sealed.env.body, Body::Answer { .. })),
            _ => return true,
        };
        if !fits {
            self.stats.dropped += 1;
            return false;
        }
        self.envelope_ok(sealed)
    }

    /// Deadlines passed: run whatever was due at `now`.
    pub fn handle_timeout(&mut self, now: Time) {
        self.now = self.now.max(now);
        if self.state == State::Left {
            return;
        }
        if self.timers.join.is_some_and(|t| t <= now) {
            self.timers.join = None;
            self.on_join_timeout(now);
        }
        let failed: Vec<P> = self
            .awaiting
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(p, _)| *p)
            .collect();
        let (waiting, failed): (Vec<P>, Vec<P>) = failed
            .into_iter()
            .partition(|p| self.pending_links.contains(p));
        for p in waiting {
            // Still being reached some other way: give it another period.
            self.awaiting.insert(p, now + self.cfg.stabilize_timeout);
        }
        for p in failed {
            self.awaiting.remove(&p);
            self.peer_failed(now, p);
        }
        if self.timers.stabilize.is_some_and(|t| t <= now) {
            self.stabilize(now);
        }
        if self.timers.repair.is_some_and(|t| t <= now) {
            self.timers.repair = None;
            self.probe_repairs();
        }
        if self.timers.refresh.is_some_and(|t| t <= now) {
            self.refresh_one(now);
        }
        while let Some(&(t, req)) = self.lookup_deadlines.first() {
            if t > now {
                break;
            }
            self.lookup_deadlines.pop_first();
            self.on_lookup_timeout(now, req);
        }
        if self.timers.housekeeping.is_some_and(|t| t <= now) {
            self.housekeeping(now);
        }
        if self.timers.rejoin.is_some_and(|t| t <= now) {
            self.rejoin_attempt(now);
        }
        if self.timers.merge.is_some_and(|t| t <= now) {
            self.merge_probe(now);
        }
        if self.steers.next_deadline().is_some_and(|t| t <= now) {
            self.steer_timeouts(now);
        }
        if self.checks.values().any(|(_, t)| *t <= now) {
            self.check_timeouts(now);
        }
        self.emit_neighbour_events();
        self.settle_neighbours(now);
        self.link_table();
        self.services_timeouts(now);
        self.run_services();
    }

    // ----- joining -----

    fn become_joined(&mut self, now: Time) {
        self.state = State::Joined;
        self.timers.join = None;
        self.timers.rejoin = None;
        self.timers.stabilize = Some(now + self.jitter(self.cfg.stabilize_interval));
        self.timers.refresh = Some(now + self.refresh_step());
        self.timers.housekeeping = Some(now + HOUSEKEEPING);
        self.timers.merge = Some(now + self.jitter(self.cfg.merge_probe_interval));
        self.out.push_back(Output::Event(Event::Joined));
    }

    fn send_join(&mut self, now: Time) {
        let Some(b) = self.join_bootstrap.clone() else {
            return;
        };
        self.join_attempt += 1;
        self.out.push_back(Output::Event(Event::JoinRequested {
            attempt: self.join_attempt,
            of: self.cfg.join_attempts,
        }));
        self.join_req = self.send_join_to(b.id);
        self.timers.join = Some(now + self.cfg.join_timeout);
    }

    /// Sends a signed join request (a new id each time) to `via`, which routes it. Returns
    /// the request's id.
    fn send_join_to(&mut self, via: P) -> u64 {
        let req = self.nonces.next();
        let sealed = self.seal(req, self.me.pos, Body::Join);
        self.push_send(via, Message::Routed(Routed::new(sealed)));
        req
    }

    fn on_join_timeout(&mut self, now: Time) {
        if self.state != State::Joining {
            return;
        }
        if self.join_attempt >= self.cfg.join_attempts {
            self.state = State::Idle;
            self.join_bootstrap = None;
            self.out.push_back(Output::Event(Event::JoinFailed));
        } else {
            self.send_join(now);
        }
    }

    /// At the node responsible for a joiner's position (its signed join request checked):
    /// hand it its lists and take it as predecessor.
    fn accept_joiner(&mut self, joiner: Contact<P>, req: u64) {
        let me = self.my_contact();
        let mut succs = vec![me.clone()];
        let list = self.table.successors().to_vec();
        succs.extend(self.contacts(&list));
        let list = self.table.predecessors().to_vec();
        let mut preds = self.contacts(&list);
        if preds.is_empty() {
            preds.push(me);
        }
        // The joiner enters our lists when it talks to us (it stabilises with us at once): a
        // join request proves only that its key signed it, not that a node runs behind it.
        self.push_send(joiner.id, Message::JoinReply { req, succs, preds });
    }

    fn on_join_reply(
        &mut self,
        now: Time,
        from: P,
        req: u64,
        succs: Vec<Contact<P>>,
        preds: Vec<Contact<P>>,
    ) {
        if self.state == State::Joined && self.merge_probes.remove(&req).is_some() {
            return self.merge_ring(from, succs, preds);
        }
        let rejoining = self.state == State::Rejoining;
        if !(self.state == State::Joining || rejoining) || req != self.join_req {
            // Not asked for: an unsolicited join reply changes nothing.
            self.stats.bad_answers += 1;
            return;
        }
        let from_peer = Peer::new(from);
        let succs = self.verified(from, &succs);
        let preds = self.verified(from, &preds);
        let tomb = &self.tombstones;
        let c1 = self
            .table
            .set_list(Dir::Cw, std::iter::once(from_peer).chain(succs), |p| {
                tomb.contains_key(p)
            });
        let c2 = self
            .table
            .set_list(Dir::Ccw, preds, |p| tomb.contains_key(p));
        self.note_lists(c1);
        self.note_lists(c2);
        if rejoining {
            self.stats.rejoins += 1;
        }
        self.become_joined(now);
        // Tell the neighbours at once rather than at the next period.
        self.stabilize(now);
        self.probe_fingers(true);
    }

    // ----- ring upkeep -----

    /// A message gave this node a new first neighbour: the next round runs soon (at most one
    /// per `STABILIZE_GAP`), not a whole period later, so that the two exchange their lists at
    /// once. While a ring forms or after a join, the lists so become exact a round trip after
    /// the first neighbours, and the links to their members open then rather than later.
    fn hurry_stabilize(&mut self, now: Time) {
        if self.state != State::Joined {
            return;
        }
        let firsts = [self.table.successor(), self.table.predecessor()].map(|p| p.map(|p| p.id));
        if firsts == self.stabilized.0 {
            return;
        }
        let soon = (self.stabilized.1 + STABILIZE_GAP).max(now);
        if self.timers.stabilize.is_some_and(|t| t > soon) {
            self.timers.stabilize = Some(soon);
        }
    }

    fn stabilize(&mut self, now: Time) {
        self.timers.stabilize = Some(now + self.jitter(self.cfg.stabilize_interval));
        self.stabilized = (
            [self.table.successor(), self.table.predecessor()].map(|p| p.map(|p| p.id)),
            now,
        );
        // Members whose link closed since, or that waited for room among the checks in flight,
        // are linked now.
        self.linked_gen = None;
        self.close_idle_links(now);
        for dir in Dir::BOTH {
            let Some(n) = self.table.list(dir).first().copied() else {
                continue;
            };
            let other = self.table.list(dir.opposite()).to_vec();
            let list = self.contacts_for(n.id, &other);
            let me = self.my_contact();
            let me = self.record_for(n.id, me);
            let follows = if dir == Dir::Cw {
                self.adjacency_to_send(n.id)
            } else {
                None
            };
            self.stats.maintenance_sent += 1;
            self.push_send(
                n.id,
                Message::Stabilize {
                    dir,
                    me,
                    list,
                    follows,
                },
            );
            self.awaiting
                .entry(n.id)
                .or_insert(now + self.cfg.stabilize_timeout);
        }
    }

    /// `from` sent us a stabilisation in direction `dir`, so it claims to be our neighbour in
    /// the opposite direction, and `list` is its own list on that side.
    fn on_stabilize(
        &mut self,
        from: P,
        dir: Dir,
        list: Vec<Contact<P>>,
        follows: Option<Adjacency<P>>,
    ) {
        if self.state != State::Joined {
            return;
        }
        if let Some(a) = follows {
            self.take_adjacency(from, dir, a);
        }
        let back = dir.opposite();
        let sender = Peer::new(from);
        let is_first = match self.table.list(back).first() {
            None => true,
            Some(f) => {
                f.id == from
                    || self.me.pos.dist_dir(back, sender.pos) < self.me.pos.dist_dir(back, f.pos)
            }
        };
        if is_first {
            let mut cands = vec![sender];
            cands.extend(self.verified(from, &list));
            self.merge_list(back, cands);
        }
        let first_back = self.table.list(back).first().copied();
        let back_contact = first_back.map(|p| {
            let c = self.contact(p);
            self.record_for(from, c)
        });
        let ours = self.table.list(dir).to_vec();
        let me = self.my_contact();
        let reply = Message::StabilizeReply {
            dir,
            me: self.record_for(from, me),
            back: back_contact,
            list: self.contacts_for(from, &ours),
        };
        self.stats.maintenance_sent += 1;
        self.push_send(from, reply);
    }

    fn on_stabilize_reply(
        &mut self,
        from: P,
        dir: Dir,
        back: Option<Contact<P>>,
        list: Vec<Contact<P>>,
    ) {
        if self.state != State::Joined {
            return;
        }
        if self.table.list(dir).first().map(|p| p.id) != Some(from) {
            return;
        }
        let q = Peer::new(from);
        let mut cands = vec![q];
        if let Some(b) = back {
            let between = b.id != self.me.id
                && self.me.pos.dist_dir(dir, b.peer().pos) < self.me.pos.dist_dir(dir, q.pos);
            if between {
                cands.extend(self.verified(from, std::slice::from_ref(&b)));
            }
        }
        cands.extend(self.verified(from, &list));
        self.merge_list(dir, cands);
    }

    /// Merges a neighbour's view into our list in `dir`: our entries and the verified
    /// candidates, nearest first. An entry of ours that the neighbour should have listed (it
    /// lies within the span its list covers) but did not leaves the list at once, as Chord's
    /// copying would have it, but is pinged (see `verify.rs`): if it answers, it comes back
    /// like any live sender. So a lying neighbour can hide a live node only for a round trip.
    fn merge_list(&mut self, dir: Dir, cands: Vec<Peer<P>>) {
        let ours = self.table.list(dir).to_vec();
        let reach = cands
            .iter()
            .map(|p| self.me.pos.dist_dir(dir, p.pos))
            .max()
            .unwrap_or(0);
        let omitted: Vec<P> = ours
            .iter()
            .filter(|p| {
                self.me.pos.dist_dir(dir, p.pos) < reach && !cands.iter().any(|c| c.id == p.id)
            })
            .map(|p| p.id)
            .collect();
        let tomb = &self.tombstones;
        let kept = ours.into_iter().filter(|p| !omitted.contains(&p.id));
        let change = self
            .table
            .set_list(dir, cands.into_iter().chain(kept), |p| tomb.contains_key(p));
        self.note_lists(change);
        for p in omitted {
            if !self.tombstones.contains_key(&p) {
                self.check_alive(p);
            }
        }
    }

    fn on_leave(&mut self, now: Time, from: P, succs: Vec<Contact<P>>, preds: Vec<Contact<P>>) {
        self.links.remove(&from);
        self.table_links.remove(&from);
        self.bury(now, from);
        let (change, emptied) = self.table.remove(&from);
        self.note_lists(change);
        if self.state != State::Joined {
            return;
        }
        let succs = self.verified(from, &succs);
        let preds = self.verified(from, &preds);
        // The leaver's successor takes over its keys, so it replaces the leaver in every slot
        // if we know it is alive; the others it names are asked first (any answer offers them
        // to the lists): a leaver could name records of keys that run no node.
        if let Some(heir) = succs
            .iter()
            .find(|p| p.id != self.me.id && self.links.contains_key(&p.id))
        {
            for (dir, level) in &emptied {
                self.table.set_finger(*dir, *level, *heir);
            }
        }
        for p in succs.into_iter().chain(preds) {
            if self.links.contains_key(&p.id) || self.table.contains(&p.id) {
                let change = self.table.offer(p);
                self.note_lists(change);
            } else if p.id != self.me.id {
                self.check_alive(p.id);
            }
        }
        self.services.work.push_back(Work::PeerFailed(from));
        self.check_isolated(now);
    }

    /// `peer` is gone: forget it, refill what it held, and schedule re-probes.
    fn peer_failed(&mut self, now: Time, peer: P) {
        if self.forget_failed(now, peer) {
            self.check_isolated(now);
        }
    }

    /// Takes `peer` for failed: out of the table (repairs scheduled), buried, and services
    /// told. Returns whether it was in the table.
    fn forget_failed(&mut self, now: Time, peer: P) -> bool {
        self.awaiting.remove(&peer);
        let known = self.table.contains(&peer);
        self.bury(now, peer);
        if !known {
            self.services.work.push_back(Work::PeerFailed(peer));
            return false;
        }
        self.stats.peers_failed += 1;
        if let Some(c) = self
            .records
            .get(&peer)
            .filter(|_| self.links.contains_key(&peer))
        {
            // A node that failed after talking to us may come back (a suspended machine, a
            // partition): it is remembered as a way back in should this node lose every
            // neighbour. Nodes only named by others are not: anyone can sign records of keys
            // that run no node.
            self.fallback.remember(c);
        }
        let (change, emptied) = self.table.remove(&peer);
        self.note_lists(change);
        for (dir, level) in emptied {
            let target = self.cfg.strategy.target(self.me.pos, dir, level);
            let guess = self.table.best_known_for(target);
            if guess.id != self.me.id {
                self.table.set_finger(dir, level, guess);
            }
            self.repair.insert((dir, level));
        }
        // A list emptied by failures is refilled from whatever else is known; stabilisation
        // then walks it back to the true neighbours.
        for dir in Dir::BOTH {
            if self.table.list(dir).is_empty() {
                let known: Vec<Peer<P>> = self.table.entries().collect();
                for p in known {
                    let change = self.table.offer(p);
                    self.note_lists(change);
                }
            }
        }
        if !self.repair.is_empty() && self.timers.repair.is_none() && self.state == State::Joined {
            self.timers.repair = Some(now + self.cfg.repair_delay);
        }
        // With the table repaired, what services gave the dead peer moves elsewhere.
        self.services.work.push_back(Work::PeerFailed(peer));
        true
    }

    fn bury(&mut self, now: Time, peer: P) {
        self.tombstones.insert(peer, now + self.cfg.tombstone_ttl);
        while self.tombstones.len() > self.cfg.max_tombstones {
            // Drop the one that expires first.
            let Some(oldest) = self
                .tombstones
                .iter()
                .min_by_key(|(p, t)| (**t, **p))
                .map(|(p, _)| *p)
            else {
                break;
            };
            self.tombstones.remove(&oldest);
        }
    }

    // ----- fingers -----

    /// Probes finger slots by routing towards their targets. On join (`announce`), the probes
    /// also tell the nodes that should now point at this node.
    fn probe_fingers(&mut self, announce: bool) {
        let strategy = self.cfg.strategy;
        let levels = strategy.distances().len();
        // Nodes near us keep slots from about the level where our own lists stop covering;
        // one level lower allows for their lists spanning less than ours.
        let lo = Dir::BOTH
            .into_iter()
            .map(|d| self.table.covered_levels(d))
            .min()
            .unwrap_or(levels)
            .saturating_sub(1);
        let pred = self.table.predecessor().map(|p| p.pos);
        for dir in Dir::BOTH {
            for level in lo..levels {
                let reply = strategy.has_dir(dir) && self.table.finger_levels(dir).contains(&level);
                let notify = announce && strategy.has_dir(dir.opposite());
                if !reply && !notify {
                    continue;
                }
                let body = Body::FingerProbe {
                    dir,
                    level: level as u8,
                    reply,
                    notify_from: if notify { pred } else { None },
                };
                self.stats.maintenance_sent += 1;
                let target = strategy.target(self.me.pos, dir, level);
                if reply {
                    self.send_request(target, Purpose::Finger { dir, level }, body);
                } else {
                    self.originate(target, body);
                }
            }
        }
    }

    fn probe_slot(&mut self, dir: Dir, level: usize) {
        let body = Body::FingerProbe {
            dir,
            level: level as u8,
            reply: true,
            notify_from: None,
        };
        self.stats.maintenance_sent += 1;
        let target = self.cfg.strategy.target(self.me.pos, dir, level);
        self.send_request(target, Purpose::Finger { dir, level }, body);
    }

    fn probe_repairs(&mut self) {
        if self.state != State::Joined {
            self.repair.clear();
            return;
        }
        let slots: Vec<(Dir, usize)> = std::mem::take(&mut self.repair).into_iter().collect();
        for (dir, level) in slots {
            if self.table.finger_levels(dir).contains(&level) {
                self.probe_slot(dir, level);
            }
        }
    }

    fn refresh_step(&self) -> Duration {
        let slots = self.table.finger_slots().count().max(1) as u32;
        self.cfg.finger_refresh_period / slots
    }

    /// Re-probes one finger slot (empty ones first), round robin.
    fn refresh_one(&mut self, now: Time) {
        let step = self.jitter(self.refresh_step());
        self.timers.refresh = Some(now + step);
        let slots: Vec<(Dir, usize, bool)> = self
            .table
            .finger_slots()
            .map(|(d, l, v)| (d, l, v.is_none()))
            .collect();
        if slots.is_empty() {
            return;
        }
        let pick = slots
            .iter()
            .find(|s| s.2)
            .copied()
            .unwrap_or(slots[self.refresh_cursor % slots.len()]);
        self.refresh_cursor = self.refresh_cursor.wrapping_add(1);
        self.probe_slot(pick.0, pick.1);
    }

    fn on_finger_notify(&mut self, from: P, new: Contact<P>, dir: Dir, level: u8, stop: RingId) {
        if self.state != State::Joined || new.id == self.me.id {
            return;
        }
        if self.tombstones.contains_key(&new.id) {
            return;
        }
        // Only a node that signed its record (or that we know first-hand) becomes a finger.
        if !self.vouch(from, &new) {
            self.stats.unverified += 1;
            return;
        }
        let peer = new.peer();
        let target = self.cfg.strategy.target(self.me.pos, dir, level as usize);
        let better = match self.table.finger(dir, level as usize) {
            None => true,
            Some(cur) => target.cw_to(peer.pos) < target.cw_to(cur.pos),
        };
        if better {
            self.table.set_finger(dir, level as usize, peer);
        }
        self.forward_notify(new, dir, level, stop);
    }

    /// Passes a finger notification on to our predecessor if it lies in `(stop, me)`.
    fn forward_notify(&mut self, new: Contact<P>, dir: Dir, level: u8, stop: RingId) {
        if let Some(p) = self.table.predecessor() {
            if p.id != new.id && p.pos.in_open(stop, self.me.pos) {
                self.stats.maintenance_sent += 1;
                self.push_send(
                    p.id,
                    Message::FingerNotify {
                        new,
                        dir,
                        level,
                        stop,
                    },
                );
            }
        }
    }

    // ----- routing -----

    /// Whether the driver has a connection to `peer` now.
    pub(crate) fn is_linked(&self, peer: &P) -> bool {
        self.links.contains_key(peer)
    }

    /// Signs an envelope from this node.
    pub(crate) fn seal(&mut self, seq: u64, key: RingId, body: Body<P>) -> Sealed<P> {
        let env = Envelope {
            origin: self.my_contact(),
            seq,
            issued: self.now,
            key,
            body,
        };
        Sealed::seal(&*self.signer, env)
    }

    /// Routes a message that starts at this node. Returns its message number.
    fn originate(&mut self, key: RingId, body: Body<P>) -> u64 {
        let seq = self.nonces.next();
        let sealed = self.seal(seq, key, body);
        self.route_sealed(sealed);
        seq
    }

    /// Routes an envelope this node sealed.
    fn route_sealed(&mut self, sealed: Sealed<P>) {
        let r = Routed::new(sealed);
        self.on_routed(self.now, r);
    }

    fn on_routed(&mut self, now: Time, mut r: Routed<P>) {
        if self.state != State::Joined {
            return;
        }
        if matches!(r.sealed.env.body, Body::Service { .. }) {
            // A service's message: routed with its service's say at every hop.
            self.services.work.push_back(Work::Route(r));
            return;
        }
        match self.table.next_hop(r.key()) {
            Some(NextHop::Local) => self.arrive(now, r),
            Some(NextHop::Forward(p)) => {
                if r.hops >= self.cfg.max_hops {
                    self.stats.dropped += 1;
                } else {
                    r.hops += 1;
                    self.forward(p.id, r);
                }
            }
            None => self.stats.dropped += 1,
        }
    }

    pub(crate) fn forward(&mut self, to: P, mut r: Routed<P>) {
        if r.origin() != self.me.id {
            self.stats.forwarded += 1;
            // Requests that want an answer keep the way back.
            let wants_answer = matches!(
                r.sealed.env.body,
                Body::Lookup
                    | Body::FingerProbe { reply: true, .. }
                    | Body::Service { target: None, .. }
            );
            if wants_answer && r.trail.len() < self.cfg.max_hops as usize {
                r.trail.push(self.me.id);
            }
        }
        self.push_send(to, Message::Routed(r));
    }

    /// A routed message reached the node responsible for its key.
    fn arrive(&mut self, now: Time, mut r: Routed<P>) {
        if !self.origin_checked(&mut r) {
            return;
        }
        let origin = r.origin();
        match &r.sealed.env.body {
            Body::Join => {
                if origin != self.me.id {
                    self.accept_joiner(r.sealed.env.origin.clone(), r.sealed.env.seq);
                }
            }
            Body::FingerProbe {
                dir,
                level,
                reply,
                notify_from,
            } => {
                let (dir, level, notify_from) = (*dir, *level, *notify_from);
                if *reply {
                    self.answer(now, &r);
                }
                if let Some(pred) = notify_from {
                    if origin != self.me.id {
                        let shift = r.sealed.env.origin.peer().pos.cw_to(r.key());
                        let stop = pred.plus(shift);
                        let new = r.sealed.env.origin.clone();
                        self.forward_notify(new, dir.opposite(), level, stop);
                    }
                }
            }
            Body::Lookup => self.answer(now, &r),
            Body::Service { .. } | Body::Answer { .. } => {
                // Services' messages are routed by `route_service`; answers are never routed.
                self.stats.dropped += 1;
            }
        }
    }

    // ----- housekeeping -----

    fn housekeeping(&mut self, now: Time) {
        self.timers.housekeeping = Some(now + HOUSEKEEPING);
        self.peer_rates.prune(now);
        self.tombstones.retain(|_, t| *t > now);
        self.close_idle_links(now);
        self.table_links
            .retain(|p| self.links.contains_key(p) || self.table.contains(p));
        let keep: BTreeSet<P> = self
            .table
            .entries()
            .map(|p| p.id)
            .chain(self.links.keys().copied())
            .collect();
        // Addresses (and hints) go at the second housekeeping that finds them unneeded: one
        // learnt from a request's origin just before a housekeeping must outlive the
        // operation that answers it (a dictionary write waits for its replicas first).
        let unneeded: BTreeSet<P> = self
            .addrs
            .keys()
            .chain(self.hints.keys())
            .filter(|p| !keep.contains(p))
            .copied()
            .collect();
        let gone = |p: &P| self.unneeded.contains(p) && unneeded.contains(p);
        self.addrs.retain(|p, _| !gone(p));
        self.hints.retain(|p, _| !gone(p));
        self.unneeded = unneeded
            .into_iter()
            .filter(|p| self.addrs.contains_key(p) || self.hints.contains_key(p))
            .collect();
        self.records.retain(|p, _| keep.contains(p));
        self.sent_records.retain(|p| keep.contains(p));
        self.new_records.retain(|p, _| keep.contains(p));
        if now.since(self.record.issued) >= self.cfg.record_ttl / 4 {
            self.resign_record(now);
        }
    }

    /// Closes the links this node no longer needs: to a peer outside the table (and no group
    /// tree) silent for `link_idle`, or, sooner, silent for a stabilisation timeout if the link
    /// was there for the table (an entry that has left it: keeping its connection would cost
    /// keep-alives for nothing).
    fn close_idle_links(&mut self, now: Time) {
        let idle = self.cfg.link_idle;
        let left_table = self.cfg.stabilize_timeout;
        let stale: Vec<P> = self
            .links
            .iter()
            .filter(|(p, t)| {
                let quiet = now.since(**t);
                let limit = if self.table_links.contains(p) {
                    left_table
                } else {
                    idle
                };
                quiet >= limit && !self.table.contains(p) && !self.services.uses_link(p)
            })
            .map(|(p, _)| *p)
            .collect();
        for p in stale {
            self.links.remove(&p);
            self.table_links.remove(&p);
            self.out.push_back(Output::Disconnect { peer: p });
        }
    }

    // ----- helpers -----

    pub(crate) fn push_send(&mut self, to: P, msg: Message<P>) {
        self.stats.sent += 1;
        self.out.push_back(Output::Send { to, msg });
    }

    fn note_lists(&mut self, change: ListChange<P>) {
        if !change.is_empty() {
            self.lists_dirty = true;
            if let Some(gap) = self.table_gap() {
                self.gap_floor.note(gap, self.now);
            }
        }
    }

    fn emit_neighbour_events(&mut self) {
        if !std::mem::take(&mut self.lists_dirty) {
            return;
        }
        let mut now: Vec<P> = self
            .table
            .successors()
            .iter()
            .chain(self.table.predecessors())
            .map(|p| p.id)
            .collect();
        now.sort_unstable();
        now.dedup();
        if now == self.neighbours {
            return;
        }
        self.announce_neighbours(&now);
        let mut change = NeighbourChange {
            up: Vec::new(),
            down: Vec::new(),
        };
        for p in &self.neighbours {
            if now.binary_search(p).is_err() {
                change.down.push(*p);
            }
        }
        for p in &now {
            if self.neighbours.binary_search(p).is_err() {
                change.up.push(*p);
            }
        }
        self.neighbours = now;
        self.services.work.push_back(Work::Neighbours(change));
    }

    /// `d` scaled by a random factor in [0.9, 1.1), so that nodes do not march in step.
    pub(crate) fn jitter(&mut self, d: Duration) -> Duration {
        d.mul_f64(0.9 + 0.2 * self.rng.next_f64())
    }
}

/// `first`, then those of `then` not in it, without duplicates, at most
/// [`MAX_ADDRS_PER_PEER`].
fn merge_addrs(first: &[SocketAddr], then: &[SocketAddr]) -> Vec<SocketAddr> {
    let mut merged: Vec<SocketAddr> = Vec::with_capacity(MAX_ADDRS_PER_PEER);
    for a in first.iter().chain(then) {
        if merged.len() < MAX_ADDRS_PER_PEER && !merged.contains(a) {
            merged.push(*a);
        }
    }
    merged
}

/// Records the addresses and relay hint a contact carries. A first-hand contact (made by its
/// node) replaces what was known; another node's copy only adds to it, since it may be older.
fn learn<P: PeerId>(
    book: &mut BTreeMap<P, Vec<SocketAddr>>,
    hints: &mut BTreeMap<P, RelayHint<P>>,
    me: P,
    c: &Contact<P>,
    first_hand: bool,
) {
    if c.id == me {
        return;
    }
    if !c.addrs.is_empty() && book.get(&c.id) != Some(&c.addrs) {
        let a = match book.get(&c.id) {
            // What we knew (from the peer itself, or seen working) stays first.
            Some(known) if !first_hand => merge_addrs(known, &c.addrs),
            _ => merge_addrs(&c.addrs, &[]),
        };
        book.insert(c.id, a);
    }
    match &c.relay {
        Some(r) if r.id != c.id && hints.get(&c.id) != Some(r) => {
            let mut r = r.clone();
            r.addrs.truncate(MAX_ADDRS_PER_PEER);
            hints.insert(c.id, r);
        }
        Some(_) => {}
        // The peer itself says it has no relay: it is (now) reachable directly. Another node's
        // copy of its contact without a relay may just be older than the hint.
        None if first_hand && !c.addrs.is_empty() => {
            hints.remove(&c.id);
        }
        None => {}
    }
}
