//! The correct routing tables for a set of nodes, computed from the sorted ring: what the
//! protocol should converge to, and what the stable-ring fast path routes on.

use crate::peer::{Peer, PeerId};
use crate::ring::{Dir, RingId};
use crate::routing_table::RoutingTable;
use crate::strategy::FingerStrategy;
use crate::truth::TrueRing;

/// A snapshot of the ring: every member, sorted by position.
#[derive(Clone, Debug)]
pub struct Ring<P> {
    truth: TrueRing<Peer<P>>,
}

impl<P: PeerId> Ring<P> {
    /// The ring made of `peers` (any order; duplicates by identity are removed).
    pub fn new(mut peers: Vec<Peer<P>>) -> Self {
        peers.sort_by_key(|p| (p.pos, p.id));
        peers.dedup_by_key(|p| p.id);
        Ring {
            truth: peers.into_iter().map(|p| (p.pos, p)).collect(),
        }
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.truth.len()
    }

    /// Is the ring empty?
    pub fn is_empty(&self) -> bool {
        self.truth.is_empty()
    }

    /// Members in ring order.
    pub fn members(&self) -> &[Peer<P>] {
        self.truth.members()
    }

    /// Index (in ring order) of the member responsible for `key`: the first at or after it.
    pub fn responsible_index(&self, key: RingId) -> Option<usize> {
        self.truth.responsible_index(key)
    }

    /// The member responsible for `key`.
    pub fn responsible(&self, key: RingId) -> Option<Peer<P>> {
        self.truth.responsible(key)
    }

    /// Index of the member with identity `id` at position `pos`.
    pub fn index_of(&self, p: Peer<P>) -> Option<usize> {
        let sorted = self.members();
        let i = sorted.partition_point(|q| (q.pos, q.id) < (p.pos, p.id));
        (sorted.get(i).map(|q| q.id) == Some(p.id)).then_some(i)
    }

    /// The correct routing table of the member at index `i`.
    pub fn ideal_table(
        &self,
        i: usize,
        strategy: FingerStrategy,
        list_len: usize,
    ) -> RoutingTable<P> {
        let me = self.members()[i];
        let mut t = RoutingTable::new(me, strategy, list_len);
        t.set_list(
            Dir::Cw,
            self.truth.successors_at(i, list_len).copied(),
            |_| false,
        );
        t.set_list(
            Dir::Ccw,
            self.truth.predecessors_at(i, list_len).copied(),
            |_| false,
        );
        let slots: Vec<(Dir, usize)> = t.finger_slots().map(|(d, l, _)| (d, l)).collect();
        for (dir, level) in slots {
            if let Some(r) = self.responsible(strategy.target(me.pos, dir, level)) {
                t.set_finger(dir, level, r);
            }
        }
        t
    }

    /// Differences between `table` and the correct table of its owner: wrong successor-list
    /// entries, wrong predecessor-list entries, wrong or missing finger slots.
    pub fn table_errors(&self, table: &RoutingTable<P>) -> TableErrors {
        let Some(i) = self.index_of(table.me()) else {
            return TableErrors {
                not_member: true,
                ..TableErrors::default()
            };
        };
        let ideal = self.ideal_table(i, table.strategy(), table.list_len());
        let mut e = TableErrors::default();
        for dir in Dir::BOTH {
            let (a, b) = (table.list(dir), ideal.list(dir));
            let wrong =
                a.len().max(b.len()) - a.iter().zip(b).take_while(|(x, y)| x.id == y.id).count();
            match dir {
                Dir::Cw => e.successors = wrong,
                Dir::Ccw => e.predecessors = wrong,
            }
        }
        for (dir, level, want) in ideal.finger_slots() {
            if table.finger(dir, level).map(|p| p.id) != want.map(|p| p.id) {
                e.fingers += 1;
            }
        }
        e
    }
}

/// How far a routing table is from the correct one.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct TableErrors {
    /// The owner is not a member of the ring.
    pub not_member: bool,
    /// Successor-list entries that differ (counted from the first difference).
    pub successors: usize,
    /// Predecessor-list entries that differ (counted from the first difference).
    pub predecessors: usize,
    /// Finger slots that are wrong or empty.
    pub fingers: usize,
}

impl TableErrors {
    /// Is the table exactly right?
    pub fn is_correct(&self) -> bool {
        *self == TableErrors::default()
    }
}
