//! What other nodes tell us about our own address: a bounded, deterministic aggregator.
//!
//! Right after a connection is set up each side tells the other the address it sees it at
//! (`Control::Observed`). One report alone proves little (the reporter may lie, or sit on our
//! LAN); several agreeing reporters give our external address, and comparing what reporters at
//! different addresses saw tells how the NAT in front of us maps ports:
//!
//! * **endpoint-independent** (a "cone"): reporters at two or more distinct IPs saw the same
//!   external ip:port, so a peer told that address can reach us there (hole punching works);
//! * **endpoint-dependent** ("symmetric"): reporters saw different external addresses through
//!   the same local address, so the address one peer saw is useless to another.
//!
//! Behind more than one NAT, where a reporter sits decides what it sees (see
//! [`crate::vantage`]): a peer on the internet sees the outermost NAT's address, a peer reached
//! over a private path (another customer of our carrier) the inner NAT's. Those two addresses
//! differ although every NAT keeps one mapping for all destinations, so reports are compared
//! only with reports of the same vantage: the **outside** ones decide when there are any, and
//! inside ones are compared only when they saw the same NAT (the same external IP). External
//! addresses seen from outside are listed before inside ones.
//!
//! No clock reads, no I/O: the result depends only on the sequence of reports (and the times
//! the caller gives), so it is unit-tested and property-tested directly. One report is kept per
//! reporting node (the latest), at most `max_reporters` reporters (the least recently heard is
//! forgotten first); a report whose reporter is gone is forgotten once it is old (see
//! `ObservedAddrs::expire`).

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::identity::NodeId;
use crate::vantage::{self, Vantage};

/// One node's statement of where it sees us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Report {
    /// The node that reported.
    pub reporter: NodeId,
    /// The reporter's address as we reach it (the remote address of the connection).
    pub reporter_addr: SocketAddr,
    /// Where the reporter sees us.
    pub observed: SocketAddr,
    /// Our own address on that connection, when known (local IP of the connection and the port
    /// of our socket).
    pub local: Option<SocketAddr>,
}

impl Report {
    /// The reporter saw our local address unchanged: no address translation on that path.
    fn untranslated(&self) -> bool {
        self.local == Some(self.observed)
    }

    /// The reporter saw another address than our local one: a NAT is on that path.
    fn translated(&self) -> bool {
        self.local.is_some_and(|l| l != self.observed)
    }

    /// Where the reporter sits relative to our NATs.
    fn vantage(&self) -> Vantage {
        vantage::vantage(self.reporter_addr.ip(), self.observed.ip())
    }
}

/// How the NAT in front of this node maps our socket to external addresses, as far as the
/// reports tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MappingBehaviour {
    /// Not enough reports through a NAT to tell (or no NAT at all).
    Unknown,
    /// The same external address for every destination (reporters at two or more distinct IPs
    /// agree): peers we have never talked to can reach us at it once we send to them.
    EndpointIndependent,
    /// A different external address per destination: what one peer saw is useless to another.
    EndpointDependent,
}

/// An external address of this node, with the evidence for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExternalAddr {
    /// The address other nodes see us at.
    pub addr: SocketAddr,
    /// How many distinct nodes reported it.
    pub reporters: usize,
    /// Reported by at least two distinct nodes. An unconfirmed address comes from the only
    /// reporter we have.
    pub confirmed: bool,
}

/// What the reports say, derived on demand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Summary {
    /// External addresses: those seen from outside first (see [`crate::vantage`]), then best
    /// supported first.
    pub external: Vec<ExternalAddr>,
    /// The NAT's mapping behaviour.
    pub behaviour: MappingBehaviour,
    /// Reports that saw our local address unchanged.
    pub untranslated: usize,
    /// Reports that saw another address than our local one.
    pub translated: usize,
    /// Distinct reporting nodes.
    pub reporters: usize,
    /// Our local addresses seen on reporting connections, most recent first.
    pub local_addrs: Vec<SocketAddr>,
}

/// The bounded set of reports, one per reporting node.
#[derive(Debug)]
pub(crate) struct ObservedAddrs {
    /// Per reporter: arrival order, the report, and when it arrived.
    reports: HashMap<NodeId, (u64, Report, Instant)>,
    /// Reporters from least to most recently heard.
    order: VecDeque<NodeId>,
    next_seq: u64,
    max_reporters: usize,
}

