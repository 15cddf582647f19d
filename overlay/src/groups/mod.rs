//! Named groups, a service: one multicast tree per group, Scribe-style.
//!
//! A group lives at the ring position of its name's hash; the node responsible for that position
//! is the tree's root. A member joins by sending a join towards the group key, hop by hop: each
//! node on the way adopts the sender as a child and, if it was not in the tree yet, joins it the
//! same way, so the tree is the union of the members' routes to the root. Only members and the
//! forwarders on those routes hold state or see the group's traffic.
//!
//! A group message is routed towards the group key as a message of this service and enters the
//! tree at the first tree node on its way (the service's `forward` hook takes it there, or its
//! `deliver` hook at the root); it then floods the tree's edges, each node passing it to its
//! parent and children except the one it came from; `(origin, seq)` is remembered so that a
//! node reached twice while the tree changes delivers once.
//!
//! Every group message's deliveries are counted back up the tree ([`count`]): each tree node
//! waits for its neighbours' counts (a wait that shrinks with depth), adds itself if it is a
//! member that delivered the message, and reports to where the message came from; the node
//! where it entered the tree answers its sender back along the route
//! ([`GroupEvent::Counted`]). The sender itself is not counted. The count is what honest nodes
//! report: a lying tree node can claim any number for its subtree, up to a cap.
//!
//! The tree is soft state: every `refresh` each node re-sends its join to its current next hop
//! towards the group (moving to a new parent when routing changed, becoming root when it became
//! responsible), and parents forget children silent for three periods. A dead parent is replaced
//! at once; a child the driver reports congested `congestion_strikes` times in a row is dropped
//! and reported, so one slow member does not hold back the others.
//!
//! A closed group ([`closed`]) is one whose members share a secret: its joins and messages
//! carry proofs every tree node checks, and its payloads are encrypted for the members.

pub mod closed;
pub mod count;

pub use closed::{Admission, Cert, ClosedGroup, GroupPublic, GroupSecret, Link, GROUP_SECRET_LEN};

use crate::config::ConfigError;
use crate::message::{Body, Class, Routed, Sealed};
use crate::node::{CommandError, Node};
use crate::peer::PeerId;
use crate::ring::RingId;
use crate::routing_table::NextHop;
use crate::seen::Seen;
use crate::service::{
    decode, encode, Answered, Context, Emits, Forwarding, Incoming, Service, ServiceId,
};
use crate::time::Time;
use bytes::Bytes;
use count::{Counts, Finished, Up};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;
use thiserror::Error;

/// The service's name.
pub const NAME: &str = "p2ps/groups";

/// The service's id.
pub const GROUPS: ServiceId = ServiceId::named(NAME);

/// Settings of the group service. Start from `GroupConfig::default()` and change what you
/// need with the `with_*` setters or by assigning the public fields.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct GroupConfig {
    /// How often a tree member confirms its place to its parent (and a parent forgets
    /// children silent for three periods). Default: 20 s.
    pub refresh: Duration,
    /// Groups this node holds tree state for (as member, forwarder or root). Default: 1024.
    /// Other nodes' joins may fill all but a sixteenth of them: the rest is kept for the
    /// groups this node's own application joins.
    pub max_groups: usize,
    /// Groups one peer may make this node hold for it as a child (each a tree this node then
    /// forwards for). Default: 64.
    pub max_groups_per_peer: usize,
    /// Children per group and node. Default: 256.
    pub max_children: usize,
    /// A child reported congested this many times in a row is dropped from the tree.
    /// Default: 3.
    pub congestion_strikes: u32,
    /// Deliveries kept for the application before new ones are dropped. Default: 4096.
    pub max_queued: usize,
    /// How long the node where a group message enters the tree waits for the count of its
    /// deliveries; every tree level below waits three quarters of its parent's wait. The
    /// sender waits this long plus one lookup timeout. Default: 4 s.
    pub count_timeout: Duration,
    /// Counts this node waits for at once (and as many of its own messages waiting for
    /// theirs); a message beyond is passed on uncounted. Default: 4096.
    pub max_counts: usize,
    /// Of those, counts one peer may make this node wait for. Default: 256.
    pub max_counts_per_peer: usize,
}

impl GroupConfig {
    /// Checks that every value is usable.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.refresh.is_zero() {
            return Err(ConfigError::Zero("group refresh"));
        }
        if self.count_timeout.is_zero() || self.max_counts == 0 || self.max_counts_per_peer == 0 {
            return Err(ConfigError::Zero(
                "group count_timeout, max_counts, max_counts_per_peer",
            ));
        }
        if self.max_groups == 0
            || self.max_groups_per_peer == 0
            || self.max_children == 0
            || self.congestion_strikes == 0
        {
            return Err(ConfigError::Zero(
                "max_groups, max_groups_per_peer, max_children, congestion_strikes",
            ));
        }
        Ok(())
    }
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            refresh: Duration::from_secs(20),
            max_groups: 1024,
            max_groups_per_peer: 64,
            max_children: 256,
            congestion_strikes: 3,
            max_queued: 4096,
            count_timeout: Duration::from_secs(4),
            max_counts: 4096,
            max_counts_per_peer: 256,
        }
    }
}

impl GroupConfig {
    /// Sets [`refresh`](Self::refresh).
    #[must_use]
    pub fn with_refresh(mut self, refresh: Duration) -> Self {
        self.refresh = refresh;
        self
    }

    /// Sets [`max_groups`](Self::max_groups).
    #[must_use]
    pub fn with_max_groups(mut self, max_groups: usize) -> Self {
        self.max_groups = max_groups;
        self
    }

