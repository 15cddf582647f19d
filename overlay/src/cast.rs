//! Broadcast and range multicast, a service: covering a segment of the ring with a tree of
//! disjoint pieces.
//!
//! A node that must cover a segment (the whole ring for a broadcast, `[lo, responsible(hi)]`
//! for a range multicast) cuts it at the midpoints between the nodes it knows there
//! ([`Segment::split`]) and sends each neighbour its piece; the neighbour acknowledges at once
//! and covers its piece the same way. On a stable ring every node gets exactly one piece: N - 1
//! messages, and the tree is about as deep as a lookup is long.
//!
//! Failures: a piece not acknowledged in time, or sent to a peer found dead, is cut again among
//! the other nodes known in it and re-sent (only that piece); after `attempts` it is given up.
//! Receivers remember `(origin, seq)` so a node reached twice delivers once (it still covers
//! the second piece, which may hold nodes the first one missed). When the origin asks for a
//! reply, each node reports the number of first deliveries in its piece back up the tree once
//! its own pieces are done; the origin gets it in [`CastEvent::Done`]. The reply also makes the
//! cast sturdier: a piece whose count does not come in time (its receiver acknowledged, then
//! died before passing everything on) is covered again through other nodes. Without a reply a
//! cast costs N - 1 pieces and N - 1 acknowledgements; with one, N - 1 counts more.
//!
//! Every piece carries the origin's sealed envelope, checked by the core at every node; a range
//! multicast travels to its root as a routed message of this service.

use crate::cast_policy::{CastPolicy, CastRate, RateLimit};
use crate::config::ConfigError;
use crate::message::{Body, Class, Routed, Sealed};
use crate::node::{CommandError, Node};
use crate::peer::PeerId;
use crate::ring::RingId;
use crate::seen::Seen;
use crate::segment::Segment;
use crate::service::{decode, encode, Context, Emits, Incoming, Service, ServiceId};
use crate::time::Time;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

/// The service's name.
pub const NAME: &str = "p2ps/cast";

/// The service's id.
pub const CAST: ServiceId = ServiceId::named(NAME);

/// Settings of the cast service. Start from `CastConfig::default()` and change what you need
/// with the `with_*` setters or by assigning the public fields.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct CastConfig {
    /// A piece not acknowledged this long is re-sent through another neighbour (the wait
    /// doubles on each attempt). Default: 1 s.
    pub ack_timeout: Duration,
    /// Attempts per piece before it is given up. Default: 3.
    pub attempts: u32,
    /// With a reply requested, how long a node waits for a piece's count, per tree level the
    /// piece may still span (estimated from the node density); a piece whose count does not
    /// come is covered again through other nodes. Default: 2 s.
    pub done_timeout: Duration,
    /// Casts this node helps to cover at once; more are refused (not forwarded). Default: 4096.
    pub max_casts: usize,
    /// Deliveries kept for the application before new ones are dropped. Default: 4096.
    pub max_queued: usize,
    /// How many casts each origin may start, as the default policy ([`RateLimit`]) counts
    /// them at every node. Default: bursts of 256, then 64 a second.
    pub rate: CastRate,
}

impl CastConfig {
    /// Checks that every value is usable.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.ack_timeout.is_zero() {
            return Err(ConfigError::Zero("cast ack_timeout"));
        }
        if self.done_timeout.is_zero() {
            return Err(ConfigError::Zero("cast done_timeout"));
        }
        if self.attempts == 0 || self.max_casts == 0 {
            return Err(ConfigError::Zero("cast attempts, max_casts"));
        }
        Ok(())
    }
}

impl Default for CastConfig {
    fn default() -> Self {
        CastConfig {
            ack_timeout: Duration::from_secs(1),
            attempts: 3,
            done_timeout: Duration::from_secs(2),
            max_casts: 4096,
            max_queued: 4096,
            rate: CastRate::default(),
        }
    }
}

impl CastConfig {
    /// Sets [`ack_timeout`](Self::ack_timeout).
    #[must_use]
    pub fn with_ack_timeout(mut self, ack_timeout: Duration) -> Self {
        self.ack_timeout = ack_timeout;
        self
    }

