//! Steered lookups: the asker walks towards the key itself, and judges what it is told.
//!
//! A routed lookup trusts every node on its route to pass it on. A steered lookup
//! ([`LookupMode::Steered`](crate::LookupMode::Steered)) asks the nodes it knows nearest to
//! the key, one at a time by default, which nodes *they* know nearest to it
//! ([`Message::FindNear`]). The answers are signed records, so a hostile node can hide nodes or
//! waste a query but never invent a node nearer to the key. Hiding is what it does: hostile
//! nodes name only each other, and since they are real nodes near the key they would be asked
//! next and the lookup would go round among them.
//!
//! So the asker judges every answer from a node close to the key (fewer than `list_len / 2`
//! nodes named between it and the key, so that its lists cover the key's neighbourhood
//! exactly). Such a node answers with up to `list_len` nodes on each side of the key; an
//! honest one names `3 × list_len / 2` nodes within about that many mean gaps of the key,
//! while nodes that name only each other, a fraction of the ring, spread much wider. A
//! *dense* answer settles the neighbourhood: the nodes it names are vouched for. A *sparse*
//! one marks its sender and every node it named (and no dense answer vouched for) as
//! suspect, and suspects are never asked: what they would say is known. The lookup then
//! backs off to the unsuspected nodes it has heard of, nearest to the key first, whose honest
//! answers lead round the hostile nodes. The mean gap is this node's own estimate (see
//! `Node::table_gap` and `GapFloor`), so a ring of any size needs no setting.
//!
//! The lookup ends once some answer was dense and the nearest known node at or after the key
//! answered or was vouched for: that node is responsible. Without a dense answer it goes on
//! until the `list_len` unsuspected nodes nearest to the key have all answered (or failed),
//! or `steer_max_queries` were asked, and then names the nearest node at or after the key
//! that any answer named (an honest neighbourhood that happens to be sparse ends this way,
//! with the right node).

use super::{Event, LookupError, Node, Output};
use crate::message::Message;
use crate::peer::{Contact, Peer, PeerId};
use crate::ring::RingId;
use crate::time::Time;
use std::collections::BTreeMap;

/// How much wider than expected the `3 × list_len / 2` nodes nearest to the key may spread in
/// an answer for it still to be dense: with the default 12 nodes, honest answers exceed twice
/// the expected span in about 0.5 % of cases (the spread of 12 gaps), answers naming only
/// hostile nodes that are a fifth of the ring fall within it in about 0.2 %.
const SPARSE_FACTOR: u128 = 2;

/// Where a candidate of a steered lookup stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// Known, not asked yet.
    New,
    /// Asked; the query's id.
    Asked(u64),
    /// Answered: alive.
    Answered,
    /// Did not answer in time.
    Failed,
}

/// A candidate node of a steered lookup.
#[derive(Clone, Copy, Debug)]
struct Cand {
    pos: RingId,
    step: Step,
    /// Named by a dense answer (or known to this node's own lists around the key).
    vouched: bool,
    /// Sent a sparse answer, or named by one and not vouched for.
    suspect: bool,
}

/// A steered lookup in flight.
#[derive(Debug)]
pub(super) struct Steer<P: PeerId> {
    key: RingId,
    deadline: Time,
    queries: u16,
    /// Whether a dense answer settled the key's neighbourhood.
    settled: bool,
    cands: BTreeMap<P, Cand>,
}

/// The steered lookups of a node.
#[derive(Debug)]
pub(super) struct Steers<P: PeerId> {
    lookups: BTreeMap<u64, Steer<P>>,
    /// Query id -> (lookup id, asked peer, deadline).
    queries: BTreeMap<u64, (u64, P, Time)>,
}

impl<P: PeerId> Default for Steers<P> {
    fn default() -> Self {
        Steers {
            lookups: BTreeMap::new(),
            queries: BTreeMap::new(),
        }
    }
}

impl<P: PeerId> Steers<P> {
    /// The earliest deadline of a query or a lookup.
    pub(super) fn next_deadline(&self) -> Option<Time> {
        let q = self.queries.values().map(|(_, _, t)| *t).min();
        let l = self.lookups.values().map(|s| s.deadline).min();
        q.into_iter().chain(l).min()
    }

