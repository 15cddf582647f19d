//! Connection admission: who may hold one of this node's connections.
//!
//! [`AdmissionLimits`] are the quotas, all configurable. `Admission` is the policy, sans-IO:
//! it keeps the counts of the node's inbound connections (by source IP, by source subnet, by
//! node id) and the set of peers the application wants (its routing table, see
//! `Transport::set_protected`), and answers admit or refuse from a source address, a node id
//! and the total number of connections the node holds. The transport asks it twice per incoming
//! connection:
//!
//! 1. before the handshake, knowing only the source address (`Admission::check_source`): the
//!    total cap and the per-IP and per-subnet (/24 for IPv4, /48 for IPv6) quotas. A refused
//!    connection costs no handshake (quinn's `Incoming::refuse`).
//! 2. after the handshake, knowing the node id (`Admission::check_peer`): the per-node quota,
//!    and the reserve: a stranger (a peer the application has not marked as wanted) is admitted
//!    only while the node holds at most `max_connections - reserved_connections` connections,
//!    so that the last slots stay free for ring neighbours and fingers.
//!
//! Loopback sources are exempt from the per-IP and per-subnet quotas by default
//! ([`AdmissionLimits::exempt_loopback`]): local clusters run many nodes on 127.0.0.1. So are
//! relayed connections, whose source addresses are synthetic (the relay limits its circuits).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::identity::NodeId;

/// Quotas on incoming connections. Every field's default is in its documentation; start from
/// `AdmissionLimits::default()` and change what you need with the `with_*` setters or by
/// assigning the public fields.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AdmissionLimits {
    /// Most connections (in any state, both directions) the node holds; incoming connections
    /// beyond it are refused before the handshake and dials fail with `TooManyConnections`.
    /// Default 512.
    pub max_connections: usize,
    /// Of `max_connections`, the slots only wanted peers (see `Transport::set_protected`) and
    /// this node's own dials may take: a stranger's connection is closed after the handshake
    /// when the node already holds more than `max_connections - reserved_connections`.
    /// Default 64.
    pub reserved_connections: usize,
    /// Most incoming connections (handshakes included) from one IP address. Default 16.
    pub per_ip: usize,
    /// Most incoming connections from one subnet: /24 for IPv4, /48 for IPv6. Default 64.
    pub per_subnet: usize,
    /// Most incoming connections from one node id at once (a restart or a simultaneous dial
    /// briefly makes two). Default 4.
    pub per_node: usize,
    /// Loopback sources are exempt from `per_ip` and `per_subnet` (local clusters run many
    /// nodes on one address). Default true.
    pub exempt_loopback: bool,
    /// An incoming connection from a peer that is not wanted is closed if no complete message
    /// (a frame on a class stream, or a tagged bidirectional stream) arrives within this time
    /// of the handshake. `None` turns it off. Default 10 s. Not applied while this node serves
    /// as a relay (the nodes it relays for keep a quiet connection to it).
    pub first_frame_timeout: Option<Duration>,
}

impl Default for AdmissionLimits {
    fn default() -> Self {
        Self {
            max_connections: 512,
            reserved_connections: 64,
            per_ip: 16,
            per_subnet: 64,
            per_node: 4,
            exempt_loopback: true,
            first_frame_timeout: Some(Duration::from_secs(10)),
        }
    }
}

impl AdmissionLimits {
    /// Sets [`max_connections`](Self::max_connections).
    #[must_use]
    pub fn with_max_connections(mut self, max_connections: usize) -> Self {
        self.max_connections = max_connections;
        self
    }

    /// Sets [`reserved_connections`](Self::reserved_connections).
    #[must_use]
    pub fn with_reserved_connections(mut self, reserved_connections: usize) -> Self {
        self.reserved_connections = reserved_connections;
        self
    }

    /// Sets [`per_ip`](Self::per_ip).
    #[must_use]
    pub fn with_per_ip(mut self, per_ip: usize) -> Self {
        self.per_ip = per_ip;
        self
    }

