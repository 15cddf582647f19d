//! What a census gathers: one node's figures ([`Figures`], [`Row`]), their sum over a segment
//! of the ring ([`Aggregate`]), and the checks a received sum must pass before it is added.

use p2ps_overlay::{PeerId, RingId, Segment};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Buckets of each histogram.
pub const BUCKETS: usize = 16;

/// Width of a bucket of the routing-table-size histogram (distinct peers): bucket `i` holds
/// tables of `8 i` to `8 i + 7` peers, the last one everything from 120.
pub const TABLE_BUCKET: u32 = 8;

/// Most distinct versions an aggregate names; the rest are counted under [`Version::OTHER`].
pub const MAX_VERSIONS: usize = 16;

/// Largest number of dictionary records one node may plausibly claim to hold (2^32).
pub const MAX_KEYS_PER_NODE: u64 = 1 << 32;

/// Largest number of dictionary bytes one node may plausibly claim to hold (16 TiB).
pub const MAX_BYTES_PER_NODE: u64 = 1 << 44;

/// Largest network-size estimate one node may plausibly give (2^40 nodes).
pub const MAX_ESTIMATE: u64 = 1 << 40;

/// How other nodes reach a node, as it sees itself (the runtime's reachability class).
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default, Serialize, Deserialize,
)]
pub enum NatClass {
    /// Not known yet.
    #[default]
    Unknown,
    /// No NAT in front of it.
    Public,
    /// Behind a NAT with a port mapped (UPnP).
    PortMapped,
    /// Behind a NAT with endpoint-independent mapping (hole punching works).
    Cone,
    /// Behind a NAT with endpoint-dependent mapping (needs a relay).
    Symmetric,
}

impl NatClass {
    /// Every class, in the order of [`Aggregate::nat`].
    pub const ALL: [NatClass; 5] = [
        NatClass::Unknown,
        NatClass::Public,
        NatClass::PortMapped,
        NatClass::Cone,
        NatClass::Symmetric,
    ];

    /// Its index in [`NatClass::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Its name, as `p2ps status` shows reachability.
    pub fn name(self) -> &'static str {
        match self {
            NatClass::Unknown => "unknown",
            NatClass::Public => "public",
            NatClass::PortMapped => "port-mapped",
            NatClass::Cone => "cone",
            NatClass::Symmetric => "symmetric",
        }
    }

    /// The class named `name` ([`NatClass::name`]).
    pub fn parse(name: &str) -> Option<NatClass> {
        NatClass::ALL.into_iter().find(|c| c.name() == name)
    }
}

/// A node's protocol version and software version.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default, Serialize, Deserialize,
)]
pub struct Version {
    /// The wire protocol version.
    pub protocol: u32,
    /// The software's major, minor and patch numbers.
    pub software: [u16; 3],
}

impl Version {
    /// Where versions beyond [`MAX_VERSIONS`] are counted.
    pub const OTHER: Version = Version {
        protocol: u32::MAX,
        software: [u16::MAX; 3],
    };

    /// The version of protocol `protocol` and software `text` (`"major.minor.patch"`, missing
    /// or unreadable parts taken as 0).
    pub fn new(protocol: u32, text: &str) -> Version {
        let mut software = [0u16; 3];
        for (slot, part) in software.iter_mut().zip(text.split('.')) {
            *slot = part.parse().unwrap_or(0);
        }
        Version { protocol, software }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Version::OTHER {
            return f.write_str("other");
        }
        let [a, b, c] = self.software;
        write!(f, "{a}.{b}.{c}/p{}", self.protocol)
    }
}

/// What the runtime tells the census about its node ([`crate::Census::set_local`]): what the
/// sans-IO service cannot see itself. The routing table's size and the network-size estimate
/// the service reads from the node's own table.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct Figures {
    /// How others reach the node.
    pub nat: NatClass,
    /// Its versions.
    pub version: Version,
    /// Messages per second it handled (sent and received) lately.
    pub load: u32,
    /// Dictionary records it holds.
    pub keys: u64,
    /// Bytes of those records.
    pub bytes: u64,
}

