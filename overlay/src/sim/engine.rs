//! The event loop: nodes, the event queue, churn and lookup workloads, and measurements.

use super::adversary::Adversary;
use super::ideal::{Ring, TableErrors};
use super::latency::LatencyModel;
use super::queue::EventQueue;
use super::summary::Summary;
use super::SimId;
use crate::cast::CastExt;
use crate::config::Config;
use crate::groups::GroupExt;
use crate::message::Message;
use crate::messaging::MessagingExt;
use crate::node::{Event, Node, Output, State};
use crate::peer::{Contact, Peer, PeerId};
use crate::proof::StandIn;
use crate::ring::RingId;
pub use crate::standard::Via;
use crate::standard::{self, StandardEvent};
use crate::time::Time;
use crate::truth::TrueRing;
use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// Simulator settings.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The overlay configuration every node runs (its `seed` is mixed with the run's seed).
    pub node: Config,
    /// Seed of everything random in the run.
    pub seed: u64,
    /// Message latency.
    pub latency: LatencyModel,
    /// Probability that a message is lost.
    pub loss: f64,
    /// How long after a message to a dead node its sender is told the link is down (a QUIC
    /// connection's idle timeout or handshake timeout).
    pub link_timeout: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            node: Config::default(),
            seed: 1,
            latency: LatencyModel::default(),
            loss: 0.0,
            link_timeout: Duration::from_secs(5),
        }
    }
}

/// Rates of the background workload, per simulated second.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Workload {
    /// New nodes joining (through a random member).
    pub joins: f64,
    /// Members leaving gracefully.
    pub leaves: f64,
    /// Members crashing.
    pub crashes: f64,
    /// Lookups of random keys from random members.
    pub lookups: f64,
}

impl Workload {
    /// Churn that replaces `fraction` of `n` nodes per minute (half by crash, half by leave
    /// when `graceful_share` is 0.5), with `lookups` lookups per second.
    pub fn replacing(n: usize, fraction_per_min: f64, graceful_share: f64, lookups: f64) -> Self {
        let per_sec = n as f64 * fraction_per_min / 60.0;
        Workload {
            joins: per_sec,
            leaves: per_sec * graceful_share,
            crashes: per_sec * (1.0 - graceful_share),
            lookups,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum WorkKind {
    Join,
    Leave,
    Crash,
    Lookup,
}

#[derive(Debug)]
enum Ev {
    Deliver {
        to: u32,
        from: SimId,
        msg: Box<Message<SimId>>,
    },
    Wake {
        node: u32,
    },
    LinkDown {
        node: u32,
        peer: SimId,
    },
    Work {
        kind: WorkKind,
        epoch: u64,
    },
}

struct SimNode {
    id: SimId,
    node: Node<SimId>,
    coord: (f32, f32),
    alive: bool,
    wake: Option<Time>,
}

/// Messages and bytes of one kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Traffic {
    /// Messages sent.
    pub messages: u64,
    /// Their encoded size (postcard), in bytes.
    pub bytes: u64,
}

/// What a run measured.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Counters {
    /// Traffic by message kind: the core's [`Message::KINDS`] and the names services give
    /// their messages (see [`Node::kind_of`]).
    pub by_kind: BTreeMap<&'static str, Traffic>,
    /// Messages lost on purpose (loss model).
    pub lost: u64,
    /// Lookups started.
    pub lookups_started: u64,
    /// Lookups answered with the node truly responsible at the time of the answer.
    pub lookups_correct: u64,
    /// Lookups answered with another node.
    pub lookups_wrong: u64,
    /// Lookups that failed (timeout) or whose origin left first.
    pub lookups_failed: u64,
    /// Hop counts of correct lookups.
    pub hops: Vec<u16>,
    /// Payloads delivered to applications.
    pub delivered: u64,
    /// Joins started / completed / given up.
    pub joins_started: u64,
    /// Joins that completed.
    pub joins_done: u64,
    /// Joins that gave up.
    pub joins_failed: u64,
    /// Graceful leaves.
    pub leaves: u64,
    /// Crashes.
    pub crashes: u64,
    /// Integral of the member count over time, in node-seconds.
    pub node_seconds: f64,
    /// Broadcasts and range multicasts that finished, as their origins saw it.
    pub casts_done: Vec<CastResult>,
    /// Children dropped from group trees for congestion.
    pub group_children_dropped: u64,
    /// Counts of group messages, as their senders got them.
    pub group_counts: Vec<GroupCount>,
    /// Times a node lost every neighbour and started rejoining.
    pub isolations: u64,
    /// Times a node told its application that a live peer left its lists
    /// ([`Event::NeighbourDown`]) and then, within [`FLAP_WINDOW`], that it was back
    /// ([`Event::NeighbourUp`]): news the application should not have been given.
    pub neighbour_flaps: u64,
}

/// How soon a neighbour's return makes its departure count as a flap.
pub const FLAP_WINDOW: Duration = Duration::from_secs(60);

/// Departures of live neighbours remembered at most (older ones are forgotten first).
const MAX_DOWNS: usize = 1 << 20;

/// A payload delivered to a node's application, by any of the standard services.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Delivery {
    /// The node that sent it.
    pub origin: SimId,
    /// The key it was routed to (the group for a group message, the range's low end for a
    /// range multicast, the receiver's position for a broadcast).
    pub key: RingId,
    /// Overlay hops (or tree depth) it took.
    pub hops: u16,
    /// How it was addressed.
    pub via: Via,
    /// The payload.
    pub payload: Bytes,
}

