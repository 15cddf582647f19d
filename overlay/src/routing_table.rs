//! The routing table: successor and predecessor lists plus finger slots, and next-hop choice.
//!
//! Both lists are kept sorted by distance from this node in their direction. A finger slot is
//! only stored when its target lies beyond what the list in its direction already covers: below
//! that the lists answer exactly, so storing the slot would only cost memory (at a million
//! nodes most of Tango's ~160 possible slots fall inside the successor list's span).

use crate::peer::{Peer, PeerId};
use crate::ring::{Dir, RingId};
use crate::strategy::FingerStrategy;

/// Where a routed message goes next.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum NextHop<P> {
    /// This node is responsible for the key.
    Local,
    /// Forward to this peer.
    Forward(Peer<P>),
}

/// The finger slots of one direction: `slots[i]` is level `first + i`.
#[derive(Clone, Debug)]
struct Slots<P> {
    first: usize,
    slots: Vec<Option<Peer<P>>>,
}

/// A node's view of the ring: neighbour lists and fingers.
#[derive(Clone, Debug)]
pub struct RoutingTable<P> {
    me: Peer<P>,
    strategy: FingerStrategy,
    list_len: usize,
    /// `[successors, predecessors]`, each sorted by distance from `me` in its direction.
    lists: [Vec<Peer<P>>; 2],
    fingers: [Slots<P>; 2],
    /// Bumped by every change of the lists or the fingers.
    generation: u64,
}

impl<P: PeerId> RoutingTable<P> {
    /// An empty table for `me`, keeping `list_len` successors and as many predecessors.
    pub fn new(me: Peer<P>, strategy: FingerStrategy, list_len: usize) -> Self {
        let list_len = list_len.max(1);
        let mut t = RoutingTable {
            me,
            strategy,
            list_len,
            lists: [Vec::new(), Vec::new()],
            fingers: [
                Slots {
                    first: 0,
                    slots: Vec::new(),
                },
                Slots {
                    first: 0,
                    slots: Vec::new(),
                },
            ],
            generation: 0,
        };
        t.rebase_fingers();
        t
    }

    /// This node.
    pub fn me(&self) -> Peer<P> {
        self.me
    }

    /// The finger strategy in use.
    pub fn strategy(&self) -> FingerStrategy {
        self.strategy
    }

    /// A number that changes whenever the lists or the fingers do, so that a caller can tell
    /// cheaply whether the table's members may have changed since it last looked.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// How many entries each neighbour list keeps at most.
    pub fn list_len(&self) -> usize {
        self.list_len
    }

    /// The neighbour list in direction `dir` (successors for `Cw`), nearest first.
    pub fn list(&self, dir: Dir) -> &[Peer<P>] {
        &self.lists[dir.index()]
    }

    /// The successor list, nearest first.
    pub fn successors(&self) -> &[Peer<P>] {
        self.list(Dir::Cw)
    }

    /// The predecessor list, nearest first.
    pub fn predecessors(&self) -> &[Peer<P>] {
        self.list(Dir::Ccw)
    }

    /// The immediate successor.
    pub fn successor(&self) -> Option<Peer<P>> {
        self.lists[0].first().copied()
    }

    /// The immediate predecessor.
    pub fn predecessor(&self) -> Option<Peer<P>> {
        self.lists[1].first().copied()
    }

    /// Is this node responsible for `key`, i.e. is `key` in `(predecessor, me]`?
    /// A node that knows no predecessor is responsible for everything.
    pub fn is_responsible(&self, key: RingId) -> bool {
        match self.predecessor() {
            None => true,
            Some(p) => key.in_open_closed(p.pos, self.me.pos),
        }
    }

