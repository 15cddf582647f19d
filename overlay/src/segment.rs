//! Contiguous stretches of the ring, and how a broadcast cuts one into disjoint pieces.
//!
//! A broadcast (and a range multicast, which is a broadcast over part of the ring) hands each
//! known neighbour the piece of the ring nearest to it; the neighbour covers its piece the same
//! way. Because the pieces of one split never overlap and every piece holds the neighbour it is
//! sent to, every node of a stable ring receives the message exactly once: N - 1 messages.

use crate::ring::RingId;
use serde::{Deserialize, Serialize};

/// The ring positions `start, start + 1, …, start + span` (clockwise, wrapping), so a segment
/// always holds at least one position and `span = u128::MAX` is the whole ring.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct Segment {
    /// First position.
    pub start: RingId,
    /// Number of positions after `start` that belong to the segment.
    pub span: u128,
}

impl Segment {
    /// The whole ring, starting (for the purpose of splitting) at `start`.
    pub const fn full(start: RingId) -> Segment {
        Segment {
            start,
            span: u128::MAX,
        }
    }

    /// The positions from `first` to `last`, both included, going clockwise.
    pub fn between(first: RingId, last: RingId) -> Segment {
        Segment {
            start: first,
            span: first.cw_to(last),
        }
    }

    /// The last position.
    pub fn end(&self) -> RingId {
        self.start.plus(self.span)
    }

    /// Whether `pos` lies in the segment.
    pub fn contains(&self, pos: RingId) -> bool {
        self.start.cw_to(pos) <= self.span
    }

    /// Whether the segment is the whole ring.
    pub fn is_full(&self) -> bool {
        self.span == u128::MAX
    }

    /// Ring distance from `pos` to the nearest position of the segment (0 inside).
    pub fn distance_to(&self, pos: RingId) -> u128 {
        if self.contains(pos) {
            0
        } else {
            pos.dist(self.start).min(pos.dist(self.end()))
        }
    }

    /// Cuts the segment into one piece per point, each point getting the positions nearer to it
    /// than to the points beside it (the ends of the segment go to the first and last point).
    ///
    /// `points` must lie in the segment, be distinct, and be sorted by their clockwise offset
    /// from `start` (use [`Segment::sort_points`]). The pieces come back in the same order, cover
    /// the segment exactly, never overlap, and piece `i` contains `points[i]`. An empty `points`
    /// gives no pieces.
    pub fn split(&self, points: &[RingId]) -> Vec<Segment> {
        let offsets: Vec<u128> = points.iter().map(|p| self.start.cw_to(*p)).collect();
        let mut pieces = Vec::with_capacity(points.len());
        for (i, &o) in offsets.iter().enumerate() {
            let lo = if i == 0 {
                0
            } else {
                let prev = offsets[i - 1];
                prev + (o - prev) / 2 + 1
            };
            let hi = match offsets.get(i + 1) {
                None => self.span,
                Some(&next) => o + (next - o) / 2,
            };
            pieces.push(Segment {
                start: self.start.plus(lo),
                span: hi - lo,
            });
        }
        pieces
    }

    /// Sorts `points` by clockwise offset from `start` and drops duplicates and points outside.
    pub fn sort_points<T>(&self, points: &mut Vec<T>, pos: impl Fn(&T) -> RingId) {
        points.retain(|p| self.contains(pos(p)));
        points.sort_by_key(|p| self.start.cw_to(pos(p)));
        points.dedup_by_key(|p| pos(p));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn between_and_contains() {
        let s = Segment::between(RingId(u128::MAX - 1), RingId(2));
        assert_eq!(s.span, 4);
        assert!(s.contains(RingId(u128::MAX)));
        assert!(s.contains(RingId(0)));
        assert!(s.contains(RingId(2)));
        assert!(!s.contains(RingId(3)));
        assert!(Segment::full(RingId(7)).contains(RingId(6)));
        assert_eq!(s.distance_to(RingId(5)), 3);
        assert_eq!(s.distance_to(RingId(u128::MAX - 4)), 3);
    }

    #[test]
    fn split_gives_midpoints() {
        let s = Segment::between(RingId(0), RingId(100));
        let p = s.split(&[RingId(10), RingId(20), RingId(60)]);
        assert_eq!(p[0], Segment::between(RingId(0), RingId(15)));
        assert_eq!(p[1], Segment::between(RingId(16), RingId(40)));
        assert_eq!(p[2], Segment::between(RingId(41), RingId(100)));
        assert!(s.split(&[]).is_empty());
    }

    proptest! {
        #[test]
        fn pieces_partition_the_segment(
            start in any::<u128>(),
            span in any::<u128>(),
            raw in proptest::collection::vec(any::<u128>(), 1..20),
        ) {
            let s = Segment { start: RingId(start), span };
            let mut pts: Vec<RingId> = raw
                .iter()
                .map(|r| s.start.plus(if span == u128::MAX { *r } else { r % (span + 1) }))
                .collect();
            s.sort_points(&mut pts, |p| *p);
            let pieces = s.split(&pts);
            prop_assert_eq!(pieces.len(), pts.len());
            // Contiguous, in order, from the segment's start to its end.
            let mut next = s.start;
            let mut total: u128 = 0;
            for (piece, pt) in pieces.iter().zip(&pts) {
                prop_assert_eq!(piece.start, next);
                prop_assert!(piece.contains(*pt));
                prop_assert!(s.contains(piece.start) && s.contains(piece.end()));
                next = piece.end().plus(1);
                total = total.wrapping_add(piece.span).wrapping_add(1);
            }
            prop_assert_eq!(pieces.last().map(|p| p.end()), Some(s.end()));
            prop_assert_eq!(total, span.wrapping_add(1));
        }
    }
}