/// One node's line in a census that asked for rows.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Row<P: PeerId> {
    /// The node (its ring position is its id's).
    pub id: P,
    /// What it told.
    pub figures: Figures,
    /// Distinct peers in its routing table.
    pub table: u32,
    /// Its network-size estimate (0: none).
    pub estimate: u64,
}

/// The bucket of a histogram of routing-table sizes a table of `peers` peers falls in.
pub fn table_bucket(peers: u32) -> usize {
    ((peers / TABLE_BUCKET) as usize).min(BUCKETS - 1)
}

/// The bucket of a histogram of loads a load of `per_sec` messages a second falls in: 0 for 0,
/// then powers of two (bucket `i` holds `2^(i-1)` to `2^i - 1`), the last everything above.
pub fn load_bucket(per_sec: u32) -> usize {
    ((32 - per_sec.leading_zeros()) as usize).min(BUCKETS - 1)
}

/// The values bucket `i` of the load histogram holds (`hi` is `None` for the open last one).
pub fn load_range(i: usize) -> (u64, Option<u64>) {
    let lo = if i == 0 { 0 } else { 1u64 << (i - 1) };
    let hi = (i + 1 < BUCKETS).then(|| if i == 0 { 0 } else { (1u64 << i) - 1 });
    (lo, hi)
}

/// The values bucket `i` of the table-size histogram holds.
pub fn table_range(i: usize) -> (u64, Option<u64>) {
    let w = u64::from(TABLE_BUCKET);
    let lo = i as u64 * w;
    (lo, (i + 1 < BUCKETS).then_some(lo + w - 1))
}

/// The figures of the nodes of a segment, summed.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct Aggregate {
    /// Nodes counted.
    pub nodes: u64,
    /// Nodes by NAT class (indexed by [`NatClass::index`]).
    pub nat: [u64; 5],
    /// Nodes by version, sorted, at most [`MAX_VERSIONS`] entries.
    pub versions: Vec<(Version, u64)>,
    /// Nodes by routing-table size ([`table_bucket`]).
    pub table: [u64; BUCKETS],
    /// Nodes by load ([`load_bucket`]).
    pub load: [u64; BUCKETS],
    /// Dictionary records held (a record held by r replicas counts r times).
    pub keys: u64,
    /// Bytes of those records.
    pub bytes: u64,
    /// Sum of the nodes' network-size estimates (nodes without one count 0).
    pub estimate_sum: u64,
    /// Nodes that gave an estimate.
    pub estimates: u64,
}

/// Why a received aggregate or its rows were refused.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Implausible {
    /// More nodes than the segment can plausibly hold.
    #[error("{nodes} nodes claimed where at most {max} are plausible")]
    TooMany {
        /// Claimed.
        nodes: u64,
        /// Allowed.
        max: u64,
    },
    /// A histogram does not add up to the node count.
    #[error("a histogram does not add up to the node count")]
    Inconsistent,
    /// Keys, bytes or estimates beyond what that many nodes can hold.
    #[error("keys, bytes or estimates out of bounds")]
    OutOfBounds,
    /// A row outside the segment, out of order, beyond the count or beyond the rows asked.
    #[error("a row outside the segment, repeated, or too many rows")]
    BadRows,
}

impl Aggregate {
    /// The figures of one node.
    pub fn one(f: &Figures, table: u32, estimate: Option<u64>) -> Aggregate {
        let mut a = Aggregate {
            nodes: 1,
            versions: vec![(f.version, 1)],
            keys: f.keys.min(MAX_KEYS_PER_NODE),
            bytes: f.bytes.min(MAX_BYTES_PER_NODE),
            ..Aggregate::default()
        };
        a.nat[f.nat.index()] = 1;
        a.table[table_bucket(table)] = 1;
        a.load[load_bucket(f.load)] = 1;
        if let Some(e) = estimate {
            a.estimate_sum = e.min(MAX_ESTIMATE);
            a.estimates = 1;
        }
        a
    }

