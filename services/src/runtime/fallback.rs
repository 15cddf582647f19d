//! The bookkeeping of the NAT fallback, apart from sockets and tasks: which peers are being
//! reached by a traversal (hole punch, then relay) or a background dial, which failed lately
//! and must not be tried again yet, and copies of the messages sent to a peer before its first
//! connection was up (the transport drops its queue when a dial fails; a traversal that gets
//! through re-sends them). Every set is bounded, and a decision here is a pure function of the
//! state and the time passed in, so it is tested without a network.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// Limits of the fallback.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// Traversals at once.
    pub(crate) traversals: usize,
    /// A peer whose traversal failed is not tried again for this long.
    pub(crate) backoff: Duration,
    /// Background dials at once.
    pub(crate) dials: usize,
    /// Messages kept per peer waiting for its first connection.
    pub(crate) waiting_per_peer: usize,
    /// Peers with messages kept at once.
    pub(crate) waiting_peers: usize,
    /// Failures remembered before the expired ones are forgotten.
    pub(crate) failures: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            traversals: 32,
            backoff: Duration::from_secs(10),
            dials: 64,
            waiting_per_peer: 16,
            waiting_peers: 256,
            failures: 4096,
        }
    }
}

/// Whether a traversal to a peer should start.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Traverse {
    /// One runs already: wait for it.
    Running,
    /// Start one now.
    Start,
    /// Not now: too many run, or the last one failed lately.
    Refused,
}

/// The state of the NAT fallback, for peers of id type `K` and messages `M`.
#[derive(Debug)]
pub(crate) struct Fallback<K, M> {
    limits: Limits,
    traversing: BTreeSet<K>,
    failed: BTreeMap<K, Instant>,
    waiting: BTreeMap<K, Vec<M>>,
    dialing: BTreeSet<K>,
}

impl<K: Ord + Copy, M: Clone> Fallback<K, M> {
    /// An empty fallback with `limits`.
    pub(crate) fn new(limits: Limits) -> Self {
        Fallback {
            limits,
            traversing: BTreeSet::new(),
            failed: BTreeMap::new(),
            waiting: BTreeMap::new(),
            dialing: BTreeSet::new(),
        }
    }

    /// Whether a traversal to `peer` failed less than the back-off ago.
    pub(crate) fn failed_lately(&self, peer: K, now: Instant) -> bool {
        self.failed
            .get(&peer)
            .is_some_and(|t| now.saturating_duration_since(*t) < self.limits.backoff)
    }

    /// Whether a traversal to `peer` runs now.
    pub(crate) fn is_traversing(&self, peer: K) -> bool {
        self.traversing.contains(&peer)
    }

    /// Decides whether to start a traversal to `peer`, and records it as running if so.
    pub(crate) fn begin_traversal(&mut self, peer: K, now: Instant) -> Traverse {
        if self.traversing.contains(&peer) {
            return Traverse::Running;
        }
        if self.traversing.len() >= self.limits.traversals || self.failed_lately(peer, now) {
            return Traverse::Refused;
        }
        self.traversing.insert(peer);
        Traverse::Start
    }

    /// The traversal to `peer` got through: the messages kept for it, to send now.
    pub(crate) fn traversal_succeeded(&mut self, peer: K) -> Vec<M> {
        self.traversing.remove(&peer);
        self.failed.remove(&peer);
        self.waiting.remove(&peer).unwrap_or_default()
    }

    /// The traversal to `peer` failed at `now`: its messages are dropped and it is not tried
    /// again for the back-off.
    pub(crate) fn traversal_failed(&mut self, peer: K, now: Instant) {
        self.traversing.remove(&peer);
        self.waiting.remove(&peer);
        self.failed.insert(peer, now);
        if self.failed.len() > self.limits.failures {
            let backoff = self.limits.backoff;
            self.failed
                .retain(|_, t| now.saturating_duration_since(*t) < backoff);
        }
    }

    /// Keeps a copy of `msg`, sent to `peer` before any connection to it was up (bounded per
    /// peer and in peers; beyond the bounds nothing is kept).
    pub(crate) fn keep_copy(&mut self, peer: K, msg: &M) {
        if self.waiting.len() >= self.limits.waiting_peers && !self.waiting.contains_key(&peer) {
            return;
        }
        let w = self.waiting.entry(peer).or_default();
        if w.len() < self.limits.waiting_per_peer {
            w.push(msg.clone());
        }
    }