    /// Sets [`max_groups_per_peer`](Self::max_groups_per_peer).
    #[must_use]
    pub fn with_max_groups_per_peer(mut self, max_groups_per_peer: usize) -> Self {
        self.max_groups_per_peer = max_groups_per_peer;
        self
    }

    /// Sets [`max_children`](Self::max_children).
    #[must_use]
    pub fn with_max_children(mut self, max_children: usize) -> Self {
        self.max_children = max_children;
        self
    }

    /// Sets [`congestion_strikes`](Self::congestion_strikes).
    #[must_use]
    pub fn with_congestion_strikes(mut self, congestion_strikes: u32) -> Self {
        self.congestion_strikes = congestion_strikes;
        self
    }

    /// Sets [`max_queued`](Self::max_queued).
    #[must_use]
    pub fn with_max_queued(mut self, max_queued: usize) -> Self {
        self.max_queued = max_queued;
        self
    }

    /// Sets [`count_timeout`](Self::count_timeout).
    #[must_use]
    pub fn with_count_timeout(mut self, count_timeout: Duration) -> Self {
        self.count_timeout = count_timeout;
        self
    }

    /// Sets [`max_counts`](Self::max_counts).
    #[must_use]
    pub fn with_max_counts(mut self, max_counts: usize) -> Self {
        self.max_counts = max_counts;
        self
    }

    /// Sets [`max_counts_per_peer`](Self::max_counts_per_peer).
    #[must_use]
    pub fn with_max_counts_per_peer(mut self, max_counts_per_peer: usize) -> Self {
        self.max_counts_per_peer = max_counts_per_peer;
        self
    }
}

/// Why a group command was refused.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Error)]
#[non_exhaustive]
pub enum GroupError {
    /// The node cannot act now (not joined, no group service).
    #[error(transparent)]
    Command(#[from] CommandError),
    /// This node already holds state for as many groups as allowed.
    #[error("too many groups")]
    TooManyGroups,
}

/// What the group service tells its application.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum GroupEvent<P> {
    /// A message to a group this node is a member of.
    Delivered {
        /// The node that sent it (its signature checked).
        origin: P,
        /// The group's position.
        group: RingId,
        /// Tree edges and route hops it took.
        hops: u16,
        /// The payload.
        payload: Bytes,
    },
    /// A child of this node in `group`'s tree could not keep up and was dropped.
    ChildDropped {
        /// The group.
        group: RingId,
        /// The dropped child.
        peer: P,
    },
    /// How many members got a message this node sent ([`Groups::send`] returned `seq`).
    Counted {
        /// The group.
        group: RingId,
        /// The message number.
        seq: u64,
        /// Members that delivered it, this node not included, as the tree nodes reported
        /// them (see [`count`]): a member whose report was lost to a failure or a timeout is
        /// missing.
        members: u64,
        /// Whether every part of the tree answered in time.
        complete: bool,
    },
}

/// Counters of the group service.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct GroupStats {
    /// Group messages delivered to this node's application.
    pub delivered: u64,
    /// Joins, messages and deliveries refused or dropped (limits, malformed, not in the tree).
    pub dropped: u64,
    /// Of those, joins refused because their peer holds its share of this node's groups
    /// already ([`GroupConfig::max_groups_per_peer`]), or others' groups fill theirs.
    pub refused_joins: u64,
    /// Of those, joins and messages of closed groups refused for want of a valid proof: no
    /// or a forged certificate, a certificate for another node, a broken delegation chain, a
    /// payload that does not decrypt, or an open-group message in a closed tree.
    pub refused_closed: u64,
    /// Counts refused: from a peer that owed none (unsolicited, repeated, late) or for a
    /// message this node is not waiting for.
    pub refused_counts: u64,
}

/// What the group service puts on the wire, each encoded with [`encode`] (the signed one
/// followed by the payload). Public so that tools and tests can speak the protocol.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Wire {
    /// Child to parent: "keep me in the tree of `group`" (also the periodic refresh).
    Join {
        /// The group's position.
        group: RingId,
    },
    /// Child to parent: "take me out of the tree of `group`".
    Prune {
        /// The group's position.
        group: RingId,
    },
    /// A group message along a tree edge; the origin's envelope travels with it.
    Cast {
        /// Tree edges crossed so far.
        hops: u16,
    },
    /// Signed by the origin (followed by the payload), key the group: a group message.
    Send,
    /// Child to parent, for a closed group: "keep me in the tree of `group`", followed by the
    /// postcard-encoded [`Admission`] that lets the sender in.
    JoinClosed {
        /// The group's position (must be `public.id()`).
        group: RingId,
        /// The group's public key and label.
        public: GroupPublic,
    },
    /// Signed by the origin (followed by the payload encrypted for the members), key the
    /// group: a closed group's message.
    SendClosed {
        /// The origin's certificate.
        cert: Cert,
        /// The AEAD nonce.
        nonce: [u8; 12],
    },
    /// A group message along a tree edge (the origin's envelope travels with it), whose
    /// receiver reports the count of its subtree's deliveries with [`Wire::Count`].
    CastCounted {
        /// Tree edges crossed so far.
        hops: u16,
        /// The sender's tag for this message, echoed in the count.
        tag: u64,
        /// How long the sender waits for the count, in milliseconds.
        wait_ms: u32,
    },
    /// "The part of the tree behind me delivered message `tag` to `members` members."
    Count {
        /// The tag of the [`Wire::CastCounted`] it answers.
        tag: u64,
        /// Members that delivered it.
        members: u64,
        /// Whether every part of that subtree answered in time.
        complete: bool,
    },
    /// From the node where a routed group message entered the tree to its origin, back along
    /// the route: the count of the whole tree.
    Counted {
        /// The origin's message number.
        seq: u64,
        /// Members that delivered it.
        members: u64,
        /// Whether every part of the tree answered in time.
        complete: bool,
    },
}