impl ObservedAddrs {
    /// An empty aggregator keeping at most `max_reporters` reports (at least one).
    pub(crate) fn new(max_reporters: usize) -> Self {
        Self {
            reports: HashMap::new(),
            order: VecDeque::new(),
            next_seq: 0,
            max_reporters: max_reporters.max(1),
        }
    }

    /// Records `report`, heard at `now`, replacing the reporter's earlier one. Returns whether
    /// anything changed.
    pub(crate) fn record(&mut self, report: Report, now: Instant) -> bool {
        let seq = self.next_seq;
        self.next_seq += 1;
        let changed = self
            .reports
            .insert(report.reporter, (seq, report, now))
            .is_none_or(|(_, old, _)| old != report);
        if let Some(pos) = self.order.iter().position(|r| *r == report.reporter) {
            self.order.remove(pos);
        }
        self.order.push_back(report.reporter);
        while self.reports.len() > self.max_reporters {
            match self.order.pop_front() {
                Some(old) => {
                    self.reports.remove(&old);
                }
                None => break,
            }
        }
        changed
    }

    /// Forgets the reports older than `max_age` whose reporter is no longer connected
    /// (`connected` says which are): the NAT may have given us another address since, and a
    /// peer reports only once per connection. Returns whether any was dropped.
    pub(crate) fn expire(
        &mut self,
        now: Instant,
        max_age: Duration,
        connected: impl Fn(&NodeId) -> bool,
    ) -> bool {
        let before = self.reports.len();
        self.reports.retain(|reporter, (_, _, heard)| {
            connected(reporter) || now.saturating_duration_since(*heard) < max_age
        });
        if self.reports.len() == before {
            return false;
        }
        let reports = &self.reports;
        self.order.retain(|r| reports.contains_key(r));
        true
    }

    /// Number of reporters held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.reports.len()
    }

    /// Reports, most recent first.
    fn newest_first(&self) -> Vec<&Report> {
        let mut all: Vec<&(u64, Report, Instant)> = self.reports.values().collect();
        all.sort_unstable_by_key(|r| std::cmp::Reverse(r.0));
        all.into_iter().map(|(_, r, _)| r).collect()
    }

    /// Derives external addresses and mapping behaviour from the reports held.
    pub(crate) fn summary(&self) -> Summary {
        let reports = self.newest_first();
        let reporters = reports.len();

        // Reports per observed address, in order of the most recent report of each.
        let mut by_addr: Vec<(SocketAddr, usize)> = Vec::new();
        for r in &reports {
            match by_addr.iter_mut().find(|(a, _)| *a == r.observed) {
                Some((_, n)) => *n += 1,
                None => by_addr.push((r.observed, 1)),
            }
        }
        // Outside addresses first (an inside one serves only peers on that private path), then
        // by support. Stable: equal counts keep the most recent first.
        by_addr.sort_by_key(|a| (vantage::is_inside(a.0.ip()), std::cmp::Reverse(a.1)));
        let mut external: Vec<ExternalAddr> = by_addr
            .iter()
            .filter(|(_, n)| *n >= 2)
            .map(|&(addr, reporters)| ExternalAddr {
                addr,
                reporters,
                confirmed: true,
            })
            .collect();
        if external.is_empty() && reporters == 1 {
            external.extend(by_addr.first().map(|&(addr, reporters)| ExternalAddr {
                addr,
                reporters,
                confirmed: false,
            }));
        }

        let mut local_addrs: Vec<SocketAddr> = Vec::new();
        for l in reports.iter().filter_map(|r| r.local) {
            if !local_addrs.contains(&l) {
                local_addrs.push(l);
            }
        }

        Summary {
            external,
            behaviour: behaviour(&reports),
            untranslated: reports.iter().filter(|r| r.untranslated()).count(),
            translated: reports.iter().filter(|r| r.translated()).count(),
            reporters,
            local_addrs,
        }
    }
}