    /// Forgets the copies kept for `peer` (it cannot be reached, or they are not needed).
    pub(crate) fn drop_copies(&mut self, peer: K) {
        self.waiting.remove(&peer);
    }

    /// A connection to `peer` is up. Unless a traversal brought it (which re-sends the copies),
    /// the dial got through with its own queue: the copies are not needed.
    pub(crate) fn connected(&mut self, peer: K) {
        if !self.traversing.contains(&peer) {
            self.waiting.remove(&peer);
        }
        self.dialing.remove(&peer);
    }

    /// Decides whether to dial `peer` in the background now, and records the dial if so.
    pub(crate) fn begin_dial(&mut self, peer: K, now: Instant) -> bool {
        if self.dialing.contains(&peer)
            || self.traversing.contains(&peer)
            || self.dialing.len() >= self.limits.dials
            || self.failed_lately(peer, now)
        {
            return false;
        }
        self.dialing.insert(peer);
        true
    }

    /// A dial to `peer` is over (it failed; success comes through [`Fallback::connected`]).
    pub(crate) fn dial_ended(&mut self, peer: K) {
        self.dialing.remove(&peer);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn small() -> Fallback<u8, u32> {
        Fallback::new(Limits {
            traversals: 2,
            backoff: Duration::from_secs(10),
            dials: 1,
            waiting_per_peer: 2,
            waiting_peers: 2,
            failures: 3,
        })
    }

    #[test]
    fn traversals_are_bounded_and_back_off_after_failing() {
        let mut f = small();
        let t0 = Instant::now();
        assert_eq!(f.begin_traversal(1, t0), Traverse::Start);
        assert_eq!(f.begin_traversal(1, t0), Traverse::Running);
        assert_eq!(f.begin_traversal(2, t0), Traverse::Start);
        assert_eq!(f.begin_traversal(3, t0), Traverse::Refused);
        f.traversal_failed(1, t0);
        assert!(f.failed_lately(1, t0 + Duration::from_secs(9)));
        assert_eq!(
            f.begin_traversal(1, t0 + Duration::from_secs(9)),
            Traverse::Refused
        );
        assert_eq!(
            f.begin_traversal(1, t0 + Duration::from_secs(10)),
            Traverse::Start
        );
        assert!(f.traversal_succeeded(1).is_empty());
        assert!(!f.failed_lately(1, t0));
    }

    #[test]
    fn copies_are_bounded_and_resent_only_after_a_traversal() {
        let mut f = small();
        let t0 = Instant::now();
        for m in 0..5 {
            f.keep_copy(1, &m);
        }
        f.keep_copy(2, &10);
        f.keep_copy(3, &20); // a third peer: not kept
        assert_eq!(f.begin_traversal(1, t0), Traverse::Start);
        // The traversal's connection comes up: the copies stay for the re-send.
        f.connected(1);
        assert_eq!(f.traversal_succeeded(1), vec![0, 1]);
        // A plain dial that got through drops them.
        f.connected(2);
        assert!(f.traversal_succeeded(2).is_empty());
        assert!(f.traversal_succeeded(3).is_empty());
        // A failed traversal drops them too.
        f.keep_copy(4, &1);
        assert_eq!(f.begin_traversal(4, t0), Traverse::Start);
        f.traversal_failed(4, t0);
        assert!(f.traversal_succeeded(4).is_empty());
    }

    #[test]
    fn dials_are_bounded_and_wait_out_a_failed_traversal() {
        let mut f = small();
        let t0 = Instant::now();
        assert!(f.begin_dial(1, t0));
        assert!(!f.begin_dial(1, t0));
        assert!(!f.begin_dial(2, t0), "one dial at once");
        f.dial_ended(1);
        assert_eq!(f.begin_traversal(2, t0), Traverse::Start);
        assert!(!f.begin_dial(2, t0), "a traversal runs");
        f.traversal_failed(2, t0);
        assert!(!f.begin_dial(2, t0 + Duration::from_secs(1)));
        assert!(f.begin_dial(2, t0 + Duration::from_secs(11)));
    }

    #[test]
    fn old_failures_are_forgotten_beyond_the_bound() {
        let mut f = small();
        let t0 = Instant::now();
        for p in 0..3 {
            f.traversal_failed(p, t0);
        }
        let later = t0 + Duration::from_secs(20);
        f.traversal_failed(9, later);
        assert_eq!(f.failed.len(), 1);
        assert!(f.failed_lately(9, later));
    }
}
