//! Steered lookups: the asker walks towards the key itself, Kademlia-style.
//!
//! A routed lookup trusts every node on its route to pass it on. A steered lookup
//! ([`LookupMode::Steered`](crate::LookupMode::Steered)) asks the nodes it knows nearest to the
//! key, a few at a time, which nodes *they* know nearest to it ([`Message::FindNear`]); the
//! answers are signed records, so a hostile node can hide nodes or waste a query but never
//! invent a node nearer to the key. The lookup is over once the `steer_width` nearest nodes it
//! has heard of on each side of the key have answered (or failed); the responsible node is the
//! nearest node at or after the key among those that answered (they are alive). One honest
//! node just before the key names the responsible node from its successor list.

use super::{Event, LookupError, Node, Output};
use crate::message::Message;
use crate::peer::{Peer, PeerId};
use crate::ring::RingId;
use crate::time::Time;
use std::collections::BTreeMap;

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

/// A steered lookup in flight.
#[derive(Debug)]
pub(super) struct Steer<P: PeerId> {
    key: RingId,
    deadline: Time,
    queries: u16,
    /// How many of the nearest candidates on each side must answer; doubled while the gap
    /// around the key looks too wide (see [`Node::steer`]).
    width: usize,
    cands: BTreeMap<P, (RingId, Step)>,
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

impl<P: PeerId> Node<P> {
    /// Starts a steered lookup of `key` with id `req`.
    pub(super) fn start_steered(&mut self, req: u64, key: RingId) {
        let deadline = self.now + self.cfg.lookup_timeout * self.cfg.lookup_attempts.max(1);
        let mut steer = Steer {
            key,
            deadline,
            queries: 0,
            width: self.cfg.steer_width,
            cands: BTreeMap::new(),
        };
        for p in self.near(key) {
            if p.id != self.me.id {
                steer.cands.insert(p.id, (p.pos, Step::New));
            }
        }
        self.steers.lookups.insert(req, steer);
        self.steer(req);
    }

