//! Checking what a neighbour's list leaves out.
//!
//! Chord copies its successor's list, so one lying successor can erase every honest node
//! behind it for good. Here, when a neighbour's list leaves out one of our entries that it
//! should know (inside the span its list covers), the entry leaves our list as in Chord (a dead
//! node disappears as fast as it would there) but this node asks it itself
//! ([`Message::Pong`] answers [`Message::Ping`]): a live node's answer puts it back (any
//! message from a node offers it to the lists); silence until the stabilisation timeout makes
//! it count as failed everywhere (fingers too).
//!
//! The same check opens links ahead of need: a peer that enters the table (lists or fingers)
//! without a link to this node is asked at once, so the driver connects to it during upkeep
//! rather than when a lookup is forwarded to it (a cold lookup then makes no handshake on its
//! way), and a member that does not answer leaves the table before a lookup runs into it. A
//! joiner's first pings are also how the members of its lists learn of it. Links opened for
//! the table are closed soon after their peer leaves it (`Node::close_idle_links`).

use super::{Node, State};
use crate::message::Message;
use crate::peer::PeerId;
use crate::time::Time;

/// Liveness checks in flight at once; more are not started.
const MAX_CHECKS: usize = 64;

impl<P: PeerId> Node<P> {
    /// Asks `peer` for a sign of life, unless a check of it runs already.
    pub(super) fn check_alive(&mut self, peer: P) {
        if self.checks.len() >= MAX_CHECKS || self.checks.values().any(|(p, _)| *p == peer) {
            return;
        }
        let qid = self.nonces.next();
        let deadline = self.now + self.cfg.stabilize_timeout;
        self.checks.insert(qid, (peer, deadline));
        self.stats.maintenance_sent += 1;
        self.push_send(peer, Message::Ping { nonce: qid });
    }

    /// Asks every member of the table that this node has no link to (and is not reaching by
    /// traversal) for a sign of life, which opens the link. Runs only when the table changed
    /// since every member last had a link or a check; members over the bound on checks in
    /// flight wait for the next input.
    pub(super) fn link_table(&mut self) {
        let generation = self.table.generation();
        if self.state != State::Joined || self.linked_gen == Some(generation) {
            return;
        }
        let mut all = true;
        for p in self.table.distinct_peers() {
            self.table_links.insert(p);
            if self.links.contains_key(&p)
                || self.pending_links.contains(&p)
                || self.checks.values().any(|(q, _)| *q == p)
            {
                continue;
            }
            if self.checks.len() >= MAX_CHECKS {
                all = false;
                break;
            }
            self.check_alive(p);
        }
        if all {
            self.linked_gen = Some(generation);
        }
    }

    /// The answer to a liveness check (an unasked one, or one from another peer, is ignored).
    pub(super) fn on_pong(&mut self, from: P, nonce: u64) {
        if self.checks.get(&nonce).is_some_and(|(p, _)| *p == from) {
            self.checks.remove(&nonce);
        }
    }

    /// Checks whose peer stayed silent: it is taken for failed.
    pub(super) fn check_timeouts(&mut self, now: Time) {
        let silent: Vec<(u64, P)> = self
            .checks
            .iter()
            .filter(|(_, (_, t))| *t <= now)
            .map(|(q, (p, _))| (*q, *p))
            .collect();
        for (qid, p) in silent {
            self.checks.remove(&qid);
            // A peer still being reached by traversal is judged by that, not by this check.
            if self.table.contains(&p) && !self.pending_links.contains(&p) {
                self.peer_failed(now, p);
            }
        }
    }
}
