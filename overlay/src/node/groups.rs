//! Named groups: one multicast tree per group, Scribe-style.
//!
//! A group lives at the ring position of its name's hash; the node responsible for that position
//! is the tree's root. A member joins by sending `GroupJoin` towards the group key, hop by hop:
//! each node on the way adopts the sender as a child and, if it was not in the tree yet, joins
//! it the same way, so the tree is the union of the members' routes to the root. Only members
//! and the forwarders on those routes hold state or see the group's traffic.
//!
//! A group message enters the tree at the first tree node on its route to the group key (at
//! once if the sender is in the tree) and then floods the tree's edges, each node passing it to
//! its parent and children except the one it came from; `(origin, seq)` is remembered so that a
//! node reached twice while the tree changes delivers once.
//!
//! The tree is soft state: every `group_refresh` each node re-sends `GroupJoin` to its current
//! next hop towards the group (moving to a new parent when routing changed, becoming root when
//! it became responsible), and parents forget children silent for three periods. A dead parent
//! is replaced at once; a child the driver reports congested `congestion_strikes` times in a row
//! is dropped and reported, so one slow member does not hold back the others.

use super::{Node, Output};
use crate::message::{Body, Message, Sealed};
use crate::node::{CommandError, Delivery, Event, State, Via};
use crate::peer::PeerId;
use crate::ring::RingId;
use crate::routing_table::NextHop;
use crate::time::Time;
use std::collections::BTreeMap;

/// This node's part in one group's tree.
#[derive(Debug)]
struct Group<P> {
    member: bool,
    root: bool,
    parent: Option<P>,
    /// Children with the time of their last refresh and their congestion strikes.
    children: BTreeMap<P, (Time, u32)>,
}

impl<P> Default for Group<P> {
    fn default() -> Self {
        Group {
            member: false,
            root: false,
            parent: None,
            children: BTreeMap::new(),
        }
    }
}

impl<P> Group<P> {
    fn attached(&self) -> bool {
        self.root || self.parent.is_some()
    }
}

/// The group state of a node.
#[derive(Debug)]
pub(super) struct Groups<P> {
    map: BTreeMap<RingId, Group<P>>,
    timer: Option<Time>,
}

impl<P> Default for Groups<P> {
    fn default() -> Self {
        Groups {
            map: BTreeMap::new(),
            timer: None,
        }
    }
}

/// What this node is in one group's tree, for monitoring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupRole<P> {
    /// The group's ring position.
    pub group: RingId,
    /// Whether this node is a member (receives the group's messages).
    pub member: bool,
    /// Whether this node is the tree's root (responsible for the group key).
    pub root: bool,
    /// The parent in the tree, if any.
    pub parent: Option<P>,
    /// The children in the tree.
    pub children: Vec<P>,
}

impl<P: PeerId> Groups<P> {
    pub(super) fn next_deadline(&self) -> Option<Time> {
        self.timer
    }

    /// Whether `peer` is a parent or child in some tree (its link is worth keeping).
    pub(super) fn uses(&self, peer: &P) -> bool {
        self.map
            .values()
            .any(|g| g.parent.as_ref() == Some(peer) || g.children.contains_key(peer))
    }

    pub(super) fn clear(&mut self) {
        self.map.clear();
        self.timer = None;
    }
}

impl<P: PeerId> Node<P> {
    /// Joins the group at ring position `group` (the hash of its name): this node will receive
    /// the group's messages.
    pub fn join_group(&mut self, now: Time, group: RingId) -> Result<(), CommandError> {
        self.now = self.now.max(now);
        if self.state != State::Joined {
            return Err(CommandError::NotJoined);
        }
        if !self.groups.map.contains_key(&group) && self.groups.map.len() >= self.cfg.max_groups {
            return Err(CommandError::TooManyGroups);
        }
        let g = self.groups.map.entry(group).or_default();
        g.member = true;
        if !g.attached() {
            self.attach(now, group);
        }
        self.arm_group_timer(now);
        Ok(())
    }

    /// Leaves the group: no more deliveries; the node stays a forwarder while it has children.
    pub fn leave_group(&mut self, _now: Time, group: RingId) {
        if let Some(g) = self.groups.map.get_mut(&group) {
            g.member = false;
            self.prune_if_useless(group);
        }
    }

    /// Whether this node is a member of `group`.
    pub fn is_group_member(&self, group: RingId) -> bool {
        self.groups.map.get(&group).is_some_and(|g| g.member)
    }

