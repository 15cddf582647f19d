//! Positions on the 128-bit identifier ring and the interval arithmetic every other module uses.
//!
//! All arithmetic wraps modulo 2^128. Intervals follow Chord's conventions: `(a, a]` is the
//! whole ring and `(a, a)` is the whole ring but `a`, so a node that is alone is responsible for
//! every key.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A position on the identifier ring (a 128-bit unsigned integer, arithmetic modulo 2^128).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct RingId(pub u128);

impl RingId {
    /// Half of the ring: the largest distance a finger needs to cover.
    pub const HALF: u128 = 1u128 << 127;

    /// The ring position `d` steps clockwise of `self`.
    pub fn plus(self, d: u128) -> RingId {
        RingId(self.0.wrapping_add(d))
    }

    /// The ring position `d` steps counter-clockwise of `self`.
    pub fn minus(self, d: u128) -> RingId {
        RingId(self.0.wrapping_sub(d))
    }

    /// The ring position `d` steps from `self` in direction `dir`.
    pub fn step(self, dir: Dir, d: u128) -> RingId {
        match dir {
            Dir::Cw => self.plus(d),
            Dir::Ccw => self.minus(d),
        }
    }

    /// Clockwise distance from `self` to `to` (how far `to` is when walking clockwise).
    pub fn cw_to(self, to: RingId) -> u128 {
        to.0.wrapping_sub(self.0)
    }

    /// Distance from `self` to `to` walking in direction `dir`.
    pub fn dist_dir(self, dir: Dir, to: RingId) -> u128 {
        match dir {
            Dir::Cw => self.cw_to(to),
            Dir::Ccw => to.cw_to(self),
        }
    }

    /// Ring distance: the shorter of the two ways round.
    pub fn dist(self, other: RingId) -> u128 {
        let a = self.cw_to(other);
        let b = other.cw_to(self);
        a.min(b)
    }

    /// Is `self` in the half-open interval `(a, b]`? `(a, a]` is the whole ring.
    pub fn in_open_closed(self, a: RingId, b: RingId) -> bool {
        let span = a.cw_to(b);
        let off = a.cw_to(self);
        span == 0 || (off != 0 && off <= span)
    }

    /// Is `self` in the open interval `(a, b)`? `(a, a)` is the whole ring but `a`.
    pub fn in_open(self, a: RingId, b: RingId) -> bool {
        let span = a.cw_to(b);
        let off = a.cw_to(self);
        off != 0 && (span == 0 || off < span)
    }

    /// The position as a fraction of the ring, in `[0, 1)`, for reports.
    pub fn fraction(self) -> f64 {
        self.0 as f64 / 2f64.powi(128)
    }
}

impl fmt::Debug for RingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}…", (self.0 >> 96) as u32)
    }
}

impl fmt::Display for RingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// A direction round the ring.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub enum Dir {
    /// Clockwise: increasing positions (towards successors).
    Cw,
    /// Counter-clockwise: decreasing positions (towards predecessors).
    Ccw,
}

impl Dir {
    /// Both directions, clockwise first.
    pub const BOTH: [Dir; 2] = [Dir::Cw, Dir::Ccw];

    /// The other direction.
    pub fn opposite(self) -> Dir {
        match self {
            Dir::Cw => Dir::Ccw,
            Dir::Ccw => Dir::Cw,
        }
    }

    /// 0 for clockwise, 1 for counter-clockwise: an index into per-direction arrays.
    pub fn index(self) -> usize {
        match self {
            Dir::Cw => 0,
            Dir::Ccw => 1,
        }
    }
}

/// Shows the direction as the sign finger slots are written with: `+` (clockwise) or `-`.
impl fmt::Display for Dir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Dir::Cw => "+",
            Dir::Ccw => "-",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn degenerate_intervals() {
        let a = RingId(5);
        assert!(RingId(5).in_open_closed(a, a));
        assert!(RingId(0).in_open_closed(a, a));
        assert!(!RingId(5).in_open(a, a));
        assert!(RingId(6).in_open(a, a));
    }

    #[test]
    fn wrapping_interval() {
        let a = RingId(u128::MAX - 1);
        let b = RingId(3);
        assert!(RingId(u128::MAX).in_open_closed(a, b));
        assert!(RingId(0).in_open_closed(a, b));
        assert!(RingId(3).in_open_closed(a, b));
        assert!(!RingId(4).in_open_closed(a, b));
        assert!(!a.in_open_closed(a, b));
        assert!(!RingId(3).in_open(a, b));
    }

    proptest! {
        #[test]
        fn cw_distances_add_up(a: u128, b: u128) {
            let (a, b) = (RingId(a), RingId(b));
            prop_assert_eq!(a.cw_to(b).wrapping_add(b.cw_to(a)), 0);
            prop_assert_eq!(a.dist(b), b.dist(a));
            prop_assert!(a.dist(b) <= RingId::HALF);
        }

        #[test]
        fn open_closed_partitions_the_ring(a: u128, b: u128, x: u128) {
            // For a != b, every x is in exactly one of (a, b] and (b, a].
            prop_assume!(a != b);
            let (a, b, x) = (RingId(a), RingId(b), RingId(x));
            prop_assert!(x.in_open_closed(a, b) ^ x.in_open_closed(b, a));
        }

        #[test]
        fn open_is_open_closed_minus_end(a: u128, b: u128, x: u128) {
            let (a, b, x) = (RingId(a), RingId(b), RingId(x));
            let expected = x.in_open_closed(a, b) && x != b;
            // (a, a) excludes only a, while (a, a] is everything.
            let expected = if a == b { x != a } else { expected };
            prop_assert_eq!(x.in_open(a, b), expected);
        }

        #[test]
        fn stepping_round_trips(a: u128, d: u128) {
            let a = RingId(a);
            prop_assert_eq!(a.plus(d).minus(d), a);
            prop_assert_eq!(a.dist_dir(Dir::Cw, a.plus(d)), d);
            prop_assert_eq!(a.dist_dir(Dir::Ccw, a.minus(d)), d);
            prop_assert_eq!(a.step(Dir::Ccw, d), a.minus(d));
        }

        #[test]
        fn interval_membership_matches_distance(a: u128, b: u128, x: u128) {
            let (a, b, x) = (RingId(a), RingId(b), RingId(x));
            prop_assume!(a != b);
            let inside = x.in_open_closed(a, b);
            prop_assert_eq!(inside, a.cw_to(x) != 0 && a.cw_to(x) <= a.cw_to(b));
        }
    }
}
