//! Where the peer that reported our address sits relative to our NATs, judged from addresses
//! alone.
//!
//! Behind more than one NAT (a home router behind a carrier-grade NAT, a NAT inside a LAN) the
//! address a peer sees us at depends on where it sits: a peer on the internet sees the
//! outermost NAT's public address, while a peer reached over a private path (another customer
//! of the same carrier, a host on the network between the two NATs) sees the inner NAT's
//! address, in a private or shared range. Both are right, and neither says the NAT maps us
//! anew for every destination. So a report is judged from the **outside** when both the address
//! it saw us at and the address we reach the reporter at are ones the internet routes, and from
//! **inside** otherwise; reports are compared only with reports of the same vantage (see
//! [`crate::observed`]), and the outside ones describe what the rest of the network sees.
//!
//! Ranges that stand for "inside": IPv4 private (10/8, 172.16/12, 192.168/16), shared/CGNAT
//! (100.64/10), loopback, link-local, "this network" (0/8); IPv6 loopback, unique local
//! (fc00::/7), link-local (fe80::/10), unspecified. IPv4-mapped IPv6 addresses are judged as
//! IPv4. Documentation and benchmarking ranges count as outside: they stand for public
//! addresses in examples and tests.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Where an observer sits relative to our NATs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Vantage {
    /// On the internet side of our outermost NAT: it sees what every outside peer sees.
    Outside,
    /// On a private path (a private or carrier network): it may see an inner NAT's address.
    Inside,
}

/// The vantage of a peer we reach at `reporter` that saw us at `observed`.
pub fn vantage(reporter: IpAddr, observed: IpAddr) -> Vantage {
    if is_inside(reporter) || is_inside(observed) {
        Vantage::Inside
    } else {
        Vantage::Outside
    }
}

/// Whether `ip` belongs to a private, shared (carrier-grade NAT), loopback or link-local range:
/// an address only meaningful inside some network, never the internet side of our NATs.
pub fn is_inside(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => inside_v4(v4),
        IpAddr::V6(v6) => inside_v6(v6),
    }
}

fn inside_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || a == 0
        // 100.64.0.0/10, shared address space of carrier-grade NATs (RFC 6598).
        || (a == 100 && (64..128).contains(&b))
}

fn inside_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    ip.is_loopback()
        || ip.is_unspecified()
        // fc00::/7 unique local, fe80::/10 link-local.
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn private_shared_and_local_ranges_are_inside() {
        for a in [
            "10.3.0.2",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.10",
            "100.64.0.1",
            "100.127.255.254",
            "127.0.0.1",
            "169.254.1.1",
            "0.1.2.3",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(is_inside(ip(a)), "{a}");
        }
    }

    #[test]
    fn routed_ranges_are_outside() {
        for a in [
            "25.0.0.16",
            "11.0.0.3",
            "100.63.255.255",
            "100.128.0.0",
            "172.32.0.1",
            "1.1.1.1",
            "203.0.113.5",
            "2001:db8::1",
            "2a00::1",
            "::ffff:5.5.5.5",
        ] {
            assert!(!is_inside(ip(a)), "{a}");
        }
    }

    #[test]
    fn an_observer_is_outside_only_if_both_addresses_are() {
        assert_eq!(vantage(ip("1.1.1.1"), ip("5.5.5.5")), Vantage::Outside);
        // Another customer of our carrier sees our home router's carrier-side address.
        assert_eq!(vantage(ip("100.65.6.2"), ip("100.64.6.2")), Vantage::Inside);
        // Reached over a private path: whatever it saw, it is not the internet's view.
        assert_eq!(vantage(ip("10.0.0.7"), ip("5.5.5.5")), Vantage::Inside);
        assert_eq!(vantage(ip("1.1.1.1"), ip("192.168.0.2")), Vantage::Inside);
    }
}