    /// The `r` nodes that should hold replicas of `key`, in order: the node responsible for it
    /// (the first at or after it clockwise) and those after it. `None` when this node's lists
    /// do not reach the key (ask a node nearer to it); fewer than `r` when the lists hold fewer
    /// nodes at or after the key.
    pub fn replica_set(&self, key: RingId, r: usize) -> Option<Vec<Peer<P>>> {
        let (succs, preds) = (&self.lists[0], &self.lists[1]);
        // Lists that are not full, or that meet round the ring, hold every node.
        let meet = match (succs.last(), preds.last()) {
            (Some(s), Some(p)) => self.me.pos.cw_to(s.pos) >= self.me.pos.cw_to(p.pos),
            _ => false,
        };
        let whole = meet || self.span(Dir::Cw) == u128::MAX || self.span(Dir::Ccw) == u128::MAX;
        // How far clockwise from the key the lists still know every node.
        let reach = match (whole, succs.last(), preds.last()) {
            (true, _, _) => u128::MAX,
            (false, Some(far_succ), Some(far_pred)) => {
                if !key.in_open_closed(far_pred.pos, far_succ.pos) {
                    return None;
                }
                key.cw_to(far_succ.pos)
            }
            _ => return None,
        };
        let mut known: Vec<Peer<P>> = std::iter::once(self.me)
            .chain(succs.iter().copied())
            .chain(preds.iter().copied())
            .filter(|p| key.cw_to(p.pos) <= reach)
            .collect();
        known.sort_by_key(|p| (key.cw_to(p.pos), p.id));
        known.dedup_by_key(|p| p.id);
        known.truncate(r);
        Some(known)
    }

    /// How far the list in `dir` reaches; everything is covered while the list is not full
    /// (the ring is then small enough to be known whole).
    fn span(&self, dir: Dir) -> u128 {
        let l = &self.lists[dir.index()];
        match l.last() {
            Some(last) if l.len() >= self.list_len => self.me.pos.dist_dir(dir, last.pos),
            _ => u128::MAX,
        }
    }

    /// The number of finger levels whose targets the list in direction `dir` already covers.
    pub fn covered_levels(&self, dir: Dir) -> usize {
        let span = self.span(dir);
        self.strategy.distances().partition_point(|&d| d <= span)
    }

    /// The first finger level stored in direction `dir` (levels below are covered by the list).
    fn first_level(&self, dir: Dir) -> usize {
        if !self.strategy.has_dir(dir) {
            return self.strategy.distances().len();
        }
        self.covered_levels(dir)
    }

    /// Re-aligns the stored finger levels with the lists' current spans. Slots that become
    /// covered by a list are dropped; newly needed slots start empty.
    fn rebase_fingers(&mut self) {
        let levels = self.strategy.distances().len();
        for dir in Dir::BOTH {
            let first = self.first_level(dir);
            let s = &mut self.fingers[dir.index()];
            if first == s.first && s.slots.len() == levels - first {
                continue;
            }
            let mut slots = vec![None; levels - first];
            for (i, v) in s.slots.iter().enumerate() {
                let level = s.first + i;
                if level >= first {
                    slots[level - first] = *v;
                }
            }
            *s = Slots { first, slots };
        }
    }

    /// The finger levels stored in direction `dir`.
    pub fn finger_levels(&self, dir: Dir) -> std::ops::Range<usize> {
        let s = &self.fingers[dir.index()];
        s.first..s.first + s.slots.len()
    }

    /// The finger in slot `(dir, level)`, if that slot is stored and filled.
    pub fn finger(&self, dir: Dir, level: usize) -> Option<Peer<P>> {
        let s = &self.fingers[dir.index()];
        level
            .checked_sub(s.first)
            .and_then(|i| s.slots.get(i).copied().flatten())
    }