    /// Lookups in flight.
    pub(super) fn len(&self) -> usize {
        self.lookups.len()
    }
}

/// This node's estimate of the mean gap between nodes, which its lists give: hostile
/// neighbours can hide nodes from them for a while (they leave lists at once and come back
/// once they answer a ping), and a gap estimated from thinned lists would make sparse
/// answers look dense. So the lowest estimate seen is kept, and it may grow by a tenth per
/// ten seconds, enough to follow a network that shrinks.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct GapFloor {
    low: Option<(u128, Time)>,
}

impl GapFloor {
    /// The floor at `now`: the lowest estimate, grown by the time since.
    fn at(&self, now: Time) -> Option<u128> {
        self.low.map(|(gap, t)| {
            let tenths = now.since(t).as_secs() as u128 / 10;
            gap.saturating_add(gap / 10 * tenths)
        })
    }

    /// Notes the estimate `gap` the lists give at `now`.
    pub(super) fn note(&mut self, gap: u128, now: Time) {
        if self.at(now).is_none_or(|floor| gap <= floor) {
            self.low = Some((gap, now));
        }
    }
}

/// What an answer says about the key's neighbourhood.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    /// The sender is too far from the key to know its neighbourhood: no judgement.
    Far,
    /// As many nodes near the key as an honest neighbour would name.
    Dense,
    /// Too few: nodes near the key are being hidden.
    Sparse,
}

impl<P: PeerId> Node<P> {
    /// Starts a steered lookup of `key` with id `req`.
    pub(super) fn start_steered(&mut self, req: u64, key: RingId) {
        let deadline = self.now + self.cfg.lookup_timeout * self.cfg.lookup_attempts.max(1);
        let near = self.near(key);
        let settled = self.judge(self.me.pos, key, near.iter().map(|p| p.pos)) == Verdict::Dense;
        let mut steer = Steer {
            key,
            deadline,
            queries: 0,
            settled,
            cands: BTreeMap::new(),
        };
        for p in near {
            if p.id != self.me.id {
                steer.cands.insert(
                    p.id,
                    Cand {
                        pos: p.pos,
                        step: Step::New,
                        vouched: settled,
                        suspect: false,
                    },
                );
            }
        }
        self.steers.lookups.insert(req, steer);
        self.steer(req);
    }

    /// The known nodes (this one included) nearest to `key`: up to `list_len` at or after it
    /// and as many before it, nearest first on each side (so that the node responsible for a
    /// key at the start of a wide gap is never crowded out by nodes before the key). A node
    /// near the key so names its whole neighbourhood.
    fn near(&self, key: RingId) -> Vec<Peer<P>> {
        let mut all: Vec<Peer<P>> = self
            .table
            .entries()
            .chain(std::iter::once(self.me))
            .filter(|p| !self.tombstones.contains_key(&p.id))
            .collect();
        all.sort_by_key(|p| (key.cw_to(p.pos), p.id));
        all.dedup_by_key(|p| p.id);
        let side = self.cfg.list_len;
        let (after, mut before): (Vec<Peer<P>>, Vec<Peer<P>>) = all
            .into_iter()
            .partition(|p| key.cw_to(p.pos) <= RingId::HALF);
        before.sort_by_key(|p| (p.pos.cw_to(key), p.id));
        after
            .into_iter()
            .take(side)
            .chain(before.into_iter().take(side))
            .collect()
    }

    /// The mean gap between nodes: what the routing table gives now, or the floor kept over
    /// time if lower (see [`GapFloor`]). `None` with empty lists.
    fn mean_gap(&self) -> Option<u128> {
        let current = self.table_gap()?;
        Some(
            self.gap_floor
                .at(self.now)
                .map_or(current, |floor| floor.min(current)),
        )
    }

