//! Broadcast and range multicast: covering a segment of the ring with a tree of disjoint pieces.
//!
//! A node that must cover a segment (the whole ring for a broadcast, `[lo, responsible(hi)]`
//! for a range multicast) cuts it at the midpoints between the nodes it knows there
//! ([`Segment::split`]) and sends each neighbour its piece; the neighbour acknowledges at once
//! and covers its piece the same way. On a stable ring every node gets exactly one piece: N - 1
//! messages, and the tree is about as deep as a lookup is long.
//!
//! Failures: a piece not acknowledged in time, or sent to a peer found dead, is cut again among
//! the other nodes known in it and re-sent (only that piece); after `cast_attempts` it is given
//! up. Receivers remember `(origin, seq)` so a node reached twice delivers once (it still covers
//! the second piece, which may hold nodes the first one missed). When the origin asks for a
//! reply, each node reports the number of first deliveries in its piece back up the tree once
//! its own pieces are done; the origin gets it in [`Event::CastDone`]. The reply also makes the
//! cast sturdier: a piece whose count does not come in time (its receiver acknowledged, then
//! died before passing everything on) is covered again through other nodes. Without a reply a
//! cast costs N - 1 pieces and N - 1 acknowledgements; with one, N - 1 counts more.

use super::{Node, Output};
use crate::message::{Body, Cast, Message, Sealed};
use crate::node::{CommandError, Delivery, Event, Via};
use crate::peer::{Peer, PeerId};
use crate::ring::RingId;
use crate::segment::Segment;
use crate::time::Time;
use std::collections::{BTreeMap, BTreeSet};

/// Where a node reports when the segment it covers is done.
#[derive(Clone, Debug)]
enum Parent<P> {
    /// This node started the broadcast.
    Origin,
    /// This node is responsible for the top of a range multicast started by `origin`.
    RangeRoot,
    /// A piece from `from`, numbered `piece` there.
    Piece { from: P, piece: u64 },
}

/// A segment this node is covering: what it sent and what came back.
#[derive(Debug)]
struct Cover<P: PeerId> {
    parent: Parent<P>,
    /// The message as received (its `seg` is what this node covers).
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

/// The cast state of a node.
#[derive(Debug)]
pub(super) struct Casts<P: PeerId> {
    covers: BTreeMap<u64, Cover<P>>,
    pieces: BTreeMap<u64, Piece<P>>,
    deadlines: BTreeSet<(Time, u64)>,
    /// Range multicasts this node started, waiting for the root's report: seq -> deadline.
    ranges: BTreeMap<u64, (Time, bool)>,
    next_id: u64,
}

impl<P: PeerId> Default for Casts<P> {
    fn default() -> Self {
        Casts {
            covers: BTreeMap::new(),
            pieces: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            ranges: BTreeMap::new(),
            next_id: 1,
        }
    }
}

impl<P: PeerId> Casts<P> {
    /// The earliest deadline.
    pub(super) fn next_deadline(&self) -> Option<Time> {
        let a = self.deadlines.first().map(|(t, _)| *t);
        let b = self.ranges.values().map(|(t, _)| *t).min();
        a.into_iter().chain(b).min()
    }

    /// Casts this node is covering now.
    pub(super) fn active(&self) -> usize {
        self.covers.len()
    }
}

impl<P: PeerId> Node<P> {
    /// Sends `payload` to every other node of the network, exactly once each. With `reply`,
    /// every node's delivery is counted back up the tree (and pieces whose count never comes
    /// are covered again, see the module documentation). [`Event::CastDone`] follows with the
    /// returned message number.
    pub fn broadcast(
        &mut self,
        now: Time,
        payload: Vec<u8>,
        reply: bool,
    ) -> Result<u64, CommandError> {
        let seq = self.begin_cast(now)?;
        let sealed = self.seal(seq, self.me.pos, Body::Broadcast { reply, payload });
        let cast = Cast {
            piece: 0,
            seg: Segment::full(self.me.pos),
            depth: 0,
            sealed,
        };
        self.start_cover(now, Parent::Origin, cast, 0);
        Ok(seq)
    }

    /// Sends `payload` to every node responsible for a key in `[lo, hi]` (clockwise): the
    /// message is routed to the node responsible for `hi`, which covers the nodes from `lo` to
    /// itself. [`Event::CastDone`] follows with the returned message number.
    pub fn multicast_range(
        &mut self,
        now: Time,
        lo: RingId,
        hi: RingId,
        payload: Vec<u8>,
        reply: bool,
    ) -> Result<u64, CommandError> {
        let seq = self.begin_cast(now)?;
        let deadline = now
            + self.done_wait(Segment::full(self.me.pos))
            + self.cfg.lookup_timeout * self.cfg.lookup_attempts;
        self.casts.ranges.insert(seq, (deadline, reply));
        let sealed = self.seal(seq, hi, Body::Range { lo, reply, payload });
        self.route_sealed(sealed);
        Ok(seq)
    }

