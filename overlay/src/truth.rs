//! The ring as it should be, computed from every member's position alone: which member is
//! responsible for a key, and which are a member's true successors and predecessors.
//!
//! The simulator, the demo and the tests all judge what nodes believe against this ground
//! truth, so it is written once, here, as plain arithmetic on a sorted list with no protocol
//! code in it (a protocol mistake cannot hide in it). Responsibility follows Chord, as in
//! [`crate::ring`]: the member responsible for key `k` is the first at or after `k` clockwise,
//! wrapping past the top of the ring, so a lone member is responsible for every key.
//!
//! The type of the members is the caller's: simulator ids, node ids, [`crate::Peer`]s or
//! indices into a list of nodes.

use crate::ring::RingId;

/// A set of ring members in ring order (ascending position): the ground truth that routing
/// state and lookup answers are checked against.
#[derive(Clone, Debug)]
pub struct TrueRing<T> {
    /// Positions, ascending.
    positions: Vec<RingId>,
    /// Members, in the order of `positions`.
    members: Vec<T>,
}

impl<T> Default for TrueRing<T> {
    fn default() -> Self {
        TrueRing {
            positions: Vec::new(),
            members: Vec::new(),
        }
    }
}

impl<T: Clone + PartialEq> TrueRing<T> {
    /// The ring of `members`, each given with its position, in any order. Members at the same
    /// position keep the order they were given in; a member given twice at the same position
    /// counts once.
    pub fn new(members: impl IntoIterator<Item = (RingId, T)>) -> Self {
        let mut pairs: Vec<(RingId, T)> = members.into_iter().collect();
        // Stable: equal positions keep their order.
        pairs.sort_by_key(|(pos, _)| *pos);
        let mut ring = TrueRing {
            positions: Vec::with_capacity(pairs.len()),
            members: Vec::with_capacity(pairs.len()),
        };
        for (pos, member) in pairs {
            if ring.find(pos, &member).is_none() {
                ring.positions.push(pos);
                ring.members.push(member);
            }
        }
        ring
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Is the ring empty?
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The members in ring order.
    pub fn members(&self) -> &[T] {
        &self.members
    }

    /// The members' positions, ascending (`positions()[i]` is the position of `members()[i]`).
    pub fn positions(&self) -> &[RingId] {
        &self.positions
    }

    /// Adds `member` at `pos` (after any member already there); returns false, changing
    /// nothing, if it is already there.
    pub fn insert(&mut self, pos: RingId, member: T) -> bool {
        if self.find(pos, &member).is_some() {
            return false;
        }
        let i = self.positions.partition_point(|p| *p <= pos);
        self.positions.insert(i, pos);
        self.members.insert(i, member);
        true
    }

    /// Removes `member` from `pos`; returns false if it is not there.
    pub fn remove(&mut self, pos: RingId, member: &T) -> bool {
        let Some(i) = self.find(pos, member) else {
            return false;
        };
        self.positions.remove(i);
        self.members.remove(i);
        true
    }

    /// Index (in ring order) of the member responsible for `key`: the first at or after it,
    /// wrapping; `None` on an empty ring.
    pub fn responsible_index(&self, key: RingId) -> Option<usize> {
        if self.is_empty() {
            return None;
        }
        let i = self.positions.partition_point(|p| *p < key);
        Some(if i == self.len() { 0 } else { i })
    }

    /// The member responsible for `key`: the first at or after it, wrapping.
    pub fn responsible(&self, key: RingId) -> Option<T> {
        self.responsible_index(key).map(|i| self.members[i].clone())
    }

    /// Index (in ring order) of `member` (a linear scan).
    pub fn index_of(&self, member: &T) -> Option<usize> {
        self.members.iter().position(|m| m == member)
    }

    /// The `k` members after the one at index `i`, nearest first: fewer when the ring has no
    /// `k` others, none when `i` is out of range.
    pub fn successors_at(&self, i: usize, k: usize) -> impl Iterator<Item = &T> + '_ {
        let n = self.len();
        let k = if i < n { k.min(n - 1) } else { 0 };
        (1..=k).map(move |d| &self.members[(i + d) % n])
    }

    /// The `k` members before the one at index `i`, nearest first: fewer when the ring has no
    /// `k` others, none when `i` is out of range.
    pub fn predecessors_at(&self, i: usize, k: usize) -> impl Iterator<Item = &T> + '_ {
        let n = self.len();
        let k = if i < n { k.min(n - 1) } else { 0 };
        (1..=k).map(move |d| &self.members[(i + n - d) % n])
    }

    /// The `k` members after `of`, nearest first (fewer on a small ring; none if `of` is not a
    /// member).
    pub fn successors(&self, of: &T, k: usize) -> Vec<T> {
        self.index_of(of)
            .map(|i| self.successors_at(i, k).cloned().collect())
            .unwrap_or_default()
    }

    /// The `k` members before `of`, nearest first (fewer on a small ring; none if `of` is not
    /// a member).
    pub fn predecessors(&self, of: &T, k: usize) -> Vec<T> {
        self.index_of(of)
            .map(|i| self.predecessors_at(i, k).cloned().collect())
            .unwrap_or_default()
    }

    /// Index of `member` among the members at exactly `pos`.
    fn find(&self, pos: RingId, member: &T) -> Option<usize> {
        let lo = self.positions.partition_point(|p| *p < pos);
        let hi = self.positions.partition_point(|p| *p <= pos);
        self.members[lo..hi]
            .iter()
            .position(|m| m == member)
            .map(|j| lo + j)
    }
}

