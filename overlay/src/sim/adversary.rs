//! Hostile nodes: an adversary model for the simulator, and the lookup measurement under it.
//!
//! Hostile nodes run the real [`Node`](crate::Node) code; the engine hands an [`Adversary`]
//! every message a node sends ([`Adversary::outgoing`]) and every message that reaches a
//! hostile node ([`Adversary::incoming`]), and the adversary rewrites what hostile nodes say.
//! It can sign for any hostile node (they collude), never for an honest one: everything it
//! makes is a real [`StandIn`] signature by a hostile identity. Colluders do not attack each
//! other: they pass each other's messages on and tell each other the truth. Its behaviours
//! ([`Behaviour`]) can be switched one by one:
//!
//! - **drop**: routed messages a hostile node would forward for others, and answers it should
//!   pass back, are dropped;
//! - **answer with itself**: a routed lookup or finger probe that wants an answer and reaches a
//!   hostile node (as forwarder or destination) is answered at once, straight to the asker,
//!   with an answer signed by the hostile node, whose proof of responsibility is signed by the
//!   hostile node nearest before the key (the asker refuses it unless the key lies between
//!   the two and its own lists show nothing there);
//! - **lie in lists**: the lists of its stabilisation messages, stabilisation replies and join
//!   replies name only other hostile nodes (signed records), the ones nearest to the receiver
//!   in the list's direction;
//! - **lie in steered lookups**: its answers to [`Message::FindNear`] name only itself and the
//!   hostile nodes nearest to the key, never an honest node.
//!
//! [`run`] measures lookups under the adversary: a warm ring, hostile nodes chosen at random
//! (or ground to sit just before one victim), a spell of upkeep with the adversary on, then
//! lookups from honest nodes of keys whose responsible node is honest. Everything is bounded
//! and follows from the scenario's seed.

use super::engine::{SimConfig, Simulator};
use super::SimId;
use crate::adjacency::Adjacency;
use crate::config::{Config, LookupMode};
use crate::message::{Answer, Body, Envelope, Message, Sealed};
use crate::peer::{Contact, PeerId};
use crate::proof::StandIn;
use crate::ring::{Dir, RingId};
use crate::rng::{mix64, SplitMix64};
use crate::time::Time;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::time::Duration;

/// Which attacks hostile nodes make.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Behaviour {
    /// Drop routed messages forwarded for others and answers passed back.
    pub drop: bool,
    /// Answer routed lookups and finger probes with themselves.
    pub answer_self: bool,
    /// Name only colluders in stabilisation and join replies.
    pub lie_lists: bool,
    /// Name only colluders (and themselves) in answers to steered lookups' queries.
    pub lie_near: bool,
}

impl Behaviour {
    /// Every attack at once.
    pub const ALL: Behaviour = Behaviour {
        drop: true,
        answer_self: true,
        lie_lists: true,
        lie_near: true,
    };

    /// No attack: hostile nodes behave.
    pub const NONE: Behaviour = Behaviour {
        drop: false,
        answer_self: false,
        lie_lists: false,
        lie_near: false,
    };

    /// The names [`Behaviour::parse`] takes.
    pub const NAMES: [&'static str; 6] = [
        "all",
        "drop",
        "answer-self",
        "lie-lists",
        "lie-near",
        "none",
    ];

    /// The behaviour called `name` (one of [`Behaviour::NAMES`]).
    pub fn parse(name: &str) -> Option<Behaviour> {
        let none = Behaviour::NONE;
        Some(match name {
            "all" => Behaviour::ALL,
            "drop" => Behaviour { drop: true, ..none },
            "answer-self" => Behaviour {
                answer_self: true,
                ..none
            },
            "lie-lists" => Behaviour {
                lie_lists: true,
                ..none
            },
            "lie-near" => Behaviour {
                lie_near: true,
                ..none
            },
            "none" => none,
            _ => return None,
        })
    }

    /// A short name: one of [`Behaviour::NAMES`], or the attacks joined by `+`.
    pub fn name(&self) -> String {
        if let Some(n) = Behaviour::NAMES
            .iter()
            .find(|n| Behaviour::parse(n) == Some(*self))
        {
            return (*n).to_string();
        }
        [
            (self.drop, "drop"),
            (self.answer_self, "answer-self"),
            (self.lie_lists, "lie-lists"),
            (self.lie_near, "lie-near"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, n)| *n)
        .collect::<Vec<_>>()
        .join("+")
    }
}