    /// Checks that a cast may start now and gives it its message number.
    fn begin_cast(&mut self, now: Time) -> Result<u64, CommandError> {
        self.now = self.now.max(now);
        if self.state != super::State::Joined {
            return Err(CommandError::NotJoined);
        }
        if self.casts.covers.len() >= self.cfg.max_casts {
            return Err(CommandError::TooManyPending);
        }
        let seq = self.nonces.next();
        self.seen.insert((self.me.id, seq), now);
        Ok(seq)
    }

    /// A routed range multicast reached the node responsible for its top key.
    pub(super) fn arrive_range(&mut self, now: Time, sealed: Sealed<P>, hops: u16) {
        let Body::Range { lo, .. } = sealed.env.body else {
            return;
        };
        let (origin, seq, hi) = (sealed.origin(), sealed.env.seq, sealed.env.key);
        if self.casts.covers.len() >= self.cfg.max_casts {
            // As many casts in progress as allowed: this one is refused (its origin's wait
            // ends incomplete).
            self.stats.dropped += 1;
            return;
        }
        // The nodes responsible for the keys in `[lo, hi]`: those in it, and this node (the
        // first at or after `hi`). With no node after `hi` before `lo`, this node lies inside
        // the range (it wrapped round) and the range itself is the segment.
        let range = Segment::between(lo, hi);
        let seg = if range.contains(self.me.pos) {
            range
        } else {
            Segment::between(lo, self.me.pos)
        };
        let cast = Cast {
            piece: 0,
            seg,
            depth: hops,
            sealed,
        };
        let first = self.seen.insert((origin, seq), now);
        let mut delivered = 0;
        if first && origin != self.me.id {
            delivered = 1;
            self.deliver_cast(&cast, lo, Via::Range { lo, hi });
        }
        self.start_cover(now, Parent::RangeRoot, cast, delivered);
    }

    pub(super) fn on_cast(&mut self, now: Time, from: P, cast: Cast<P>) {
        let (origin, seq) = (cast.origin(), cast.seq());
        self.push_send(
            from,
            Message::CastAck {
                origin,
                seq,
                piece: cast.piece,
            },
        );
        let first = self.seen.insert((origin, seq), now);
        let mut delivered = 0;
        if first && origin != self.me.id && cast.seg.contains(self.me.pos) {
            delivered = 1;
            let (key, via) = match cast.keys() {
                Some((lo, hi)) => (lo, Via::Range { lo, hi }),
                None => (self.me.pos, Via::Broadcast),
            };
            self.deliver_cast(&cast, key, via);
        }
        let parent = Parent::Piece {
            from,
            piece: cast.piece,
        };
        if self.casts.covers.len() >= self.cfg.max_casts || cast.depth >= self.cfg.max_hops {
            self.stats.dropped += 1;
            if cast.reply() {
                self.report_done(&parent, &cast, delivered);
            }
            return;
        }
        self.start_cover(now, parent, cast, delivered);
    }

    fn deliver_cast(&mut self, cast: &Cast<P>, key: RingId, via: Via) {
        self.stats.delivered += 1;
        self.out.push_back(Output::Deliver(Delivery {
            origin: cast.origin(),
            key,
            hops: cast.depth,
            via,
            payload: cast.payload().to_vec(),
        }));
    }
    /// Starts covering `cast.seg`: one piece per known node in it, sent now.
    fn start_cover(&mut self, now: Time, parent: Parent<P>, cast: Cast<P>, delivered: u64) {
        let id = self.casts.next_id;
        self.casts.next_id += 1;
        let seg = cast.seg;
        self.casts.covers.insert(
            id,
            Cover {
                parent,
                cast,
                outstanding: 0,
                delivered,
                given_up: 0,
            },
        );
        self.send_pieces(now, id, seg, 0, Vec::new());
        if self
            .casts
            .covers
            .get(&id)
            .is_some_and(|c| c.outstanding == 0)
        {
            self.finish_cover(now, id);
        }
    }

