//! miniupnpd (the UPnP IGD + NAT-PMP daemon many home routers run) inside a router namespace.

use std::fmt::Write;
use std::net::Ipv4Addr;

/// A miniupnpd 2.3.1 configuration: outer interface `wan0`, listening on `lan0`, mapping only
/// for the router's own lan (`lan_net`/24), secure mode (a client may only map to itself).
pub(crate) fn config(lan_net: Ipv4Addr, uuid_tail: u32) -> String {
    let mut s = String::new();
    s.push_str("ext_ifname=wan0\n");
    s.push_str("listening_ip=lan0\n");
    s.push_str("enable_upnp=yes\n");
    s.push_str("enable_natpmp=yes\n");
    s.push_str("secure_mode=yes\n");
    s.push_str("system_uptime=yes\n");
    s.push_str("notify_interval=60\n");
    let _ = writeln!(s, "uuid=3d4c2a10-6b1e-4f7e-9a55-{uuid_tail:012x}");
    let _ = writeln!(s, "allow 1024-65535 {lan_net}/24 1024-65535");
    s.push_str("deny 0-65535 0.0.0.0/0 0-65535\n");
    s
}