/// The message names, by the first byte of the encoding (the variant).
const KINDS: &[&str] = &[
    "group-join",
    "group-prune",
    "group-cast",
    "group-send",
    "group-join-closed",
    "group-send-closed",
    "group-cast-counted",
    "group-count",
    "group-counted",
];

/// A wait below this is not given to the next tree level: the message goes on uncounted.
const MIN_COUNT_WAIT: Duration = Duration::from_millis(50);

/// The one-hop message asking to hang below its receiver in the closed group `public`'s tree,
/// with `admission` (see [`Admission::verify`]).
pub fn join_closed_message<P: PeerId>(public: GroupPublic, admission: &Admission<P>) -> Bytes {
    let rest = postcard::to_stdvec(admission).unwrap_or_default();
    encode(
        &Wire::JoinClosed {
            group: public.id(),
            public,
        },
        &rest,
    )
}

/// This node's part in one group's tree.
#[derive(Debug)]
struct Group<P: PeerId> {
    member: bool,
    root: bool,
    parent: Option<P>,
    /// Children with the time of their last refresh and their congestion strikes.
    children: BTreeMap<P, (Time, u32)>,
    /// A closed group's public part (`None`: an open group).
    closed: Option<GroupPublic>,
    /// A closed group's children's admissions (a forwarder passes one on to its parent).
    admissions: BTreeMap<P, Admission<P>>,
}

impl<P: PeerId> Default for Group<P> {
    fn default() -> Self {
        Group {
            member: false,
            root: false,
            parent: None,
            children: BTreeMap::new(),
            closed: None,
            admissions: BTreeMap::new(),
        }
    }
}