/// A message kept by [`Simulator::trace_kinds`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sent {
    /// Sender.
    pub from: SimId,
    /// Receiver.
    pub to: SimId,
    /// Its kind (see [`Node::kind_of`]).
    pub kind: &'static str,
    /// When it was sent.
    pub at: Time,
}

/// The end of a broadcast or range multicast, as its origin saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct CastResult {
    /// The origin.
    pub origin: SimId,
    /// Its message number.
    pub seq: u64,
    /// Deliveries counted up the tree, if a reply was asked for.
    pub delivered: Option<u64>,
    /// Whether every piece was acknowledged.
    pub complete: bool,
}

/// The count of a group message, as its sender got it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct GroupCount {
    /// The sender.
    pub origin: SimId,
    /// The group.
    pub group: RingId,
    /// Its message number.
    pub seq: u64,
    /// Members that delivered it (the sender not included).
    pub members: u64,
    /// Whether every part of the tree answered in time.
    pub complete: bool,
}

impl Counters {
    /// Traffic of the message kind `kind` (nothing for kinds never sent).
    pub fn traffic(&self, kind: &str) -> Traffic {
        self.by_kind.get(kind).copied().unwrap_or_default()
    }

    /// Ring and finger upkeep: stabilisation, leaves, join replies and finger traffic.
    pub fn maintenance(&self) -> Traffic {
        let mut t = Traffic::default();
        for kind in [
            "stabilize",
            "stabilize-reply",
            "join-reply",
            "leave",
            "finger-notify",
            "finger-probe",
        ] {
            let v = self.traffic(kind);
            t.messages += v.messages;
            t.bytes += v.bytes;
        }
        t
    }
}

/// A summary of a run, for reports.
#[derive(Clone, Debug, Serialize)]
pub struct SimReport {
    /// Members at the end.
    pub members: usize,
    /// Simulated seconds measured.
    pub seconds: f64,
    /// Fraction of started lookups answered with the correct node.
    pub lookup_success: f64,
    /// Lookups started.
    pub lookups: u64,
    /// Hops of correct lookups.
    pub hops: Summary,
    /// Distinct peers in each member's routing table.
    pub distinct_neighbours: Summary,
    /// Upkeep messages per member per second.
    pub maintenance_msgs_per_node_sec: f64,
    /// Upkeep bytes per member per second.
    pub maintenance_bytes_per_node_sec: f64,
}

