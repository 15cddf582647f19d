//! What each node concludes about itself, per kind of NAT, in a P2PS network where most peers
//! are themselves behind NATs: real `p2ps node` processes on the sites of the namespace lab
//! (full cone, address-restricted, port-restricted, symmetric, a double NAT, a UPnP home
//! router), a public bootstrap node that introduces and relays, and a second customer of the
//! double NAT's carrier (behind the carrier's NAT only) through whom the double-NAT node joins,
//! so that one of its observers sits between its two NATs and sees the inner mapping.
//!
//! For each node the test checks its `reachability` class and the addresses it advertises (the
//! `addrs` of `p2ps status`): a node behind a NAT that keeps one external address for every
//! peer is a cone and hands out that external address first; behind the symmetric NAT it hands
//! out no external address; the UPnP node hands out its mapped port; the bootstrap node is
//! public.
//!
//! Needs root (network namespaces); under `CI=true` it runs, elsewhere it says why it skips.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use p2ps_interop_tests::natlab::{require_root, NatKind, NatLab, Site};
use p2ps_interop_tests::p2ps::{Reachability, Status};
use p2ps_interop_tests::{wait_ring, NodeProc, Start, TestNet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

const JOIN_WAIT: Duration = Duration::from_secs(80);
const RING_WAIT: Duration = Duration::from_secs(90);
/// How long every node has, once the ring is exact, to reach the expected view of itself.
const SETTLE: Duration = Duration::from_secs(30);

/// Overlay timings as in `nat_network`: faster stabilisation and finger refresh, so that the
/// ring settles and the fingers connect within the test.
const NAT_TIMINGS: &[&str] = &[
    "--stabilize-interval-ms",
    "500",
    "--finger-refresh-ms",
    "5000",
    "--group-refresh-ms",
    "2000",
];

/// What a node should conclude about itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// No NAT: `public`, its own address advertised.
    Public,
    /// One external address for every peer: `cone`, the public address (outermost NAT's IP,
    /// our port) advertised first.
    Cone,
    /// A new external port per peer: `symmetric`, no external address advertised.
    Symmetric,
    /// A UPnP mapping on a public gateway: `port-mapped`, the mapping advertised first.
    PortMapped,
}

/// One node of the network and the site it runs on.
struct Member {
    node: NodeProc,
    site: Site,
    expect: Expect,
}

/// Why `s` is not what a node on `site` should conclude, or `None` if it is.
fn mismatch(site: &Site, expect: Expect, s: &Status) -> Option<String> {
    let want_class = match expect {
        Expect::Public => Reachability::Public,
        Expect::Cone => Reachability::Cone,
        Expect::Symmetric => Reachability::Symmetric,
        Expect::PortMapped => Reachability::PortMapped,
    };
    if s.reachability != want_class {
        return Some(format!(
            "reachability {} (want {want_class})",
            s.reachability
        ));
    }
    let public_ip = IpAddr::V4(site.public_ip);
    let host_ip = IpAddr::V4(site.host_ip);
    // The socket's port, from the local address it advertises.
    let port = s.addrs.iter().find(|a| a.ip() == host_ip).map(|a| a.port());
    match expect {
        Expect::Public => (s.addrs.first().map(|a| a.ip()) != Some(host_ip))
            .then(|| format!("advertises {:?}, not its own address first", s.addrs)),
        Expect::Cone => {
            let Some(port) = port else {
                return Some(format!("advertises {:?}: no local address", s.addrs));
            };
            let external = SocketAddr::new(public_ip, port);
            if s.addrs.first() != Some(&external) {
                return Some(format!(
                    "advertises {:?}, not its external address {external} first",
                    s.addrs
                ));
            }
            (s.external_addrs.first() != Some(&external)).then(|| {
                format!(
                    "external addresses {:?}, not {external} first",
                    s.external_addrs
                )
            })
        }
        Expect::Symmetric => {
            if s.addrs.iter().any(|a| a.ip() == public_ip) {
                Some(format!(
                    "advertises {:?}: an external address of a symmetric NAT",
                    s.addrs
                ))
            } else if port.is_none() {
                Some(format!("advertises {:?}: no local address", s.addrs))
            } else {
                None
            }
        }
        Expect::PortMapped => (s.addrs.first().map(|a| a.ip()) != Some(public_ip))
            .then(|| format!("advertises {:?}, not the mapped port first", s.addrs)),
    }
}

/// One line per node: what it concluded, and whether that is right.
fn table(members: &mut [Member]) -> (String, usize) {
    let mut out = String::new();
    let mut wrong = 0;
    for m in members.iter_mut() {
        let s = m.node.status();
        let verdict = match mismatch(&m.site, m.expect, &s) {
            Some(why) => {
                wrong += 1;
                format!("WRONG: {why}")
            }
            None => "ok".to_string(),
        };
        out.push_str(&format!(
            "{:<28} {:<11} addrs {:?} external {:?} upnp: {:.40} => {verdict}\n",
            m.node.name, s.reachability, s.addrs, s.external_addrs, s.port_mapping
        ));
    }
    (out, wrong)
}