    /// This node's place in every tree it belongs to.
    pub fn group_roles(&self) -> Vec<GroupRole<P>> {
        self.groups
            .map
            .iter()
            .map(|(group, g)| GroupRole {
                group: *group,
                member: g.member,
                root: g.root,
                parent: g.parent,
                children: g.children.keys().copied().collect(),
            })
            .collect()
    }

    /// Sends `payload` to every member of `group` (this node need not be one). Returns the
    /// message number.
    pub fn send_group(
        &mut self,
        now: Time,
        group: RingId,
        payload: Vec<u8>,
    ) -> Result<u64, CommandError> {
        self.now = self.now.max(now);
        if self.state != State::Joined {
            return Err(CommandError::NotJoined);
        }
        let seq = self.nonces.next();
        self.seen.insert((self.me.id, seq), now);
        let sealed = self.seal(seq, group, Body::GroupSend { payload });
        if self.groups.map.get(&group).is_some_and(|g| g.attached()) {
            self.flood(&sealed, 0, None);
        } else {
            self.route_sealed(sealed);
        }
        Ok(seq)
    }

    /// The driver could not queue tree traffic for `peer` (its queue is full). A child reported
    /// `congestion_strikes` times in a row is dropped from the trees it is in.
    pub fn handle_congestion(&mut self, _now: Time, peer: P) {
        let strikes = self.cfg.congestion_strikes;
        let groups: Vec<RingId> = self.groups.map.keys().copied().collect();
        for group in groups {
            let Some(g) = self.groups.map.get_mut(&group) else {
                continue;
            };
            let Some(child) = g.children.get_mut(&peer) else {
                continue;
            };
            child.1 += 1;
            if child.1 >= strikes {
                g.children.remove(&peer);
                self.out
                    .push_back(Output::Event(Event::GroupChildDropped { group, peer }));
                self.prune_if_useless(group);
            }
        }
    }

    /// A routed group message passes through (or reaches) this node: if this node is in the
    /// group's tree, the message enters the tree here. Returns whether it was taken.
    pub(super) fn group_send_enters(&mut self, now: Time, sealed: &Sealed<P>, hops: u16) -> bool {
        let group = sealed.env.key;
        if !self.groups.map.get(&group).is_some_and(|g| g.attached()) {
            return false;
        }
        if self.seen.insert((sealed.origin(), sealed.env.seq), now) {
            self.deliver_group(sealed, hops);
            self.flood(sealed, hops, None);
        }
        true
    }

    pub(super) fn on_group_join(&mut self, now: Time, from: P, group: RingId) {
        if self.state != State::Joined {
            return;
        }
        if !self.groups.map.contains_key(&group) && self.groups.map.len() >= self.cfg.max_groups {
            self.stats.dropped += 1;
            return;
        }
        let max_children = self.cfg.max_children;
        let g = self.groups.map.entry(group).or_default();
        if g.parent == Some(from) {
            // Our parent wants to hang below us: routing views disagree for a moment. Keeping
            // both edges would make a loop; the refresh sorts it out.
            return;
        }
        if !g.children.contains_key(&from) && g.children.len() >= max_children {
            self.stats.dropped += 1;
            return;
        }
        g.children.insert(from, (now, 0));
        if !g.attached() {
            self.attach(now, group);
        }
        self.arm_group_timer(now);
    }

    pub(super) fn on_group_prune(&mut self, from: P, group: RingId) {
        if let Some(g) = self.groups.map.get_mut(&group) {
            g.children.remove(&from);
            self.prune_if_useless(group);
        }
    }

    /// A group message came along a tree edge from `from` (its envelope already checked).
    pub(super) fn on_group_cast(&mut self, now: Time, from: P, hops: u16, sealed: Sealed<P>) {
        let group = sealed.env.key;
        let in_tree = self.groups.map.get(&group).is_some_and(|g| {
            g.attached() && (g.parent == Some(from) || g.children.contains_key(&from))
        });
        if !in_tree {
            // `from` thinks we are in its tree; we are not (any more): tell it.
            self.stats.dropped += 1;
            self.push_send(from, Message::GroupPrune { group });
            return;
        }
        if !self.seen.insert((sealed.origin(), sealed.env.seq), now) {
            return;
        }
        self.deliver_group(&sealed, hops);
        if hops < self.cfg.max_hops {
            self.flood(&sealed, hops, Some(from));
        }
    }

