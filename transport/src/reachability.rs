//! Whether and how other nodes can reach this one, and which addresses to advertise.
//!
//! The classification combines three inputs: the observed-address reports of peers
//! ([`crate::observed`]), each compared with our local address on the connection it came over
//! (seen unchanged means no NAT on that path), a port mapping obtained from the gateway (UPnP /
//! NAT-PMP, supplied with `Transport::set_port_mapping`), and the NAT's mapping behaviour. What
//! peers on the internet see decides over what peers on a private path see (they may sit
//! between two of our NATs and see the inner one's address; see [`crate::vantage`]). The
//! result decides what goes into the addresses we hand out (`Transport::advertised_addrs`) and whether hole
//! punching is worth trying. Everything here is pure; the tracker only adds a
//! `watch` channel so that changes reach the application.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::identity::NodeId;
use crate::observed::{ExternalAddr, MappingBehaviour, ObservedAddrs, Report, Summary};
use crate::vantage::is_inside;

/// Most addresses advertised (and accepted as punch candidates).
pub(crate) const MAX_ADVERTISED: usize = 8;

/// Reporting peers remembered for the classification.
const MAX_REPORTERS: usize = 32;

/// A report from a peer we are no longer connected to is forgotten after this long: our NAT
/// may have moved us since, and peers report once per connection.
const REPORT_MAX_AGE: Duration = Duration::from_secs(600);

/// How this node can be reached from the outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reachability {
    /// Not enough reports yet (or reports through a NAT whose behaviour is not known yet).
    Unknown,
    /// Peers see our local address unchanged: no NAT in front of us.
    Public,
    /// The gateway forwards a port to us (UPnP / NAT-PMP) and no report contradicts it.
    PortMapped,
    /// Behind a NAT with endpoint-independent mapping: the observed address works for other
    /// peers, and hole punching usually succeeds.
    Cone,
    /// Behind a NAT with endpoint-dependent mapping: observed addresses are useless to other
    /// peers; hole punching rarely succeeds and a relay is needed.
    Symmetric,
}

/// How far reports back a port mapping supplied by the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PortMappingState {
    /// A peer saw us at exactly the mapped address.
    Confirmed,
    /// Nothing confirms or contradicts it yet.
    Unconfirmed,
    /// Peers see us at another external IP: the gateway is itself behind a NAT (carrier-grade
    /// or double NAT) and the mapping is useless from the outside.
    Contradicted,
}

/// A port mapping supplied by the gateway, with what reports say of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortMapping {
    /// The external address the gateway forwards to our socket.
    pub external: SocketAddr,
    /// Whether reports back it.
    pub state: PortMappingState,
}

/// A snapshot of this node's reachability (see `Transport::reachability`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReachabilityStatus {
    /// The classification.
    pub class: Reachability,
    /// External addresses reported by peers, best supported first (see [`ExternalAddr`]).
    pub external_addrs: Vec<ExternalAddr>,
    /// The NAT's mapping behaviour, as far as reports tell.
    pub mapping_behaviour: MappingBehaviour,
    /// The gateway's port mapping, if one was supplied.
    pub port_mapping: Option<PortMapping>,
    /// Distinct peers whose reports are held.
    pub reporters: usize,
}

impl Default for ReachabilityStatus {
    fn default() -> Self {
        Self {
            class: Reachability::Unknown,
            external_addrs: Vec::new(),
            mapping_behaviour: MappingBehaviour::Unknown,
            port_mapping: None,
            reporters: 0,
        }
    }
}

/// Classifies from a summary of reports and an optional port mapping.
pub(crate) fn classify(summary: &Summary, mapping: Option<SocketAddr>) -> ReachabilityStatus {
    let port_mapping = mapping.map(|external| PortMapping {
        external,
        state: mapping_state(summary, external),
    });
    let class = if port_mapping.is_some_and(|m| m.state != PortMappingState::Contradicted) {
        Reachability::PortMapped
    } else if summary.translated > 0 {
        // A NAT on some path outweighs peers that see us directly (those may share our LAN).
        match summary.behaviour {
            MappingBehaviour::EndpointIndependent => Reachability::Cone,
            MappingBehaviour::EndpointDependent => Reachability::Symmetric,
            MappingBehaviour::Unknown => Reachability::Unknown,
        }
    } else if summary.untranslated > 0 {
        Reachability::Public
    } else {
        Reachability::Unknown
    };
    ReachabilityStatus {
        class,
        external_addrs: summary.external.clone(),
        mapping_behaviour: summary.behaviour,
        port_mapping,
        reporters: summary.reporters,
    }
}

