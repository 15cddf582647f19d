//! A P2PS network spread over emulated NATs: real `p2ps node` processes, one per site of the
//! namespace lab (full cone, address-restricted, port-restricted, symmetric, no NAT, a double
//! NAT and a UPnP home router) plus a public bootstrap node that introduces and relays. The
//! nodes must form the true ring, agree on lookups and pass a broadcast; the test prints how
//! each node classified itself and how its connections travel.
//!
//! Needs root (network namespaces); under `CI=true` it runs, elsewhere it says why it skips.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use p2ps_interop_tests::natlab::{require_root, NatKind, NatLab};
use p2ps_interop_tests::p2ps::PortMapping;
use p2ps_interop_tests::{check_lookups, random_keys, wait_ring, NodeProc, Start, TestNet};
use std::time::{Duration, Instant};

const JOIN_WAIT: Duration = Duration::from_secs(80);
const RING_WAIT: Duration = Duration::from_secs(90);

/// Overlay timings: faster stabilisation and finger refresh than the defaults, so the ring
/// settles within the test; every timeout (failure, join, lookup) keeps its default.
const NAT_TIMINGS: &[&str] = &[
    "--stabilize-interval-ms",
    "500",
    "--finger-refresh-ms",
    "5000",
    "--group-refresh-ms",
    "2000",
];

/// The lab, the bootstrap node and one node per site, all joined, with the ring exact.
fn network_over_nats() -> (NatLab, TestNet, Vec<NodeProc>, Instant) {
    let t_lab = Instant::now();
    let mut lab = NatLab::new().expect("lab");
    let public = lab.add_public_host().expect("public host");
    let kinds = [
        NatKind::FullCone,
        NatKind::AddressRestricted,
        NatKind::PortRestricted,
        NatKind::Symmetric,
        NatKind::None,
        NatKind::DoubleNat,
        NatKind::Upnp,
    ];
    let sites: Vec<_> = kinds
        .iter()
        .map(|k| lab.add_site(*k).expect("site"))
        .collect();
    eprintln!("lab ready in {:?}", t_lab.elapsed());

    let net = TestNet::new();
    let mut boot_args: Vec<&str> = NAT_TIMINGS.to_vec();
    boot_args.push("--relay-serve");
    let listen = format!("{}:4100", public.host_ip);
    let mut nodes: Vec<NodeProc> =
        vec![net.spawn_at(Some(&public.ns), "boot", Start::Create, &listen, &boot_args)];
    let ticket = nodes[0].wait_ticket(JOIN_WAIT);
    // Times from here on: from the start of the 7 joining nodes.
    let t0 = Instant::now();
    for (i, site) in sites.iter().enumerate() {
        let mut args: Vec<&str> = NAT_TIMINGS.to_vec();
        if site.kind == NatKind::Upnp || site.kind == NatKind::DoubleNat {
            args.push("--upnp");
        }
        let name = format!("n{i}-{}", site.kind);
        nodes.push(net.spawn_at(
            Some(&site.ns),
            &name,
            Start::Join(ticket.clone()),
            "0.0.0.0:0",
            &args,
        ));
    }
    let deadline = Instant::now() + JOIN_WAIT;
    while nodes[1..]
        .iter()
        .any(|n| !std::fs::read_to_string(&n.ticket_file).is_ok_and(|t| t.starts_with("p2ps1")))
    {
        if Instant::now() >= deadline {
            let all: Vec<String> = nodes.iter_mut().map(|n| n.describe()).collect();
            panic!(
                "not every node joined within {JOIN_WAIT:?}:\n{}",
                all.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("[{:?}] 8 nodes joined", t0.elapsed());

    wait_ring(&mut nodes.iter_mut().collect::<Vec<_>>(), RING_WAIT);
    eprintln!("[{:?}] the ring is exact", t0.elapsed());
    (lab, net, nodes, t0)
}

/// Eight nodes over seven kinds of NAT form the exact ring (joins answered through the
/// joiners' relay, then punched or relayed paths), each node classifies itself (the UPnP site
/// maps its port, the double NAT's mapping is reported useless), lookups from every node agree
/// with the true ring, and a broadcast from behind the port-restricted NAT reaches everyone.
#[test]
fn ring_over_nats() {
    if !require_root() {
        return;
    }
    let (_lab, _net, mut nodes, t0) = network_over_nats();
    // What each node found out about itself, and how its connections travel.
    let mut relayed = 0;
    for n in &mut nodes {
        let s = n.status();
        let paths: Vec<String> = s
            .connections
            .iter()
            .map(|c| {
                if c.relayed_by.is_empty() {
                    format!("{} direct", c.node.short())
                } else {
                    relayed += 1;
                    format!("{} relayed", c.node.short())
                }
            })
            .collect();
        eprintln!(
            "{:<24} {:<11} upnp: {:<40} {}",
            n.name,
            s.reachability,
            s.port_mapping,
            paths.join(", ")
        );
        let upnp_mapped = matches!(s.port_mapping, PortMapping::Mapped { .. });
        if n.name.ends_with("upnp") {
            assert!(
                upnp_mapped,
                "the UPnP site did not map its port: {}",
                s.port_mapping
            );
        }
        if n.name.ends_with("double-nat") {
            assert!(
                matches!(s.port_mapping, PortMapping::Useless { .. }),
                "behind a double NAT the mapping must be reported useless: {}",
                s.port_mapping
            );
        }
    }
    eprintln!("[{:?}] {relayed} connection ends relayed", t0.elapsed());

    // Answers to nodes not connected yet go through their relay while a direct path is made.
    let keys = random_keys(200);
    let t_lookups = Instant::now();
    let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        check_lookups(&mut nodes.iter_mut().collect::<Vec<_>>(), &keys)
    }));
    if let Err(e) = checked {
        for n in &mut nodes {
            eprintln!("{}", n.describe());
        }
        std::panic::resume_unwind(e);
    }
    eprintln!(
        "[{:?}] 8 x 200 lookups agree with the true ring ({:?} for all of them)",
        t0.elapsed(),
        t_lookups.elapsed()
    );

    // A broadcast from the node behind the port-restricted NAT reaches the 7 others.
    let out = nodes[3].cli(&["broadcast", "over the NATs"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "broadcast failed: {err}");
    assert!(err.contains("7 nodes received it"), "{err}");
    for (i, n) in nodes.iter_mut().enumerate() {
        if i != 3 {
            n.wait_line(Duration::from_secs(10), "the broadcast", |l| {
                l.ends_with("to everyone): over the NATs")
            });
        }
    }
    let forwarded: u64 = nodes
        .iter_mut()
        .map(|n| n.status().counters.forwarded_for_peers)
        .sum();
    eprintln!(
        "[{:?}] broadcast reached 7/7; {forwarded} messages forwarded by relays",
        t0.elapsed()
    );
}