    /// Adds `other` to this sum (saturating; versions beyond [`MAX_VERSIONS`] go to
    /// [`Version::OTHER`]).
    pub fn add(&mut self, other: &Aggregate) {
        self.nodes = self.nodes.saturating_add(other.nodes);
        for (a, b) in self.nat.iter_mut().zip(other.nat) {
            *a = a.saturating_add(b);
        }
        for (a, b) in self.table.iter_mut().zip(other.table) {
            *a = a.saturating_add(b);
        }
        for (a, b) in self.load.iter_mut().zip(other.load) {
            *a = a.saturating_add(b);
        }
        self.keys = self.keys.saturating_add(other.keys);
        self.bytes = self.bytes.saturating_add(other.bytes);
        self.estimate_sum = self.estimate_sum.saturating_add(other.estimate_sum);
        self.estimates = self.estimates.saturating_add(other.estimates);
        for &(v, n) in &other.versions {
            match self.versions.binary_search_by_key(&v, |(v, _)| *v) {
                Ok(i) => self.versions[i].1 = self.versions[i].1.saturating_add(n),
                Err(i) => self.versions.insert(i, (v, n)),
            }
        }
        if self.versions.len() > MAX_VERSIONS {
            // Keep the most common; fold the others into `OTHER` (always sorted last).
            let mut by_count = std::mem::take(&mut self.versions);
            by_count.sort_by_key(|(v, n)| (std::cmp::Reverse(*n), *v));
            let mut other = 0u64;
            for (v, n) in by_count {
                if self.versions.len() < MAX_VERSIONS - 1 && v != Version::OTHER {
                    self.versions.push((v, n));
                } else {
                    other = other.saturating_add(n);
                }
            }
            self.versions.sort();
            self.versions.push((Version::OTHER, other));
        }
    }

    /// The mean of the nodes' network-size estimates.
    pub fn mean_estimate(&self) -> Option<f64> {
        (self.estimates > 0).then(|| self.estimate_sum as f64 / self.estimates as f64)
    }

    /// Checks an aggregate received for a segment where at most `max_nodes` nodes are
    /// plausible: the count within that bound, every histogram adding up to it, keys, bytes and
    /// estimates within what that many nodes can hold, versions sorted and few enough.
    pub fn check(&self, max_nodes: u64) -> Result<(), Implausible> {
        if self.nodes > max_nodes {
            return Err(Implausible::TooMany {
                nodes: self.nodes,
                max: max_nodes,
            });
        }
        let sum = |v: &[u64]| v.iter().try_fold(0u64, |a, b| a.checked_add(*b));
        let versions: Option<u64> = self
            .versions
            .iter()
            .try_fold(0u64, |a, (_, n)| a.checked_add(*n));
        let n = Some(self.nodes);
        if sum(&self.nat) != n
            || sum(&self.table) != n
            || sum(&self.load) != n
            || versions != n
            || self.versions.len() > MAX_VERSIONS
            || !self.versions.windows(2).all(|w| w[0].0 < w[1].0)
            || self.estimates > self.nodes
        {
            return Err(Implausible::Inconsistent);
        }
        if self.keys > self.nodes.saturating_mul(MAX_KEYS_PER_NODE)
            || self.bytes > self.nodes.saturating_mul(MAX_BYTES_PER_NODE)
            || self.estimate_sum > self.estimates.saturating_mul(MAX_ESTIMATE)
        {
            return Err(Implausible::OutOfBounds);
        }
        Ok(())
    }
}

/// Checks rows received for `seg`: each of a node in the segment, in clockwise order from its
/// start without repeats, no more than `max` of them.
pub fn check_rows<P: PeerId>(rows: &[Row<P>], seg: &Segment, max: u64) -> Result<(), Implausible> {
    if rows.len() as u64 > max {
        return Err(Implausible::BadRows);
    }
    let mut last: Option<u128> = None;
    for r in rows {
        let pos = r.id.ring_id();
        if !seg.contains(pos) {
            return Err(Implausible::BadRows);
        }
        let off = seg.start.cw_to(pos);
        if last.is_some_and(|l| off <= l) {
            return Err(Implausible::BadRows);
        }
        last = Some(off);
    }
    Ok(())
}

