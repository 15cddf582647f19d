//! The address a node advertises before any peer has told it what it sees: the IP of the
//! interface that routes towards the network (found by a route lookup; no packet is sent).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The address to advertise for a socket bound to `a` until peers report what they see: an
/// unspecified IP becomes the address of the interface that holds the default route (found by
/// a route lookup, no packet is sent), or loopback on a machine without one.
pub(crate) fn advertised(a: SocketAddr) -> SocketAddr {
    let probe: SocketAddr = if a.is_ipv4() {
        SocketAddr::from(([203, 0, 113, 1], 9))
    } else {
        SocketAddr::from((Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1), 9))
    };
    if !a.ip().is_unspecified() {
        return a;
    }
    let loopback: IpAddr = if a.is_ipv4() {
        Ipv4Addr::LOCALHOST.into()
    } else {
        Ipv6Addr::LOCALHOST.into()
    };
    SocketAddr::new(route_ip(a, probe).unwrap_or(loopback), a.port())
}

/// The local IP the kernel would use from a socket bound like `bound` to reach `probe`
/// (connecting a UDP socket only looks the route up; no packet is sent).
pub(crate) fn route_ip(bound: SocketAddr, probe: SocketAddr) -> Option<IpAddr> {
    if bound.is_ipv4() != probe.is_ipv4() {
        return None;
    }
    let any: SocketAddr = if bound.is_ipv4() {
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))
    } else {
        SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0))
    };
    let s = std::net::UdpSocket::bind(any).ok()?;
    s.connect(probe).ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}