    /// Sets [`per_subnet`](Self::per_subnet).
    #[must_use]
    pub fn with_per_subnet(mut self, per_subnet: usize) -> Self {
        self.per_subnet = per_subnet;
        self
    }

    /// Sets [`per_node`](Self::per_node).
    #[must_use]
    pub fn with_per_node(mut self, per_node: usize) -> Self {
        self.per_node = per_node;
        self
    }

    /// Sets [`exempt_loopback`](Self::exempt_loopback).
    #[must_use]
    pub fn with_exempt_loopback(mut self, exempt_loopback: bool) -> Self {
        self.exempt_loopback = exempt_loopback;
        self
    }

    /// Sets [`first_frame_timeout`](Self::first_frame_timeout).
    #[must_use]
    pub fn with_first_frame_timeout(mut self, first_frame_timeout: Option<Duration>) -> Self {
        self.first_frame_timeout = first_frame_timeout;
        self
    }
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    #[error("connection limit ({limit}) reached")]
    Full { limit: usize },
    #[error("only wanted peers may take the last {reserved} of {limit} connections")]
    Reserved { limit: usize, reserved: usize },
    #[error("{limit} connections from this IP address already")]
    PerIp { limit: usize },
    #[error("{limit} connections from this subnet already")]
    PerSubnet { limit: usize },
    #[error("{limit} connections from this node already")]
    PerNode { limit: usize },
}

/// A source subnet: the first three bytes of an IPv4 address, the first six of an IPv6 one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Subnet {
    V4([u8; 3]),
    V6([u8; 6]),
}

/// The address as counted: an IPv4-mapped IPv6 address counts as the IPv4 address.
pub(crate) fn canonical_ip(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// The /24 (IPv4) or /48 (IPv6) that `ip` belongs to.
pub(crate) fn subnet_of(ip: IpAddr) -> Subnet {
    match canonical_ip(ip) {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            Subnet::V4([o[0], o[1], o[2]])
        }
        IpAddr::V6(v6) => {
            let o = v6.octets();
            Subnet::V6([o[0], o[1], o[2], o[3], o[4], o[5]])
        }
    }
}

/// The admission policy and the counts it decides from (no I/O, no clock).
#[derive(Debug)]
pub(crate) struct Admission {
    limits: AdmissionLimits,
    ips: HashMap<IpAddr, usize>,
    subnets: HashMap<Subnet, usize>,
    nodes: HashMap<NodeId, usize>,
    protected: HashSet<NodeId>,
}

fn inc<K: std::hash::Hash + Eq>(m: &mut HashMap<K, usize>, k: K) {
    *m.entry(k).or_default() += 1;
}

fn dec<K: std::hash::Hash + Eq>(m: &mut HashMap<K, usize>, k: K) {
    if let std::collections::hash_map::Entry::Occupied(mut e) = m.entry(k) {
        *e.get_mut() -= 1;
        if *e.get() == 0 {
            e.remove();
        }
    }
}

impl Admission {
    pub(crate) fn new(limits: AdmissionLimits) -> Self {
        Self {
            limits,
            ips: HashMap::new(),
            subnets: HashMap::new(),
            nodes: HashMap::new(),
            protected: HashSet::new(),
        }
    }

    /// Whether `remote` is exempt from the address quotas (and so not counted in them).
    fn exempt(&self, remote: &SocketAddr) -> bool {
        crate::relay::is_relayed(remote)
            || (self.limits.exempt_loopback && canonical_ip(remote.ip()).is_loopback())
    }