    /// Sets [`attempts`](Self::attempts).
    #[must_use]
    pub fn with_attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts;
        self
    }

    /// Sets [`done_timeout`](Self::done_timeout).
    #[must_use]
    pub fn with_done_timeout(mut self, done_timeout: Duration) -> Self {
        self.done_timeout = done_timeout;
        self
    }

    /// Sets [`max_casts`](Self::max_casts).
    #[must_use]
    pub fn with_max_casts(mut self, max_casts: usize) -> Self {
        self.max_casts = max_casts;
        self
    }

    /// Sets [`max_queued`](Self::max_queued).
    #[must_use]
    pub fn with_max_queued(mut self, max_queued: usize) -> Self {
        self.max_queued = max_queued;
        self
    }

    /// Sets [`rate`](Self::rate).
    #[must_use]
    pub fn with_rate(mut self, rate: CastRate) -> Self {
        self.rate = rate;
        self
    }
}

/// How a delivered cast was addressed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum CastKind {
    /// To every node.
    Broadcast,
    /// To the nodes responsible for the keys in `[lo, hi]`.
    Range {
        /// Lower end of the key range.
        lo: RingId,
        /// Upper end of the key range.
        hi: RingId,
    },
}

/// What the cast service tells its application.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum CastEvent<P> {
    /// A broadcast or range multicast reached this node.
    Delivered {
        /// The node that started it (its signature checked).
        origin: P,
        /// How it was addressed.
        kind: CastKind,
        /// Tree depth at which it arrived.
        hops: u16,
        /// The payload.
        payload: Bytes,
    },
    /// A broadcast or range multicast this node started is over.
    Done {
        /// The message number [`CastExt::broadcast`] or [`CastExt::multicast_range`] returned.
        seq: u64,
        /// With a reply requested: how many nodes delivered it (each counted once; a node whose
        /// report was lost to a failure is missing from the count).
        delivered: Option<u64>,
        /// Whether every piece was acknowledged (no piece given up after every attempt).
        complete: bool,
    },
}

/// Counters of the cast service.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct CastStats {
    /// Casts delivered to this node's application.
    pub delivered: u64,
    /// Pieces and casts refused (too many at once, too deep, malformed) or deliveries dropped
    /// because the application did not take them.
    pub dropped: u64,
    /// Casts the policy refused (their origin started more than it may, see
    /// [`crate::cast_policy`]): neither delivered nor passed on here.
    pub refused: u64,
}

/// What the cast service puts on the wire: one-hop messages (piece, acknowledgement, count)
/// and the body the origin signs, each encoded with [`encode`] (the signed ones followed by
/// the payload). Public so that tools and tests can speak the protocol.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(bound = "")]
pub enum Wire<P: PeerId> {
    /// A piece to cover; the origin's sealed envelope travels with it.
    Piece {
        /// The sender's number for this piece, echoed in acknowledgements.
        piece: u64,
        /// The nodes to reach: every node whose position lies here.
        seg: Segment,
        /// Tree depth of the receiver (1 for the origin's direct children).
        depth: u16,
    },
    /// "I have your piece `piece` of cast `(origin, seq)` and cover it now."
    Ack {
        /// The cast's origin.
        origin: P,
        /// The origin's message number.
        seq: u64,
        /// The sender's piece number.
        piece: u64,
    },
    /// "Piece `piece` is covered" (0 from the root of a range multicast to its origin).
    Done {
        /// The cast's origin.
        origin: P,
        /// The origin's message number.
        seq: u64,
        /// The piece number at the receiver.
        piece: u64,
        /// Nodes in the piece that delivered the payload for the first time.
        delivered: u64,
    },
    /// Signed by the origin (followed by the payload): a broadcast.
    Broadcast {
        /// Whether the origin wants a count of deliveries gathered back up the tree.
        reply: bool,
    },
    /// Signed by the origin (followed by the payload): a range multicast to the nodes
    /// responsible for `[lo, key]`, routed to the node responsible for the key.
    Range {
        /// Lower end of the key range.
        lo: RingId,
        /// Whether the origin wants a count of deliveries.
        reply: bool,
    },
}