/// The simulator. See the module documentation.
pub struct Simulator {
    cfg: SimConfig,
    now: Time,
    rng: ChaCha8Rng,
    salt: u32,
    queue: EventQueue<Ev>,
    nodes: Vec<SimNode>,
    /// Members (joined and alive) by position: the ground truth.
    members: TrueRing<SimId>,
    /// Members in an indexable form for random picks: `pick[i]`, with `pick_at[node]`.
    pick: Vec<u32>,
    pick_at: Vec<usize>,
    workload: Workload,
    epoch: u64,
    counters: Counters,
    deliveries: Option<Vec<(SimId, Delivery)>>,
    delivery_times: Vec<Time>,
    traced: Option<(Vec<&'static str>, Vec<Sent>)>,
    /// The encodings of the traced messages, when asked for (see [`Simulator::trace_wire`]).
    traced_wire: Option<Vec<Vec<u8>>>,
    outbuf: Vec<Output<SimId>>,
    /// While the network is partitioned: the side of every node (by index).
    sides: Option<Vec<bool>>,
    /// Rewrites what hostile nodes send, when set.
    adversary: Option<Adversary>,
    /// Registers further services on every node (see [`Simulator::register_everywhere`]).
    extra_services: Option<ServiceSetup>,
    /// Reused for draining the standard services.
    standard_buf: Vec<StandardEvent<SimId>>,
    /// (node, peer) -> when the node said its live neighbour `peer` went down.
    downs: BTreeMap<(u32, u32), Time>,
}

/// Registers services on a simulated node.
pub type ServiceSetup = Box<dyn Fn(&mut Node<SimId>)>;

impl Simulator {
    /// An empty simulation.
    pub fn new(cfg: SimConfig) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let salt = rng.gen();
        Simulator {
            cfg,
            now: Time::ZERO,
            rng,
            salt,
            queue: EventQueue::new(),
            nodes: Vec::new(),
            members: TrueRing::default(),
            pick: Vec::new(),
            pick_at: Vec::new(),
            workload: Workload::default(),
            epoch: 0,
            counters: Counters::default(),
            deliveries: None,
            delivery_times: Vec::new(),
            traced: None,
            traced_wire: None,
            outbuf: Vec::new(),
            sides: None,
            adversary: None,
            extra_services: None,
            standard_buf: Vec::new(),
            downs: BTreeMap::new(),
        }
    }

    /// The current simulated time.
    pub fn now(&self) -> Time {
        self.now
    }

    /// The run's settings.
    pub fn config(&self) -> &SimConfig {
        &self.cfg
    }

    /// What has been measured so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Starts measuring afresh (after a warm-up).
    pub fn reset_counters(&mut self) {
        self.counters = Counters::default();
    }

    /// Keeps every payload delivered from now on, for tests.
    pub fn record_deliveries(&mut self) {
        self.deliveries = Some(Vec::new());
        self.delivery_times.clear();
    }

    /// Keeps who sent what to whom for the message kinds named (see [`Node::kind_of`]).
    pub fn trace_kinds(&mut self, kinds: &[&'static str]) {
        self.traced = Some((kinds.to_vec(), Vec::new()));
    }

    /// Keeps the encoding of every traced message too (see [`Simulator::traced_wire`]): what
    /// an eavesdropper on the link, or the receiving node, could read of it.
    pub fn trace_wire(&mut self) {
        self.traced_wire = Some(Vec::new());
    }

    /// The encodings of the traced messages, in the order of [`Simulator::traced`] (empty
    /// unless [`Simulator::trace_wire`] was called before they were sent).
    pub fn traced_wire(&self) -> &[Vec<u8>] {
        self.traced_wire.as_deref().unwrap_or(&[])
    }

    /// Messages of the traced kinds sent so far.
    pub fn traced(&self) -> &[Sent] {
        self.traced
            .as_ref()
            .map(|(_, v)| v.as_slice())
            .unwrap_or(&[])
    }

    /// Payloads delivered so far (if recording), with the receiving node.
    pub fn deliveries(&self) -> &[(SimId, Delivery)] {
        self.deliveries.as_deref().unwrap_or(&[])
    }

    /// When each recorded delivery happened, in the order of [`Simulator::deliveries`].
    pub fn delivery_times(&self) -> &[Time] {
        &self.delivery_times
    }

    /// Forgets the deliveries recorded so far (recording goes on).
    pub fn clear_deliveries(&mut self) {
        if let Some(log) = &mut self.deliveries {
            log.clear();
        }
        self.delivery_times.clear();
    }

    /// Number of members (joined and alive).
    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    /// The members, in ring order.
    pub fn members(&self) -> impl Iterator<Item = SimId> + '_ {
        self.members.members().iter().copied()
    }

    /// The node with identity `id`.
    pub fn node(&self, id: SimId) -> &Node<SimId> {
        &self.nodes[id.index()].node
    }

    /// Is node `id` alive (not crashed or gone)?
    pub fn is_alive(&self, id: SimId) -> bool {
        self.nodes.get(id.index()).is_some_and(|n| n.alive)
    }

    /// The member responsible for `key`, by ground truth.
    pub fn responsible(&self, key: RingId) -> Option<SimId> {
        self.members.responsible(key)
    }

    fn node_config(&self, index: u32) -> Config {
        let mut c = self.cfg.node.clone();
        c.seed = crate::rng::mix64(self.cfg.seed ^ ((index as u64) << 20) ^ c.seed);
        c
    }