/// Lookup messages sent, by kind (routed lookups' answers only, not finger probes').
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LookupTraffic {
    /// Routed lookups, every hop and retry counted.
    pub lookup: u64,
    /// Answers to routed lookups, every hop back counted.
    pub answer: u64,
    /// Steered lookups' queries.
    pub find_near: u64,
    /// Answers to those queries.
    pub near: u64,
}

impl LookupTraffic {
    /// Every lookup message.
    pub fn total(&self) -> u64 {
        self.lookup + self.answer + self.find_near + self.near
    }
}

/// What the adversary did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AdversaryStats {
    /// Routed lookups answered with a hostile node.
    pub answered_lookups: u64,
    /// Routed finger probes answered with a hostile node.
    pub answered_probes: u64,
    /// Routed messages dropped instead of forwarded.
    pub dropped_routed: u64,
    /// Answers dropped instead of passed back.
    pub dropped_answers: u64,
    /// Stabilisation messages and join replies whose lists were replaced.
    pub lied_lists: u64,
    /// Answers to steered queries that named only colluders.
    pub lied_near: u64,
}

/// Requests whose answers are counted as lookup traffic, at most (memory bound).
const MAX_TRACKED: usize = 1 << 20;

/// The adversary: which nodes are hostile and how they misbehave. See the module docs.
#[derive(Debug)]
pub struct Adversary {
    behaviour: Behaviour,
    hostile: BTreeSet<SimId>,
    /// Hostile nodes by ring position.
    ring: BTreeMap<RingId, SimId>,
    list_len: usize,
    rng: SplitMix64,
    /// Ids of routed lookups seen leaving their askers, so that their answers are counted.
    lookup_reqs: BTreeSet<u64>,
    traffic: LookupTraffic,
    stats: AdversaryStats,
}

impl Adversary {
    /// Hostile nodes `hostile` behaving as `behaviour`; lists they make hold at most
    /// `list_len` nodes; the message numbers they make follow from `seed`.
    pub fn new(
        hostile: impl IntoIterator<Item = SimId>,
        behaviour: Behaviour,
        list_len: usize,
        seed: u64,
    ) -> Self {
        let hostile: BTreeSet<SimId> = hostile.into_iter().collect();
        let ring = hostile.iter().map(|id| (id.ring_id(), *id)).collect();
        Adversary {
            behaviour,
            hostile,
            ring,
            list_len: list_len.max(1),
            rng: SplitMix64::new(mix64(seed ^ 0xad7e_4a11)),
            lookup_reqs: BTreeSet::new(),
            traffic: LookupTraffic::default(),
            stats: AdversaryStats::default(),
        }
    }

    /// Whether `id` is hostile.
    pub fn is_hostile(&self, id: SimId) -> bool {
        self.hostile.contains(&id)
    }