/// The message names, by the first byte of the encoding (the variant).
const KINDS: &[&str] = &["cast", "cast-ack", "cast-done", "broadcast", "range"];

/// A cast as a node holds it: the origin's envelope and what it says.
#[derive(Clone, Debug)]
struct Cast<P: PeerId> {
    sealed: Sealed<P>,
    reply: bool,
    /// `Some((lo, hi))` for a range multicast.
    keys: Option<(RingId, RingId)>,
    payload: Bytes,
    seg: Segment,
    depth: u16,
}

impl<P: PeerId> Cast<P> {
    /// Reads a cast's signed body; `None` if it is not one.
    fn read(sealed: Sealed<P>, seg: Segment, depth: u16) -> Option<Self> {
        let Body::Service { data, .. } = &sealed.env.body else {
            return None;
        };
        let (head, payload) = decode::<Wire<P>>(data).ok()?;
        let (reply, keys) = match head {
            Wire::Broadcast { reply } => (reply, None),
            Wire::Range { lo, reply } => (reply, Some((lo, sealed.env.key))),
            _ => return None,
        };
        Some(Cast {
            sealed,
            reply,
            keys,
            payload,
            seg,
            depth,
        })
    }

    fn origin(&self) -> P {
        self.sealed.origin()
    }

    fn seq(&self) -> u64 {
        self.sealed.env.seq
    }
}

/// Where a node reports when the segment it covers is done.
#[derive(Clone, Debug)]
enum Parent<P> {
    /// This node started the broadcast.
    Origin,
    /// This node is responsible for the top of a range multicast.
    RangeRoot,
    /// A piece from `from`, numbered `piece` there.
    Piece { from: P, piece: u64 },
}

/// A segment this node is covering: what it sent and what came back.
#[derive(Debug)]
struct Cover<P: PeerId> {
    parent: Parent<P>,
    cast: Cast<P>,
    outstanding: usize,
    delivered: u64,
    given_up: u32,
}

/// A piece sent to a neighbour and not yet acknowledged (or, with a reply, not yet done).
#[derive(Debug)]
struct Piece<P> {
    cover: u64,
    to: P,
    seg: Segment,
    acked: bool,
    attempts: u32,
    deadline: Time,
    /// Peers that failed this piece before; it is not sent to them again.
    avoid: Vec<P>,
}

/// The broadcast and range multicast service.
#[derive(Debug)]
pub struct Casts<P: PeerId> {
    cfg: CastConfig,
    covers: BTreeMap<u64, Cover<P>>,
    pieces: BTreeMap<u64, Piece<P>>,
    deadlines: BTreeSet<(Time, u64)>,
    /// Range multicasts this node started, waiting for the root's report: seq -> deadline.
    ranges: BTreeMap<u64, (Time, bool)>,
    next_id: u64,
    /// Casts seen lately, `(origin, seq)`.
    seen: Option<Seen<(P, u64)>>,
    /// Of those, the ones the policy refused: later pieces of them are dropped too.
    refused: Option<Seen<(P, u64)>>,
    policy: Policy<P>,
    events: VecDeque<CastEvent<P>>,
    stats: CastStats,
}

/// The cast policy, boxed (an application may set its own).
struct Policy<P>(Box<dyn CastPolicy<P>>);

impl<P> std::fmt::Debug for Policy<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CastPolicy")
    }
}

impl<P: PeerId> Casts<P> {
    /// The service with settings `cfg`.
    pub fn new(cfg: CastConfig) -> Self {
        Casts {
            covers: BTreeMap::new(),
            pieces: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            ranges: BTreeMap::new(),
            next_id: 1,
            seen: None,
            refused: None,
            policy: Policy(Box::new(RateLimit::new(cfg.rate))),
            events: VecDeque::new(),
            stats: CastStats::default(),
            cfg,
        }
    }

    /// Sets the policy deciding which casts go on (see [`Casts::with_policy`]).
    pub fn set_policy(&mut self, policy: impl CastPolicy<P>) {
        self.policy = Policy(Box::new(policy));
    }