impl<P: PeerId> Group<P> {
    fn attached(&self) -> bool {
        self.root || self.parent.is_some()
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

/// The group service.
#[derive(Debug)]
pub struct Groups<P: PeerId> {
    cfg: GroupConfig,
    map: BTreeMap<RingId, Group<P>>,
    timer: Option<Time>,
    /// Group messages seen lately, `(origin, seq)`.
    seen: Option<Seen<(P, u64)>>,
    events: VecDeque<GroupEvent<P>>,
    stats: GroupStats,
    /// The closed groups this node is a member of, with their keys.
    keys: BTreeMap<RingId, ClosedGroup>,
    /// Deliveries counted back up the tree.
    counts: Counts<P>,
}

impl<P: PeerId> Groups<P> {
    /// The service with settings `cfg`.
    pub fn new(cfg: GroupConfig) -> Self {
        Groups {
            map: BTreeMap::new(),
            timer: None,
            seen: None,
            events: VecDeque::new(),
            stats: GroupStats::default(),
            keys: BTreeMap::new(),
            counts: Counts::new(cfg.max_counts, cfg.max_counts_per_peer),
            cfg,
        }
    }

    /// The settings.
    pub fn config(&self) -> &GroupConfig {
        &self.cfg
    }

    /// Counters.
    pub fn stats(&self) -> GroupStats {
        self.stats
    }

    /// Whether this node is a member of `group`.
    pub fn is_member(&self, group: RingId) -> bool {
        self.map.get(&group).is_some_and(|g| g.member)
    }

    /// This node's place in every tree it belongs to.
    pub fn roles(&self) -> Vec<GroupRole<P>> {
        self.map
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

    /// Joins the group at ring position `group` (the hash of its name): this node will receive
    /// the group's messages.
    pub fn join(&mut self, ctx: &mut Context<'_, P>, group: RingId) -> Result<(), GroupError> {
        if !ctx.is_joined() {
            return Err(CommandError::NotJoined.into());
        }
        if !self.map.contains_key(&group) && self.map.len() >= self.cfg.max_groups {
            return Err(GroupError::TooManyGroups);
        }
        let g = self.map.entry(group).or_default();
        g.member = true;
        if !g.attached() {
            self.attach(ctx, group);
        }
        self.arm_timer(ctx);
        Ok(())
    }

    /// Joins the closed group `closed` (see [`closed`]): its joins carry this node's
    /// certificate, and its messages are decrypted for the application.
    pub fn join_closed(
        &mut self,
        ctx: &mut Context<'_, P>,
        closed: ClosedGroup,
    ) -> Result<(), GroupError> {
        if !ctx.is_joined() {
            return Err(CommandError::NotJoined.into());
        }
        let group = closed.id();
        if !self.map.contains_key(&group) && self.map.len() >= self.cfg.max_groups {
            return Err(GroupError::TooManyGroups);
        }
        let g = self.map.entry(group).or_default();
        close(g, closed.public());
        g.member = true;
        self.keys.insert(group, closed);
        let attached = self.map.get(&group).is_some_and(|g| g.attached());
        if !attached {
            self.attach(ctx, group);
        }
        self.arm_timer(ctx);
        Ok(())
    }

    /// Leaves the group: no more deliveries; the node stays a forwarder while it has children.
    pub fn leave_group(&mut self, ctx: &mut Context<'_, P>, group: RingId) {
        self.keys.remove(&group);
        if let Some(g) = self.map.get_mut(&group) {
            g.member = false;
            self.prune_if_useless(ctx, group);
        }
    }

    /// Sends `payload` to every member of `group` (this node need not be one). Returns the
    /// message number; [`GroupEvent::Counted`] follows with it once the tree has counted
    /// the members that got it.
    pub fn send(
        &mut self,
        ctx: &mut Context<'_, P>,
        group: RingId,
        payload: &[u8],
    ) -> Result<u64, CommandError> {
        if !ctx.is_joined() {
            return Err(CommandError::NotJoined);
        }
        let sealed = ctx.seal(group, None, encode(&Wire::Send, payload));
        Ok(self.send_sealed(ctx, sealed))
    }

    /// Sends `payload` to every member of the closed group `closed`, encrypted for them (this
    /// node need not be a member, but holds the secret). Returns the message number;
    /// [`GroupEvent::Counted`] follows with it.
    pub fn send_closed(
        &mut self,
        ctx: &mut Context<'_, P>,
        closed: &ClosedGroup,
        payload: &[u8],
    ) -> Result<u64, CommandError> {
        if !ctx.is_joined() {
            return Err(CommandError::NotJoined);
        }
        let me = ctx.me().id;
        let nonce = closed::nonce(me, ctx.next_seq());
        let head = Wire::SendClosed {
            cert: closed.certify(me),
            nonce,
        };
        let data = encode(&head, &closed.seal(me, nonce, payload));
        let sealed = ctx.seal(closed.id(), None, data);
        Ok(self.send_sealed(ctx, sealed))
    }

    /// Floods `sealed` (this node's own group message) if this node is in its tree, else routes
    /// it towards the group.
    fn send_sealed(&mut self, ctx: &mut Context<'_, P>, sealed: Sealed<P>) -> u64 {
        let group = sealed.env.key;
        let seq = sealed.env.seq;
        self.seen(ctx).insert((ctx.me().id, seq), ctx.now());
        if self.map.get(&group).is_some_and(|g| g.attached()) {
            let up = Up::Local { group, seq };
            self.spread(ctx, &sealed, 0, None, Some((up, self.cfg.count_timeout)), 0);
        } else {
            let deadline = ctx.now() + self.cfg.count_timeout + ctx.config().lookup_timeout;
            if !self.counts.await_answer(seq, group, deadline) {
                // No room to wait: reported at once, uncounted.
                self.events.push_back(GroupEvent::Counted {
                    group,
                    seq,
                    members: 0,
                    complete: false,
                });
            }
            ctx.route(sealed);
        }
        seq
    }

    /// Whether a group message may enter or cross `group`'s tree here: an open group's must be
    /// a plain message; a closed group's must carry its origin's certificate. Counts what it
    /// refuses.
    fn admits(&mut self, sealed: &Sealed<P>) -> bool {
        let closed = self.map.get(&sealed.env.key).and_then(|g| g.closed);
        let Body::Service { data, .. } = &sealed.env.body else {
            return false;
        };
        let ok = match (decode::<Wire>(data), closed) {
            (Ok((Wire::Send, _)), None) => true,
            (Ok((Wire::SendClosed { cert, .. }, _)), Some(public)) => {
                public.verify(sealed.origin(), &cert)
            }
            _ => false,
        };
        if !ok {
            self.stats.dropped += 1;
            if closed.is_some() {
                self.stats.refused_closed += 1;
            }
        }
        ok
    }

    /// The memory of group messages seen, made on first use with the node's settings.
    fn seen(&mut self, ctx: &Context<'_, P>) -> &mut Seen<(P, u64)> {
        let cfg = ctx.config();
        self.seen
            .get_or_insert_with(|| Seen::new(cfg.seen_ttl, cfg.max_seen))
    }

    /// A routed group message passes through (or reaches) this node: if this node is in the
    /// group's tree, the message enters the tree here. Returns whether it was taken.
    fn enters_tree(&mut self, ctx: &mut Context<'_, P>, r: &Routed<P>) -> bool {
        let group = r.sealed.env.key;
        if !self.map.get(&group).is_some_and(|g| g.attached()) {
            return false;
        }
        if !self.admits(&r.sealed) {
            // Taken, and dropped: it goes no further.
            return true;
        }
        let (origin, seq) = (r.sealed.origin(), r.sealed.env.seq);
        if self.seen(ctx).insert((origin, seq), ctx.now()) {
            let own = u64::from(self.deliver_here(ctx, &r.sealed, r.hops));
            let up = if origin == ctx.me().id {
                Up::Local { group, seq }
            } else {
                Up::Origin {
                    way: r.way_back(),
                    seq,
                }
            };
            let count = Some((up, self.cfg.count_timeout));
            self.spread(ctx, &r.sealed, r.hops, None, count, own);
        }
        true
    }

    /// A closed group's join: taken as a join if its admission holds.
    fn on_join_closed(
        &mut self,
        ctx: &mut Context<'_, P>,
        from: P,
        group: RingId,
        public: GroupPublic,
        rest: &Bytes,
    ) {
        let admission = postcard::from_bytes::<Admission<P>>(rest).ok();
        let ok = public.id() == group
            && admission
                .as_ref()
                .is_some_and(|a| a.verify(&public, from, ctx.me().id));
        let (true, Some(admission)) = (ok, admission) else {
            self.stats.dropped += 1;
            self.stats.refused_closed += 1;
            return;
        };
        self.on_join(ctx, from, group, Some((public, admission)));
    }

    /// A join from `from`: with `closed` for a closed group (its admission checked).
    fn on_join(
        &mut self,
        ctx: &mut Context<'_, P>,
        from: P,
        group: RingId,
        closed: Option<(GroupPublic, Admission<P>)>,
    ) {
        let held_closed = self.map.get(&group).is_some_and(|g| g.closed.is_some());
        if held_closed && closed.is_none() {
            // An open join into a closed group's tree.
            self.stats.dropped += 1;
            self.stats.refused_closed += 1;
            return;
        }
        // Others' joins leave a sixteenth of the places for this node's own groups.
        let for_others = self.cfg.max_groups - self.cfg.max_groups / 16;
        let new_edge = !self
            .map
            .get(&group)
            .is_some_and(|g| g.children.contains_key(&from));
        if new_edge {
            let held_for_it = self
                .map
                .values()
                .filter(|g| g.children.contains_key(&from))
                .count();
            let new_group = !self.map.contains_key(&group);
            if held_for_it >= self.cfg.max_groups_per_peer
                || (new_group && self.map.len() >= for_others)
            {
                self.stats.dropped += 1;
                self.stats.refused_joins += 1;
                return;
            }
        }
        let max_children = self.cfg.max_children;
        let g = self.map.entry(group).or_default();
        if let Some((public, _)) = &closed {
            close(g, *public);
        }
        if g.parent == Some(from) {
            // Our parent wants to hang below us: routing views disagree for a moment. Keeping
            // both edges would make a loop; the refresh sorts it out.
            return;
        }
        if !g.children.contains_key(&from) && g.children.len() >= max_children {
            self.stats.dropped += 1;
            return;
        }
        g.children.insert(from, (ctx.now(), 0));
        if let Some((_, admission)) = closed {
            g.admissions.insert(from, admission);
        }
        if !g.attached() {
            self.attach(ctx, group);
        }
        self.arm_timer(ctx);
    }

    fn on_prune(&mut self, ctx: &mut Context<'_, P>, from: P, group: RingId) {
        if let Some(g) = self.map.get_mut(&group) {
            g.children.remove(&from);
            g.admissions.remove(&from);
            self.prune_if_useless(ctx, group);
        }
    }

    /// A group message came along a tree edge from `from` (its envelope already checked),
    /// with `count` = `(tag, wait)` if `from` waits for the count of this node's subtree.
    fn on_cast(
        &mut self,
        ctx: &mut Context<'_, P>,
        from: P,
        hops: u16,
        sealed: Sealed<P>,
        count: Option<(u64, Duration)>,
    ) {
        // What to tell `from` when this node passes the message on to nobody.
        let nothing = |ctx: &mut Context<'_, P>| {
            if let Some((tag, _)) = count {
                let head = Wire::Count {
                    tag,
                    members: 0,
                    complete: true,
                };
                ctx.send(from, encode(&head, &[]));
            }
        };
        let group = sealed.env.key;
        let in_tree = self.map.get(&group).is_some_and(|g| {
            g.attached() && (g.parent == Some(from) || g.children.contains_key(&from))
        });
        if !in_tree {
            // `from` thinks we are in its tree; we are not (any more): tell it.
            self.stats.dropped += 1;
            ctx.send(from, encode(&Wire::Prune { group }, &[]));
            nothing(ctx);
            return;
        }
        if !self.admits(&sealed) {
            return;
        }
        if !self
            .seen(ctx)
            .insert((sealed.origin(), sealed.env.seq), ctx.now())
        {
            // Reached twice: counted where it came first.
            nothing(ctx);
            return;
        }
        let own = u64::from(self.deliver_here(ctx, &sealed, hops));
        let count = count.map(|(tag, wait)| {
            let up = Up::Neighbour { peer: from, tag };
            (up, wait.min(self.cfg.count_timeout))
        });
        self.spread(ctx, &sealed, hops, Some(from), count, own);
    }

    /// Passes a group message on to the tree neighbours but `except` (and the origin) and,
    /// with `count` = `(up, wait)`, waits up to `wait` for their counts, then reports them
    /// with `own` (1 if this node delivered it) to `up`.
    fn spread(
        &mut self,
        ctx: &mut Context<'_, P>,
        sealed: &Sealed<P>,
        hops: u16,
        except: Option<P>,
        count: Option<(Up<P>, Duration)>,
        own: u64,
    ) {
        let targets = if hops < ctx.config().max_hops {
            self.flood_targets(sealed, except)
        } else {
            Vec::new()
        };
        let Some((up, wait)) = count else {
            return self.flood(ctx, sealed, hops, &targets);
        };
        let next_wait = wait * 3 / 4;
        if targets.is_empty() {
            return self.finish(ctx, up, own, true);
        }
        if next_wait < MIN_COUNT_WAIT || !self.counts.has_room(&up) {
            // Passed on uncounted: this node reports only itself.
            self.flood(ctx, sealed, hops, &targets);
            return self.finish(ctx, up, own, false);
        }
        let tag = ctx.random();
        let head = encode(
            &Wire::CastCounted {
                hops: hops + 1,
                tag,
                wait_ms: u32::try_from(next_wait.as_millis()).unwrap_or(u32::MAX),
            },
            &[],
        );
        for to in &targets {
            ctx.send_sealed(*to, head.clone(), sealed.clone());
        }
        let waiting: BTreeSet<P> = targets.into_iter().collect();
        self.counts.open(tag, up, waiting, own, ctx.now() + wait);
    }

    /// Reports a finished count to where the message came from.
    fn finish(&mut self, ctx: &mut Context<'_, P>, up: Up<P>, members: u64, complete: bool) {
        match up {
            Up::Local { group, seq } => self.events.push_back(GroupEvent::Counted {
                group,
                seq,
                members,
                complete,
            }),
            Up::Neighbour { peer, tag } => {
                let head = Wire::Count {
                    tag,
                    members,
                    complete,
                };
                ctx.send(peer, encode(&head, &[]));
            }
            Up::Origin { way, seq } => {
                let head = Wire::Counted {
                    seq,
                    members,
                    complete,
                };
                ctx.reply(&way, encode(&head, &[]));
            }
        }
    }

    fn finished(&mut self, ctx: &mut Context<'_, P>, done: Vec<Finished<P>>) {
        for f in done {
            self.finish(ctx, f.up, f.members, f.complete);
        }
    }

    /// The most members one count may claim here (see [`count::plausible_members`]).
    fn plausible(ctx: &Context<'_, P>) -> u64 {
        let table = ctx.table();
        count::plausible_members(
            ctx.me().pos,
            table.successors(),
            table.distinct_peers().len(),
        )
    }

    /// A count from tree neighbour `from`.
    fn on_count(
        &mut self,
        ctx: &mut Context<'_, P>,
        from: P,
        (tag, members, complete): (u64, u64, bool),
    ) {
        let cap = Self::plausible(ctx);
        match self.counts.counted(from, tag, members, complete, cap) {
            None => {
                self.stats.dropped += 1;
                self.stats.refused_counts += 1;
            }
            Some(done) => self.finished(ctx, done.into_iter().collect()),
        }
    }

    /// Delivers a group message to the application if this node is a member (and not its
    /// origin); returns whether it did.
    fn deliver_here(&mut self, ctx: &Context<'_, P>, sealed: &Sealed<P>, hops: u16) -> bool {
        let group = sealed.env.key;
        let origin = sealed.origin();
        if origin == ctx.me().id || !self.is_member(group) {
            return false;
        }
        let Body::Service { data, .. } = &sealed.env.body else {
            return false;
        };
        let payload = match decode::<Wire>(data) {
            Ok((Wire::Send, payload)) => payload,
            Ok((Wire::SendClosed { nonce, .. }, sealed)) => {
                match self
                    .keys
                    .get(&group)
                    .and_then(|k| k.open(origin, nonce, &sealed))
                {
                    Some(plain) => Bytes::from(plain),
                    None => {
                        self.stats.dropped += 1;
                        self.stats.refused_closed += 1;
                        return false;
                    }
                }
            }
            _ => {
                self.stats.dropped += 1;
                return false;
            }
        };
        if self.events.len() >= self.cfg.max_queued {
            self.stats.dropped += 1;
            return false;
        }
        self.stats.delivered += 1;
        self.events.push_back(GroupEvent::Delivered {
            origin,
            group,
            hops,
            payload,
        });
        true
    }

    /// The tree neighbours a group message goes to: all but `except` and the origin.
    fn flood_targets(&self, sealed: &Sealed<P>, except: Option<P>) -> Vec<P> {
        let origin = sealed.origin();
        let Some(g) = self.map.get(&sealed.env.key) else {
            return Vec::new();
        };
        g.parent
            .iter()
            .chain(g.children.keys())
            .copied()
            .filter(|p| Some(*p) != except && *p != origin)
            .collect()
    }

    /// Passes a group message to `targets`, uncounted.
    fn flood(&mut self, ctx: &mut Context<'_, P>, sealed: &Sealed<P>, hops: u16, targets: &[P]) {
        let head = encode(&Wire::Cast { hops: hops + 1 }, &[]);
        for to in targets {
            ctx.send_sealed(*to, head.clone(), sealed.clone());
        }
    }

    /// Hangs this node's tree state for `group` below its next hop towards the group key, or
    /// makes it the root if it is responsible for the key.
    fn attach(&mut self, ctx: &mut Context<'_, P>, group: RingId) {
        let hop = ctx.next_hop(group);
        let join = match hop {
            Some(NextHop::Forward(p)) => self.join_message(ctx, group, p.id),
            _ => None,
        };
        let Some(g) = self.map.get_mut(&group) else {
            return;
        };
        let old = g.parent;
        match (hop, join) {
            (Some(NextHop::Forward(p)), Some(join)) if !g.children.contains_key(&p.id) => {
                g.root = false;
                g.parent = Some(p.id);
                ctx.send(p.id, join);
            }
            (Some(NextHop::Forward(_)), None) => {
                // A closed group this node cannot prove a place in (no member behind it):
                // it stays unattached, and goes once it has no member and no child.
                g.root = false;
                g.parent = None;
            }
            (Some(NextHop::Forward(_)), Some(_)) | (Some(NextHop::Local), _) | (None, _) => {
                // Responsible for the key (or the next hop hangs below us for now): root.
                g.root = true;
                g.parent = None;
            }
        }
        let new = g.parent;
        if let Some(old) = old {
            if new != Some(old) {
                ctx.send(old, encode(&Wire::Prune { group }, &[]));
            }
        }
    }

    /// The join to send to `parent` for `group`: for a closed group, with this node's own
    /// admission if it is a member, else a child's with one more delegation (`None` if it has
    /// none to pass on).
    fn join_message(
        &mut self,
        ctx: &mut Context<'_, P>,
        group: RingId,
        parent: P,
    ) -> Option<Bytes> {
        let g = self.map.get(&group)?;
        let Some(public) = g.closed else {
            return Some(encode(&Wire::Join { group }, &[]));
        };
        let me = ctx.me().id;
        let mut admission = match self.keys.get(&group) {
            Some(k) if g.member => Admission {
                member: me,
                cert: k.certify(me),
                links: Vec::new(),
            },
            _ => g
                .admissions
                .values()
                .filter(|a| a.depth() < closed::MAX_LINKS)
                .min_by_key(|a| a.depth())?
                .clone(),
        };
        let proof = ctx.sign(closed::LINK_DOMAIN, &(group, parent));
        admission.links.push(Link { to: parent, proof });
        Some(join_closed_message(public, &admission))
    }

    /// Drops the state for `group` when this node is neither member nor forwarder.
    fn prune_if_useless(&mut self, ctx: &mut Context<'_, P>, group: RingId) {
        let Some(g) = self.map.get(&group) else {
            return;
        };
        if g.member || !g.children.is_empty() {
            return;
        }
        if let Some(p) = g.parent {
            ctx.send(p, encode(&Wire::Prune { group }, &[]));
        }
        self.map.remove(&group);
    }

    fn arm_timer(&mut self, ctx: &mut Context<'_, P>) {
        if self.timer.is_none() && !self.map.is_empty() {
            self.timer = Some(ctx.now() + ctx.jitter(self.cfg.refresh));
        }
    }
}

impl<P: PeerId> Emits for Groups<P> {
    type Event = GroupEvent<P>;

    fn poll_event(&mut self) -> Option<GroupEvent<P>> {
        self.events.pop_front()
    }
}

impl<P: PeerId> Service<P> for Groups<P> {
    fn name(&self) -> &'static str {
        NAME
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("delivered", self.stats.delivered),
            ("dropped", self.stats.dropped),
            ("refused_joins", self.stats.refused_joins),
            ("refused_closed", self.stats.refused_closed),
            ("refused_counts", self.stats.refused_counts),
            ("trees", self.map.len() as u64),
            ("counting", self.counts.len() as u64),
        ]
    }