    /// Hands every message a node sends (and every message reaching a hostile node) to
    /// `adversary` from now on; `None` switches it off.
    pub fn set_adversary(&mut self, adversary: Option<Adversary>) {
        self.adversary = adversary;
    }

    /// The adversary in place, if any.
    pub fn adversary(&self) -> Option<&Adversary> {
        self.adversary.as_ref()
    }

    /// The adversary in place, if any, to change or reset.
    pub fn adversary_mut(&mut self) -> Option<&mut Adversary> {
        self.adversary.as_mut()
    }

    /// The identity node `index` gets unless told otherwise ([`SimId::new`] with the run's salt).
    pub fn default_id(&self, index: u32) -> SimId {
        SimId::new(index, self.salt)
    }

    /// Adds a node that is not part of any network yet.
    pub fn add_node(&mut self) -> SimId {
        let id = self.default_id(self.nodes.len() as u32);
        self.add_node_as(id)
    }

    /// Adds a node as `id` if its index is the next free one, else under its default identity.
    fn add_node_as(&mut self, id: SimId) -> SimId {
        let index = self.nodes.len() as u32;
        let id = if id.index() == index as usize {
            id
        } else {
            self.default_id(index)
        };
        let coord = (self.rng.gen::<f32>(), self.rng.gen::<f32>());
        let mut node = Node::new(StandIn(id), self.node_config(index));
        // Registering on a new node cannot clash.
        let _ = standard::register(&mut node);
        if let Some(setup) = &self.extra_services {
            setup(&mut node);
        }
        self.nodes.push(SimNode {
            id,
            node,
            coord,
            alive: true,
            wake: None,
        });
        self.pick_at.push(usize::MAX);
        id
    }

    /// Adds `n` nodes that already form a correct ring (every table exact), as if they had
    /// joined long ago. Returns their ids.
    pub fn warm_start(&mut self, n: usize) -> Vec<SimId> {
        let first = self.nodes.len() as u32;
        let ids: Vec<SimId> = (first..first + n as u32)
            .map(|i| self.default_id(i))
            .collect();
        self.warm_start_ids(&ids)
    }

    /// [`Simulator::warm_start`] with chosen identities (another salt moves a node on the
    /// ring, e.g. to grind positions): `ids[k]` must have the index of the `k`-th node added
    /// (the nodes so far plus `k`), else it gets its default identity. Returns the ids used.
    pub fn warm_start_ids(&mut self, ids: &[SimId]) -> Vec<SimId> {
        let ids: Vec<SimId> = ids.iter().map(|id| self.add_node_as(*id)).collect();
        let ring = Ring::new(ids.iter().map(|id| Peer::new(*id)).collect());
        let strategy = self.cfg.node.strategy;
        let list_len = self.cfg.node.list_len;
        for (i, p) in ring.members().iter().enumerate() {
            let table = ring.ideal_table(i, strategy, list_len);
            let idx = p.id.index();
            let cfg = self.node_config(idx as u32);
            // As if they had met long ago: every node holds its table entries' records.
            let now = self.now;
            let records: Vec<Contact<SimId>> = table
                .distinct_peers()
                .into_iter()
                .map(|q| Contact::signed(&StandIn(q), Vec::new(), None, now))
                .collect();
            let mut node = Node::from_table(StandIn(table.me().id), cfg, table, now);
            let _ = standard::register(&mut node);
            if let Some(setup) = &self.extra_services {
                setup(&mut node);
            }
            node.learn_records(&records);
            self.nodes[idx].node = node;
            self.add_member(p.id);
            self.drain(idx as u32);
        }
        ids
    }

    /// Cuts the network in two: from now on messages between a node for which `in_a` holds
    /// and one for which it does not are lost (nodes added later are on the other side), until
    /// [`Simulator::heal`].
    pub fn partition(&mut self, in_a: impl Fn(SimId) -> bool) {
        self.sides = Some(self.nodes.iter().map(|n| in_a(n.id)).collect());
    }

    /// Ends a partition: every node can reach every other again.
    pub fn heal(&mut self) {
        self.sides = None;
    }

    /// Node `id` starts a new network.
    pub fn create(&mut self, id: SimId) {
        let now = self.now;
        if self.nodes[id.index()].node.create(now).is_ok() {
            self.drain(id.index() as u32);
        }
    }