/// Merges rows of disjoint pieces into `into` (kept in clockwise order from `start`), thinned
/// evenly to at most `cap` rows when there are more.
pub fn merge_rows<P: PeerId>(into: &mut Vec<Row<P>>, more: Vec<Row<P>>, start: RingId, cap: usize) {
    into.extend(more);
    into.sort_by_key(|r| start.cw_to(r.id.ring_id()));
    into.dedup_by_key(|r| r.id);
    if into.len() > cap {
        let len = into.len();
        let kept: Vec<Row<P>> = (0..cap)
            .filter_map(|i| into.get(i * len / cap).cloned())
            .collect();
        *into = kept;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn fig(nat: NatClass, load: u32, keys: u64) -> Figures {
        Figures {
            nat,
            version: Version::new(1, "0.1.0"),
            load,
            keys,
            bytes: keys * 10,
        }
    }

    #[test]
    fn sums_add_up_and_pass_their_own_check() {
        let mut a = Aggregate::one(&fig(NatClass::Public, 0, 3), 20, Some(100));
        a.add(&Aggregate::one(&fig(NatClass::Cone, 700, 5), 130, None));
        assert_eq!(a.nodes, 2);
        assert_eq!(a.nat, [0, 1, 0, 1, 0]);
        assert_eq!(a.table[2] + a.table[15], 2);
        assert_eq!(a.load[0] + a.load[10], 2);
        assert_eq!((a.keys, a.bytes), (8, 80));
        assert_eq!(a.mean_estimate(), Some(100.0));
        assert_eq!(a.versions, vec![(Version::new(1, "0.1.0"), 2)]);
        a.check(2).unwrap();
        assert!(matches!(a.check(1), Err(Implausible::TooMany { .. })));
    }

    #[test]
    fn forged_sums_are_refused() {
        let a = Aggregate::one(&fig(NatClass::Public, 1, 1), 20, Some(10));
        let mut b = a.clone();
        b.nodes = 5;
        assert_eq!(b.check(100), Err(Implausible::Inconsistent));
        let mut c = a.clone();
        c.keys = MAX_KEYS_PER_NODE + 1;
        assert_eq!(c.check(100), Err(Implausible::OutOfBounds));
        let mut d = a.clone();
        d.nat = [u64::MAX, 2, 0, 0, 0];
        assert_eq!(d.check(100), Err(Implausible::Inconsistent));
        let mut e = a;
        e.versions.push((Version::new(0, "0.0.1"), 0));
        assert_eq!(e.check(100), Err(Implausible::Inconsistent));
    }

    #[test]
    fn versions_beyond_the_cap_fold_into_other() {
        let mut a = Aggregate::default();
        for i in 0..40u32 {
            let f = Figures {
                version: Version::new(i, "1.0.0"),
                ..Figures::default()
            };
            a.add(&Aggregate::one(&f, 1, None));
        }
        assert_eq!(a.versions.len(), MAX_VERSIONS);
        assert_eq!(a.versions.last().map(|v| v.0), Some(Version::OTHER));
        a.check(40).unwrap();
    }

    #[test]
    fn buckets() {
        assert_eq!(
            (
                load_bucket(0),
                load_bucket(1),
                load_bucket(2),
                load_bucket(3)
            ),
            (0, 1, 2, 2)
        );
        assert_eq!(load_bucket(u32::MAX), BUCKETS - 1);
        assert_eq!(load_range(2), (2, Some(3)));
        assert_eq!(table_bucket(7), 0);
        assert_eq!(table_range(1), (8, Some(15)));
        assert_eq!(table_range(BUCKETS - 1).1, None);
        assert_eq!(Version::new(3, "1.22.x").to_string(), "1.22.0/p3");
    }
}