    /// Cuts `seg` among the nodes known in it (and this node, whose own piece needs no
    /// message) and sends every other piece. A segment that holds no known node goes whole to
    /// the known node nearest to it, which knows that part of the ring better.
    fn send_pieces(&mut self, now: Time, cover: u64, seg: Segment, attempts: u32, avoid: Vec<P>) {
        let me_inside = seg.contains(self.me.pos);
        let mut points: Vec<Peer<P>> = self
            .table
            .entries()
            .filter(|p| !avoid.contains(&p.id) && !self.tombstones.contains_key(&p.id))
            .collect();
        seg.sort_points(&mut points, |p| p.pos);
        if me_inside {
            points.push(self.me);
            seg.sort_points(&mut points, |p| p.pos);
        }
        if points.is_empty() {
            // Nothing known inside: hand the whole segment to the nearest known node, if it is
            // nearer to the segment than this node.
            let mine = seg.distance_to(self.me.pos);
            let nearest = self
                .table
                .entries()
                .filter(|p| !avoid.contains(&p.id) && !self.tombstones.contains_key(&p.id))
                .map(|p| (seg.distance_to(p.pos), p))
                .filter(|(d, _)| *d < mine)
                .min_by_key(|(d, p)| (*d, p.pos));
            if let Some((_, p)) = nearest {
                self.send_piece(now, cover, p.id, seg, attempts, avoid);
            }
            return;
        }
        let positions: Vec<RingId> = points.iter().map(|p| p.pos).collect();
        let pieces = seg.split(&positions);
        for (p, piece) in points.iter().zip(pieces) {
            if p.id != self.me.id {
                self.send_piece(now, cover, p.id, piece, attempts, avoid.clone());
            }
        }
    }