    /// The service with `policy` deciding which casts go on, instead of the rate limit of
    /// its settings (see [`crate::cast_policy`]). Every node of a network should run the same
    /// policy: a cast one node refuses does not reach the nodes below it in the tree.
    #[must_use]
    pub fn with_policy(mut self, policy: impl CastPolicy<P>) -> Self {
        self.policy = Policy(Box::new(policy));
        self
    }

    /// Casts this node is helping to cover now.
    pub fn active(&self) -> usize {
        self.covers.len()
    }

    /// Counters.
    pub fn stats(&self) -> CastStats {
        self.stats
    }

    /// Sends `payload` to every other node of the network, exactly once each. With `reply`,
    /// every node's delivery is counted back up the tree (and pieces whose count never comes
    /// are covered again, see the module documentation). [`CastEvent::Done`] follows with the
    /// returned message number.
    pub fn broadcast(
        &mut self,
        ctx: &mut Context<'_, P>,
        payload: &[u8],
        reply: bool,
    ) -> Result<u64, CommandError> {
        self.may_start(ctx, CastKind::Broadcast)?;
        let me = ctx.me().pos;
        let sealed = ctx.seal(me, None, encode(&Wire::<P>::Broadcast { reply }, payload));
        let seq = sealed.env.seq;
        self.seen(ctx).insert((ctx.me().id, seq), ctx.now());
        let cast = Cast {
            sealed,
            reply,
            keys: None,
            payload: Bytes::new(),
            seg: Segment::full(me),
            depth: 0,
        };
        self.start_cover(ctx, Parent::Origin, cast, 0);
        Ok(seq)
    }

    /// Sends `payload` to every node responsible for a key in `[lo, hi]` (clockwise): the
    /// message is routed to the node responsible for `hi`, which covers the nodes from `lo` to
    /// itself. [`CastEvent::Done`] follows with the returned message number.
    pub fn multicast_range(
        &mut self,
        ctx: &mut Context<'_, P>,
        lo: RingId,
        hi: RingId,
        payload: &[u8],
        reply: bool,
    ) -> Result<u64, CommandError> {
        self.may_start(ctx, CastKind::Range { lo, hi })?;
        let sealed = ctx.seal(hi, None, encode(&Wire::<P>::Range { lo, reply }, payload));
        let seq = sealed.env.seq;
        self.seen(ctx).insert((ctx.me().id, seq), ctx.now());
        let cfg = ctx.config();
        let deadline = ctx.now()
            + self.done_wait(ctx, Segment::full(ctx.me().pos))
            + cfg.lookup_timeout * cfg.lookup_attempts;
        self.ranges.insert(seq, (deadline, reply));
        ctx.route(sealed);
        Ok(seq)
    }

    /// Whether a cast of `kind` may start now.
    fn may_start(&mut self, ctx: &Context<'_, P>, kind: CastKind) -> Result<(), CommandError> {
        if !ctx.is_joined() {
            return Err(CommandError::NotJoined);
        }
        if self.covers.len() >= self.cfg.max_casts {
            return Err(CommandError::TooManyPending);
        }
        if !self.policy.0.admit(ctx.me().id, &kind, ctx.now()) {
            self.stats.refused += 1;
            return Err(CommandError::RateLimited);
        }
        Ok(())
    }

    /// Whether `cast`, seen here for the first time (`first`) or again, may be delivered and
    /// passed on: the policy is asked once per cast, and a refusal holds for its later pieces.
    fn admitted(&mut self, ctx: &Context<'_, P>, cast: &Cast<P>, first: bool) -> bool {
        let key = (cast.origin(), cast.seq());
        let cfg = ctx.config();
        let refused = self
            .refused
            .get_or_insert_with(|| Seen::new(cfg.seen_ttl, cfg.max_seen));
        if !first {
            return !refused.contains(&key);
        }
        if key.0 == ctx.me().id {
            return true;
        }
        let kind = match cast.keys {
            Some((lo, hi)) => CastKind::Range { lo, hi },
            None => CastKind::Broadcast,
        };
        if self.policy.0.admit(key.0, &kind, ctx.now()) {
            return true;
        }
        refused.insert(key, ctx.now());
        self.stats.refused += 1;
        false
    }

