//! The node's status snapshot: its place in the ring, its connections, its services and its
//! counters.

use super::Actor;
use crate::id::OverlayId;
use crate::status::{Counters, FingerEntry, GroupEntry, PeerEntry, ServiceEntry, Status};
use p2ps_overlay::cast::CastExt;
use p2ps_overlay::groups::GroupExt;
use p2ps_transport::{PathKind, Reachability, StreamClass};

impl Actor {
    /// A snapshot of the node.
    pub(super) fn status(&self) -> Status {
        let t = self.overlay.table();
        let ids = |v: &[p2ps_overlay::Peer<OverlayId>]| v.iter().map(|p| p.id.0).collect();
        let ts = self.transport.stats();
        let os = self.overlay.stats();
        let reach = self.transport.reachability();
        Status {
            id: self.transport.node_id(),
            ring_position: self.overlay.pos(),
            addrs: self.addrs.read().map(|a| a.clone()).unwrap_or_default(),
            reachability: reach.class.into(),
            external_addrs: reach.external_addrs.iter().map(|e| e.addr).collect(),
            port_mapping: match &self.nat.mapper {
                None => crate::status::PortMapping::Off,
                Some(m) => (&m.state()).into(),
            },
            relay: match reach.class {
                Reachability::Public | Reachability::PortMapped => Vec::new(),
                _ => self.nat.relay.iter().map(|(id, _)| *id).collect(),
            },
            state: self.overlay.state().into(),
            strategy: self.overlay.config().strategy,
            successors: ids(t.successors()),
            predecessors: ids(t.predecessors()),
            fingers: t
                .finger_slots()
                .filter_map(|(dir, level, p)| {
                    p.map(|p| FingerEntry {
                        dir,
                        level,
                        node: p.id.0,
                    })
                })
                .collect(),
            distinct_neighbours: t.distinct_peers().len(),
            connections: ts
                .peers
                .iter()
                .map(|p| PeerEntry {
                    node: p.peer,
                    addr: p.remote_addr,
                    outbound: p.outbound,
                    relayed_by: match self.transport.path(p.peer) {
                        Some(PathKind::Relayed { relay, .. }) => vec![relay],
                        _ => Vec::new(),
                    },
                    rtt_ms: p.rtt.as_secs_f64() * 1000.0,
                })
                .collect(),
            groups: self
                .overlay
                .group_roles()
                .into_iter()
                .map(|r| GroupEntry {
                    name: self.group_names.get(&r.group).cloned(),
                    position: r.group,
                    member: r.member,
                    closed: self
                        .group_names
                        .get(&r.group)
                        .and_then(|n| self.closed_groups.get(n))
                        .is_some_and(|c| c.id() == r.group),
                    root: r.root,
                    parent: r.parent.map(|p| p.0).into_iter().collect(),
                    children: r.children.into_iter().map(|p| p.0).collect(),
                })
                .collect(),
            casts_in_progress: self.overlay.casts_in_progress(),
            network_size_estimate: p2ps_census::network_size(t),
            services: self
                .overlay
                .services()
                .into_iter()
                .map(|s| ServiceEntry {
                    name: s.name.to_string(),
                    id: s.id.0,
                    counters: s
                        .counters
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect(),
                })
                .collect(),
            counters: Counters {
                messages_out: ts.classes.iter().map(|c| c.messages_out).sum(),
                messages_in: ts.classes.iter().map(|c| c.messages_in).sum(),
                bytes_out: ts.classes.iter().map(|c| c.bytes_out).sum(),
                bytes_in: ts.classes.iter().map(|c| c.bytes_in).sum(),
                udp_bytes_out: ts.udp.bytes_out,
                udp_bytes_in: ts.udp.bytes_in,
                routing_bytes_out: ts.class(StreamClass::Routing).bytes_out,
                user_bytes_out: ts.class(StreamClass::User).bytes_out,
                tree_bytes_out: ts.class(StreamClass::Tree).bytes_out,
                forwarded: os.forwarded,
                delivered: self.delivered(),
                dropped: os.dropped,
                lookups_ok: os.lookups_ok,
                lookups_failed: os.lookups_failed,
                peers_failed: os.peers_failed,
                forged: os.forged,
                stale: os.stale,
                unverified: os.unverified,
                bad_answers: os.bad_answers,
                rejoins: os.rejoins,
                rate_limited: os.rate_limited,
                connections_dialed: ts.connections_dialed,
                frame_errors: ts.frame_errors,
                handshakes_failed: ts.handshakes_failed,
                ..self.counters
            },
            uptime_secs: self.start.elapsed().as_secs_f64(),
        }
    }
}