    /// Node `id` joins through `via`.
    pub fn join(&mut self, id: SimId, via: SimId) {
        let now = self.now;
        self.counters.joins_started += 1;
        if self.nodes[id.index()]
            .node
            .join(now, Contact::bare(via))
            .is_ok()
        {
            self.drain(id.index() as u32);
        }
    }

    /// Node `id` leaves gracefully and is gone.
    pub fn leave(&mut self, id: SimId) {
        let i = id.index();
        if !self.nodes[i].alive {
            return;
        }
        let now = self.now;
        self.counters.leaves += 1;
        self.nodes[i].node.leave(now);
        self.drain(i as u32);
        self.nodes[i].alive = false;
        self.remove_member(id);
    }

    /// Node `id` crashes: it stops without a word.
    pub fn crash(&mut self, id: SimId) {
        let i = id.index();
        if !self.nodes[i].alive {
            return;
        }
        self.counters.crashes += 1;
        self.nodes[i].alive = false;
        self.remove_member(id);
    }

    /// Node `from` looks up `key`; the outcome is counted when it comes.
    pub fn lookup(&mut self, from: SimId, key: RingId) {
        let now = self.now;
        if self.nodes[from.index()].node.lookup(now, key).is_ok() {
            self.counters.lookups_started += 1;
            self.drain(from.index() as u32);
        }
    }

    /// Registers services of a test's own on every node from now on (nodes added later and
    /// nodes of later warm starts), besides the standard ones; `setup` runs on each node once.
    pub fn register_everywhere(&mut self, setup: impl Fn(&mut Node<SimId>) + 'static) {
        self.extra_services = Some(Box::new(setup));
    }

    /// Node `id`, mutably, to take what its services have for their applications (anything
    /// that sends must go through [`Simulator::command`]).
    pub fn node_mut(&mut self, id: SimId) -> &mut Node<SimId> {
        &mut self.nodes[id.index()].node
    }

    /// Runs `f` on node `id` at the current time and hands its outputs to the network.
    pub fn command<T>(&mut self, id: SimId, f: impl FnOnce(&mut Node<SimId>, Time) -> T) -> T {
        let now = self.now;
        let r = f(&mut self.nodes[id.index()].node, now);
        self.drain(id.index() as u32);
        r
    }

    /// Node `from` broadcasts `payload`; returns the message number.
    pub fn broadcast(&mut self, from: SimId, payload: Vec<u8>, reply: bool) -> Option<u64> {
        self.command(from, |n, now| n.broadcast(now, &payload, reply).ok())
    }

    /// Node `from` multicasts `payload` to the nodes responsible for keys in `[lo, hi]`.
    pub fn multicast_range(
        &mut self,
        from: SimId,
        lo: RingId,
        hi: RingId,
        payload: Vec<u8>,
        reply: bool,
    ) -> Option<u64> {
        self.command(from, |n, now| {
            n.multicast_range(now, lo, hi, &payload, reply).ok()
        })
    }

    /// Node `id` joins group `group`.
    pub fn join_group(&mut self, id: SimId, group: RingId) -> bool {
        self.command(id, |n, now| n.join_group(now, group).is_ok())
    }

    /// Node `id` leaves group `group`.
    pub fn leave_group(&mut self, id: SimId, group: RingId) {
        self.command(id, |n, now| n.leave_group(now, group))
    }

    /// Node `from` sends `payload` to the members of `group`.
    pub fn send_group(&mut self, from: SimId, group: RingId, payload: Vec<u8>) -> Option<u64> {
        self.command(from, |n, now| n.send_group(now, group, &payload).ok())
    }

    /// Node `from` routes `payload` to the node responsible for `key`.
    pub fn route(&mut self, from: SimId, key: RingId, payload: Vec<u8>) {
        let now = self.now;
        if self.nodes[from.index()]
            .node
            .route(now, key, &payload)
            .is_ok()
        {
            self.drain(from.index() as u32);
        }
    }

    /// Node `from` sends `payload` to node `to`.
    pub fn send(&mut self, from: SimId, to: SimId, payload: Vec<u8>) {
        let now = self.now;
        if self.nodes[from.index()]
            .node
            .send(now, to, &payload)
            .is_ok()
        {
            self.drain(from.index() as u32);
        }
    }

    /// Sets the background workload (churn and lookups) from now on; all zeros stops it.
    pub fn set_workload(&mut self, w: Workload) {
        self.workload = w;
        self.epoch += 1;
        for kind in [
            WorkKind::Join,
            WorkKind::Leave,
            WorkKind::Crash,
            WorkKind::Lookup,
        ] {
            self.schedule_work(kind);
        }
    }