    /// The mean gap between nodes as this node sees it: the median of the gaps between the
    /// consecutive entries of its lists (itself included) and of the distances from its
    /// finger slots' targets to the nodes in them, over ln 2 (the median of exponential gaps).
    /// Nodes hidden from the lists, or fingers that overshoot, widen some gaps; the median
    /// ignores them while they are fewer than half. `None` with empty lists.
    pub(super) fn table_gap(&self) -> Option<u128> {
        let mut gaps: Vec<u128> = Vec::new();
        for dir in crate::ring::Dir::BOTH {
            let mut prev = self.me.pos;
            for p in self.table.list(dir) {
                gaps.push(prev.dist_dir(dir, p.pos));
                prev = p.pos;
            }
        }
        if gaps.is_empty() {
            return None;
        }
        let strategy = self.table.strategy();
        for (dir, level, finger) in self.table.finger_slots() {
            if let Some(f) = finger {
                let d = strategy.target(self.me.pos, dir, level).cw_to(f.pos);
                if d < RingId::HALF {
                    gaps.push(d);
                }
            }
        }
        gaps.sort_unstable();
        let median = gaps[gaps.len() / 2];
        // 1 / ln 2 = 1.4427.
        Some((median / 10_000).saturating_mul(14_427).max(1))
    }

    /// Judges an answer from a node at `from` naming nodes at `named` (see the module docs).
    ///
    /// The sender knows the key's neighbourhood exactly if the key lies within the first
    /// `list_len / 2` entries of its list on that side: then it names fewer than that many
    /// nodes between itself and the key, and its lists reach well past the key both ways.
    /// Only such answers are judged: the `3 × list_len / 2` named nodes nearest to the key
    /// (either side, the sender included) must lie within `SPARSE_FACTOR` times the span that
    /// many of this node's mean gaps take. In a ring so small that this node's lists meet,
    /// gaps say nothing and answers are not judged.
    fn judge(&self, from: RingId, key: RingId, named: impl Iterator<Item = RingId>) -> Verdict {
        let Some(gap) = self.mean_gap() else {
            return Verdict::Far;
        };
        let half = self.cfg.list_len.div_ceil(2);
        let from_after = key.cw_to(from) <= RingId::HALF;
        let mut near: Vec<(u128, u128, u128)> = Vec::new();
        let mut between = 0;
        for pos in named.chain(std::iter::once(from)) {
            let after = key.cw_to(pos);
            let before = pos.cw_to(key);
            let nearer = if from_after {
                after <= RingId::HALF && after < key.cw_to(from)
            } else {
                after > RingId::HALF && before < from.cw_to(key)
            };
            if nearer && pos != from {
                between += 1;
            }
            near.push((pos.dist(key), after, before));
        }
        if between >= half {
            return Verdict::Far;
        }
        let (succs, preds) = (self.table.successors(), self.table.predecessors());
        let small = succs.len() < self.cfg.list_len
            || preds.len() < self.cfg.list_len
            || succs.iter().any(|s| preds.iter().any(|p| p.id == s.id));
        if small {
            return Verdict::Far;
        }
        near.sort_unstable();
        near.dedup();
        let judged = self.cfg.list_len + half;
        if near.len() < judged {
            return Verdict::Sparse;
        }
        near.truncate(judged);
        let reach_after = near
            .iter()
            .filter(|(_, a, _)| *a <= RingId::HALF)
            .map(|(_, a, _)| *a)
            .max()
            .unwrap_or(0);
        let reach_before = near
            .iter()
            .filter(|(_, a, _)| *a > RingId::HALF)
            .map(|(_, _, b)| *b)
            .max()
            .unwrap_or(0);
        let span = reach_after.saturating_add(reach_before);
        let expected = gap.saturating_mul(judged as u128);
        if span <= expected.saturating_mul(SPARSE_FACTOR) {
            Verdict::Dense
        } else {
            Verdict::Sparse
        }
    }

    /// Answers a [`Message::FindNear`] with the signed records of the nodes nearest to the key.
    pub(super) fn on_find_near(&mut self, from: P, req: u64, key: RingId) {
        if self.state != super::State::Joined {
            return;
        }
        let near = self.near(key);
        let nodes = self
            .contacts(&near)
            .into_iter()
            .filter(|c| c.proof.is_some())
            .collect();
        self.push_send(from, Message::Near { req, nodes });
    }