    fn class(&self) -> Class {
        Class::Tree
    }

    fn kinds(&self) -> &'static [&'static str] {
        KINDS
    }

    fn deliver(&mut self, ctx: &mut Context<'_, P>, msg: Routed<P>) {
        // At the group's root: a message that met no tree on its way has no members to reach.
        if !self.enters_tree(ctx, &msg) {
            self.stats.dropped += 1;
            if let Ok((Wire::Send | Wire::SendClosed { .. }, _)) = service_data(&msg.sealed) {
                let head = Wire::Counted {
                    seq: msg.sealed.env.seq,
                    members: 0,
                    complete: true,
                };
                ctx.reply(&msg.way_back(), encode(&head, &[]));
            }
        }
    }

    fn inspects_forwarded(&self) -> bool {
        true
    }

    fn answered(&mut self, ctx: &mut Context<'_, P>, msg: Answered<P>) {
        // The count of a message this node routed to its group, from where it entered the
        // tree (or from the root of an empty one).
        let Ok((
            Wire::Counted {
                seq,
                members,
                complete,
            },
            _,
        )) = decode::<Wire>(&msg.data)
        else {
            self.stats.dropped += 1;
            return;
        };
        let Some(group) = self.counts.answered(seq) else {
            self.stats.dropped += 1;
            self.stats.refused_counts += 1;
            return;
        };
        self.events.push_back(GroupEvent::Counted {
            group,
            seq,
            members: members.min(Self::plausible(ctx)),
            complete,
        });
    }

    fn forward(&mut self, ctx: &mut Context<'_, P>, msg: &Routed<P>, _next: P) -> Forwarding {
        // A group message enters the group's tree at the first tree node on its way.
        if self.enters_tree(ctx, msg) {
            Forwarding::Consumed
        } else {
            Forwarding::Continue
        }
    }

    fn receive(&mut self, ctx: &mut Context<'_, P>, msg: Incoming<P>) {
        let Ok((head, rest)) = decode::<Wire>(&msg.data) else {
            self.stats.dropped += 1;
            return;
        };
        match (head, msg.sealed) {
            (Wire::Join { group }, None) => self.on_join(ctx, msg.from, group, None),
            (Wire::JoinClosed { group, public }, None) => {
                self.on_join_closed(ctx, msg.from, group, public, &rest)
            }
            (Wire::Prune { group }, None) => self.on_prune(ctx, msg.from, group),
            (Wire::Cast { hops }, Some(sealed)) => self.on_cast(ctx, msg.from, hops, sealed, None),
            (Wire::CastCounted { hops, tag, wait_ms }, Some(sealed)) => {
                let wait = Duration::from_millis(u64::from(wait_ms));
                self.on_cast(ctx, msg.from, hops, sealed, Some((tag, wait)))
            }
            (
                Wire::Count {
                    tag,
                    members,
                    complete,
                },
                None,
            ) => self.on_count(ctx, msg.from, (tag, members, complete)),
            _ => self.stats.dropped += 1,
        }
    }

    fn peer_failed(&mut self, ctx: &mut Context<'_, P>, peer: P) {
        // Forget it as a child, and find a new parent where it was one.
        let groups: Vec<RingId> = self
            .map
            .iter()
            .filter(|(_, g)| g.parent == Some(peer) || g.children.contains_key(&peer))
            .map(|(k, _)| *k)
            .collect();
        for group in groups {
            let Some(g) = self.map.get_mut(&group) else {
                continue;
            };
            g.children.remove(&peer);
            g.admissions.remove(&peer);
            if g.parent == Some(peer) {
                g.parent = None;
                self.attach(ctx, group);
            }
            self.prune_if_useless(ctx, group);
        }
        let done = self.counts.peer_failed(peer);
        self.finished(ctx, done);
    }

    fn congested(&mut self, ctx: &mut Context<'_, P>, peer: P) {
        // A child reported `congestion_strikes` times in a row is dropped from its trees.
        let strikes = self.cfg.congestion_strikes;
        let groups: Vec<RingId> = self.map.keys().copied().collect();
        for group in groups {
            let Some(g) = self.map.get_mut(&group) else {
                continue;
            };
            let Some(child) = g.children.get_mut(&peer) else {
                continue;
            };
            child.1 += 1;
            if child.1 >= strikes {
                g.children.remove(&peer);
                g.admissions.remove(&peer);
                self.events
                    .push_back(GroupEvent::ChildDropped { group, peer });
                self.prune_if_useless(ctx, group);
            }
        }
    }

    fn leave(&mut self, ctx: &mut Context<'_, P>) {
        // Tell every parent.
        let parents: Vec<(RingId, P)> = self
            .map
            .iter()
            .filter_map(|(k, g)| g.parent.map(|p| (*k, p)))
            .collect();
        for (group, p) in parents {
            ctx.send(p, encode(&Wire::Prune { group }, &[]));
        }
        self.map.clear();
        self.keys.clear();
        self.timer = None;
        self.seen = None;
        for (group, seq) in self.counts.clear() {
            self.events.push_back(GroupEvent::Counted {
                group,
                seq,
                members: 0,
                complete: false,
            });
        }
    }

    fn poll_timeout(&self) -> Option<Time> {
        self.timer
            .into_iter()
            .chain(self.counts.next_deadline())
            .min()
    }

    fn handle_timeout(&mut self, ctx: &mut Context<'_, P>) {
        let now = ctx.now();
        let done = self.counts.expire(now);
        self.finished(ctx, done);
        for (group, seq) in self.counts.expire_sent(now) {
            self.events.push_back(GroupEvent::Counted {
                group,
                seq,
                members: 0,
                complete: false,
            });
        }
        if self.timer.is_none_or(|t| t > now) {
            return;
        }
        // The periodic refresh: re-attach along current routes, forget silent children.
        self.timer = None;
        let expiry = self.cfg.refresh * 3;
        let groups: Vec<RingId> = self.map.keys().copied().collect();
        for group in groups {
            if let Some(g) = self.map.get_mut(&group) {
                g.children.retain(|_, (t, _)| now.since(*t) < expiry);
                let children = &g.children;
                g.admissions.retain(|p, _| children.contains_key(p));
            }
            self.attach(ctx, group);
            self.prune_if_useless(ctx, group);
        }
        if let Some(seen) = &mut self.seen {
            seen.expire(now);
        }
        self.arm_timer(ctx);
    }

    fn uses_link(&self, peer: &P) -> bool {
        self.map
            .values()
            .any(|g| g.parent.as_ref() == Some(peer) || g.children.contains_key(peer))
    }
}