    fn rate(&self, kind: WorkKind) -> f64 {
        match kind {
            WorkKind::Join => self.workload.joins,
            WorkKind::Leave => self.workload.leaves,
            WorkKind::Crash => self.workload.crashes,
            WorkKind::Lookup => self.workload.lookups,
        }
    }

    fn schedule_work(&mut self, kind: WorkKind) {
        let rate = self.rate(kind);
        if rate <= 0.0 {
            return;
        }
        // Exponential inter-arrival times: a Poisson process.
        let u: f64 = self.rng.gen_range(f64::MIN_POSITIVE..1.0);
        let dt = Duration::from_secs_f64((-u.ln() / rate).min(1e6));
        let at = self.now + dt;
        let epoch = self.epoch;
        self.push(at, Ev::Work { kind, epoch });
    }

    /// A random member, if any.
    pub fn random_member(&mut self) -> Option<SimId> {
        if self.pick.is_empty() {
            return None;
        }
        let i = self.rng.gen_range(0..self.pick.len());
        Some(self.nodes[self.pick[i] as usize].id)
    }

    /// A random ring key.
    pub fn random_key(&mut self) -> RingId {
        RingId(self.rng.gen())
    }

    fn do_work(&mut self, kind: WorkKind) {
        match kind {
            WorkKind::Join => {
                if let Some(via) = self.random_member() {
                    let id = self.add_node();
                    self.join(id, via);
                }
            }
            WorkKind::Leave => {
                if self.members.len() > 1 {
                    if let Some(id) = self.random_member() {
                        self.leave(id);
                    }
                }
            }
            WorkKind::Crash => {
                if self.members.len() > 1 {
                    if let Some(id) = self.random_member() {
                        self.crash(id);
                    }
                }
            }
            WorkKind::Lookup => {
                if let Some(from) = self.random_member() {
                    let key = self.random_key();
                    self.lookup(from, key);
                }
            }
        }
        self.schedule_work(kind);
    }

    fn add_member(&mut self, id: SimId) {
        self.members.insert(id.ring_id(), id);
        let i = id.index();
        if self.pick_at[i] == usize::MAX {
            self.pick_at[i] = self.pick.len();
            self.pick.push(i as u32);
        }
    }

    fn remove_member(&mut self, id: SimId) {
        self.members.remove(id.ring_id(), &id);
        let i = id.index();
        let at = self.pick_at[i];
        if at != usize::MAX {
            self.pick.swap_remove(at);
            if let Some(&moved) = self.pick.get(at) {
                self.pick_at[moved as usize] = at;
            }
            self.pick_at[i] = usize::MAX;
        }
    }

    fn push(&mut self, time: Time, ev: Ev) {
        self.queue.push(time, ev);
    }

    /// Hands node `i`'s outputs to the network and re-arms its timer.
    fn drain(&mut self, i: u32) {
        let mut out = std::mem::take(&mut self.outbuf);
        {
            let n = &mut self.nodes[i as usize];
            while let Some(o) = n.node.poll_output() {
                out.push(o);
            }
        }
        let me = self.nodes[i as usize].id;
        for o in out.drain(..) {
            match o {
                Output::Send { to, msg } => match self.adversary.as_mut() {
                    None => self.transmit(i, me, to, msg),
                    Some(adv) => {
                        if let Some((to, msg)) = adv.outgoing(self.now, me, to, msg) {
                            self.transmit(i, me, to, msg);
                        }
                    }
                },
                Output::Disconnect { .. } => {}
                Output::Event(e) => self.on_event(me, e),
            }
        }
        self.outbuf = out;
        self.drain_services(i, me);
        let n = &mut self.nodes[i as usize];
        if !n.alive {
            return;
        }
        if let Some(t) = n.node.poll_timeout() {
            let t = t.max(self.now);
            if n.wake.is_none_or(|w| t < w) {
                n.wake = Some(t);
                self.push(t, Ev::Wake { node: i });
            }
        }
    }

