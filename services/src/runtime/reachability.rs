//! What this node tells others about where it is: advertised addresses following what peers
//! observe and the UPnP mapping, the relay hint while behind a NAT, and the connection to that
//! relay kept open.

use super::Actor;
use crate::id::OverlayId;
use p2ps_overlay::RelayHint;
use p2ps_transport::Reachability;
use std::net::SocketAddr;
use tracing::debug;

impl Actor {
    /// Reachability or the port mapping changed: advertise what is useful now, and tell peers
    /// where to find this node's relay while it is behind a NAT.
    pub(super) fn update_reachability(&mut self) {
        let r = self.transport.reachability();
        if !self.nat.fixed_addrs {
            let addrs = self.transport.advertised_addrs();
            if !addrs.is_empty() {
                self.advertise(addrs);
            }
        }
        let hint = match r.class {
            Reachability::Public | Reachability::PortMapped => None,
            _ => self.nat.relay.as_ref().map(|(id, addrs)| RelayHint {
                id: OverlayId(*id),
                addrs: addrs.clone(),
            }),
        };
        self.overlay.set_relay_hint(hint);
    }

    /// Before any peer has reported our address, a socket bound to a wildcard address
    /// advertises the IP of the interface that routes to the node we are about to join: on a
    /// machine without a default route (or with several interfaces) that is the one the rest
    /// of the network can reach, where the default-route guess made at start-up is not.
    pub(super) fn guess_addrs_towards(&mut self, peer_addrs: &[SocketAddr]) {
        if self.nat.fixed_addrs || !self.transport.advertised_addrs().is_empty() {
            return;
        }
        let Ok(bound) = self.transport.local_addr() else {
            return;
        };
        if !bound.ip().is_unspecified() {
            return;
        }
        let Some(ip) = peer_addrs
            .iter()
            .find_map(|a| crate::advertise::route_ip(bound, *a))
        else {
            return;
        };
        self.advertise(vec![SocketAddr::new(ip, bound.port())]);
    }

    /// The addresses this node hands out: in its overlay contacts and its ticket.
    pub(super) fn advertise(&mut self, addrs: Vec<SocketAddr>) {
        self.overlay.set_local_addrs(addrs.clone());
        if let Ok(mut a) = self.addrs.write() {
            *a = addrs;
        }
    }

    /// Keeps the connection to this node's relay open while it is behind a NAT.
    pub(super) fn keep_relay(&mut self) {
        let Some((relay, addrs)) = self.nat.relay.clone() else {
            return;
        };
        if matches!(
            self.transport.reachability().class,
            Reachability::Public | Reachability::PortMapped
        ) || self.transport.path(relay).is_some()
        {
            return;
        }
        self.transport.add_addresses(relay, addrs.iter().copied());
        let t = self.transport.clone();
        tokio::spawn(async move {
            if let Some(a) = addrs.first() {
                if let Err(e) = t.connect(relay, *a).await {
                    debug!(relay = %relay.short(), error = %e, "reconnecting to the relay");
                }
            }
        });
    }
}