    fn send_piece(
        &mut self,
        now: Time,
        cover: u64,
        to: P,
        seg: Segment,
        attempts: u32,
        avoid: Vec<P>,
    ) {
        let Some(c) = self.casts.covers.get_mut(&cover) else {
            return;
        };
        let id = self.casts.next_id;
        self.casts.next_id += 1;
        c.outstanding += 1;
        let msg = Cast {
            piece: id,
            seg,
            depth: c.cast.depth + 1,
            sealed: c.cast.sealed.clone(),
        };
        let wait = self.cfg.cast_ack_timeout * 2u32.saturating_pow(attempts.min(8));
        let deadline = now + wait;
        self.casts.pieces.insert(
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
        self.casts.deadlines.insert((deadline, id));
        self.push_send(to, Message::Cast(msg));
    }

    pub(super) fn on_cast_ack(&mut self, now: Time, from: P, piece: u64) {
        let Some(p) = self.casts.pieces.get_mut(&piece) else {
            return;
        };
        if p.to != from || p.acked {
            return;
        }
        let wants_reply = self
            .casts
            .covers
            .get(&p.cover)
            .is_some_and(|c| c.cast.reply());
        if wants_reply {
            p.acked = true;
            let seg = p.seg;
            let old = p.deadline;
            let deadline = now + self.done_wait(seg);
            if let Some(p) = self.casts.pieces.get_mut(&piece) {
                p.deadline = deadline;
            }
            self.casts.deadlines.remove(&(old, piece));
            self.casts.deadlines.insert((deadline, piece));
        } else {
            self.piece_finished(now, piece, 0, false);
        }
    }

    pub(super) fn on_cast_done(
        &mut self,
        now: Time,
        from: P,
        origin: P,
        seq: u64,
        piece: u64,
        delivered: u64,
    ) {
        if piece == 0 {
            // The root of a range multicast this node started reports.
            if origin == self.me.id {
                if let Some((_, reply)) = self.casts.ranges.remove(&seq) {
                    self.out.push_back(Output::Event(Event::CastDone {
                        seq,
                        delivered: reply.then_some(delivered),
                        complete: true,
                    }));
                }
            }
            return;
        }
        if self.casts.pieces.get(&piece).is_some_and(|p| p.to == from) {
            self.piece_finished(now, piece, delivered, false);
        }
    }

    /// Piece `piece` is over (acknowledged, done, or given up): account for it.
    fn piece_finished(&mut self, now: Time, piece: u64, delivered: u64, given_up: bool) {
        let Some(p) = self.casts.pieces.remove(&piece) else {
            return;
        };
        self.casts.deadlines.remove(&(p.deadline, piece));
        let Some(c) = self.casts.covers.get_mut(&p.cover) else {
            return;
        };
        c.outstanding = c.outstanding.saturating_sub(1);
        c.delivered += delivered;
        if given_up {
            c.given_up += 1;
        }
        if c.outstanding == 0 {
            self.finish_cover(now, p.cover);
        }
    }

    fn finish_cover(&mut self, _now: Time, cover: u64) {
        let Some(c) = self.casts.covers.remove(&cover) else {
            return;
        };
        match c.parent {
            Parent::Origin => {
                self.out.push_back(Output::Event(Event::CastDone {
                    seq: c.cast.seq(),
                    delivered: c.cast.reply().then_some(c.delivered),
                    complete: c.given_up == 0,
                }));
            }
            Parent::RangeRoot => {
                let origin = c.cast.origin();
                if origin == self.me.id {
                    self.casts.ranges.remove(&c.cast.seq());
                    self.out.push_back(Output::Event(Event::CastDone {
                        seq: c.cast.seq(),
                        delivered: c.cast.reply().then_some(c.delivered),
                        complete: c.given_up == 0,
                    }));
                } else {
                    self.push_send(
                        origin,
                        Message::CastDone {
                            origin,
                            seq: c.cast.seq(),
                            piece: 0,
                            delivered: c.delivered,
                        },
                    );
                }
            }
            Parent::Piece { .. } => {
                if c.cast.reply() {
                    self.report_done(&c.parent, &c.cast, c.delivered);
                }
            }
        }
    }

    fn report_done(&mut self, parent: &Parent<P>, cast: &Cast<P>, delivered: u64) {
        if let Parent::Piece { from, piece } = parent {
            self.push_send(
                *from,
                Message::CastDone {
                    origin: cast.origin(),
                    seq: cast.seq(),
                    piece: *piece,
                    delivered,
                },
            );
        }
    }

    /// How long to wait for the count of a piece covering `seg`: one `cast_done_timeout` per
    /// tree level the piece may still need, from the node density around this node.
    fn done_wait(&self, seg: Segment) -> std::time::Duration {
        let succs = self.table.successors();
        let nodes = match succs.last() {
            Some(last) if !succs.is_empty() => {
                let gap = (self.me.pos.cw_to(last.pos) / succs.len() as u128).max(1);
                seg.span / gap + 1
            }
            _ => 1,
        };
        let levels = 128 - nodes.leading_zeros();
        self.cfg.cast_done_timeout * (2 + levels.min(40))
    }

    /// Pieces whose deadline passed are covered again elsewhere (or given up after every
    /// attempt); range multicasts whose root never reported are reported incomplete.
    pub(super) fn cast_timeouts(&mut self, now: Time) {
        while let Some(&(t, id)) = self.casts.deadlines.first() {
            if t > now {
                break;
            }
            self.casts.deadlines.pop_first();
            if !self.casts.pieces.contains_key(&id) {
                continue;
            }
            // Not acknowledged, or acknowledged but its count never came (the receiver may
            // have died after passing on part of it): cover it again through others.
            self.resend_piece(now, id);
        }
        let expired: Vec<u64> = self
            .casts
            .ranges
            .iter()
            .filter(|(_, (t, _))| *t <= now)
            .map(|(s, _)| *s)
            .collect();
        for seq in expired {
            self.casts.ranges.remove(&seq);
            self.out.push_back(Output::Event(Event::CastDone {
                seq,
                delivered: None,
                complete: false,
            }));
        }
    }

    /// Re-sends piece `id` through other nodes (its receiver failed it), or gives it up.
    fn resend_piece(&mut self, now: Time, id: u64) {
        let Some(p) = self.casts.pieces.remove(&id) else {
            return;
        };
        self.casts.deadlines.remove(&(p.deadline, id));
        let attempts = p.attempts + 1;
        let Some(c) = self.casts.covers.get_mut(&p.cover) else {
            return;
        };
        c.outstanding = c.outstanding.saturating_sub(1);
        if attempts >= self.cfg.cast_attempts {
            c.given_up += 1;
        } else {
            let mut avoid = p.avoid;
            avoid.push(p.to);
            self.send_pieces(now, p.cover, p.seg, attempts, avoid);
        }
        if self
            .casts
            .covers
            .get(&p.cover)
            .is_some_and(|c| c.outstanding == 0)
        {
            self.finish_cover(now, p.cover);
        }
    }

    /// The node leaves: casts it started end incomplete, the rest is dropped.
    pub(super) fn casts_leave(&mut self) {
        let mut ended: Vec<u64> = self
            .casts
            .covers
            .values()
            .filter(|c| matches!(c.parent, Parent::Origin))
            .map(|c| c.cast.seq())
            .collect();
        ended.extend(self.casts.ranges.keys().copied());
        for seq in ended {
            self.out.push_back(Output::Event(Event::CastDone {
                seq,
                delivered: None,
                complete: false,
            }));
        }
        self.casts = Casts::default();
    }

    /// `peer` is dead: every piece it held is re-sent through others at once.
    pub(super) fn cast_peer_failed(&mut self, now: Time, peer: P) {
        let held: Vec<u64> = self
            .casts
            .pieces
            .iter()
            .filter(|(_, p)| p.to == peer)
            .map(|(id, _)| *id)
            .collect();
        for id in held {
            self.resend_piece(now, id);
        }
    }
}
