//! Self-healing: a node that lost every neighbour joins again by itself.
//!
//! A partition, a suspended laptop or a burst of failures can leave a node with empty
//! neighbour lists. It then says so ([`State::Rejoining`], [`Event::Isolated`]) instead of
//! claiming to be joined, and every [`Config::rejoin_interval`](crate::Config::rejoin_interval)
//! sends a join request through one node it still knows: the verified nodes it lost most
//! recently first, then its bootstrap. The first answer puts it back on the ring.

use super::{Event, Node, Output, State};
use crate::peer::{Contact, PeerId};
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

    /// Whether there is no node to try.
    fn is_empty(&self) -> bool {
        self.recent.is_empty() && self.bootstrap.is_none()
    }

    /// The next node to try, round robin over the recent ones and the bootstrap.
    fn pick(&mut self) -> Option<Contact<P>> {
        let n = self.recent.len() + usize::from(self.bootstrap.is_some());
        if n == 0 {
            return None;
        }
        let i = self.next % n;
        self.next = self.next.wrapping_add(1);
        self.recent.get(i).or(self.bootstrap.as_ref()).cloned()
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
        self.send_join_to(via.id);
    }
}