/// Group calls on a [`Node`] that runs [`Groups`].
pub trait GroupExt<P: PeerId> {
    /// See [`Groups::join`].
    fn join_group(&mut self, now: Time, group: RingId) -> Result<(), GroupError>;
    /// See [`Groups::leave_group`].
    fn leave_group(&mut self, now: Time, group: RingId);
    /// See [`Groups::send`].
    fn send_group(&mut self, now: Time, group: RingId, payload: &[u8])
        -> Result<u64, CommandError>;
    /// See [`Groups::join_closed`].
    fn join_closed_group(&mut self, now: Time, closed: ClosedGroup) -> Result<(), GroupError>;
    /// See [`Groups::send_closed`].
    fn send_closed_group(
        &mut self,
        now: Time,
        closed: &ClosedGroup,
        payload: &[u8],
    ) -> Result<u64, CommandError>;
    /// See [`Groups::stats`] (zeros without the service).
    fn group_stats(&self) -> GroupStats;
    /// See [`Groups::is_member`].
    fn is_group_member(&self, group: RingId) -> bool;
    /// See [`Groups::roles`].
    fn group_roles(&self) -> Vec<GroupRole<P>>;
}

impl<P: PeerId> GroupExt<P> for Node<P> {
    fn join_group(&mut self, now: Time, group: RingId) -> Result<(), GroupError> {
        self.command::<Groups<P>, _>(now, |g, ctx| g.join(ctx, group))
            .unwrap_or(Err(CommandError::NoService.into()))
    }