    /// The memory of casts seen, made on first use with the node's settings.
    fn seen(&mut self, ctx: &Context<'_, P>) -> &mut Seen<(P, u64)> {
        let cfg = ctx.config();
        self.seen
            .get_or_insert_with(|| Seen::new(cfg.seen_ttl, cfg.max_seen))
    }

    /// A routed range multicast reached the node responsible for its top key.
    fn arrive_range(&mut self, ctx: &mut Context<'_, P>, r: Routed<P>) {
        let Some(cast) = Cast::read(r.sealed, Segment::full(ctx.me().pos), r.hops) else {
            self.stats.dropped += 1;
            return;
        };
        let Some((lo, hi)) = cast.keys else {
            // Broadcasts are never routed.
            self.stats.dropped += 1;
            return;
        };
        if self.covers.len() >= self.cfg.max_casts {
            // As many casts in progress as allowed: this one is refused (its origin's wait
            // ends incomplete).
            self.stats.dropped += 1;
            return;
        }
        // The nodes responsible for the keys in `[lo, hi]`: those in it, and this node (the
        // first at or after `hi`). With no node after `hi` before `lo`, this node lies inside
        // the range (it wrapped round) and the range itself is the segment.
        let range = Segment::between(lo, hi);
        let me = ctx.me().pos;
        let seg = if range.contains(me) {
            range
        } else {
            Segment::between(lo, me)
        };
        let cast = Cast { seg, ..cast };
        let (origin, seq) = (cast.origin(), cast.seq());
        let first = self.seen(ctx).insert((origin, seq), ctx.now());
        if !self.admitted(ctx, &cast, first) {
            // Its origin's wait ends incomplete.
            return;
        }
        let mut delivered = 0;
        if first && origin != ctx.me().id {
            delivered = 1;
            self.deliver(&cast);
        }
        self.start_cover(ctx, Parent::RangeRoot, cast, delivered);
    }

    /// A piece from `from`.
    fn on_piece(
        &mut self,
        ctx: &mut Context<'_, P>,
        from: P,
        sealed: Sealed<P>,
        (piece, seg, depth): (u64, Segment, u16),
    ) {
        let Some(cast) = Cast::read(sealed, seg, depth) else {
            self.stats.dropped += 1;
            return;
        };
        let (origin, seq) = (cast.origin(), cast.seq());
        ctx.send(from, encode(&Wire::Ack { origin, seq, piece }, &[]));
        let first = self.seen(ctx).insert((origin, seq), ctx.now());
        if !self.admitted(ctx, &cast, first) {
            // Acknowledged, so that it is not sent again elsewhere; counted as covered (by
            // nobody) for a sender that waits for the count.
            if cast.reply {
                report_done(ctx, &Parent::Piece { from, piece }, &cast, 0);
            }
            return;
        }
        let mut delivered = 0;
        if first && origin != ctx.me().id && cast.seg.contains(ctx.me().pos) {
            delivered = 1;
            self.deliver(&cast);
        }
        let parent = Parent::Piece { from, piece };
        if self.covers.len() >= self.cfg.max_casts || cast.depth >= ctx.config().max_hops {
            self.stats.dropped += 1;
            if cast.reply {
                report_done(ctx, &parent, &cast, delivered);
            }
            return;
        }
        self.start_cover(ctx, parent, cast, delivered);
    }

    fn deliver(&mut self, cast: &Cast<P>) {
        if self.events.len() >= self.cfg.max_queued {
            self.stats.dropped += 1;
            return;
        }
        self.stats.delivered += 1;
        let kind = match cast.keys {
            Some((lo, hi)) => CastKind::Range { lo, hi },
            None => CastKind::Broadcast,
        };
        self.events.push_back(CastEvent::Delivered {
            origin: cast.origin(),
            kind,
            hops: cast.depth,
            payload: cast.payload.clone(),
        });
    }