    /// The hostile nodes.
    pub fn hostile(&self) -> impl Iterator<Item = SimId> + '_ {
        self.hostile.iter().copied()
    }

    /// The attacks in force.
    pub fn behaviour(&self) -> Behaviour {
        self.behaviour
    }

    /// Lookup messages sent since the last [`Adversary::reset_counts`].
    pub fn traffic(&self) -> LookupTraffic {
        self.traffic
    }

    /// What the adversary did since the last [`Adversary::reset_counts`].
    pub fn stats(&self) -> AdversaryStats {
        self.stats
    }

    /// Starts counting afresh.
    pub fn reset_counts(&mut self) {
        self.traffic = LookupTraffic::default();
        self.stats = AdversaryStats::default();
        self.lookup_reqs.clear();
    }

    /// Node `from` sends `msg` to `to` at `now`: what actually goes out (nothing, the same,
    /// or a rewritten message). Every message that goes out is counted.
    pub fn outgoing(
        &mut self,
        now: Time,
        from: SimId,
        to: SimId,
        msg: Message<SimId>,
    ) -> Option<(SimId, Message<SimId>)> {
        let out = if self.is_hostile(from) {
            self.rewrite(now, from, to, msg)
        } else {
            Some((to, msg))
        };
        if let Some((_, m)) = &out {
            self.count(from, m);
        }
        out
    }

    /// `msg` from `from` reaches node `at`. When `at` is hostile and answers in its own way,
    /// returns its replies (possibly none): the node itself then never sees the message.
    pub fn incoming(
        &mut self,
        now: Time,
        at: SimId,
        from: SimId,
        msg: &Message<SimId>,
    ) -> Option<Vec<(SimId, Message<SimId>)>> {
        if !self.is_hostile(at) || self.is_hostile(from) {
            return None;
        }
        let reply = match msg {
            Message::Routed(r)
                if self.behaviour.answer_self
                    && matches!(
                        r.sealed.env.body,
                        Body::Lookup | Body::FingerProbe { reply: true, .. }
                    )
                    && !self.is_hostile(r.origin()) =>
            {
                if r.sealed.env.body == Body::Lookup {
                    self.stats.answered_lookups += 1;
                } else {
                    self.stats.answered_probes += 1;
                }
                let asker = r.origin();
                let key = r.key();
                // The best proof colluders can make: the hostile node nearest before the key
                // vouches that the answering node follows it.
                let pred = self
                    .nearest_dir(key, Dir::Ccw, 1, &[at])
                    .first()
                    .copied()
                    .unwrap_or(at);
                let env = Envelope {
                    origin: record(at, now),
                    seq: self.rng.next_u64().max(1),
                    issued: now,
                    key,
                    body: Body::Answer {
                        req: r.sealed.env.seq,
                        asker,
                        pred: Some(Adjacency::sign(&StandIn(pred), at, now)),
                        hops: r.hops,
                    },
                };
                let sealed = Sealed::seal(&StandIn(at), env);
                (
                    asker,
                    Message::Answer(Answer {
                        trail: Vec::new(),
                        sealed,
                    }),
                )
            }
            Message::FindNear { req, key } if self.behaviour.lie_near => {
                self.stats.lied_near += 1;
                let mut nodes = vec![record(at, now)];
                nodes.extend(
                    self.nearest_key(*key, 2 * self.list_len, at)
                        .into_iter()
                        .map(|c| record(c, now)),
                );
                (from, Message::Near { req: *req, nodes })
            }
            _ => return None,
        };
        self.count(at, &reply.1);
        Some(vec![reply])
    }

    /// What hostile node `me` really sends instead of `msg` to `to`.
    fn rewrite(
        &mut self,
        now: Time,
        me: SimId,
        to: SimId,
        msg: Message<SimId>,
    ) -> Option<(SimId, Message<SimId>)> {
        let b = self.behaviour;
        // Colluders tell each other the truth: the lies are for honest nodes.
        let lie = b.lie_lists && !self.is_hostile(to);
        let msg = match msg {
            // Colluders pass each other's messages on.
            Message::Routed(r) if b.drop && !self.is_hostile(r.origin()) => {
                self.stats.dropped_routed += 1;
                return None;
            }
            Message::Answer(a)
                if b.drop
                    && a.sealed.origin() != me
                    && matches!(a.sealed.env.body, Body::Answer { asker, .. } if !self.is_hostile(asker)) =>
            {
                self.stats.dropped_answers += 1;
                return None;
            }
            Message::Stabilize {
                dir,
                me: rec,
                follows,
                ..
            } if lie => {
                self.stats.lied_lists += 1;
                // The receiver merges the list into its own on the side opposite to `dir`.
                let list = self.colluders(to.ring_id(), dir.opposite(), &[me, to], now);
                Message::Stabilize {
                    dir,
                    me: rec,
                    list,
                    follows,
                }
            }
            Message::StabilizeReply { dir, me: rec, .. } if lie => {
                self.stats.lied_lists += 1;
                // The receiver (the requester) merges the list into its own in direction `dir`,
                // and takes `back` if it lies between the two.
                let list = self.colluders(to.ring_id(), dir, &[me, to], now);
                let back = self
                    .nearest_dir(me.ring_id(), dir.opposite(), 1, &[me, to])
                    .first()
                    .map(|c| record(*c, now));
                Message::StabilizeReply {
                    dir,
                    me: rec,
                    back,
                    list,
                }
            }
            Message::JoinReply { req, .. } if lie => {
                self.stats.lied_lists += 1;
                let mut succs = vec![record(me, now)];
                let k = self.list_len.saturating_sub(1);
                succs.extend(
                    self.nearest_dir(to.ring_id(), Dir::Cw, k, &[me, to])
                        .into_iter()
                        .map(|c| record(c, now)),
                );
                let preds = self.colluders(to.ring_id(), Dir::Ccw, &[me, to], now);
                Message::JoinReply { req, succs, preds }
            }
            other => other,
        };
        Some((to, msg))
    }

    /// Counts a message that goes out from `from` if it is lookup traffic.
    fn count(&mut self, from: SimId, msg: &Message<SimId>) {
        match msg {
            Message::Routed(r) if r.sealed.env.body == Body::Lookup => {
                self.traffic.lookup += 1;
                if r.origin() == from && self.lookup_reqs.len() < MAX_TRACKED {
                    self.lookup_reqs.insert(r.sealed.env.seq);
                }
            }
            Message::Answer(a) => {
                if let Body::Answer { req, .. } = a.sealed.env.body {
                    if self.lookup_reqs.contains(&req) {
                        self.traffic.answer += 1;
                    }
                }
            }
            Message::FindNear { .. } => self.traffic.find_near += 1,
            Message::Near { .. } => self.traffic.near += 1,
            _ => {}
        }
    }

    /// Signed records of the `list_len` hostile nodes nearest to `from` in direction `dir`
    /// (not `from` itself), nearest first, leaving out `skip`.
    fn colluders(&self, from: RingId, dir: Dir, skip: &[SimId], now: Time) -> Vec<Contact<SimId>> {
        self.nearest_dir(from, dir, self.list_len, skip)
            .into_iter()
            .map(|c| record(c, now))
            .collect()
    }

    /// The `k` hostile nodes nearest to `from` walking in direction `dir` (not at `from`
    /// itself), nearest first, leaving out `skip`.
    fn nearest_dir(&self, from: RingId, dir: Dir, k: usize, skip: &[SimId]) -> Vec<SimId> {
        let keep = |(_, id): (&RingId, &SimId)| (!skip.contains(id)).then_some(*id);
        match dir {
            Dir::Cw => self
                .ring
                .range((Bound::Excluded(from), Bound::Unbounded))
                .chain(self.ring.range(..from))
                .filter_map(keep)
                .take(k)
                .collect(),
            Dir::Ccw => self
                .ring
                .range(..from)
                .rev()
                .chain(
                    self.ring
                        .range((Bound::Excluded(from), Bound::Unbounded))
                        .rev(),
                )
                .filter_map(keep)
                .take(k)
                .collect(),
        }
    }

    /// The `k` hostile nodes nearest to `key` either way round, nearest first, but `skip`.
    fn nearest_key(&self, key: RingId, k: usize, skip: SimId) -> Vec<SimId> {
        let mut both: Vec<(u128, SimId)> = self
            .ring
            .range(key..)
            .chain(self.ring.range(..key))
            .filter(|(_, id)| **id != skip)
            .take(k)
            .chain(
                self.ring
                    .range(..key)
                    .rev()
                    .chain(self.ring.range(key..).rev())
                    .filter(|(_, id)| **id != skip)
                    .take(k),
            )
            .map(|(pos, id)| (pos.dist(key), *id))
            .collect();
        both.sort_unstable();
        both.dedup_by_key(|(_, id)| *id);
        both.truncate(k);
        both.into_iter().map(|(_, id)| id).collect()
    }
}