    /// The known nodes (this one included) nearest to `key`: half of `list_len` at or after
    /// it and half before it, nearest first on each side (so that the node responsible for a
    /// key at the start of a wide gap is never crowded out by nodes before the key).
    fn near(&self, key: RingId) -> Vec<Peer<P>> {
        let mut all: Vec<Peer<P>> = self
            .table
            .entries()
            .chain(std::iter::once(self.me))
            .filter(|p| !self.tombstones.contains_key(&p.id))
            .collect();
        all.sort_by_key(|p| (key.cw_to(p.pos), p.id));
        all.dedup_by_key(|p| p.id);
        let half = self.cfg.list_len.div_ceil(2);
        let (after, mut before): (Vec<Peer<P>>, Vec<Peer<P>>) = all
            .into_iter()
            .partition(|p| key.cw_to(p.pos) <= RingId::HALF);
        before.sort_by_key(|p| (p.pos.cw_to(key), p.id));
        after
            .into_iter()
            .take(half)
            .chain(before.into_iter().take(half))
            .collect()
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
    pub(super) fn on_near(&mut self, from: P, qid: u64, nodes: Vec<crate::peer::Contact<P>>) {
        let Some((req, asked, _)) = self.steers.queries.get(&qid).copied() else {
            self.stats.bad_answers += 1;
            return;
        };
        if asked != from {
            self.stats.bad_answers += 1;
            return;
        }
        self.steers.queries.remove(&qid);
        let verified = self.verified(from, &nodes);
        let cap = self.cfg.list_len * 4;
        let me = self.me.id;
        let Some(s) = self.steers.lookups.get_mut(&req) else {
            return;
        };
        if let Some(c) = s.cands.get_mut(&from) {
            c.1 = Step::Answered;
        }
        for p in verified.into_iter().take(self.cfg.list_len * 2) {
            if p.id != me {
                s.cands.entry(p.id).or_insert((p.pos, Step::New));
            }
        }
        if s.cands.len() > cap {
            // Keep the nearest; answered ones first when equally near.
            let key = s.key;
            let mut v: Vec<(P, (RingId, Step))> = s.cands.iter().map(|(p, c)| (*p, *c)).collect();
            v.sort_by_key(|(p, (pos, _))| (pos.dist(key), *p));
            v.truncate(cap);
            s.cands = v.into_iter().collect();
        }
        self.steer(req);
    }

    /// Sends queries until `steer_parallelism` are in flight among the nearest candidates, or
    /// ends the lookup when the nearest have all answered or failed.
    fn steer(&mut self, req: u64) {
        let Some(s) = self.steers.lookups.get(&req) else {
            return;
        };
        let w = s.width;
        let key = s.key;
        // The `w` nearest live candidates on each side of the key must answer: an honest one
        // just before the key knows the responsible node from its successor list, an honest
        // one at or after it knows whether anything lies between.
        let mut after: Vec<(u128, P, Step)> = Vec::new();
        let mut before: Vec<(u128, P, Step)> = Vec::new();
        for (p, (pos, st)) in &s.cands {
            if *st == Step::Failed {
                continue;
            }
            let d = key.cw_to(*pos);
            if d <= RingId::HALF {
                after.push((d, *p, *st));
            } else {
                before.push((pos.cw_to(key), *p, *st));
            }
        }
        after.sort_by_key(|(d, p, _)| (*d, *p));
        before.sort_by_key(|(d, p, _)| (*d, *p));
        after.truncate(w);
        before.truncate(w);
        let mut frontier: Vec<(u128, P, Step)> = after.into_iter().chain(before).collect();
        frontier.sort_by_key(|(d, p, _)| (*d, *p));
        let in_flight = s
            .cands
            .values()
            .filter(|(_, st)| matches!(st, Step::Asked(_)))
            .count();
        let to_ask: Vec<P> = frontier
            .iter()
            .filter(|(_, _, st)| *st == Step::New)
            .map(|(_, p, _)| *p)
            .take(self.cfg.steer_parallelism.saturating_sub(in_flight))
            .collect();
        let waiting = frontier
            .iter()
            .any(|(_, _, st)| matches!(st, Step::Asked(_)));
        if !waiting && to_ask.is_empty() {
            if self.gap_too_wide(req) {
                // Nodes near the key may be hidden from us: ask further out.
                if let Some(s) = self.steers.lookups.get_mut(&req) {
                    s.width *= 2;
                }
                return self.steer(req);
            }
            return self.finish_steered(req);
        }
        let deadline = self.now + self.cfg.lookup_timeout / 3;
        for p in to_ask {
            let qid = self.nonces.next();
            self.steers.queries.insert(qid, (req, p, deadline));
            if let Some(s) = self.steers.lookups.get_mut(&req) {
                s.queries = s.queries.saturating_add(1);
                if let Some(c) = s.cands.get_mut(&p) {
                    c.1 = Step::Asked(qid);
                }
            }
            self.push_send(p, Message::FindNear { req: qid, key });
        }
    }

    /// Whether the lookup should look further before it ends: the nodes that answered nearest
    /// to the key on either side leave a gap around it much wider than the node density this
    /// node sees around itself (3 mean gaps or more: a random key falls into so wide a gap
    /// about 20 % of the time, which costs those lookups a few more queries), which is what
    /// hostile nodes that name only each other leave behind; and
    /// the lookup may still widen (up to `4 × list_len` per side, while candidates remain).
    fn gap_too_wide(&self, req: u64) -> bool {
        let Some(s) = self.steers.lookups.get(&req) else {
            return false;
        };
        let succs = self.table.successors();
        let Some(last) = succs.last() else {
            return false;
        };
        if s.width >= 4 * self.cfg.list_len || s.cands.values().all(|(_, st)| *st != Step::New) {
            return false;
        }
        let mean_gap = self.me.pos.cw_to(last.pos) / succs.len() as u128;
        let answered = |after: bool| {
            s.cands
                .values()
                .filter(|(_, st)| *st == Step::Answered)
                .map(|(pos, _)| {
                    let d = s.key.cw_to(*pos);
                    if after {
                        d
                    } else {
                        pos.cw_to(s.key)
                    }
                })
                .filter(|d| *d <= RingId::HALF)
                .min()
                .unwrap_or(RingId::HALF)
        };
        answered(true).saturating_add(answered(false)) >= mean_gap.saturating_mul(3)
    }

    /// The nearest live node at or after the key among those that answered (or this node).
    fn finish_steered(&mut self, req: u64) {
        let Some(s) = self.steers.lookups.remove(&req) else {
            return;
        };
        self.steers.queries.retain(|_, (r, _, _)| *r != req);
        let key = s.key;
        let best = s
            .cands
            .iter()
            .filter(|(_, (_, st))| *st == Step::Answered)
            .map(|(p, (pos, _))| (*p, *pos))
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
                c.1 = Step::Failed;
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