/// Mapping behaviour from reports that went through a translation. The reports from outside
/// decide when there are any; reports from inside (a private path, see [`crate::vantage`]) are
/// judged only when no outside one exists, since they may see an inner NAT's address. Two reports
/// are compared only if they fit [`same_mapping`]. Evidence of an endpoint-dependent mapping wins
/// over evidence of an independent one, because advertising an address that only worked for one
/// peer wastes every other peer's dial.
fn behaviour(reports: &[&Report]) -> MappingBehaviour {
    let natted: Vec<&Report> = reports
        .iter()
        .copied()
        .filter(|r| !r.untranslated())
        .collect();
    let from_outside = natted.iter().any(|r| r.vantage() == Vantage::Outside);
    let judged: Vec<&Report> = natted
        .into_iter()
        .filter(|r| !from_outside || r.vantage() == Vantage::Outside)
        .collect();
    let mut independent = false;
    for (i, a) in judged.iter().enumerate() {
        for b in &judged[i + 1..] {
            if !same_mapping(a, b) {
                continue;
            }
            if a.observed != b.observed {
                return MappingBehaviour::EndpointDependent;
            }
            if distinct_hosts(a.reporter_addr.ip(), b.reporter_addr.ip()) {
                independent = true;
            }
        }
    }
    if independent {
        MappingBehaviour::EndpointIndependent
    } else {
        MappingBehaviour::Unknown
    }
}

/// Whether two reports of the same vantage speak of the same mapping: made through the same
/// local IP (a multi-homed node has one mapping per interface), in the same address family,
/// and, from inside, through the same NAT (the same external IP: an inside reporter may sit
/// behind any of our NATs, and each NAT has its own address).
fn same_mapping(a: &Report, b: &Report) -> bool {
    let local_ip = |r: &Report| r.local.map(|l| l.ip());
    local_ip(a) == local_ip(b)
        && a.observed.is_ipv4() == b.observed.is_ipv4()
        && (a.vantage() == Vantage::Outside || a.observed.ip() == b.observed.ip())
}