    /// Before the handshake: may a connection from `remote` start, the node holding `total`
    /// connections (not counting this one)?
    pub(crate) fn check_source(&self, remote: &SocketAddr, total: usize) -> Result<(), Refusal> {
        let l = &self.limits;
        if total >= l.max_connections {
            return Err(Refusal::Full {
                limit: l.max_connections,
            });
        }
        if self.exempt(remote) {
            return Ok(());
        }
        let ip = canonical_ip(remote.ip());
        if self.ips.get(&ip).copied().unwrap_or(0) >= l.per_ip {
            return Err(Refusal::PerIp { limit: l.per_ip });
        }
        if self.subnets.get(&subnet_of(ip)).copied().unwrap_or(0) >= l.per_subnet {
            return Err(Refusal::PerSubnet {
                limit: l.per_subnet,
            });
        }
        Ok(())
    }

    /// Counts an admitted source (until [`Admission::remove_source`]).
    pub(crate) fn add_source(&mut self, remote: &SocketAddr) {
        if self.exempt(remote) {
            return;
        }
        let ip = canonical_ip(remote.ip());
        inc(&mut self.ips, ip);
        inc(&mut self.subnets, subnet_of(ip));
    }

    /// Forgets a source counted by [`Admission::add_source`].
    pub(crate) fn remove_source(&mut self, remote: &SocketAddr) {
        if self.exempt(remote) {
            return;
        }
        let ip = canonical_ip(remote.ip());
        dec(&mut self.ips, ip);
        dec(&mut self.subnets, subnet_of(ip));
    }

    /// After the handshake: may `peer` keep its connection, the node holding `total`
    /// connections (this one included)?
    pub(crate) fn check_peer(&self, peer: &NodeId, total: usize) -> Result<(), Refusal> {
        let l = &self.limits;
        if self.nodes.get(peer).copied().unwrap_or(0) >= l.per_node {
            return Err(Refusal::PerNode { limit: l.per_node });
        }
        let open_to_strangers = l.max_connections.saturating_sub(l.reserved_connections);
        if !self.protected.contains(peer) && total > open_to_strangers {
            return Err(Refusal::Reserved {
                limit: l.max_connections,
                reserved: l.reserved_connections,
            });
        }
        Ok(())
    }

    /// Counts an admitted peer (until [`Admission::remove_peer`]).
    pub(crate) fn add_peer(&mut self, peer: NodeId) {
        inc(&mut self.nodes, peer);
    }

    /// Forgets a peer counted by [`Admission::add_peer`].
    pub(crate) fn remove_peer(&mut self, peer: NodeId) {
        dec(&mut self.nodes, peer);
    }

    /// Replaces the set of wanted peers; returns whether it changed.
    pub(crate) fn set_protected(&mut self, peers: HashSet<NodeId>) -> bool {
        if peers == self.protected {
            return false;
        }
        self.protected = peers;
        true
    }

    /// Whether the application wants `peer` (see `Transport::set_protected`).
    pub(crate) fn is_protected(&self, peer: &NodeId) -> bool {
        self.protected.contains(peer)
    }