    /// Every stored finger slot: `(dir, level, occupant)`.
    pub fn finger_slots(&self) -> impl Iterator<Item = (Dir, usize, Option<Peer<P>>)> + '_ {
        Dir::BOTH.into_iter().flat_map(move |dir| {
            let s = &self.fingers[dir.index()];
            s.slots
                .iter()
                .enumerate()
                .map(move |(i, v)| (dir, s.first + i, *v))
        })
    }

    /// Sets slot `(dir, level)` if it is stored. Returns whether anything changed.
    pub fn set_finger(&mut self, dir: Dir, level: usize, peer: Peer<P>) -> bool {
        let s = &mut self.fingers[dir.index()];
        match level.checked_sub(s.first).and_then(|i| s.slots.get_mut(i)) {
            Some(slot) if *slot != Some(peer) => {
                *slot = Some(peer);
                self.generation += 1;
                true
            }
            _ => false,
        }
    }

    /// Every known peer (lists and fingers, never `me`), possibly with repeats.
    pub fn entries(&self) -> impl Iterator<Item = Peer<P>> + '_ {
        let me = self.me.id;
        self.lists
            .iter()
            .flat_map(|l| l.iter().copied())
            .chain(
                self.fingers
                    .iter()
                    .flat_map(|s| s.slots.iter().filter_map(|v| *v)),
            )
            .filter(move |p| p.id != me)
    }

    /// The distinct peers in the table, sorted by identity.
    pub fn distinct_peers(&self) -> Vec<P> {
        let mut v: Vec<P> = self.entries().map(|p| p.id).collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Does the table mention `id` anywhere?
    pub fn contains(&self, id: &P) -> bool {
        self.entries().any(|p| p.id == *id)
    }

    /// Is `id` in either neighbour list?
    pub fn is_neighbour(&self, id: &P) -> bool {
        self.lists.iter().any(|l| l.iter().any(|p| p.id == *id))
    }

    /// Replaces the list in direction `dir` with `candidates` (deduplicated, without `me` and
    /// without peers for which `reject` holds), sorted by distance and cut to length. Returns the
    /// peers that left the list and those that joined it.
    pub fn set_list(
        &mut self,
        dir: Dir,
        candidates: impl IntoIterator<Item = Peer<P>>,
        reject: impl Fn(&P) -> bool,
    ) -> ListChange<P> {
        let me = self.me;
        let mut new: Vec<Peer<P>> = candidates
            .into_iter()
            .filter(|p| p.id != me.id && !reject(&p.id))
            .collect();
        new.sort_by_key(|p| (me.pos.dist_dir(dir, p.pos), p.id));
        new.dedup_by_key(|p| p.id);
        new.truncate(self.list_len);
        self.replace_list(dir, new)
    }

    /// Offers `peer` to both lists: it is inserted where it belongs if it ranks among the
    /// nearest. Returns the change.
    pub fn offer(&mut self, peer: Peer<P>) -> ListChange<P> {
        let mut change = ListChange::default();
        if peer.id == self.me.id {
            return change;
        }
        for dir in Dir::BOTH {
            let l = &self.lists[dir.index()];
            if l.iter().any(|p| p.id == peer.id) {
                continue;
            }
            let d = self.me.pos.dist_dir(dir, peer.pos);
            let at = l.partition_point(|p| self.me.pos.dist_dir(dir, p.pos) < d);
            if at >= self.list_len {
                continue;
            }
            let mut new = l.clone();
            new.insert(at, peer);
            new.truncate(self.list_len);
            change.merge(self.replace_list(dir, new));
        }
        change
    }

    fn replace_list(&mut self, dir: Dir, new: Vec<Peer<P>>) -> ListChange<P> {
        let old = std::mem::replace(&mut self.lists[dir.index()], new);
        let new = &self.lists[dir.index()];
        let change = ListChange {
            removed: old
                .iter()
                .filter(|p| !new.iter().any(|q| q.id == p.id))
                .map(|p| p.id)
                .collect(),
            added: new
                .iter()
                .filter(|p| !old.iter().any(|q| q.id == p.id))
                .map(|p| p.id)
                .collect(),
        };
        if !change.is_empty() {
            self.generation += 1;
            self.rebase_fingers();
        }
        change
    }

    /// Removes `id` from the lists and empties the finger slots it held. Returns the list change
    /// and the finger slots that were emptied.
    pub fn remove(&mut self, id: &P) -> (ListChange<P>, Vec<(Dir, usize)>) {
        let mut change = ListChange::default();
        for dir in Dir::BOTH {
            if self.lists[dir.index()].iter().any(|p| p.id == *id) {
                let new: Vec<Peer<P>> = self.lists[dir.index()]
                    .iter()
                    .filter(|p| p.id != *id)
                    .copied()
                    .collect();
                change.merge(self.replace_list(dir, new));
            }
        }
        let mut emptied = Vec::new();
        for dir in Dir::BOTH {
            let s = &mut self.fingers[dir.index()];
            for (i, v) in s.slots.iter_mut().enumerate() {
                if v.is_some_and(|p| p.id == *id) {
                    *v = None;
                    emptied.push((dir, s.first + i));
                }
            }
        }
        if !emptied.is_empty() {
            self.generation += 1;
        }
        (change, emptied)
    }

    /// Correction on use: `peer` is known to be alive; put it in every finger slot for which it
    /// is a better candidate (nearer after the slot's target) than the current occupant.
    /// Returns how many slots changed.
    pub fn consider_for_fingers(&mut self, peer: Peer<P>) -> usize {
        if peer.id == self.me.id {
            return 0;
        }
        let mut changed = 0;
        for dir in Dir::BOTH {
            let s = &mut self.fingers[dir.index()];
            for (i, v) in s.slots.iter_mut().enumerate() {
                let target = self.strategy.target(self.me.pos, dir, s.first + i);
                let better = match v {
                    None => true,
                    Some(cur) => {
                        cur.id != peer.id && target.cw_to(peer.pos) < target.cw_to(cur.pos)
                    }
                };
                if better {
                    *v = Some(peer);
                    changed += 1;
                }
            }
        }
        if changed > 0 {
            self.generation += 1;
        }
        changed
    }

    /// The known node (including `me`) nearest after `target`: the best local guess of who is
    /// responsible for it.
    pub fn best_known_for(&self, target: RingId) -> Peer<P> {
        self.entries()
            .chain(std::iter::once(self.me))
            .fold(self.me, |best, p| {
                if target.cw_to(p.pos) < target.cw_to(best.pos) {
                    p
                } else {
                    best
                }
            })
    }

    /// How far a node at `pos` is from `key` for routing, which must shrink at every hop:
    /// with fingers both ways the distance either way round; with clockwise fingers only
    /// (Chord) the clockwise distance, so that routes never overshoot the key.
    pub fn route_distance(&self, pos: RingId, key: RingId) -> u128 {
        if self.strategy.has_dir(Dir::Ccw) {
            pos.dist(key)
        } else {
            pos.cw_to(key)
        }
    }

    /// The next hop towards the node responsible for `key`: local if this node is responsible;
    /// the responsible neighbour if the key falls within the span of either list; otherwise, with fingers in both
    /// directions, the known peer nearest to the key either way round (greedy bidirectional
    /// routing), and with clockwise-only fingers (Chord) the known peer that most closely
    /// precedes the key. Either way every hop strictly reduces the distance to the key, so a
    /// route never ping-pongs. `None` only when no known peer is nearer (an empty table).
    pub fn next_hop(&self, key: RingId) -> Option<NextHop<P>> {
        if self.is_responsible(key) {
            return Some(NextHop::Local);
        }
        // The lists tell exactly who is responsible for the keys they span.
        let mut prev = self.me.pos;
        for s in self.successors() {
            if key.in_open_closed(prev, s.pos) {
                return Some(NextHop::Forward(*s));
            }
            prev = s.pos;
        }
        for w in self.predecessors().windows(2) {
            if key.in_open_closed(w[1].pos, w[0].pos) {
                return Some(NextHop::Forward(w[0]));
            }
        }
        let metric = |pos: RingId| self.route_distance(pos, key);
        let mine = metric(self.me.pos);
        let mut best: Option<(u128, Peer<P>)> = None;
        for p in self.entries() {
            let d = metric(p.pos);
            if d < mine && best.is_none_or(|(bd, bp)| (d, p.id) < (bd, bp.id)) {
                best = Some((d, p));
            }
        }
        best.map(|(_, p)| NextHop::Forward(p))
    }
}

/// How a neighbour list changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListChange<P> {
    /// Peers no longer in the list.
    pub removed: Vec<P>,
    /// Peers new in the list.
    pub added: Vec<P>,
}

impl<P> Default for ListChange<P> {
    fn default() -> Self {
        ListChange {
            removed: Vec::new(),
            added: Vec::new(),
        }
    }
}

impl<P> ListChange<P> {
    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        self.removed.is_empty() && self.added.is_empty()
    }

    /// Folds another change into this one.
    pub fn merge(&mut self, other: ListChange<P>) {
        self.removed.extend(other.removed);
        self.added.extend(other.added);
    }
}