/// The signed record of `id`, made at `now`.
fn record(id: SimId, now: Time) -> Contact<SimId> {
    Contact::signed(&StandIn(id), Vec::new(), None, now)
}

/// Where hostile nodes sit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Placement {
    /// Chosen uniformly at random among the nodes.
    Random,
    /// Ground (ids tried until one fits) to sit between one victim and its honest
    /// predecessor; the lookups are of keys the victim is responsible for.
    Ground,
}

impl Placement {
    /// `"random"` or `"ground"`.
    pub fn name(&self) -> &'static str {
        match self {
            Placement::Random => "random",
            Placement::Ground => "ground",
        }
    }
}

/// One measurement of lookups under the adversary.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Nodes in the ring, hostile ones included.
    pub nodes: usize,
    /// Fraction of them that is hostile.
    pub hostile: f64,
    /// Where the hostile nodes sit.
    pub placement: Placement,
    /// How the honest nodes look up.
    pub mode: LookupMode,
    /// What the hostile nodes do.
    pub behaviour: Behaviour,
    /// Simulated time the ring runs with the adversary on before the lookups (its lies spread).
    pub warmup: Duration,
    /// Lookups measured.
    pub lookups: usize,
    /// Simulated time between two lookups.
    pub spacing: Duration,
    /// Seed of the ring, the hostile nodes, the askers and the keys.
    pub seed: u64,
}

