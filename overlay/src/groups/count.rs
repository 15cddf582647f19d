//! Counting a group message's deliveries back up the tree: the counts a node waits for.
//!
//! A node passing a group message on to its tree neighbours (except the one it came from)
//! gives the passing a fresh random tag and waits for one count per neighbour, tagged so. When
//! every neighbour has answered, or its wait ran out, it adds 1 if it delivered the message
//! itself and reports the total to where the message came from: the tree neighbour that passed
//! it (a one-hop count), the message's origin (back along the way the routed message came, if
//! it entered the tree here), or its own application (if it sent the message). The wait it
//! gives its neighbours is a fraction of its own, so that counts from deep in the tree come in
//! before the nodes above them give up.
//!
//! Nothing here can be checked: a node may claim any count for its subtree. A count is taken
//! only from a neighbour that was sent the tagged message and has not answered yet, and only
//! up to a cap (a few times the network's size as this node estimates it), so that a liar
//! inflates the total by a bounded amount at most, once per message. The table is bounded in
//! total and per peer; entries are dropped, reported incomplete, when their wait runs out.

use crate::peer::PeerId;
use crate::ring::RingId;
use crate::service::WayBack;
use crate::time::Time;
use std::collections::{BTreeMap, BTreeSet};

/// Where a finished count goes.
#[derive(Clone, Debug)]
pub(crate) enum Up<P: PeerId> {
    /// This node sent the message: the count is for its application.
    Local {
        /// The group.
        group: RingId,
        /// The message number.
        seq: u64,
    },
    /// The message came along a tree edge from `peer`, which waits for the count of `tag`.
    Neighbour {
        /// The tree neighbour.
        peer: P,
        /// Its tag for this message.
        tag: u64,
    },
    /// The message, routed from its origin, entered the tree here: the count goes back the
    /// way it came.
    Origin {
        /// The way back.
        way: WayBack<P>,
        /// The message number.
        seq: u64,
    },
}

impl<P: PeerId> Up<P> {
    /// The peer the entry is held for (bounded per peer), if another node.
    fn peer(&self) -> Option<P> {
        match self {
            Up::Local { .. } => None,
            Up::Neighbour { peer, .. } => Some(*peer),
            Up::Origin { way, .. } => Some(way.to),
        }
    }
}

/// A count that is over: where it goes, the total, and whether every neighbour answered.
#[derive(Debug)]
pub(crate) struct Finished<P: PeerId> {
    pub(crate) up: Up<P>,
    pub(crate) members: u64,
    pub(crate) complete: bool,
}

#[derive(Debug)]
struct Pending<P: PeerId> {
    up: Up<P>,
    waiting: BTreeSet<P>,
    members: u64,
    complete: bool,
    deadline: Time,
}

/// The counts a node waits for, and the messages it sent that wait for their entry node's
/// count.
#[derive(Debug)]
pub(crate) struct Counts<P: PeerId> {
    max: usize,
    max_per_peer: usize,
    pending: BTreeMap<u64, Pending<P>>,
    deadlines: BTreeSet<(Time, u64)>,
    per_peer: BTreeMap<P, usize>,
    /// This node's messages routed towards their group: seq -> (group, deadline).
    sent: BTreeMap<u64, (RingId, Time)>,
    sent_deadlines: BTreeSet<(Time, u64)>,
}

impl<P: PeerId> Counts<P> {
    /// An empty table holding at most `max` counts (and as many sent messages), `max_per_peer`
    /// of them for one peer.
    pub(crate) fn new(max: usize, max_per_peer: usize) -> Self {
        Counts {
            max,
            max_per_peer,
            pending: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            per_peer: BTreeMap::new(),
            sent: BTreeMap::new(),
            sent_deadlines: BTreeSet::new(),
        }
    }