    /// Starts covering `cast.seg`: one piece per known node in it, sent now.
    fn start_cover(
        &mut self,
        ctx: &mut Context<'_, P>,
        parent: Parent<P>,
        cast: Cast<P>,
        delivered: u64,
    ) {
        let id = self.next_id;
        self.next_id += 1;
        let seg = cast.seg;
        self.covers.insert(
            id,
            Cover {
                parent,
                cast,
                outstanding: 0,
                delivered,
                given_up: 0,
            },
        );
        self.send_pieces(ctx, id, seg, 0, Vec::new());
        if self.covers.get(&id).is_some_and(|c| c.outstanding == 0) {
            self.finish_cover(ctx, id);
        }
    }

    /// Cuts `seg` among the nodes known in it (and this node, whose own piece needs no
    /// message) and sends every other piece. A segment that holds no known node goes whole to
    /// the known node nearest to it, which knows that part of the ring better.
    fn send_pieces(
        &mut self,
        ctx: &mut Context<'_, P>,
        cover: u64,
        seg: Segment,
        attempts: u32,
        avoid: Vec<P>,
    ) {
        for (to, piece) in ctx.cut(seg, &avoid) {
            self.send_piece(ctx, cover, to, piece, attempts, avoid.clone());
        }
    }

    fn send_piece(
        &mut self,
        ctx: &mut Context<'_, P>,
        cover: u64,
        to: P,
        seg: Segment,
        attempts: u32,
        avoid: Vec<P>,
    ) {
        let Some(c) = self.covers.get_mut(&cover) else {
            return;
        };
        let id = self.next_id;
        self.next_id += 1;
        c.outstanding += 1;
        let depth = c.cast.depth + 1;
        let sealed = c.cast.sealed.clone();
        let wait = self.cfg.ack_timeout * 2u32.saturating_pow(attempts.min(8));
        let deadline = ctx.now() + wait;
        self.pieces.insert(
            id,
            Piece {
                cover,
                to,
                seg,
                acked: false,
                attempts,
                deadline,
                avoid,
            },
        );
        self.deadlines.insert((deadline, id));
        let head = Wire::<P>::Piece {
            piece: id,
            seg,
            depth,
        };
        ctx.send_sealed(to, encode(&head, &[]), sealed);
    }

    fn on_ack(&mut self, ctx: &mut Context<'_, P>, from: P, piece: u64) {
        let Some(p) = self.pieces.get(&piece) else {
            return;
        };
        if p.to != from || p.acked {
            return;
        }
        let wants_reply = self.covers.get(&p.cover).is_some_and(|c| c.cast.reply);
        if wants_reply {
            let (seg, old) = (p.seg, p.deadline);
            let deadline = ctx.now() + self.done_wait(ctx, seg);
            if let Some(p) = self.pieces.get_mut(&piece) {
                p.acked = true;
                p.deadline = deadline;
            }
            self.deadlines.remove(&(old, piece));
            self.deadlines.insert((deadline, piece));
        } else {
            self.piece_finished(ctx, piece, 0, false);
        }
    }

    fn on_done(
        &mut self,
        ctx: &mut Context<'_, P>,
        from: P,
        (origin, seq, piece, delivered): (P, u64, u64, u64),
    ) {
        if piece == 0 {
            // The root of a range multicast this node started reports.
            if origin == ctx.me().id {
                if let Some((_, reply)) = self.ranges.remove(&seq) {
                    self.events.push_back(CastEvent::Done {
                        seq,
                        delivered: reply.then_some(delivered),
                        complete: true,
                    });
                }
            }
            return;
        }
        if self.pieces.get(&piece).is_some_and(|p| p.to == from) {
            self.piece_finished(ctx, piece, delivered, false);
        }
    }

    /// Piece `piece` is over (acknowledged, done, or given up): account for it.
    fn piece_finished(
        &mut self,
        ctx: &mut Context<'_, P>,
        piece: u64,
        delivered: u64,
        given_up: bool,
    ) {
        let Some(p) = self.pieces.remove(&piece) else {
            return;
        };
        self.deadlines.remove(&(p.deadline, piece));
        let Some(c) = self.covers.get_mut(&p.cover) else {
            return;
        };
        c.outstanding = c.outstanding.saturating_sub(1);
        c.delivered += delivered;
        if given_up {
            c.given_up += 1;
        }
        if c.outstanding == 0 {
            self.finish_cover(ctx, p.cover);
        }
    }