/// What reports say of the gateway's mapping at `external`. Addresses seen from outside decide
/// when there are any: behind a double NAT, peers on the carrier's network may well see us at
/// the home gateway's own (carrier-side) address, which says nothing of the internet's view.
fn mapping_state(summary: &Summary, external: SocketAddr) -> PortMappingState {
    let outside: Vec<&ExternalAddr> = summary
        .external
        .iter()
        .filter(|e| !is_inside(e.addr.ip()))
        .collect();
    let judged: Vec<&ExternalAddr> = if outside.is_empty() {
        summary.external.iter().collect()
    } else {
        outside
    };
    if judged.iter().any(|e| e.addr == external) {
        return PortMappingState::Confirmed;
    }
    let same_family: Vec<IpAddr> = judged
        .iter()
        .map(|e| e.addr.ip())
        .filter(|ip| ip.is_ipv4() == external.is_ipv4())
        .collect();
    if summary.translated > 0 && !same_family.is_empty() && !same_family.contains(&external.ip()) {
        PortMappingState::Contradicted
    } else {
        PortMappingState::Unconfirmed
    }
}

/// The addresses worth handing to other nodes, best first: the gateway's mapping (unless
/// contradicted), then reported external addresses (unless the NAT is symmetric, where they only
/// work for the peer that saw them), then our local addresses (the bound one if it is specific,
/// else the local addresses seen on reporting connections). No duplicates, at most
/// [`MAX_ADVERTISED`].
pub(crate) fn advertised(
    status: &ReachabilityStatus,
    bound: Option<SocketAddr>,
    local_addrs: &[SocketAddr],
) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = Vec::new();
    let mut push = |a: SocketAddr| {
        if usable_candidate(&a) && !out.contains(&a) && out.len() < MAX_ADVERTISED {
            out.push(a);
        }
    };
    if let Some(m) = status.port_mapping {
        if m.state != PortMappingState::Contradicted {
            push(m.external);
        }
    }
    if status.class != Reachability::Symmetric {
        for e in &status.external_addrs {
            push(e.addr);
        }
    }
    match bound {
        Some(b) if !b.ip().is_unspecified() => push(b),
        _ => local_addrs.iter().copied().for_each(&mut push),
    }
    out
}

/// Whether a peer could possibly dial `addr` (not unspecified, not multicast, not port 0).
pub(crate) fn usable_candidate(addr: &SocketAddr) -> bool {
    addr.port() != 0 && !addr.ip().is_unspecified() && !addr.ip().is_multicast()
}

/// The live reachability state of a transport.
#[derive(Debug)]
pub(crate) struct ReachabilityTracker {
    observed: ObservedAddrs,
    port_mapping: Option<SocketAddr>,
    status: watch::Sender<ReachabilityStatus>,
}

impl Default for ReachabilityTracker {
    fn default() -> Self {
        Self {
            observed: ObservedAddrs::new(MAX_REPORTERS),
            port_mapping: None,
            status: watch::Sender::new(ReachabilityStatus::default()),
        }
    }
}

impl ReachabilityTracker {
    /// Records one report; returns the new status if the class or the external addresses
    /// changed.
    pub(crate) fn record(
        &mut self,
        report: Report,
        now: Instant,
        connected: impl Fn(&NodeId) -> bool,
    ) -> Option<ReachabilityStatus> {
        self.observed.expire(now, REPORT_MAX_AGE, connected);
        self.observed.record(report, now);
        self.publish()
    }

    /// Sets or clears the gateway's port mapping; returns the new status if it changed.
    pub(crate) fn set_port_mapping(
        &mut self,
        mapping: Option<SocketAddr>,
    ) -> Option<ReachabilityStatus> {
        self.port_mapping = mapping;
        self.publish()
    }

    /// The current status.
    pub(crate) fn status(&self) -> ReachabilityStatus {
        self.status.borrow().clone()
    }