    /// Counts waited for now.
    pub(crate) fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether a count for `up` fits in the table.
    pub(crate) fn has_room(&self, up: &Up<P>) -> bool {
        if self.pending.len() >= self.max {
            return false;
        }
        up.peer()
            .is_none_or(|p| self.per_peer.get(&p).copied().unwrap_or(0) < self.max_per_peer)
    }

    /// Waits until `deadline` for counts of `tag` from `waiting` (not empty; check
    /// [`Counts::has_room`] first), starting from this node's own `members`.
    pub(crate) fn open(
        &mut self,
        tag: u64,
        up: Up<P>,
        waiting: BTreeSet<P>,
        members: u64,
        deadline: Time,
    ) {
        if self.pending.contains_key(&tag) {
            return;
        }
        if let Some(p) = up.peer() {
            *self.per_peer.entry(p).or_default() += 1;
        }
        self.deadlines.insert((deadline, tag));
        self.pending.insert(
            tag,
            Pending {
                up,
                waiting,
                members,
                complete: true,
                deadline,
            },
        );
    }

    /// `from` reports `members` (at most `cap` taken) for `tag`: `Some` when that was the last
    /// count waited for. `None` if `from` owed no count for `tag` (a count for a message it
    /// never got, a second count, a late one).
    pub(crate) fn counted(
        &mut self,
        from: P,
        tag: u64,
        members: u64,
        complete: bool,
        cap: u64,
    ) -> Option<Option<Finished<P>>> {
        let p = self.pending.get_mut(&tag)?;
        if !p.waiting.remove(&from) {
            return None;
        }
        p.members = p.members.saturating_add(members.min(cap)).min(cap);
        p.complete &= complete;
        if !p.waiting.is_empty() {
            return Some(None);
        }
        Some(self.close(tag))
    }

    /// `peer` died: it owes no counts any more (the counts it owed are incomplete).
    pub(crate) fn peer_failed(&mut self, peer: P) -> Vec<Finished<P>> {
        let mut tags = Vec::new();
        for (tag, p) in self.pending.iter_mut() {
            if p.waiting.remove(&peer) {
                p.complete = false;
                if p.waiting.is_empty() {
                    tags.push(*tag);
                }
            }
        }
        tags.into_iter().filter_map(|t| self.close(t)).collect()
    }

    /// The counts whose wait ran out by `now` (incomplete).
    pub(crate) fn expire(&mut self, now: Time) -> Vec<Finished<P>> {
        let due: Vec<u64> = self
            .deadlines
            .iter()
            .take_while(|(t, _)| *t <= now)
            .map(|(_, tag)| *tag)
            .collect();
        due.into_iter()
            .filter_map(|tag| {
                let mut f = self.close(tag)?;
                f.complete = false;
                Some(f)
            })
            .collect()
    }

    fn close(&mut self, tag: u64) -> Option<Finished<P>> {
        let p = self.pending.remove(&tag)?;
        self.deadlines.remove(&(p.deadline, tag));
        if let Some(peer) = p.up.peer() {
            if let Some(n) = self.per_peer.get_mut(&peer) {
                *n -= 1;
                if *n == 0 {
                    self.per_peer.remove(&peer);
                }
            }
        }
        Some(Finished {
            up: p.up,
            members: p.members,
            complete: p.complete && p.waiting.is_empty(),
        })
    }

    /// Remembers that this node routed its message `seq` to `group` and waits for the count
    /// until `deadline`; false if the table is full.
    pub(crate) fn await_answer(&mut self, seq: u64, group: RingId, deadline: Time) -> bool {
        if self.sent.len() >= self.max {
            return false;
        }
        self.sent.insert(seq, (group, deadline));
        self.sent_deadlines.insert((deadline, seq));
        true
    }

    /// The count for this node's message `seq` came: its group, if it was waited for.
    pub(crate) fn answered(&mut self, seq: u64) -> Option<RingId> {
        let (group, deadline) = self.sent.remove(&seq)?;
        self.sent_deadlines.remove(&(deadline, seq));
        Some(group)
    }