    fn finish_cover(&mut self, ctx: &mut Context<'_, P>, cover: u64) {
        let Some(c) = self.covers.remove(&cover) else {
            return;
        };
        let done = CastEvent::Done {
            seq: c.cast.seq(),
            delivered: c.cast.reply.then_some(c.delivered),
            complete: c.given_up == 0,
        };
        match c.parent {
            Parent::Origin => self.events.push_back(done),
            Parent::RangeRoot => {
                let origin = c.cast.origin();
                if origin == ctx.me().id {
                    self.ranges.remove(&c.cast.seq());
                    self.events.push_back(done);
                } else {
                    let head = Wire::Done {
                        origin,
                        seq: c.cast.seq(),
                        piece: 0,
                        delivered: c.delivered,
                    };
                    ctx.send(origin, encode(&head, &[]));
                }
            }
            Parent::Piece { .. } => {
                if c.cast.reply {
                    report_done(ctx, &c.parent, &c.cast, c.delivered);
                }
            }
        }
    }

    /// How long to wait for the count of a piece covering `seg`: one `done_timeout` per tree
    /// level the piece may still need, from the node density around this node.
    fn done_wait(&self, ctx: &Context<'_, P>, seg: Segment) -> Duration {
        let succs = ctx.table().successors();
        let nodes = match succs.last() {
            Some(last) => {
                let gap = (ctx.me().pos.cw_to(last.pos) / succs.len() as u128).max(1);
                seg.span / gap + 1
            }
            None => 1,
        };
        let levels = 128 - nodes.leading_zeros();
        self.cfg.done_timeout * (2 + levels.min(40))
    }

    /// Re-sends piece `id` through other nodes (its receiver failed it), or gives it up.
    fn resend_piece(&mut self, ctx: &mut Context<'_, P>, id: u64) {
        let Some(p) = self.pieces.remove(&id) else {
            return;
        };
        self.deadlines.remove(&(p.deadline, id));
        let attempts = p.attempts + 1;
        let Some(c) = self.covers.get_mut(&p.cover) else {
            return;
        };
        c.outstanding = c.outstanding.saturating_sub(1);
        if attempts >= self.cfg.attempts {
            c.given_up += 1;
        } else {
            let mut avoid = p.avoid;
            avoid.push(p.to);
            self.send_pieces(ctx, p.cover, p.seg, attempts, avoid);
        }
        if self
            .covers
            .get(&p.cover)
            .is_some_and(|c| c.outstanding == 0)
        {
            self.finish_cover(ctx, p.cover);
        }
    }
}

/// Reports a piece's count to the node it came from.
fn report_done<P: PeerId>(
    ctx: &mut Context<'_, P>,
    parent: &Parent<P>,
    cast: &Cast<P>,
    delivered: u64,
) {
    if let Parent::Piece { from, piece } = parent {
        let head = Wire::Done {
            origin: cast.origin(),
            seq: cast.seq(),
            piece: *piece,
            delivered,
        };
        ctx.send(*from, encode(&head, &[]));
    }
}

impl<P: PeerId> Emits for Casts<P> {
    type Event = CastEvent<P>;

    fn poll_event(&mut self) -> Option<CastEvent<P>> {
        self.events.pop_front()
    }
}