impl Scenario {
    /// `nodes` nodes with a fraction `hostile` of them hostile, all attacks on, 60 simulated
    /// seconds of upkeep, then `lookups` lookups 10 ms apart.
    pub fn new(
        nodes: usize,
        hostile: f64,
        placement: Placement,
        mode: LookupMode,
        lookups: usize,
        seed: u64,
    ) -> Self {
        Scenario {
            nodes,
            hostile,
            placement,
            mode,
            behaviour: Behaviour::ALL,
            warmup: Duration::from_secs(60),
            lookups,
            spacing: Duration::from_millis(10),
            seed,
        }
    }
}

/// What a [`Scenario`] measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Outcome {
    /// Hostile nodes.
    pub hostile_nodes: usize,
    /// Lookups started (from honest nodes, of keys an honest node is responsible for).
    pub lookups: u64,
    /// Answered with the live node truly responsible.
    pub correct: u64,
    /// Answered with another node.
    pub wrong: u64,
    /// No answer.
    pub failed: u64,
    /// Lookup messages sent.
    pub traffic: LookupTraffic,
    /// What the adversary did while the lookups ran.
    pub attacks: AdversaryStats,
    /// Honest nodes' neighbour-list entries (successors and predecessors) that are hostile,
    /// as a fraction of all their entries, when the lookups start.
    pub hostile_list_share: f64,
    /// For [`Placement::Ground`]: hostile nodes that landed between the victim and its honest
    /// predecessor.
    pub ground_in_gap: usize,
    /// Simulated seconds from the first lookup until every lookup was over.
    pub lookup_secs: f64,
}

impl Outcome {
    /// Fraction of the lookups answered correctly (1 when there were none).
    pub fn correct_fraction(&self) -> f64 {
        if self.lookups == 0 {
            1.0
        } else {
            self.correct as f64 / self.lookups as f64
        }
    }

    /// Lookup messages per lookup.
    pub fn msgs_per_lookup(&self) -> f64 {
        self.traffic.total() as f64 / self.lookups.max(1) as f64
    }
}

/// Candidate identities tried per ground hostile node, at most.
const MAX_GRIND: u64 = 1 << 24;
/// Draws of a random key until its responsible node is honest, at most.
const MAX_KEY_DRAWS: usize = 256;
/// Simulated seconds to wait for the last lookups, at most.
const MAX_DRAIN_SECS: u64 = 300;