    /// Incoming connections counted in the address quotas now.
    #[cfg(test)]
    fn counted(&self) -> usize {
        self.ips.values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> SocketAddr {
        SocketAddr::new(s.parse().unwrap(), 4433)
    }

    fn node(n: u8) -> NodeId {
        NodeId::from_bytes([n; 32])
    }

    fn limits() -> AdmissionLimits {
        AdmissionLimits {
            max_connections: 10,
            reserved_connections: 3,
            per_ip: 2,
            per_subnet: 3,
            per_node: 1,
            exempt_loopback: true,
            first_frame_timeout: None,
        }
    }

    #[test]
    fn per_ip_and_per_subnet_quotas() {
        let mut a = Admission::new(limits());
        for _ in 0..2 {
            a.check_source(&ip("192.0.2.1"), 0).unwrap();
            a.add_source(&ip("192.0.2.1"));
        }
        assert_eq!(
            a.check_source(&ip("192.0.2.1"), 2),
            Err(Refusal::PerIp { limit: 2 })
        );
        // Another address of the same /24 gets one more: the subnet holds 3.
        a.check_source(&ip("192.0.2.2"), 2).unwrap();
        a.add_source(&ip("192.0.2.2"));
        assert_eq!(
            a.check_source(&ip("192.0.2.3"), 3),
            Err(Refusal::PerSubnet { limit: 3 })
        );
        // Another /24 is not affected; an IPv4-mapped IPv6 source counts as IPv4.
        a.check_source(&ip("192.0.3.1"), 3).unwrap();
        assert_eq!(
            a.check_source(&ip("::ffff:192.0.2.1"), 3),
            Err(Refusal::PerIp { limit: 2 })
        );
        // Closing one frees a slot for its address and subnet.
        a.remove_source(&ip("192.0.2.1"));
        a.check_source(&ip("192.0.2.1"), 2).unwrap();
        assert_eq!(a.counted(), 2);
    }

    #[test]
    fn ipv6_subnets_are_48_bits() {
        let mut a = Admission::new(limits());
        for s in ["2001:db8:1:1::1", "2001:db8:1:2::1", "2001:db8:1:3::1"] {
            a.add_source(&ip(s));
        }
        assert_eq!(
            a.check_source(&ip("2001:db8:1:ffff::9"), 3),
            Err(Refusal::PerSubnet { limit: 3 })
        );
        a.check_source(&ip("2001:db8:2::1"), 3).unwrap();
    }

    #[test]
    fn loopback_is_exempt_unless_turned_off() {
        let mut a = Admission::new(limits());
        for _ in 0..5 {
            a.add_source(&ip("127.0.0.1"));
        }
        a.check_source(&ip("127.0.0.1"), 5).unwrap();
        a.check_source(&ip("::1"), 5).unwrap();
        assert_eq!(a.counted(), 0);
        // Relayed connections' synthetic sources are never counted.
        let mut relayed = Admission::new(AdmissionLimits {
            exempt_loopback: false,
            ..limits()
        });
        for _ in 0..5 {
            relayed.add_source(&ip("240.0.0.1"));
        }
        relayed.check_source(&ip("240.0.0.1"), 5).unwrap();
        let mut strict = Admission::new(AdmissionLimits {
            exempt_loopback: false,
            ..limits()
        });
        for _ in 0..2 {
            strict.add_source(&ip("127.0.0.2"));
        }
        assert_eq!(
            strict.check_source(&ip("127.0.0.2"), 2),
            Err(Refusal::PerIp { limit: 2 })
        );
        strict.check_source(&ip("127.1.0.3"), 2).unwrap();
    }

    #[test]
    fn total_cap_applies_to_everyone() {
        let a = Admission::new(limits());
        assert_eq!(
            a.check_source(&ip("127.0.0.1"), 10),
            Err(Refusal::Full { limit: 10 })
        );
        a.check_source(&ip("127.0.0.1"), 9).unwrap();
    }

    #[test]
    fn the_reserve_is_for_wanted_peers() {
        let mut a = Admission::new(limits());
        // 7 of 10 open to strangers.
        a.check_peer(&node(1), 7).unwrap();
        assert_eq!(
            a.check_peer(&node(1), 8),
            Err(Refusal::Reserved {
                limit: 10,
                reserved: 3
            })
        );
        assert!(a.set_protected([node(1)].into_iter().collect()));
        assert!(!a.set_protected([node(1)].into_iter().collect()));
        assert!(a.is_protected(&node(1)));
        a.check_peer(&node(1), 10).unwrap();
        assert!(a.check_peer(&node(2), 8).is_err());
    }

    #[test]
    fn per_node_quota() {
        let mut a = Admission::new(limits());
        a.check_peer(&node(1), 1).unwrap();
        a.add_peer(node(1));
        assert_eq!(
            a.check_peer(&node(1), 2),
            Err(Refusal::PerNode { limit: 1 })
        );
        a.check_peer(&node(2), 2).unwrap();
        a.remove_peer(node(1));
        a.check_peer(&node(1), 1).unwrap();
    }
}