impl<P: PeerId> Service<P> for Casts<P> {
    fn name(&self) -> &'static str {
        NAME
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("delivered", self.stats.delivered),
            ("dropped", self.stats.dropped),
            ("refused", self.stats.refused),
            ("in_progress", self.covers.len() as u64),
        ]
    }

    fn class(&self) -> Class {
        Class::Tree
    }

    fn kinds(&self) -> &'static [&'static str] {
        KINDS
    }

    fn deliver(&mut self, ctx: &mut Context<'_, P>, msg: Routed<P>) {
        self.arrive_range(ctx, msg);
    }

    fn receive(&mut self, ctx: &mut Context<'_, P>, msg: Incoming<P>) {
        let Ok((head, _)) = decode::<Wire<P>>(&msg.data) else {
            self.stats.dropped += 1;
            return;
        };
        match (head, msg.sealed) {
            (Wire::Piece { piece, seg, depth }, Some(sealed)) => {
                self.on_piece(ctx, msg.from, sealed, (piece, seg, depth))
            }
            (Wire::Ack { piece, .. }, None) => self.on_ack(ctx, msg.from, piece),
            (
                Wire::Done {
                    origin,
                    seq,
                    piece,
                    delivered,
                },
                None,
            ) => self.on_done(ctx, msg.from, (origin, seq, piece, delivered)),
            _ => self.stats.dropped += 1,
        }
    }

    fn peer_failed(&mut self, ctx: &mut Context<'_, P>, peer: P) {
        // Every piece the dead peer held is re-sent through others at once.
        let held: Vec<u64> = self
            .pieces
            .iter()
            .filter(|(_, p)| p.to == peer)
            .map(|(id, _)| *id)
            .collect();
        for id in held {
            self.resend_piece(ctx, id);
        }
    }

    fn leave(&mut self, _ctx: &mut Context<'_, P>) {
        // Casts this node started end incomplete; the rest is dropped.
        let mut ended: Vec<u64> = self
            .covers
            .values()
            .filter(|c| matches!(c.parent, Parent::Origin))
            .map(|c| c.cast.seq())
            .collect();
        ended.extend(self.ranges.keys().copied());
        for seq in ended {
            self.events.push_back(CastEvent::Done {
                seq,
                delivered: None,
                complete: false,
            });
        }
        self.covers.clear();
        self.pieces.clear();
        self.deadlines.clear();
        self.ranges.clear();
        self.seen = None;
    }

    fn poll_timeout(&self) -> Option<Time> {
        let a = self.deadlines.first().map(|(t, _)| *t);
        let b = self.ranges.values().map(|(t, _)| *t).min();
        a.into_iter().chain(b).min()
    }

    fn handle_timeout(&mut self, ctx: &mut Context<'_, P>) {
        let now = ctx.now();
        while let Some(&(t, id)) = self.deadlines.first() {
            if t > now {
                break;
            }
            self.deadlines.pop_first();
            if self.pieces.contains_key(&id) {
                // Not acknowledged, or acknowledged but its count never came (the receiver may
                // have died after passing on part of it): cover it again through others.
                self.resend_piece(ctx, id);
            }
        }
        let expired: Vec<u64> = self
            .ranges
            .iter()
            .filter(|(_, (t, _))| *t <= now)
            .map(|(s, _)| *s)
            .collect();
        for seq in expired {
            // The root never reported.
            self.ranges.remove(&seq);
            self.events.push_back(CastEvent::Done {
                seq,
                delivered: None,
                complete: false,
            });
        }
        if let Some(seen) = &mut self.seen {
            seen.expire(now);
        }
    }
}

/// Broadcast and range multicast as calls on a [`Node`] that runs [`Casts`].
pub trait CastExt<P: PeerId> {
    /// See [`Casts::broadcast`].
    fn broadcast(&mut self, now: Time, payload: &[u8], reply: bool) -> Result<u64, CommandError>;

    /// See [`Casts::multicast_range`].
    fn multicast_range(
        &mut self,
        now: Time,
        lo: RingId,
        hi: RingId,
        payload: &[u8],
        reply: bool,
    ) -> Result<u64, CommandError>;

    /// Casts this node is helping to cover now (0 without the service).
    fn casts_in_progress(&self) -> usize;
}

impl<P: PeerId> CastExt<P> for Node<P> {
    fn broadcast(&mut self, now: Time, payload: &[u8], reply: bool) -> Result<u64, CommandError> {
        self.command::<Casts<P>, _>(now, |c, ctx| c.broadcast(ctx, payload, reply))
            .unwrap_or(Err(CommandError::NoService))
    }

    fn multicast_range(
        &mut self,
        now: Time,
        lo: RingId,
        hi: RingId,
        payload: &[u8],
        reply: bool,
    ) -> Result<u64, CommandError> {
        self.command::<Casts<P>, _>(now, |c, ctx| c.multicast_range(ctx, lo, hi, payload, reply))
            .unwrap_or(Err(CommandError::NoService))
    }

    fn casts_in_progress(&self) -> usize {
        self.service::<Casts<P>>().map_or(0, Casts::active)
    }
}