    /// This node's messages whose count did not come by `now`: (group, seq).
    pub(crate) fn expire_sent(&mut self, now: Time) -> Vec<(RingId, u64)> {
        let due: Vec<u64> = self
            .sent_deadlines
            .iter()
            .take_while(|(t, _)| *t <= now)
            .map(|(_, s)| *s)
            .collect();
        due.into_iter()
            .filter_map(|seq| Some((self.answered(seq)?, seq)))
            .collect()
    }

    /// The next time something runs out.
    pub(crate) fn next_deadline(&self) -> Option<Time> {
        let a = self.deadlines.first().map(|(t, _)| *t);
        let b = self.sent_deadlines.first().map(|(t, _)| *t);
        a.into_iter().chain(b).min()
    }

    /// Forgets everything (the node leaves): this node's own messages still waiting, as
    /// (group, seq).
    pub(crate) fn clear(&mut self) -> Vec<(RingId, u64)> {
        let mut own: Vec<(RingId, u64)> = self.sent.iter().map(|(s, (g, _))| (*g, *s)).collect();
        own.extend(self.pending.values().filter_map(|p| match p.up {
            Up::Local { group, seq } => Some((group, seq)),
            _ => None,
        }));
        *self = Counts::new(self.max, self.max_per_peer);
        own
    }
}

/// The most members a count may plausibly claim: four times the network's size as estimated
/// from the spacing of this node's successors (and at least the nodes it knows).
pub(crate) fn plausible_members<P: PeerId>(
    me: RingId,
    succs: &[crate::peer::Peer<P>],
    known: usize,
) -> u64 {
    let est = match succs.last() {
        Some(last) => {
            let gap = (me.cw_to(last.pos) / succs.len() as u128).max(1);
            u128::MAX / gap
        }
        None => 1,
    };
    let cap = est.saturating_mul(4).max(known as u128 + 1);
    u64::try_from(cap).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::SimId;

    fn up(peer: u64) -> Up<SimId> {
        Up::Neighbour {
            peer: SimId(peer),
            tag: 1,
        }
    }

    #[test]
    fn counts_only_from_neighbours_that_owe_one_and_caps_them() {
        let mut c = Counts::<SimId>::new(8, 2);
        let waiting: BTreeSet<SimId> = [SimId(2), SimId(3)].into_iter().collect();
        c.open(7, up(1), waiting, 1, Time::from_millis(100));
        // Unsolicited: a peer not asked, a tag never given.
        assert!(c.counted(SimId(9), 7, 5, true, 10).is_none());
        assert!(c.counted(SimId(2), 8, 5, true, 10).is_none());
        // An inflated count is capped; a second count from the same peer is refused.
        assert!(matches!(
            c.counted(SimId(2), 7, u64::MAX, true, 10),
            Some(None)
        ));
        assert!(c.counted(SimId(2), 7, 5, true, 10).is_none());
        let f = c.counted(SimId(3), 7, 2, true, 10).flatten().expect("done");
        assert_eq!((f.members, f.complete), (10, true));
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn bounded_per_peer_and_expired_incomplete() {
        let mut c = Counts::<SimId>::new(8, 2);
        let w = || [SimId(2)].into_iter().collect::<BTreeSet<_>>();
        for tag in 0..2 {
            assert!(c.has_room(&up(1)));
            c.open(tag, up(1), w(), 0, Time::from_millis(100));
        }
        assert!(!c.has_room(&up(1)), "two per peer");
        assert!(c.has_room(&up(4)));
        let f = c.expire(Time::from_millis(100));
        assert_eq!(f.len(), 2);
        assert!(f.iter().all(|f| !f.complete));
        assert!(c.has_room(&up(1)));
        c.open(5, up(1), w(), 1, Time::from_millis(300));
        let f = c.peer_failed(SimId(2));
        assert_eq!((f.len(), f[0].members, f[0].complete), (1, 1, false));
    }
}