    /// The answer to one of this node's queries (its records already checked).
    pub(super) fn on_near(&mut self, from: P, qid: u64, nodes: Vec<Contact<P>>) {
        let Some((req, asked, _)) = self.steers.queries.get(&qid).copied() else {
            self.stats.bad_answers += 1;
            return;
        };
        if asked != from {
            self.stats.bad_answers += 1;
            return;
        }
        self.steers.queries.remove(&qid);
        let verified: Vec<Peer<P>> = self
            .verified(from, &nodes)
            .into_iter()
            .take(self.cfg.list_len * 2)
            .collect();
        let Some(key) = self.steers.lookups.get(&req).map(|s| s.key) else {
            return;
        };
        let verdict = self.judge(from.ring_id(), key, verified.iter().map(|p| p.pos));
        let me = self.me.id;
        let Some(s) = self.steers.lookups.get_mut(&req) else {
            return;
        };
        if let Some(c) = s.cands.get_mut(&from) {
            c.step = Step::Answered;
            if verdict == Verdict::Sparse && !c.vouched {
                c.suspect = true;
            }
        }
        if verdict == Verdict::Dense {
            s.settled = true;
        }
        for p in verified {
            if p.id == me {
                continue;
            }
            let c = s.cands.entry(p.id).or_insert(Cand {
                pos: p.pos,
                step: Step::New,
                vouched: false,
                suspect: false,
            });
            match verdict {
                Verdict::Dense => {
                    c.vouched = true;
                    c.suspect = false;
                }
                Verdict::Sparse if !c.vouched => c.suspect = true,
                _ => {}
            }
        }
        let cap = self.cfg.list_len * 6;
        if s.cands.len() > cap {
            // Keep every node asked (so that none is asked twice) and the nearest others.
            let mut v: Vec<(P, Cand)> = s
                .cands
                .iter()
                .filter(|(_, c)| c.step == Step::New)
                .map(|(p, c)| (*p, *c))
                .collect();
            let asked: Vec<(P, Cand)> = s
                .cands
                .iter()
                .filter(|(_, c)| c.step != Step::New)
                .map(|(p, c)| (*p, *c))
                .collect();
            v.sort_by_key(|(p, c)| (c.pos.dist(key), *p));
            v.truncate(cap.saturating_sub(asked.len()));
            s.cands = v.into_iter().chain(asked).collect();
        }
        self.steer(req);
    }

    /// The node the lookup would name now: the nearest known node at or after the key that
    /// has not failed, with whether it answered or was vouched for.
    fn steer_best(s: &Steer<P>) -> Option<(P, Cand)> {
        s.cands
            .iter()
            .filter(|(_, c)| c.step != Step::Failed)
            .min_by_key(|(p, c)| (s.key.cw_to(c.pos), **p))
            .map(|(p, c)| (*p, *c))
    }