    /// Takes what node `i`'s standard services have for their applications.
    fn drain_services(&mut self, i: u32, me: SimId) {
        let mut got = std::mem::take(&mut self.standard_buf);
        standard::drain(&mut self.nodes[i as usize].node, &mut got);
        for e in got.drain(..) {
            match e {
                StandardEvent::Delivered {
                    origin,
                    key,
                    hops,
                    via,
                    payload,
                } => {
                    self.counters.delivered += 1;
                    if let Some(log) = &mut self.deliveries {
                        self.delivery_times.push(self.now);
                        log.push((
                            me,
                            Delivery {
                                origin,
                                key,
                                hops,
                                via,
                                payload,
                            },
                        ));
                    }
                }
                StandardEvent::CastDone {
                    seq,
                    delivered,
                    complete,
                } => self.counters.casts_done.push(CastResult {
                    origin: me,
                    seq,
                    delivered,
                    complete,
                }),
                StandardEvent::GroupChildDropped { .. } => {
                    self.counters.group_children_dropped += 1
                }
                StandardEvent::GroupCounted {
                    group,
                    seq,
                    members,
                    complete,
                } => self.counters.group_counts.push(GroupCount {
                    origin: me,
                    group,
                    seq,
                    members,
                    complete,
                }),
            }
        }
        self.standard_buf = got;
    }

    fn transmit(&mut self, i: u32, me: SimId, to: SimId, msg: Message<SimId>) {
        let bytes = postcard::serialize_with_flavor(&msg, postcard::ser_flavors::Size::default())
            .unwrap_or(0) as u64;
        let kind = self.nodes[i as usize].node.kind_of(&msg);
        if let Some((kinds, log)) = &mut self.traced {
            if kinds.contains(&kind) {
                log.push(Sent {
                    from: me,
                    to,
                    kind,
                    at: self.now,
                });
                if let Some(wire) = &mut self.traced_wire {
                    wire.push(postcard::to_stdvec(&msg).unwrap_or_default());
                }
            }
        }
        let t = self.counters.by_kind.entry(kind).or_default();
        t.messages += 1;
        t.bytes += bytes;
        if self.cfg.loss > 0.0 && self.rng.gen_bool(self.cfg.loss.min(1.0)) {
            self.counters.lost += 1;
            return;
        }
        if let Some(sides) = &self.sides {
            let side = |id: SimId| sides.get(id.index()).copied().unwrap_or(false);
            if side(me) != side(to) {
                self.counters.lost += 1;
                return;
            }
        }
        let Some(dest) = self.nodes.get(to.index()) else {
            return;
        };
        let at = self
            .cfg
            .latency
            .arrival(self.now, self.nodes[i as usize].coord, dest.coord);
        self.push(
            at,
            Ev::Deliver {
                to: to.index() as u32,
                from: me,
                msg: Box::new(msg),
            },
        );
    }

    fn on_event(&mut self, me: SimId, e: Event<SimId>) {
        match e {
            Event::Joined => {
                self.counters.joins_done += 1;
                if self.nodes[me.index()].alive {
                    self.add_member(me);
                }
            }
            Event::JoinFailed => self.counters.joins_failed += 1,
            Event::Left | Event::JoinRequested { .. } => {}
            Event::NeighbourDown(p) => {
                if self.nodes[p.index()].alive {
                    if self.downs.len() >= MAX_DOWNS {
                        let now = self.now;
                        self.downs.retain(|_, t| now.since(*t) < FLAP_WINDOW);
                    }
                    self.downs
                        .insert((me.index() as u32, p.index() as u32), self.now);
                }
            }
            Event::NeighbourUp(p) => {
                let key = (me.index() as u32, p.index() as u32);
                if let Some(t) = self.downs.remove(&key) {
                    if self.now.since(t) < FLAP_WINDOW {
                        self.counters.neighbour_flaps += 1;
                    }
                }
            }
            Event::Isolated => self.counters.isolations += 1,
            Event::LookupDone { key, result, .. } => match result {
                Ok((node, hops)) => {
                    if self.responsible(key) == Some(node) {
                        self.counters.lookups_correct += 1;
                        self.counters.hops.push(hops);
                    } else {
                        self.counters.lookups_wrong += 1;
                    }
                }
                Err(_) => self.counters.lookups_failed += 1,
            },
        }
    }

    /// Processes one event. Returns false when the queue is empty.
    pub fn step(&mut self) -> bool {
        self.step_until(Time(u64::MAX))
    }

