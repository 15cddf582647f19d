//! Self-healing: a node that lost every neighbour joins again by itself.
//!
//! A partition, a suspended laptop or a burst of failures can leave a node with empty
//! neighbour lists. It then says so ([`State::Rejoining`], [`Event::Isolated`]) instead of
//! claiming to be joined, and every [`Config::rejoin_interval`](crate::Config::rejoin_interval)
//! sends a join request through one node it still knows: the verified nodes it lost most
//! recently first, then its bootstrap. The first answer puts it back on the ring.
//!
//! Two rings that formed on the two sides of a partition merge the same way, from both sides
//! at once: every [`Config::merge_probe_interval`](crate::Config::merge_probe_interval) a
//! joined node asks one node it lost, and no longer has in its table, to route a join request
//! for its position. If that node lives in another ring, the node responsible there answers
//! with its neighbours, which this node merges into its lists (and the other node takes this
//! one into its own); stabilisation then zips the two rings together.

use super::{Event, Node, Output, State};
use crate::peer::{Contact, Peer, PeerId};
use crate::time::Time;
use std::collections::VecDeque;

/// Nodes remembered as ways back into the network.
const FALLBACK_LEN: usize = 16;

/// Ways back in: verified records of nodes lost lately (newest first) and the bootstrap.
#[derive(Debug)]
pub(super) struct Fallback<P: PeerId> {
    recent: VecDeque<Contact<P>>,
    bootstrap: Option<Contact<P>>,
    next: usize,
}

impl<P: PeerId> Default for Fallback<P> {
    fn default() -> Self {
        Fallback {
            recent: VecDeque::new(),
            bootstrap: None,
            next: 0,
        }
    }
}

impl<P: PeerId> Fallback<P> {
    /// Remembers `c`: a verified record as a node lost lately, anything else as the bootstrap.
    pub(super) fn remember(&mut self, c: &Contact<P>) {
        if c.proof.is_none() {
            self.bootstrap = Some(c.clone());
            return;
        }
        self.recent.retain(|r| r.id != c.id);
        self.recent.push_front(c.clone());
        self.recent.truncate(FALLBACK_LEN);
    }

    /// The next lost node (not the bootstrap) that `skip` does not rule out, round robin.
    fn pick_recent(&mut self, skip: impl Fn(&P) -> bool) -> Option<Contact<P>> {
        for _ in 0..self.recent.len() {
            let i = self.next % self.recent.len();
            self.next = self.next.wrapping_add(1);
            if let Some(c) = self.recent.get(i) {
                if !skip(&c.id) {
                    return Some(c.clone());
                }
            }
        }
        None
    }

    /// Forgets lost nodes whose records were made before `oldest`.
    fn expire(&mut self, oldest: Time) {
        self.recent.retain(|c| c.issued >= oldest);
    }

    /// Whether there is no node to try.
    fn is_empty(&self) -> bool {
        self.recent.is_empty() && self.bootstrap.is_none()
    }

    /// The next node to try: every other attempt the bootstrap (if any), in between the
    /// recent ones round robin.
    fn pick(&mut self) -> Option<Contact<P>> {
        let turn = self.next;
        self.next = self.next.wrapping_add(1);
        if self.recent.is_empty() || (turn % 2 == 1 && self.bootstrap.is_some()) {
            return self.bootstrap.clone();
        }
        self.recent.get((turn / 2) % self.recent.len()).cloned()
    }
}

impl<P: PeerId> Node<P> {
    /// After a neighbour was lost: if none is left, and there are nodes to rejoin through,
    /// the node is isolated and starts rejoining.
    pub(super) fn check_isolated(&mut self, now: Time) {
        if self.state != State::Joined
            || !self.table.successors().is_empty()
            || !self.table.predecessors().is_empty()
            || self.fallback.is_empty()
        {
            return;
        }
        self.state = State::Rejoining;
        self.timers.stabilize = None;
        self.timers.refresh = None;
        self.timers.repair = None;
        self.out.push_back(Output::Event(Event::Isolated));
        self.rejoin_attempt(now);
    }

    /// Asks a node lost earlier to route a join request for this node's position: its answer
    /// is merged, not taken as this node's lists (see the module documentation).
    pub(super) fn merge_probe(&mut self, now: Time) {
        self.timers.merge = Some(now + self.jitter(self.cfg.merge_probe_interval));
        if self.state != State::Joined {
            return;
        }
        self.merge_probes.retain(|_, t| *t > now);
        self.fallback.expire(now - self.cfg.record_ttl);
        let table = &self.table;
        let Some(via) = self.fallback.pick_recent(|p| table.contains(p)) else {
            return;
        };
        super::learn(&mut self.addrs, &mut self.hints, self.me.id, &via, false);
        let req = self.send_join_to(via.id);
        self.merge_probes.insert(req, now + self.cfg.join_timeout);
    }

    /// The answer to a merge probe: the responsible node (in this ring or another) and its
    /// lists, offered to this node's lists like any verified contacts.
    pub(super) fn merge_ring(&mut self, from: P, succs: Vec<Contact<P>>, preds: Vec<Contact<P>>) {
        let mut found = vec![Peer::new(from)];
        found.extend(self.verified(from, &succs));
        found.extend(self.verified(from, &preds));
        for p in found {
            if !self.tombstones.contains_key(&p.id) {
                self.table.consider_for_fingers(p);
                let change = self.table.offer(p);
                self.note_lists(change);
            }
        }
    }

    /// Sends a join request through the next node that may lead back into the network.
    pub(super) fn rejoin_attempt(&mut self, now: Time) {
        self.timers.rejoin = None;
        if self.state != State::Rejoining {
            return;
        }
        self.timers.rejoin = Some(now + self.jitter(self.cfg.rejoin_interval));
        let Some(via) = self.fallback.pick() else {
            return;
        };
        if !via.addrs.is_empty() {
            super::learn(&mut self.addrs, &mut self.hints, self.me.id, &via, false);
        }
        self.join_req = self.send_join_to(via.id);
    }
}
