//! The nftables rule sets that make a router namespace behave like each kind of NAT.
//!
//! Every router gets ONE table `inet filter` laid out the way miniupnpd 2.3.1's nftables
//! backend expects (chains `forward`, `prerouting`, `postrouting` jumping to the empty chains
//! `miniupnpd`, `prerouting_miniupnpd`, `postrouting_miniupnpd`), so that the same layout serves
//! routers with and without miniupnpd. The router's outer interface is `wan0`, its inner one
//! `lan0`. The forward policy is drop: only traffic the kind allows crosses; new connections
//! from outside to the router itself are dropped.

use std::fmt::Write;
use std::net::Ipv4Addr;

/// How a router maps and filters (the NAT behaviour of RFC 4787 terms).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Behaviour {
    /// Port-preserving masquerade; any inbound UDP to a port >= 1024 goes to the lan host.
    FullCone,
    /// Port-preserving masquerade; inbound UDP only from addresses the lan host sent to.
    AddressRestricted,
    /// Plain conntrack masquerade: inbound only from the exact remote address and port.
    PortRestricted,
    /// A new random outer port per destination; conntrack filtering.
    Symmetric,
}

/// How long the address-restricted router remembers a destination address.
const CONTACTED_TIMEOUT_S: u32 = 120;

/// The nftables script (for `nft -f -`) of a router that behaves as `behaviour` for the lan
/// host `lan_host`.
pub(crate) fn router_rules(behaviour: Behaviour, lan_host: Ipv4Addr) -> String {
    let mut s = String::from("table inet filter {\n");
    if behaviour == Behaviour::AddressRestricted {
        let _ = writeln!(
            s,
            "  set contacted {{ type ipv4_addr; flags dynamic,timeout; timeout {CONTACTED_TIMEOUT_S}s; }}"
        );
    }
    s.push_str("  chain miniupnpd { }\n");
    s.push_str("  chain prerouting_miniupnpd { }\n");
    s.push_str("  chain postrouting_miniupnpd { }\n");

    // Unsolicited traffic to the router itself is dropped before its conntrack entry is
    // confirmed. Accepting it (even just to answer "port unreachable") would leave an entry
    // that occupies the outer port towards that sender, and a later packet of the lan host to
    // the same sender would then be masqueraded to a different port: the mapping would stop
    // being endpoint-independent. Real routers firewall their WAN side the same way.
    s.push_str("  chain input {\n    type filter hook input priority 0; policy accept;\n");
    s.push_str("    iifname \"wan0\" ct state new drop\n  }\n");
    s.push_str("  chain forward {\n    type filter hook forward priority 0; policy drop;\n");
    s.push_str("    ct state established,related accept\n");
    if behaviour == Behaviour::AddressRestricted {
        s.push_str("    iifname \"lan0\" oifname \"wan0\" update @contacted { ip daddr } accept\n");
    } else {
        s.push_str("    iifname \"lan0\" oifname \"wan0\" accept\n");
    }
    if matches!(
        behaviour,
        Behaviour::FullCone | Behaviour::AddressRestricted
    ) {
        s.push_str("    iifname \"wan0\" oifname \"lan0\" ct status dnat accept\n");
    }
    s.push_str("    jump miniupnpd\n  }\n");

    s.push_str(
        "  chain prerouting {\n    type nat hook prerouting priority -100; policy accept;\n",
    );
    s.push_str("    jump prerouting_miniupnpd\n");
    match behaviour {
        Behaviour::FullCone => {
            let _ = writeln!(
                s,
                "    iifname \"wan0\" udp dport 1024-65535 dnat ip to {lan_host}"
            );
        }
        Behaviour::AddressRestricted => {
            let _ = writeln!(
                s,
                "    iifname \"wan0\" ip saddr @contacted udp dport 1024-65535 dnat ip to {lan_host}"
            );
        }
        Behaviour::PortRestricted | Behaviour::Symmetric => {}
    }
    s.push_str("  }\n");

    s.push_str(
        "  chain postrouting {\n    type nat hook postrouting priority 100; policy accept;\n",
    );
    s.push_str("    jump postrouting_miniupnpd\n");
    if behaviour == Behaviour::Symmetric {
        s.push_str("    oifname \"wan0\" masquerade fully-random\n");
    } else {
        s.push_str("    oifname \"wan0\" masquerade\n");
    }
    s.push_str("  }\n}\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_restricted_rules_remember_destinations() {
        let r = router_rules(
            Behaviour::AddressRestricted,
            Ipv4Addr::new(192, 168, 1, 100),
        );
        assert!(r.contains("update @contacted { ip daddr }"));
        assert!(r.contains("ip saddr @contacted udp dport 1024-65535 dnat ip to 192.168.1.100"));
    }

    #[test]
    fn only_symmetric_randomises_ports() {
        let lan = Ipv4Addr::new(192, 168, 1, 100);
        assert!(router_rules(Behaviour::Symmetric, lan).contains("masquerade fully-random"));
        for b in [
            Behaviour::FullCone,
            Behaviour::AddressRestricted,
            Behaviour::PortRestricted,
        ] {
            assert!(!router_rules(b, lan).contains("random"), "{b:?}");
        }
    }
}