fn distinct_hosts(a: IpAddr, b: IpAddr) -> bool {
    a.to_canonical() != b.to_canonical()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use proptest::prelude::*;

    static BASE: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);

    fn now() -> Instant {
        *BASE
    }

    fn id(n: u8) -> NodeId {
        NodeId::from_bytes([n; 32])
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    const LOCAL: &str = "192.168.1.10:4000";

    fn report(n: u8, reporter_addr: &str, observed: &str) -> Report {
        Report {
            reporter: id(n),
            reporter_addr: sa(reporter_addr),
            observed: sa(observed),
            local: Some(sa(LOCAL)),
        }
    }

    #[test]
    fn single_reporter_gives_an_unconfirmed_address() {
        let mut o = ObservedAddrs::new(8);
        assert!(o.record(report(1, "1.1.1.1:9", "5.5.5.5:7000"), now()));
        let s = o.summary();
        assert_eq!(
            s.external,
            vec![ExternalAddr {
                addr: sa("5.5.5.5:7000"),
                reporters: 1,
                confirmed: false
            }]
        );
        assert_eq!(s.behaviour, MappingBehaviour::Unknown);
        assert_eq!((s.translated, s.untranslated, s.reporters), (1, 0, 1));
    }

    #[test]
    fn two_reporters_at_distinct_ips_confirm_and_show_independent_mapping() {
        let mut o = ObservedAddrs::new(8);
        o.record(report(1, "1.1.1.1:9", "5.5.5.5:7000"), now());
        o.record(report(2, "2.2.2.2:9", "5.5.5.5:7000"), now());
        let s = o.summary();
        assert_eq!(s.external.len(), 1);
        assert!(s.external[0].confirmed);
        assert_eq!(s.external[0].reporters, 2);
        assert_eq!(s.behaviour, MappingBehaviour::EndpointIndependent);
    }

    #[test]
    fn same_ip_reporters_confirm_but_do_not_prove_independence() {
        let mut o = ObservedAddrs::new(8);
        o.record(report(1, "1.1.1.1:9", "5.5.5.5:7000"), now());
        o.record(report(2, "1.1.1.1:10", "5.5.5.5:7000"), now());
        let s = o.summary();
        assert!(s.external[0].confirmed);
        assert_eq!(s.behaviour, MappingBehaviour::Unknown);
    }

    #[test]
    fn different_ports_per_destination_is_endpoint_dependent() {
        let mut o = ObservedAddrs::new(8);
        o.record(report(1, "1.1.1.1:9", "5.5.5.5:7000"), now());
        o.record(report(2, "2.2.2.2:9", "5.5.5.5:7001"), now());
        let s = o.summary();
        assert!(
            s.external.is_empty(),
            "two disagreeing reports confirm nothing"
        );
        assert_eq!(s.behaviour, MappingBehaviour::EndpointDependent);
        // A third agreeing with one of them confirms that one; the behaviour stays dependent.
        o.record(report(3, "3.3.3.3:9", "5.5.5.5:7001"), now());
        let s = o.summary();
        assert_eq!(s.external.len(), 1);
        assert_eq!(s.external[0].addr, sa("5.5.5.5:7001"));
        assert_eq!(s.behaviour, MappingBehaviour::EndpointDependent);
    }

    #[test]
    fn untranslated_reports_count_as_public_and_say_nothing_of_mapping() {
        let mut o = ObservedAddrs::new(8);
        o.record(report(1, "1.1.1.1:9", LOCAL), now());
        o.record(report(2, "2.2.2.2:9", LOCAL), now());
        let s = o.summary();
        assert_eq!((s.untranslated, s.translated), (2, 0));
        assert_eq!(s.behaviour, MappingBehaviour::Unknown);
        assert_eq!(s.external[0].addr, sa(LOCAL));
        assert_eq!(s.local_addrs, vec![sa(LOCAL)]);
    }

    #[test]
    fn different_local_ips_are_not_compared() {
        let mut o = ObservedAddrs::new(8);
        o.record(report(1, "1.1.1.1:9", "5.5.5.5:7000"), now());
        let mut other = report(2, "2.2.2.2:9", "6.6.6.6:8000");
        other.local = Some(sa("10.0.0.3:4000"));
        o.record(other, now());
        assert_eq!(o.summary().behaviour, MappingBehaviour::Unknown);
    }

    #[test]
    fn latest_report_of_a_reporter_replaces_its_earlier_one() {
        let mut o = ObservedAddrs::new(8);
        o.record(report(1, "1.1.1.1:9", "5.5.5.5:7000"), now());
        assert!(!o.record(report(1, "1.1.1.1:9", "5.5.5.5:7000"), now()));
        assert!(o.record(report(1, "1.1.1.1:9", "5.5.5.5:7001"), now()));
        let s = o.summary();
        assert_eq!(s.reporters, 1);
        assert_eq!(s.external[0].addr, sa("5.5.5.5:7001"));
    }

    #[test]
    fn least_recently_heard_reporter_is_evicted() {
        let mut o = ObservedAddrs::new(2);
        o.record(report(1, "1.1.1.1:9", "5.5.5.5:1"), now());
        o.record(report(2, "2.2.2.2:9", "5.5.5.5:2"), now());
        o.record(report(1, "1.1.1.1:9", "5.5.5.5:1"), now());
        o.record(report(3, "3.3.3.3:9", "5.5.5.5:1"), now());
        assert_eq!(o.len(), 2);
        let s = o.summary();
        // Reporter 2 (least recently heard) is gone; 1 and 3 agree.
        assert_eq!(s.external.len(), 1);
        assert_eq!(s.external[0].addr, sa("5.5.5.5:1"));
        assert_eq!(s.behaviour, MappingBehaviour::EndpointIndependent);
    }

    /// The double NAT of issue 16 as the lab builds it: a home router (carrier side
    /// 100.64.6.2) behind a carrier NAT (public 25.0.0.16), both keeping one mapping.
    const HOME: &str = "192.168.6.100:45597";
    const OUTER: &str = "25.0.0.16:45597";
    const INNER: &str = "100.64.6.2:45597";

    fn report_at(n: u8, local: &str, reporter_addr: &str, observed: &str) -> Report {
        Report {
            local: Some(sa(local)),
            ..report(n, reporter_addr, observed)
        }
    }

    #[test]
    fn behind_a_double_nat_an_inside_observer_does_not_make_the_mapping_dependent() {
        let mut o = ObservedAddrs::new(8);
        // Another customer of the carrier, reached over carrier addresses, sees the home
        // router's carrier-side address; peers on the internet see the carrier's.
        o.record(report_at(1, HOME, "100.65.6.2:50064", INNER), now());
        o.record(report_at(2, HOME, "25.0.0.11:4100", OUTER), now());
        o.record(report_at(3, HOME, "25.0.0.12:33800", OUTER), now());
        let s = o.summary();
        assert_eq!(s.behaviour, MappingBehaviour::EndpointIndependent);
        assert_eq!(s.external[0].addr, sa(OUTER));
        assert_eq!((s.translated, s.untranslated), (3, 0));
        // More inside observers agreeing on the inner address: listed, but after the outside
        // one even though better supported.
        o.record(report_at(4, HOME, "100.65.6.3:1", INNER), now());
        o.record(report_at(5, HOME, "100.65.6.4:1", INNER), now());
        let s = o.summary();
        assert_eq!(s.behaviour, MappingBehaviour::EndpointIndependent);
        let addrs: Vec<SocketAddr> = s.external.iter().map(|e| e.addr).collect();
        assert_eq!(addrs, vec![sa(OUTER), sa(INNER)]);
    }

    #[test]
    fn a_peer_reached_over_a_private_path_is_not_the_outside_view() {
        let mut o = ObservedAddrs::new(8);
        o.record(report(1, "1.1.1.1:9", "5.5.5.5:7000"), now());
        o.record(report(2, "2.2.2.2:9", "5.5.5.5:7000"), now());
        // Reached at a private address (a VPN, a carrier network): whatever it saw, it is
        // not what the internet sees.
        o.record(report(3, "10.8.0.4:9", "6.6.6.6:7000"), now());
        assert_eq!(o.summary().behaviour, MappingBehaviour::EndpointIndependent);
        // A peer on our own LAN sees our local address: no translation, no mapping evidence.
        o.record(report(4, "192.168.1.20:9", LOCAL), now());
        let s = o.summary();
        assert_eq!(s.behaviour, MappingBehaviour::EndpointIndependent);
        assert_eq!(s.untranslated, 1);
    }

    #[test]
    fn an_outside_disagreement_still_makes_the_mapping_dependent() {
        let mut o = ObservedAddrs::new(8);
        o.record(report_at(1, HOME, "100.65.6.2:1", INNER), now());
        o.record(report_at(2, HOME, "100.65.6.3:1", INNER), now());
        o.record(
            report_at(3, HOME, "25.0.0.11:4100", "25.0.0.16:1000"),
            now(),
        );
        o.record(
            report_at(4, HOME, "25.0.0.12:4100", "25.0.0.16:1001"),
            now(),
        );
        assert_eq!(o.summary().behaviour, MappingBehaviour::EndpointDependent);
    }

    #[test]
    fn inside_reports_alone_are_compared_per_nat() {
        // Only carrier customers have reported: two at distinct IPs agree.
        let mut o = ObservedAddrs::new(8);
        o.record(report_at(1, HOME, "100.65.6.2:1", INNER), now());
        o.record(report_at(2, HOME, "100.65.6.3:1", INNER), now());
        assert_eq!(o.summary().behaviour, MappingBehaviour::EndpointIndependent);
        // The same inner NAT, another port for another peer: dependent.
        o.record(report_at(3, HOME, "100.65.6.4:1", "100.64.6.2:2"), now());
        assert_eq!(o.summary().behaviour, MappingBehaviour::EndpointDependent);
        // Two inside reporters behind different NATs of ours (different external IPs) are
        // not compared.
        let mut o = ObservedAddrs::new(8);
        o.record(report_at(1, HOME, "100.65.6.2:1", INNER), now());
        o.record(report_at(2, HOME, "10.1.0.2:1", "10.1.0.1:45597"), now());
        assert_eq!(o.summary().behaviour, MappingBehaviour::Unknown);
    }

    fn arb_report() -> impl Strategy<Value = Report> {
        (0u8..12, 0u8..4, 0u16..3, 0u16..3, any::<bool>()).prop_map(
            |(n, rip, rport, oport, same_local)| Report {
                reporter: id(n),
                reporter_addr: SocketAddr::from(([9, 9, 9, rip], 100 + rport)),
                observed: SocketAddr::from(([5, 5, 5, 5], 7000 + oport)),
                local: Some(if same_local {
                    sa(LOCAL)
                } else {
                    sa("10.0.0.3:4000")
                }),
            },
        )
    }

    #[test]
    fn old_reports_of_gone_reporters_are_forgotten() {
        let mut o = ObservedAddrs::new(8);
        let t0 = now();
        o.record(report(1, "1.1.1.1:9", "5.5.5.5:7000"), t0);
        o.record(report(2, "2.2.2.2:9", "5.5.5.5:7000"), t0);
        let later = t0 + Duration::from_secs(60);
        // The NAT gave us a new address; a new peer reports it.
        o.record(report(3, "3.3.3.3:9", "6.6.6.6:7000"), later);
        let ttl = Duration::from_secs(30);
        // Reporter 1 is still connected: its report stays; 2 is gone and old: dropped.
        assert!(o.expire(later, ttl, |r| *r == id(1)));
        assert_eq!(o.len(), 2);
        assert_eq!(o.order.len(), 2);
        // Nothing else is old enough, or everyone left is connected.
        assert!(!o.expire(later, ttl, |r| *r == id(1)));
        assert!(!o.expire(later + ttl, ttl, |_| true));
        assert!(o.expire(later + ttl, ttl, |_| false));
        assert_eq!(o.len(), 0);
        assert_eq!(o.summary().reporters, 0);
    }

    /// Reports from inside (a carrier or private network): any inner address and port.
    fn arb_inside_report() -> impl Strategy<Value = Report> {
        (20u8..30, 0u8..3, 0u16..3).prop_map(|(n, rip, oport)| Report {
            reporter: id(n),
            reporter_addr: SocketAddr::from(([100, 65, 0, rip], 100)),
            observed: SocketAddr::from(([100, 64, 0, 2], 7000 + oport)),
            local: Some(sa(LOCAL)),
        })
    }

    proptest! {
        #[test]
        fn inside_reports_never_change_an_outside_verdict(
            outside in proptest::collection::vec(arb_report(), 1..12),
            inside in proptest::collection::vec(arb_inside_report(), 0..8),
        ) {
            let mut only_outside = ObservedAddrs::new(64);
            let mut both = ObservedAddrs::new(64);
            for r in &outside {
                only_outside.record(*r, now());
                both.record(*r, now());
            }
            for r in &inside {
                both.record(*r, now());
            }
            let s = both.summary();
            prop_assert_eq!(s.behaviour, only_outside.summary().behaviour);
            // Outside addresses come first.
            let first_inside = s.external.iter().position(|e| vantage::is_inside(e.addr.ip()));
            if let Some(i) = first_inside {
                prop_assert!(s.external[i..].iter().all(|e| vantage::is_inside(e.addr.ip())));
            }
        }

        #[test]
        fn bounded_and_consistent(reports in proptest::collection::vec(arb_report(), 0..60), cap in 1usize..6) {
            let mut o = ObservedAddrs::new(cap);
            for r in &reports {
                o.record(*r, now());
            }
            prop_assert!(o.len() <= cap);
            prop_assert_eq!(o.order.len(), o.len());
            let s = o.summary();
            prop_assert_eq!(s.reporters, o.len());
            prop_assert!(s.translated + s.untranslated <= s.reporters);
            for e in &s.external {
                prop_assert!(e.reporters >= 1 && e.reporters <= s.reporters);
                prop_assert_eq!(e.confirmed, e.reporters >= 2);
                if !e.confirmed {
                    prop_assert_eq!(s.reporters, 1);
                }
            }
            // Deterministic: the same sequence gives the same summary.
            let mut again = ObservedAddrs::new(cap);
            for r in &reports {
                again.record(*r, now());
            }
            prop_assert_eq!(again.summary(), s.clone());
            // Independence needs two reporters at distinct IPs agreeing through one local IP.
            if s.behaviour == MappingBehaviour::EndpointIndependent {
                let held: Vec<&Report> = o.reports.values().map(|(_, r, _)| r).collect();
                let witnessed = held.iter().any(|a| held.iter().any(|b| {
                    a.reporter != b.reporter && a.observed == b.observed
                        && a.local == b.local
                        && a.reporter_addr.ip() != b.reporter_addr.ip()
                }));
                prop_assert!(witnessed);
            }
        }
    }
}