/// Nodes behind full-cone, address-restricted, port-restricted, symmetric, double and UPnP NATs
/// (plus a customer of the double NAT's carrier and a public bootstrap node) each classify
/// themselves by their NAT's mapping, and advertise their external address when it serves every
/// peer: first, before their private one.
#[test]
fn each_node_knows_its_nat() {
    if !require_root() {
        return;
    }
    let t_lab = Instant::now();
    let mut lab = NatLab::new().expect("lab");
    let public = lab.add_public_host().expect("public host");
    let kinds = [
        NatKind::FullCone,
        NatKind::AddressRestricted,
        NatKind::PortRestricted,
        NatKind::Symmetric,
        NatKind::DoubleNat,
        NatKind::Upnp,
    ];
    let sites: Vec<Site> = kinds
        .iter()
        .map(|k| lab.add_site(*k).expect("site"))
        .collect();
    let double = sites
        .iter()
        .find(|s| s.kind == NatKind::DoubleNat)
        .expect("double NAT site");
    let customer = lab.add_carrier_customer(double).expect("carrier customer");
    eprintln!("lab ready in {:?}", t_lab.elapsed());

    let net = TestNet::new();
    let mut boot_args: Vec<&str> = NAT_TIMINGS.to_vec();
    boot_args.push("--relay-serve");
    let listen = format!("{}:4100", public.host_ip);
    let mut boot = net.spawn_at(Some(&public.ns), "boot", Start::Create, &listen, &boot_args);
    let ticket = boot.wait_ticket(JOIN_WAIT);
    let t0 = Instant::now();
    let mut members = vec![Member {
        node: boot,
        site: public.clone(),
        expect: Expect::Public,
    }];

    // The carrier's other customer joins first; the double-NAT node joins through it, over
    // carrier addresses.
    let cust = net.spawn_at(
        Some(&customer.ns),
        "carrier-customer",
        Start::Join(ticket.clone()),
        "0.0.0.0:0",
        NAT_TIMINGS,
    );
    members.push(Member {
        node: cust,
        site: customer.clone(),
        expect: Expect::Cone,
    });
    let customer_ticket = members[1].node.wait_ticket(JOIN_WAIT);

    for (i, site) in sites.iter().enumerate() {
        let mut args: Vec<&str> = NAT_TIMINGS.to_vec();
        if site.kind.has_upnp() {
            args.push("--upnp");
        }
        let (via, expect) = match site.kind {
            NatKind::DoubleNat => (customer_ticket.clone(), Expect::Cone),
            NatKind::Symmetric => (ticket.clone(), Expect::Symmetric),
            NatKind::Upnp => (ticket.clone(), Expect::PortMapped),
            NatKind::None => (ticket.clone(), Expect::Public),
            _ => (ticket.clone(), Expect::Cone),
        };
        let name = format!("n{i}-{}", site.kind);
        let node = net.spawn_at(Some(&site.ns), &name, Start::Join(via), "0.0.0.0:0", &args);
        members.push(Member {
            node,
            site: site.clone(),
            expect,
        });
    }
    for m in &mut members {
        m.node.wait_ticket(JOIN_WAIT);
    }
    eprintln!("[{:?}] {} nodes joined", t0.elapsed(), members.len());
    wait_ring(
        &mut members.iter_mut().map(|m| &mut m.node).collect::<Vec<_>>(),
        RING_WAIT,
    );
    eprintln!("[{:?}] the ring is exact", t0.elapsed());

    // The premise: the customer reaches the double-NAT node over carrier addresses, at its
    // home router's carrier-side address, so it reports that inner address.
    let inner = IpAddr::V4(
        double
            .router_outer_ip
            .expect("a double NAT has a home router"),
    );
    let over_carrier = |m: &mut Member| {
        m.node
            .status()
            .connections
            .iter()
            .any(|c| c.relayed_by.is_empty() && c.addr.ip() == inner)
    };
    let mut premise = over_carrier(&mut members[1]);

    // Reports arrive as connections are made: give every node a bounded time to settle.
    let deadline = Instant::now() + SETTLE;
    let (text, wrong) = loop {
        let (text, wrong) = table(&mut members);
        premise = premise || over_carrier(&mut members[1]);
        if (wrong == 0 && premise) || Instant::now() >= deadline {
            break (text, wrong);
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    eprintln!("[{:?}] what each node concluded:\n{text}", t0.elapsed());
    assert!(
        premise,
        "the carrier customer never had a direct connection to the double-NAT node at {inner}: \
         {}",
        members[1].node.describe()
    );
    if wrong > 0 {
        for m in &mut members {
            if mismatch(&m.site, m.expect, &m.node.status()).is_some() {
                eprintln!("{}", m.node.describe());
            }
        }
    }
    assert_eq!(
        wrong, 0,
        "{wrong} nodes misjudged their own reachability:\n{text}"
    );
}