    /// Processes the next event if it is due at or before `limit`. Returns whether there was one.
    fn step_until(&mut self, limit: Time) -> bool {
        let Some(s) = self.queue.pop_until(limit) else {
            return false;
        };
        self.advance(s.time);
        match s.item {
            Ev::Deliver { to, from, msg } => {
                let now = self.now;
                let n = &mut self.nodes[to as usize];
                let me = n.id;
                let intercepted = match self.adversary.as_mut() {
                    Some(adv) if n.alive => adv.incoming(now, me, from, &msg),
                    _ => None,
                };
                if let Some(replies) = intercepted {
                    // A hostile node answered in its own way; its node never sees the message.
                    for (dest, m) in replies {
                        self.transmit(to, me, dest, m);
                    }
                } else if n.alive {
                    n.node.handle_message(now, from, *msg);
                    self.drain(to);
                } else if self.is_alive(from) {
                    let at = now + self.cfg.link_timeout;
                    self.push(
                        at,
                        Ev::LinkDown {
                            node: from.index() as u32,
                            peer: me,
                        },
                    );
                }
            }
            Ev::Wake { node } => {
                let now = self.now;
                let n = &mut self.nodes[node as usize];
                if n.alive && n.wake == Some(now) {
                    n.wake = None;
                    n.node.handle_timeout(now);
                    self.drain(node);
                }
            }
            Ev::LinkDown { node, peer } => {
                let now = self.now;
                let n = &mut self.nodes[node as usize];
                if n.alive {
                    n.node.handle_link_down(now, peer);
                    self.drain(node);
                }
            }
            Ev::Work { kind, epoch } => {
                if epoch == self.epoch {
                    self.do_work(kind);
                }
            }
        }
        true
    }

    fn advance(&mut self, t: Time) {
        if t > self.now {
            let dt = t.since(self.now).as_secs_f64();
            self.counters.node_seconds += dt * self.members.len() as f64;
            self.now = t;
        }
    }

    /// Runs every event up to time `t`, then sets the clock to `t`.
    pub fn run_until(&mut self, t: Time) {
        while self.step_until(t) {}
        self.advance(t);
    }

    /// Runs for `d` of simulated time.
    pub fn run_for(&mut self, d: Duration) {
        let t = self.now + d;
        self.run_until(t);
    }

    /// The ground-truth ring of current members.
    pub fn ring(&self) -> Ring<SimId> {
        Ring::new(
            self.members
                .members()
                .iter()
                .map(|id| Peer::new(*id))
                .collect(),
        )
    }

    /// How far every member's table is from the correct one, summed; and how many members have
    /// an incorrect table.
    pub fn check(&self) -> (TableErrors, usize) {
        let ring = self.ring();
        let mut total = TableErrors::default();
        let mut bad = 0;
        for id in self.members.members() {
            let n = &self.nodes[id.index()].node;
            let e = if n.state() == State::Joined {
                ring.table_errors(n.table())
            } else {
                TableErrors {
                    not_member: true,
                    ..TableErrors::default()
                }
            };
            if !e.is_correct() {
                bad += 1;
            }
            total.not_member |= e.not_member;
            total.successors += e.successors;
            total.predecessors += e.predecessors;
            total.fingers += e.fingers;
        }
        (total, bad)
    }

    /// Runs until every member's table is exactly right, checking every `every`, for at most
    /// `limit`. Returns the time it took, or `None` if the limit was reached.
    pub fn run_until_converged(&mut self, every: Duration, limit: Duration) -> Option<Duration> {
        let start = self.now;
        loop {
            if self.check().1 == 0 {
                return Some(self.now.since(start));
            }
            if self.now.since(start) >= limit {
                return None;
            }
            self.run_for(every);
        }
    }

    /// A report of what was measured since the counters were last reset.
    pub fn report(&self, seconds: f64) -> SimReport {
        let c = &self.counters;
        let m = c.maintenance();
        let node_secs = c.node_seconds.max(1e-9);
        let mut distinct: Vec<f64> = self
            .members
            .members()
            .iter()
            .map(|id| self.nodes[id.index()].node.table().distinct_peers().len() as f64)
            .collect();
        SimReport {
            members: self.members.len(),
            seconds,
            lookup_success: if c.lookups_started == 0 {
                1.0
            } else {
                c.lookups_correct as f64 / c.lookups_started as f64
            },
            lookups: c.lookups_started,
            hops: Summary::of_counts(c.hops.iter().map(|h| *h as u64)),
            distinct_neighbours: Summary::of(&mut distinct),
            maintenance_msgs_per_node_sec: m.messages as f64 / node_secs,
            maintenance_bytes_per_node_sec: m.bytes as f64 / node_secs,
        }
    }
}