    fn deliver_group(&mut self, sealed: &Sealed<P>, hops: u16) {
        let group = sealed.env.key;
        let origin = sealed.origin();
        let Body::GroupSend { payload } = &sealed.env.body else {
            return;
        };
        if origin != self.me.id && self.groups.map.get(&group).is_some_and(|g| g.member) {
            self.stats.delivered += 1;
            self.out.push_back(Output::Deliver(Delivery {
                origin,
                key: group,
                hops,
                via: Via::Group(group),
                payload: payload.clone(),
            }));
        }
    }

    /// Passes a group message to every tree neighbour but `except` and the origin.
    fn flood(&mut self, sealed: &Sealed<P>, hops: u16, except: Option<P>) {
        let origin = sealed.origin();
        let Some(g) = self.groups.map.get(&sealed.env.key) else {
            return;
        };
        let targets: Vec<P> = g
            .parent
            .iter()
            .chain(g.children.keys())
            .copied()
            .filter(|p| Some(*p) != except && *p != origin)
            .collect();
        for to in targets {
            self.push_send(
                to,
                Message::GroupCast {
                    hops: hops + 1,
                    sealed: sealed.clone(),
                },
            );
        }
    }

    /// Hangs this node's tree state for `group` below its next hop towards the group key, or
    /// makes it the root if it is responsible for the key.
    fn attach(&mut self, _now: Time, group: RingId) {
        let hop = self.table.next_hop(group);
        let Some(g) = self.groups.map.get_mut(&group) else {
            return;
        };
        let old = g.parent;
        match hop {
            Some(NextHop::Forward(p)) if !g.children.contains_key(&p.id) => {
                g.root = false;
                g.parent = Some(p.id);
                self.push_send(p.id, Message::GroupJoin { group });
            }
            Some(NextHop::Forward(_)) | Some(NextHop::Local) | None => {
                // Responsible for the key (or the next hop hangs below us for now): root.
                g.root = true;
                g.parent = None;
            }
        }
        let new = self.groups.map.get(&group).and_then(|g| g.parent);
        if let Some(old) = old {
            if new != Some(old) {
                self.push_send(old, Message::GroupPrune { group });
            }
        }
    }

    /// Drops the state for `group` when this node is neither member nor forwarder.
    fn prune_if_useless(&mut self, group: RingId) {
        let Some(g) = self.groups.map.get(&group) else {
            return;
        };
        if g.member || !g.children.is_empty() {
            return;
        }
        if let Some(p) = g.parent {
            self.push_send(p, Message::GroupPrune { group });
        }
        self.groups.map.remove(&group);
    }

    fn arm_group_timer(&mut self, now: Time) {
        if self.groups.timer.is_none() && !self.groups.map.is_empty() {
            self.groups.timer = Some(now + self.jitter(self.cfg.group_refresh));
        }
    }

    /// The periodic refresh: re-attach along current routes, forget silent children.
    pub(super) fn group_refresh(&mut self, now: Time) {
        self.groups.timer = None;
        let expiry = self.cfg.group_refresh * 3;
        let groups: Vec<RingId> = self.groups.map.keys().copied().collect();
        for group in groups {
            if let Some(g) = self.groups.map.get_mut(&group) {
                g.children.retain(|_, (t, _)| now.since(*t) < expiry);
            }
            self.attach(now, group);
            self.prune_if_useless(group);
        }
        self.arm_group_timer(now);
    }

    /// `peer` is dead: forget it as a child, and find a new parent where it was one.
    pub(super) fn group_peer_failed(&mut self, now: Time, peer: P) {
        let groups: Vec<RingId> = self
            .groups
            .map
            .iter()
            .filter(|(_, g)| g.parent == Some(peer) || g.children.contains_key(&peer))
            .map(|(k, _)| *k)
            .collect();
        for group in groups {
            let Some(g) = self.groups.map.get_mut(&group) else {
                continue;
            };
            g.children.remove(&peer);
            if g.parent == Some(peer) {
                g.parent = None;
                self.attach(now, group);
            }
            self.prune_if_useless(group);
        }
    }

    /// Leaving the network: tell every parent.
    pub(super) fn groups_leave(&mut self) {
        let parents: Vec<(RingId, P)> = self
            .groups
            .map
            .iter()
            .filter_map(|(k, g)| g.parent.map(|p| (*k, p)))
            .collect();
        for (group, p) in parents {
            self.push_send(p, Message::GroupPrune { group });
        }
        self.groups.clear();
    }
}