    /// A receiver notified when the class, the external addresses or the mapping change.
    pub(crate) fn subscribe(&self) -> watch::Receiver<ReachabilityStatus> {
        self.status.subscribe()
    }

    /// Our local addresses seen on reporting connections.
    pub(crate) fn local_addrs(&self) -> Vec<SocketAddr> {
        self.observed.summary().local_addrs
    }

    fn publish(&mut self) -> Option<ReachabilityStatus> {
        let fresh = classify(&self.observed.summary(), self.port_mapping);
        let mut changed = None;
        self.status.send_if_modified(|current| {
            let notable = current.class != fresh.class
                || current
                    .external_addrs
                    .iter()
                    .map(|e| (e.addr, e.confirmed))
                    .ne(fresh.external_addrs.iter().map(|e| (e.addr, e.confirmed)))
                || current.mapping_behaviour != fresh.mapping_behaviour
                || current.port_mapping != fresh.port_mapping;
            *current = fresh.clone();
            if notable {
                changed = Some(fresh.clone());
            }
            notable
        });
        changed
    }
}

impl<M> crate::endpoint::Transport<M>
where
    M: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
{
    /// How other nodes can reach this one, from the observed addresses peers reported, the
    /// port mapping (if any) and the NAT's mapping behaviour.
    pub fn reachability(&self) -> ReachabilityStatus {
        crate::connections::lock(&self.shared.traversal.reach).status()
    }

    /// A receiver that is notified whenever the class, the external addresses, the mapping
    /// behaviour or the port mapping change (not when only a report count changes).
    pub fn watch_reachability(&self) -> watch::Receiver<ReachabilityStatus> {
        crate::connections::lock(&self.shared.traversal.reach).subscribe()
    }

    /// The addresses worth handing to other nodes (in a ticket, a contact record), best first:
    /// the gateway's port mapping, then our external addresses as peers see them (unless the NAT
    /// is symmetric), then our local addresses. At most 8, no duplicates.
    pub fn advertised_addrs(&self) -> Vec<SocketAddr> {
        self.shared.advertised_addrs()
    }

    /// Sets (or clears, with `None`) the external address a gateway forwards to our socket
    /// (UPnP / NAT-PMP). It is advertised first unless reports show it is useless.
    pub fn set_port_mapping(&self, mapping: Option<SocketAddr>) {
        let changed =
            crate::connections::lock(&self.shared.traversal.reach).set_port_mapping(mapping);
        if let Some(status) = changed {
            tracing::info!(class = ?status.class, mapping = ?status.port_mapping, "reachability changed");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::identity::NodeId;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    const LOCAL: &str = "192.168.1.10:4000";

    fn summary(reports: &[(u8, &str, &str)]) -> Summary {
        let mut o = ObservedAddrs::new(16);
        for &(n, from, seen) in reports {
            o.record(
                Report {
                    reporter: NodeId::from_bytes([n; 32]),
                    reporter_addr: sa(from),
                    observed: sa(seen),
                    local: Some(sa(LOCAL)),
                },
                Instant::now(),
            );
        }
        o.summary()
    }

    #[test]
    fn nothing_known_is_unknown() {
        let s = classify(&summary(&[]), None);
        assert_eq!(s.class, Reachability::Unknown);
        assert!(advertised(&s, Some(sa("0.0.0.0:4000")), &[]).is_empty());
        assert_eq!(
            advertised(&s, Some(sa(LOCAL)), &[]),
            vec![sa(LOCAL)],
            "a specific bound address is always advertised"
        );
    }

    #[test]
    fn seen_unchanged_is_public() {
        let s = classify(&summary(&[(1, "1.1.1.1:1", LOCAL)]), None);
        assert_eq!(s.class, Reachability::Public);
        assert_eq!(
            advertised(&s, Some(sa("0.0.0.0:4000")), &[sa(LOCAL)]),
            vec![sa(LOCAL)]
        );
    }

    #[test]
    fn nat_behaviours() {
        let cone = summary(&[(1, "1.1.1.1:1", "5.5.5.5:9"), (2, "2.2.2.2:1", "5.5.5.5:9")]);
        let s = classify(&cone, None);
        assert_eq!(s.class, Reachability::Cone);
        assert_eq!(
            advertised(&s, None, &[sa(LOCAL)]),
            vec![sa("5.5.5.5:9"), sa(LOCAL)]
        );

        let sym = summary(&[
            (1, "1.1.1.1:1", "5.5.5.5:9"),
            (2, "2.2.2.2:1", "5.5.5.5:10"),
        ]);
        let s = classify(&sym, None);
        assert_eq!(s.class, Reachability::Symmetric);
        assert_eq!(advertised(&s, None, &[sa(LOCAL)]), vec![sa(LOCAL)]);

        // One report through a NAT: we know there is one, not what kind.
        let one = summary(&[(1, "1.1.1.1:1", "5.5.5.5:9")]);
        let s = classify(&one, None);
        assert_eq!(s.class, Reachability::Unknown);
        assert_eq!(
            advertised(&s, None, &[sa(LOCAL)]),
            vec![sa("5.5.5.5:9"), sa(LOCAL)],
            "the single observed address is worth a try"
        );

        // A LAN peer seeing us directly does not make us public when another path is NATed.
        let mixed = summary(&[
            (1, "192.168.1.20:1", LOCAL),
            (2, "1.1.1.1:1", "5.5.5.5:9"),
            (3, "2.2.2.2:1", "5.5.5.5:9"),
        ]);
        assert_eq!(classify(&mixed, None).class, Reachability::Cone);
    }

    fn summary_at(local: &str, reports: &[(u8, &str, &str)]) -> Summary {
        let mut o = ObservedAddrs::new(16);
        for &(n, from, seen) in reports {
            o.record(
                Report {
                    reporter: NodeId::from_bytes([n; 32]),
                    reporter_addr: sa(from),
                    observed: sa(seen),
                    local: Some(sa(local)),
                },
                Instant::now(),
            );
        }
        o.summary()
    }

    /// Issue 16: behind a double NAT, one peer on the carrier's network (reached over carrier
    /// addresses) saw the home router's carrier-side address, the internet the carrier's public
    /// one; the node called itself symmetric and advertised only its private address.
    #[test]
    fn double_nat_with_an_observer_between_the_nats_is_a_cone() {
        let home = "192.168.6.100:45597";
        let s = classify(
            &summary_at(
                home,
                &[
                    (1, "100.65.6.2:50064", "100.64.6.2:45597"),
                    (2, "25.0.0.11:4100", "25.0.0.16:45597"),
                    (3, "25.0.0.12:33800", "25.0.0.16:45597"),
                ],
            ),
            None,
        );
        assert_eq!(s.class, Reachability::Cone);
        assert_eq!(s.mapping_behaviour, MappingBehaviour::EndpointIndependent);
        assert_eq!(
            advertised(&s, Some(sa("0.0.0.0:45597")), &[sa(home)]),
            vec![sa("25.0.0.16:45597"), sa(home)]
        );

        // The issue's own numbers, the observer between the NATs on a private range.
        let local = "10.3.0.2:7000";
        let s = classify(
            &summary_at(
                local,
                &[
                    (1, "11.0.0.5:7000", "11.0.0.3:7000"),
                    (2, "10.9.0.3:7000", "10.9.0.1:7000"),
                    (3, "11.0.0.7:7000", "11.0.0.3:7000"),
                    (4, "10.3.0.5:7000", local),
                ],
            ),
            None,
        );
        assert_eq!(s.class, Reachability::Cone);
        assert_eq!(
            advertised(&s, Some(sa("0.0.0.0:7000")), &[sa(local)]),
            vec![sa("11.0.0.3:7000"), sa(local)]
        );
    }

    #[test]
    fn port_mapping_states() {
        let map = sa("5.5.5.5:4000");
        let s = classify(&summary(&[]), Some(map));
        assert_eq!(s.class, Reachability::PortMapped);
        assert_eq!(s.port_mapping.unwrap().state, PortMappingState::Unconfirmed);
        assert_eq!(advertised(&s, Some(sa(LOCAL)), &[]), vec![map, sa(LOCAL)]);

        let s = classify(&summary(&[(1, "1.1.1.1:1", "5.5.5.5:4000")]), Some(map));
        assert_eq!(s.port_mapping.unwrap().state, PortMappingState::Confirmed);
        assert_eq!(s.class, Reachability::PortMapped);

        // Same external IP, other port (outgoing traffic is masqueraded): consistent.
        let s = classify(&summary(&[(1, "1.1.1.1:1", "5.5.5.5:51000")]), Some(map));
        assert_eq!(s.port_mapping.unwrap().state, PortMappingState::Unconfirmed);
        assert_eq!(s.class, Reachability::PortMapped);

        // Peers see another external IP: the gateway sits behind a carrier-grade NAT.
        let cgnat = summary(&[(1, "1.1.1.1:1", "7.7.7.7:9"), (2, "2.2.2.2:1", "7.7.7.7:9")]);
        let s = classify(&cgnat, Some(sa("100.64.0.2:4000")));
        assert_eq!(
            s.port_mapping.unwrap().state,
            PortMappingState::Contradicted
        );
        assert_eq!(s.class, Reachability::Cone);
        assert_eq!(
            advertised(&s, None, &[sa(LOCAL)]),
            vec![sa("7.7.7.7:9"), sa(LOCAL)]
        );

        // A double-NAT gateway that granted a mapping on its carrier-side address: carrier
        // customers confirm it, the internet sees the carrier's address. Useless from outside.
        let inner = sa("100.64.6.2:4000");
        let s = classify(
            &summary(&[
                (1, "100.65.6.2:1", "100.64.6.2:4000"),
                (2, "100.65.6.3:1", "100.64.6.2:4000"),
                (3, "1.1.1.1:1", "7.7.7.7:4000"),
                (4, "2.2.2.2:1", "7.7.7.7:4000"),
            ]),
            Some(inner),
        );
        assert_eq!(
            s.port_mapping.unwrap().state,
            PortMappingState::Contradicted
        );
        assert_eq!(s.class, Reachability::Cone);
        assert_eq!(
            advertised(&s, None, &[sa(LOCAL)]),
            vec![sa("7.7.7.7:4000"), inner, sa(LOCAL)],
            "the inner address still serves the carrier's customers, after the outer one"
        );
        // Only carrier customers have reported so far: nothing contradicts it yet.
        let s = classify(
            &summary(&[
                (1, "100.65.6.2:1", "100.64.6.2:4000"),
                (2, "100.65.6.3:1", "100.64.6.2:4000"),
            ]),
            Some(inner),
        );
        assert_eq!(s.port_mapping.unwrap().state, PortMappingState::Confirmed);
    }

    #[test]
    fn advertised_is_bounded_and_skips_unusable() {
        let many: Vec<SocketAddr> = (1..20)
            .map(|p| SocketAddr::from(([10, 0, 0, 1], p)))
            .collect();
        let s = ReachabilityStatus::default();
        let out = advertised(&s, None, &many);
        assert_eq!(out.len(), MAX_ADVERTISED);
        assert!(advertised(&s, None, &[sa("0.0.0.0:5"), sa("224.0.0.1:5")]).is_empty());
    }

    #[test]
    fn tracker_notifies_only_notable_changes() {
        let mut t = ReachabilityTracker::default();
        let rx = t.subscribe();
        let r = |n: u8, from: &str, seen: &str| Report {
            reporter: NodeId::from_bytes([n; 32]),
            reporter_addr: sa(from),
            observed: sa(seen),
            local: Some(sa(LOCAL)),
        };
        let first = t
            .record(r(1, "1.1.1.1:1", LOCAL), Instant::now(), |_| true)
            .unwrap();
        assert_eq!(first.class, Reachability::Public);
        assert!(rx.has_changed().unwrap());
        // A second reporter confirms: the external address became confirmed.
        assert!(t
            .record(r(2, "2.2.2.2:1", LOCAL), Instant::now(), |_| true)
            .is_some());
        // A third one only raises the count: no notification, but the snapshot is current.
        assert!(t
            .record(r(3, "3.3.3.3:1", LOCAL), Instant::now(), |_| true)
            .is_none());
        assert_eq!(t.status().reporters, 3);
        assert!(t.set_port_mapping(Some(sa("5.5.5.5:1"))).is_some());
        assert_eq!(t.status().class, Reachability::PortMapped);
    }
}
