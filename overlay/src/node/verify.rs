//! Checking what a neighbour's list leaves out.
//!
//! Chord copies its successor's list, so one lying successor can erase every honest node
//! behind it for good. Here, when a neighbour's list leaves out one of our entries that it
//! should know (inside the span its list covers), the entry leaves our list as in Chord (a dead
//! node disappears as fast as it would there) but this node asks it itself
//! ([`Message::Pong`] answers [`Message::Ping`]): a live node's answer puts it back (any
//! message from a node offers it to the lists); silence until the stabilisation timeout makes
//! it count as failed everywhere (fingers too).

use super::Node;
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