/// Runs `s` and measures it. See the module docs.
pub fn run(s: &Scenario) -> Outcome {
    let mut sim = Simulator::new(SimConfig {
        node: Config {
            lookup_mode: s.mode,
            ..Config::default()
        },
        seed: s.seed,
        ..SimConfig::default()
    });
    let n = s.nodes.max(2);
    let k = ((s.hostile.clamp(0.0, 1.0) * n as f64).round() as usize).min(n - 1);
    let mut rng = ChaCha8Rng::seed_from_u64(s.seed ^ 0x0ad7_e25a_u64);
    let mut out = Outcome {
        hostile_nodes: k,
        ..Outcome::default()
    };
    // The hostile nodes, and for ground ids the victim and its keys `(lo, victim]`.
    let (hostile, victim): (Vec<SimId>, Option<SimId>) = match s.placement {
        Placement::Random => {
            let mut ids = sim.warm_start(n);
            // A partial Fisher-Yates shuffle: the first `k` are hostile.
            for i in 0..k {
                let j = rng.gen_range(i..ids.len());
                ids.swap(i, j);
            }
            ids.truncate(k);
            (ids, None)
        }
        Placement::Ground => {
            let honest: Vec<SimId> = (0..(n - k) as u32).map(|i| sim.default_id(i)).collect();
            let victim = honest[rng.gen_range(0..honest.len())];
            let vpos = victim.ring_id();
            // The victim's honest predecessor: the gap to fill is (pred, victim).
            let pred = honest
                .iter()
                .filter(|h| **h != victim)
                .map(|h| h.ring_id())
                .min_by_key(|p| p.cw_to(vpos))
                .unwrap_or(vpos);
            let mut ids = honest;
            let mut hostile = Vec::with_capacity(k);
            for i in (n - k) as u32..n as u32 {
                let base = sim.default_id(i);
                let mut best = base;
                for t in 1..=MAX_GRIND {
                    // Another salt (high half), the same index: another ring position.
                    let cand = SimId(base.0 ^ (t << 32));
                    let pos = cand.ring_id();
                    if pos.in_open(pred, vpos) {
                        best = cand;
                        break;
                    }
                    if pos.cw_to(vpos) < best.ring_id().cw_to(vpos) {
                        best = cand;
                    }
                }
                if best.ring_id().in_open(pred, vpos) {
                    out.ground_in_gap += 1;
                }
                hostile.push(best);
                ids.push(best);
            }
            sim.warm_start_ids(&ids);
            (hostile, Some(victim))
        }
    };
    let list_len = sim.config().node.list_len;
    sim.set_adversary(Some(Adversary::new(
        hostile.iter().copied(),
        s.behaviour,
        list_len,
        s.seed,
    )));
    sim.run_for(s.warmup);

    let bad: BTreeSet<SimId> = hostile.iter().copied().collect();
    let askers: Vec<SimId> = sim
        .members()
        .filter(|m| !bad.contains(m) && Some(*m) != victim)
        .collect();
    out.hostile_list_share = hostile_list_share(&sim, &askers, &bad);
    // The victim's keys: from its predecessor on the ring (exclusive) to itself.
    let victim_keys = victim.map(|v| {
        let vpos = v.ring_id();
        let lo = sim
            .members()
            .filter(|m| *m != v)
            .map(|m| m.ring_id())
            .min_by_key(|p| p.cw_to(vpos))
            .unwrap_or(vpos);
        (lo, lo.cw_to(vpos))
    });
    sim.reset_counters();
    if let Some(a) = sim.adversary_mut() {
        a.reset_counts();
    }
    let start = sim.now();
    if !askers.is_empty() {
        for _ in 0..s.lookups {
            let from = askers[rng.gen_range(0..askers.len())];
            let key = match victim_keys {
                Some((lo, span)) => Some(lo.plus(1 + rng.gen::<u128>() % span.max(1))),
                None => (0..MAX_KEY_DRAWS)
                    .map(|_| RingId(rng.gen()))
                    .find(|key| sim.responsible(*key).is_some_and(|r| !bad.contains(&r))),
            };
            if let Some(key) = key {
                sim.lookup(from, key);
            }
            sim.run_for(s.spacing);
        }
    }
    for _ in 0..MAX_DRAIN_SECS {
        let c = sim.counters();
        if c.lookups_correct + c.lookups_wrong + c.lookups_failed >= c.lookups_started {
            break;
        }
        sim.run_for(Duration::from_secs(1));
    }
    out.lookup_secs = sim.now().since(start).as_secs_f64();
    let c = sim.counters();
    out.lookups = c.lookups_started;
    out.correct = c.lookups_correct;
    out.wrong = c.lookups_wrong;
    out.failed = c.lookups_started - c.lookups_correct - c.lookups_wrong;
    if let Some(a) = sim.adversary() {
        out.traffic = a.traffic();
        out.attacks = a.stats();
    }
    out
}

/// The share of hostile entries in the honest nodes' neighbour lists.
fn hostile_list_share(sim: &Simulator, honest: &[SimId], bad: &BTreeSet<SimId>) -> f64 {
    let (mut all, mut hostile) = (0usize, 0usize);
    for id in honest {
        let t = sim.node(*id).table();
        for p in t.successors().iter().chain(t.predecessors()) {
            all += 1;
            if bad.contains(&p.id) {
                hostile += 1;
            }
        }
    }
    hostile as f64 / all.max(1) as f64
}