impl<T: Clone + PartialEq> FromIterator<(RingId, T)> for TrueRing<T> {
    fn from_iter<I: IntoIterator<Item = (RingId, T)>>(members: I) -> Self {
        TrueRing::new(members)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A ring whose members are named by their positions.
    fn ring(at: &[u128]) -> TrueRing<u128> {
        at.iter().map(|p| (RingId(*p), *p)).collect()
    }

    #[test]
    fn an_empty_ring_has_no_one_responsible() {
        let r = ring(&[]);
        assert!(r.is_empty());
        assert_eq!(r.responsible(RingId(7)), None);
        assert_eq!(r.successors(&1, 3), Vec::<u128>::new());
    }

    #[test]
    fn a_lone_member_holds_every_key_and_has_no_neighbours() {
        let r = ring(&[50]);
        for key in [0, 49, 50, 51, u128::MAX] {
            assert_eq!(r.responsible(RingId(key)), Some(50));
        }
        assert!(r.successors(&50, 4).is_empty());
        assert!(r.predecessors(&50, 4).is_empty());
    }

    #[test]
    fn the_first_at_or_after_the_key_is_responsible_wrapping_past_the_top() {
        let r = ring(&[u128::MAX - 10, 30, 10, 20]);
        assert_eq!(r.members(), &[10, 20, 30, u128::MAX - 10]);
        assert_eq!(r.responsible(RingId(10)), Some(10));
        assert_eq!(r.responsible(RingId(11)), Some(20));
        assert_eq!(r.responsible(RingId(0)), Some(10));
        assert_eq!(r.responsible(RingId(31)), Some(u128::MAX - 10));
        // Past the last member: the first one, across the top of the ring.
        assert_eq!(r.responsible(RingId(u128::MAX - 9)), Some(10));
        assert_eq!(r.responsible(RingId(u128::MAX)), Some(10));
    }

    #[test]
    fn neighbour_lists_wrap_and_stop_short_on_a_small_ring() {
        let r = ring(&[10, 20, 30, 40]);
        assert_eq!(r.successors(&30, 2), vec![40, 10]);
        assert_eq!(r.predecessors(&20, 2), vec![10, 40]);
        assert_eq!(r.successors(&10, 9), vec![20, 30, 40]);
        assert_eq!(r.predecessors(&10, 9), vec![40, 30, 20]);
        assert!(r.successors(&99, 2).is_empty());
        assert_eq!(r.successors_at(4, 2).count(), 0);
    }

    #[test]
    fn members_come_and_go_once() {
        let mut r = ring(&[10, 30]);
        assert!(r.insert(RingId(20), 20));
        assert!(!r.insert(RingId(20), 20));
        assert_eq!(r.members(), &[10, 20, 30]);
        assert_eq!(r.responsible(RingId(15)), Some(20));
        assert!(r.remove(RingId(20), &20));
        assert!(!r.remove(RingId(20), &20));
        assert!(!r.remove(RingId(10), &30));
        assert_eq!(r.responsible(RingId(15)), Some(30));
    }

    #[test]
    fn members_at_one_position_keep_their_order_and_count_once() {
        let r = TrueRing::new([(RingId(5), 'b'), (RingId(5), 'a'), (RingId(5), 'b')]);
        assert_eq!(r.members(), &['b', 'a']);
        assert_eq!(r.responsible(RingId(5)), Some('b'));
    }

    proptest! {
        /// Against a brute-force scan: the responsible member is the one the fewest clockwise
        /// steps from the key, and the lists are the others sorted by distance from the member.
        #[test]
        fn agrees_with_a_scan(
            at in proptest::collection::btree_set(any::<u128>(), 1..40),
            keys in proptest::collection::vec(any::<u128>(), 1..20),
            k in 0usize..45,
        ) {
            let at: Vec<u128> = at.into_iter().collect();
            let r = ring(&at);
            for key in keys {
                let key = RingId(key);
                let want = at.iter().copied().min_by_key(|p| key.cw_to(RingId(*p)));
                prop_assert_eq!(r.responsible(key), want);
            }
            for &me in &at {
                let pos = RingId(me);
                let mut after: Vec<u128> = at.iter().copied().filter(|p| *p != me).collect();
                after.sort_by_key(|p| pos.cw_to(RingId(*p)));
                after.truncate(k);
                prop_assert_eq!(r.successors(&me, k), after);
                let mut before: Vec<u128> = at.iter().copied().filter(|p| *p != me).collect();
                before.sort_by_key(|p| RingId(*p).cw_to(pos));
                before.truncate(k);
                prop_assert_eq!(r.predecessors(&me, k), before);
            }
        }

        /// The input order does not matter, and inserting one by one builds the same ring.
        #[test]
        fn order_of_arrival_does_not_matter(
            at in proptest::collection::btree_set(any::<u128>(), 0..30),
        ) {
            let sorted: Vec<u128> = at.iter().copied().collect();
            let reversed: Vec<u128> = at.iter().rev().copied().collect();
            let mut one_by_one = TrueRing::default();
            for p in &reversed {
                prop_assert!(one_by_one.insert(RingId(*p), *p));
            }
            let all_at_once = ring(&reversed);
            prop_assert_eq!(all_at_once.members(), sorted.as_slice());
            prop_assert_eq!(one_by_one.members(), sorted.as_slice());
        }
    }
}