    /// Sends queries until `steer_parallelism` are in flight, nearest unsuspected candidates
    /// first, or ends the lookup (see the module docs).
    fn steer(&mut self, req: u64) {
        let Some(s) = self.steers.lookups.get(&req) else {
            return;
        };
        let key = s.key;
        let me_first = key.cw_to(self.me.pos);
        if s.settled {
            match Self::steer_best(s) {
                // This node itself is nearer than every candidate: it is responsible.
                Some((_, c)) if key.cw_to(c.pos) > me_first => return self.finish_steered(req),
                None => return self.finish_steered(req),
                Some((_, c)) if c.step == Step::Answered || c.vouched => {
                    return self.finish_steered(req)
                }
                _ => {}
            }
        }
        let in_flight = s
            .cands
            .values()
            .filter(|c| matches!(c.step, Step::Asked(_)))
            .count();
        let budget_left = usize::from(self.cfg.steer_max_queries.saturating_sub(s.queries));
        let room = self
            .cfg
            .steer_parallelism
            .saturating_sub(in_flight)
            .min(budget_left);
        // The `list_len` unsuspected candidates nearest to the key are asked in turn (nearest
        // first); once all of them have answered or failed the lookup ends, unless an answer
        // settled it before. Suspects are never asked: what they would say is known.
        let mut open: Vec<(u128, P, Step)> = s
            .cands
            .iter()
            .filter(|(_, c)| !c.suspect && c.step != Step::Failed)
            .map(|(p, c)| (c.pos.dist(key), *p, c.step))
            .collect();
        open.sort_unstable_by_key(|(d, p, _)| (*d, *p));
        open.truncate(self.cfg.list_len);
        let mut fresh: Vec<P> = open
            .into_iter()
            .filter(|(_, _, st)| *st == Step::New)
            .map(|(_, p, _)| p)
            .collect();
        // Once settled, the responsible candidate is asked first: its answer ends the lookup.
        if s.settled {
            if let Some((p, c)) = Self::steer_best(s) {
                if c.step == Step::New {
                    fresh.retain(|q| *q != p);
                    fresh.insert(0, p);
                }
            }
        }
        let to_ask: Vec<P> = fresh.into_iter().take(room).collect();
        if to_ask.is_empty() && in_flight == 0 {
            return self.finish_steered(req);
        }
        let deadline = self.now + self.cfg.lookup_timeout / 3;
        for p in to_ask {
            let qid = self.nonces.next();
            self.steers.queries.insert(qid, (req, p, deadline));
            if let Some(s) = self.steers.lookups.get_mut(&req) {
                s.queries = s.queries.saturating_add(1);
                if let Some(c) = s.cands.get_mut(&p) {
                    c.step = Step::Asked(qid);
                }
            }
            self.push_send(p, Message::FindNear { req: qid, key });
        }
    }

    /// Ends a lookup with the nearest node at or after the key that any answer named and
    /// that did not fail to answer (or this node). Settled, that node answered or a dense
    /// answer vouched for it; otherwise it is the best the lookup found.
    fn finish_steered(&mut self, req: u64) {
        let Some(s) = self.steers.lookups.remove(&req) else {
            return;
        };
        self.steers.queries.retain(|_, (r, _, _)| *r != req);
        let key = s.key;
        let best = s
            .cands
            .iter()
            .filter(|(_, c)| c.step != Step::Failed)
            .map(|(p, c)| (*p, c.pos))
            .chain(std::iter::once((self.me.id, self.me.pos)))
            .min_by_key(|(p, pos)| (key.cw_to(*pos), *p));
        let result = match best {
            Some((p, _)) => {
                self.stats.lookups_ok += 1;
                Ok((p, s.queries))
            }
            None => {
                self.stats.lookups_failed += 1;
                Err(LookupError::Timeout)
            }
        };
        self.out
            .push_back(Output::Event(Event::LookupDone { req, key, result }));
    }

    /// Queries and lookups whose time is up: a silent node counts as failed; a lookup past
    /// its deadline ends with what it has.
    pub(super) fn steer_timeouts(&mut self, now: Time) {
        let late: Vec<(u64, u64, P)> = self
            .steers
            .queries
            .iter()
            .filter(|(_, (_, _, t))| *t <= now)
            .map(|(q, (r, p, _))| (*q, *r, *p))
            .collect();
        let mut touched = Vec::new();
        for (qid, req, p) in late {
            self.steers.queries.remove(&qid);
            if let Some(c) = self
                .steers
                .lookups
                .get_mut(&req)
                .and_then(|s| s.cands.get_mut(&p))
            {
                c.step = Step::Failed;
            }
            touched.push(req);
        }
        let over: Vec<u64> = self
            .steers
            .lookups
            .iter()
            .filter(|(_, s)| s.deadline <= now)
            .map(|(r, _)| *r)
            .collect();
        for req in over {
            self.finish_steered(req);
        }
        touched.dedup();
        for req in touched {
            self.steer(req);
        }
    }

    /// The node leaves: steered lookups end.
    pub(super) fn steers_leave(&mut self) {
        for (req, s) in std::mem::take(&mut self.steers.lookups) {
            self.out.push_back(Output::Event(Event::LookupDone {
                req,
                key: s.key,
                result: Err(LookupError::Left),
            }));
        }
        self.steers.queries.clear();
    }
}