    fn leave_group(&mut self, now: Time, group: RingId) {
        self.command::<Groups<P>, _>(now, |g, ctx| g.leave_group(ctx, group));
    }

    fn send_group(
        &mut self,
        now: Time,
        group: RingId,
        payload: &[u8],
    ) -> Result<u64, CommandError> {
        self.command::<Groups<P>, _>(now, |g, ctx| g.send(ctx, group, payload))
            .unwrap_or(Err(CommandError::NoService))
    }

    fn join_closed_group(&mut self, now: Time, closed: ClosedGroup) -> Result<(), GroupError> {
        self.command::<Groups<P>, _>(now, |g, ctx| g.join_closed(ctx, closed))
            .unwrap_or(Err(CommandError::NoService.into()))
    }

    fn send_closed_group(
        &mut self,
        now: Time,
        closed: &ClosedGroup,
        payload: &[u8],
    ) -> Result<u64, CommandError> {
        self.command::<Groups<P>, _>(now, |g, ctx| g.send_closed(ctx, closed, payload))
            .unwrap_or(Err(CommandError::NoService))
    }

    fn group_stats(&self) -> GroupStats {
        self.service::<Groups<P>>()
            .map(Groups::stats)
            .unwrap_or_default()
    }

    fn is_group_member(&self, group: RingId) -> bool {
        self.service::<Groups<P>>()
            .is_some_and(|g| g.is_member(group))
    }

    fn group_roles(&self) -> Vec<GroupRole<P>> {
        self.service::<Groups<P>>()
            .map(Groups::roles)
            .unwrap_or_default()
    }
}

/// The service's header of a sealed group message, and its payload.
fn service_data<P: PeerId>(sealed: &Sealed<P>) -> Result<(Wire, Bytes), ()> {
    let Body::Service { data, .. } = &sealed.env.body else {
        return Err(());
    };
    decode::<Wire>(data).map_err(|_| ())
}

/// Makes `g` the state of the closed group `public`. Children that joined it as an open group
/// (someone squatting on the position before a member came) are forgotten.
fn close<P: PeerId>(g: &mut Group<P>, public: GroupPublic) {
    if g.closed.is_none() {
        g.closed = Some(public);
        let admitted = &g.admissions;
        g.children.retain(|p, _| admitted.contains_key(p));
    }
}
