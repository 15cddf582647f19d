//! Finger placement strategies: at which ring distances a node keeps its long-range links.
//!
//! A finger slot `(dir, level)` of node `x` holds the node responsible for key
//! `x ± distance(level)`. Tango (the P2PS default) uses distances 1, 4, 12, 36, 108, … in both
//! directions: each new pair of fingers lands just beyond what the smaller ones already reach,
//! instead of overlapping with them as Chord's powers of two do. Chord and "Tango+" exist so
//! that every "fewer hops than Chord" claim is measured side by side in the simulator.

use crate::ring::{Dir, RingId};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::OnceLock;

/// Where a node places its fingers.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum FingerStrategy {
    /// Chord: distances 2^i, clockwise only.
    Chord,
    /// Tango as in P2PS: d1 = 1, then d(n) = 2 (r(n-1) + 1), r(n) = d(n) + r(n-1) — that is
    /// 1, 4, 12, 36, 108, … — in both directions.
    Tango,
    /// A candidate refinement: 1, 4, 15, 56, 209, … (d(n) = 4 d(n-1) - d(n-2)), both directions.
    TangoPlus,
}

impl FingerStrategy {
    /// Every strategy, in report order.
    pub const ALL: [FingerStrategy; 3] = [
        FingerStrategy::Chord,
        FingerStrategy::Tango,
        FingerStrategy::TangoPlus,
    ];

    /// A short name for reports and command lines.
    pub fn name(self) -> &'static str {
        match self {
            FingerStrategy::Chord => "chord",
            FingerStrategy::Tango => "tango",
            FingerStrategy::TangoPlus => "tango+",
        }
    }

    /// Parses `chord`, `tango` or `tango+` (also `tango-plus`).
    pub fn parse(s: &str) -> Option<FingerStrategy> {
        match s {
            "chord" => Some(FingerStrategy::Chord),
            "tango" => Some(FingerStrategy::Tango),
            "tango+" | "tango-plus" | "tangoplus" => Some(FingerStrategy::TangoPlus),
            _ => None,
        }
    }

    /// Finger distances in increasing order, all at most half the ring.
    pub fn distances(self) -> &'static [u128] {
        static CHORD: OnceLock<Vec<u128>> = OnceLock::new();
        static TANGO: OnceLock<Vec<u128>> = OnceLock::new();
        static TANGO_PLUS: OnceLock<Vec<u128>> = OnceLock::new();
        match self {
            FingerStrategy::Chord => CHORD.get_or_init(|| (0..128).map(|i| 1u128 << i).collect()),
            FingerStrategy::Tango => TANGO.get_or_init(tango_distances),
            FingerStrategy::TangoPlus => TANGO_PLUS.get_or_init(tango_plus_distances),
        }
    }

    /// Does this strategy keep fingers in direction `dir`?
    pub fn has_dir(self, dir: Dir) -> bool {
        match self {
            FingerStrategy::Chord => dir == Dir::Cw,
            FingerStrategy::Tango | FingerStrategy::TangoPlus => true,
        }
    }

    /// The key finger slot `(dir, level)` of a node at `pos` points at.
    pub fn target(self, pos: RingId, dir: Dir, level: usize) -> RingId {
        let d = self.distances().get(level).copied().unwrap_or(RingId::HALF);
        pos.step(dir, d)
    }
}

/// Shows the strategy's short [`name`](FingerStrategy::name): `chord`, `tango` or `tango+`.
impl fmt::Display for FingerStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

fn tango_distances() -> Vec<u128> {
    // d1 = 1, r1 = 1; d(n) = 2 (r(n-1) + 1); r(n) = d(n) + r(n-1).
    let mut out = vec![1u128];
    let mut r: u128 = 1;
    while let Some(d) = r.checked_add(1).and_then(|x| x.checked_mul(2)) {
        if d > RingId::HALF {
            break;
        }
        out.push(d);
        r += d;
    }
    out
}

fn tango_plus_distances() -> Vec<u128> {
    let mut out = vec![1u128, 4];
    loop {
        let n = out.len();
        let next = out[n - 1]
            .checked_mul(4)
            .and_then(|x| x.checked_sub(out[n - 2]));
        match next {
            Some(d) if d <= RingId::HALF => out.push(d),
            _ => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tango_distances_match_p2ps() {
        let d = FingerStrategy::Tango.distances();
        assert_eq!(&d[..7], &[1, 4, 12, 36, 108, 324, 972]);
        // 4 * 3^(n-2) from the second on.
        for (n, w) in d.iter().enumerate().skip(1) {
            assert_eq!(*w, 4 * 3u128.pow(n as u32 - 1));
        }
        assert!(*d.last().unwrap() <= RingId::HALF);
        assert!(d.last().unwrap() * 3 > RingId::HALF);
    }

    #[test]
    fn tango_plus_and_chord_distances() {
        assert_eq!(
            &FingerStrategy::TangoPlus.distances()[..5],
            &[1, 4, 15, 56, 209]
        );
        let c = FingerStrategy::Chord.distances();
        assert_eq!(c.len(), 128);
        assert_eq!(c[127], RingId::HALF);
    }

    #[test]
    fn names_round_trip() {
        for s in FingerStrategy::ALL {
            assert_eq!(FingerStrategy::parse(s.name()), Some(s));
        }
    }
}
