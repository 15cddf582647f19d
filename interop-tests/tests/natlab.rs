//! The NAT lab's sites behave as their kind claims, measured with plain UDP from two public
//! probe hosts: how the host's traffic is mapped (the same outer address and port towards every
//! destination, or a new one per destination) and what inbound traffic the NAT lets through
//! after the host has contacted only probe 1.
//!
//! For every site the node's UPnP port mapper is run as well: only the UPnP router grants a
//! mapping (and probe 2 then gets through it), the CGNAT home router's mapping is reported
//! useless, the others have no gateway.
//!
//! Needs root (network namespaces, nftables, miniupnpd); without root it says so and skips,
//! except under `CI=true`, where it fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use p2ps_interop_tests::natlab::{recv_token, require_root, NatKind, NatLab, NsPortMapper, Site};
use p2ps_transport::portmap::{MappingState, PortMapConfig};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// How long to wait for a packet that should arrive.
const ARRIVAL: Duration = Duration::from_secs(2);
/// How long to wait before concluding that a packet was filtered.
const SILENCE: Duration = Duration::from_secs(1);

/// What one site's NAT was measured to do.
#[derive(Debug)]
struct Measured {
    kind: NatKind,
    local_port: u16,
    /// The host's outer address as probe 1 (port a), probe 2 and probe 1 (port b) saw it.
    ext: [SocketAddr; 3],
    /// Probe 1 reached the host's mapping from a port the host never sent to.
    from_other_port: bool,
    /// Probe 2 (never contacted) reached the host's mapping.
    from_other_host: bool,
    /// What the UPnP port mapper concluded for the host's port.
    upnp: MappingState,
    /// Probe 2 reached the UPnP-mapped port from a fresh socket.
    upnp_reachable: bool,
}

impl Measured {
    fn independent_mapping(&self) -> bool {
        self.ext[0] == self.ext[1] && self.ext[1] == self.ext[2]
    }
}

fn measure(lab: &NatLab, site: &Site, probe1: &Site, probe2: &Site) -> Measured {
    let host = lab.udp_socket(site, 0).unwrap();
    let local_port = host.local_addr().unwrap().port();
    let p1a = lab.udp_socket(probe1, 0).unwrap();
    let p1b = lab.udp_socket(probe1, 0).unwrap();
    let p2 = lab.udp_socket(probe2, 0).unwrap();
    let addr_of = |probe: &Site, s: &UdpSocket| {
        SocketAddr::new(probe.host_ip.into(), s.local_addr().unwrap().port())
    };
    let tag = site.kind.to_string();

    // The host contacts probe 1 (port a) only.
    let t = format!("{tag} map1");
    host.send_to(t.as_bytes(), addr_of(probe1, &p1a)).unwrap();
    let ext1 = recv_token(&p1a, &t, ARRIVAL)
        .unwrap_or_else(|| panic!("{tag}: host could not reach probe 1"));

    // Filtering: who may now send to the mapping?
    let t = format!("{tag} other port");
    p1b.send_to(t.as_bytes(), ext1).unwrap();
    let from_other_port = recv_token(&host, &t, SILENCE).is_some();
    let t = format!("{tag} other host");
    p2.send_to(t.as_bytes(), ext1).unwrap();
    let from_other_host = recv_token(&host, &t, SILENCE).is_some();
    let t = format!("{tag} reply");
    p1a.send_to(t.as_bytes(), ext1).unwrap();
    assert!(
        recv_token(&host, &t, ARRIVAL).is_some(),
        "{tag}: the contacted probe's reply did not get through"
    );

    // Mapping: the outer address towards other destinations.
    let t = format!("{tag} map2");
    host.send_to(t.as_bytes(), addr_of(probe2, &p2)).unwrap();
    let ext2 = recv_token(&p2, &t, ARRIVAL)
        .unwrap_or_else(|| panic!("{tag}: host could not reach probe 2"));
    let t = format!("{tag} map3");
    host.send_to(t.as_bytes(), addr_of(probe1, &p1b)).unwrap();
    let ext3 = recv_token(&p1b, &t, ARRIVAL)
        .unwrap_or_else(|| panic!("{tag}: host could not reach probe 1's other port"));

    // The gateway: can the host's port be mapped by UPnP, and does the mapping let a stranger
    // (a fresh socket of probe 2) in?
    let config = PortMapConfig::default()
        .with_discovery_timeout(Duration::from_millis(1500))
        .with_call_timeout(Duration::from_secs(2));
    let mut mapper = NsPortMapper::start(&site.ns, config, local_port).unwrap();
    let upnp = mapper
        .wait_settled(Duration::from_secs(8))
        .unwrap_or_else(|| {
            panic!(
                "{tag}: the port mapper did not settle: {:?}",
                mapper.history()
            )
        });
    let upnp_reachable = upnp.external().is_some_and(|external| {
        let stranger = lab.udp_socket(probe2, 0).unwrap();
        let t = format!("{tag} via upnp");
        stranger.send_to(t.as_bytes(), external).unwrap();
        recv_token(&host, &t, ARRIVAL).is_some()
    });
    mapper.shutdown().unwrap().unwrap();

    Measured {
        kind: site.kind,
        local_port,
        ext: [ext1, ext2, ext3],
        from_other_port,
        from_other_host,
        upnp,
        upnp_reachable,
    }
}

fn upnp_summary(m: &Measured) -> String {
    match &m.upnp {
        MappingState::Mapped { external, .. } => format!(
            "mapped {external}{}",
            if m.upnp_reachable {
                ", reachable"
            } else {
                ", NOT reachable"
            }
        ),
        MappingState::Useless { external_ip, .. } => match external_ip {
            Some(ip) => format!("useless (external {ip})"),
            None => "useless (no external ip)".into(),
        },
        MappingState::NoGateway { .. } => "no gateway".into(),
        other => format!("{other:?}"),
    }
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

#[test]
fn every_nat_kind_maps_and_filters_as_named() {
    if !require_root() {
        return;
    }
    let started = Instant::now();
    let mut lab = NatLab::new().unwrap();
    let probe1 = lab.add_public_host().unwrap();
    let probe2 = lab.add_public_host().unwrap();
    let sites: Vec<Site> = NatKind::ALL
        .iter()
        .map(|&k| lab.add_site(k).unwrap())
        .collect();
    let built = started.elapsed();

    // Sites are independent (own probe sockets, own namespaces): measure them in parallel.
    let results: Vec<Measured> = std::thread::scope(|scope| {
        let handles: Vec<_> = sites
            .iter()
            .map(|s| {
                let (lab, probe1, probe2) = (&lab, &probe1, &probe2);
                scope.spawn(move || measure(lab, s, probe1, probe2))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });

    println!(
        "lab built in {built:?}; probes at {} and {}",
        probe1.host_ip, probe2.host_ip
    );
    println!(
        "{:<19} {:>6}  {:<19} {:<19} {:<19} {:<12} {:<9} {:<7} upnp",
        "kind",
        "local",
        "ext -> probe1",
        "ext -> probe2",
        "ext -> probe1:b",
        "mapping",
        "p1 other",
        "probe2"
    );
    for m in &results {
        println!(
            "{:<19} {:>6}  {:<19} {:<19} {:<19} {:<12} {:<9} {:<7} {}",
            m.kind.to_string(),
            m.local_port,
            m.ext[0].to_string(),
            m.ext[1].to_string(),
            m.ext[2].to_string(),
            if m.independent_mapping() {
                "independent"
            } else {
                "per-dest"
            },
            yes(m.from_other_port),
            yes(m.from_other_host),
            upnp_summary(m),
        );
    }

    for (m, site) in results.iter().zip(&sites) {
        let k = m.kind;
        assert!(
            m.ext
                .iter()
                .all(|e| e.ip() == std::net::IpAddr::V4(site.public_ip)),
            "{k}: traffic must come from the site's public address {}: {m:?}",
            site.public_ip
        );
        let (independent, other_port, other_host) = match k {
            NatKind::None | NatKind::FullCone => (true, true, true),
            NatKind::AddressRestricted => (true, true, false),
            NatKind::PortRestricted | NatKind::DoubleNat | NatKind::Upnp => (true, false, false),
            NatKind::Symmetric => (false, false, false),
        };
        assert_eq!(m.independent_mapping(), independent, "{k}: mapping {m:?}");
        if independent {
            assert_eq!(
                m.ext[0].port(),
                m.local_port,
                "{k}: the port is preserved: {m:?}"
            );
        }
        assert_eq!(
            m.from_other_port, other_port,
            "{k}: probe 1's other port: {m:?}"
        );
        assert_eq!(m.from_other_host, other_host, "{k}: probe 2: {m:?}");
        match k {
            NatKind::Upnp => {
                assert_eq!(
                    m.upnp.external(),
                    Some(SocketAddr::new(site.public_ip.into(), m.local_port)),
                    "{k}: {m:?}"
                );
                assert!(
                    m.upnp_reachable,
                    "{k}: the UPnP mapping lets probe 2 in: {m:?}"
                );
            }
            NatKind::DoubleNat => {
                assert!(matches!(m.upnp, MappingState::Useless { .. }), "{k}: {m:?}")
            }
            _ => assert!(
                matches!(m.upnp, MappingState::NoGateway { .. }),
                "{k}: {m:?}"
            ),
        }
    }
    println!("total {:?}", started.elapsed());
}

/// The lab's namespaces of this process whose names start with `prefix`.
fn namespaces_with(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/var/run/netns")
        .map(|dir| {
            dir.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_panicking_test_leaves_nothing_behind() {
    if !require_root() {
        return;
    }
    let seen = std::sync::Mutex::new(None);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut lab = NatLab::new().unwrap();
        let site = lab.add_site(NatKind::Upnp).unwrap();
        // A process left running in the host namespace must be killed too.
        let sleeper = lab.command(&site, "sleep").arg("300").spawn().unwrap();
        let router = site.router_ns.clone().unwrap();
        let out = std::process::Command::new("ip")
            .args(["netns", "pids", &router])
            .output()
            .unwrap();
        let pids: Vec<u32> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(|p| p.parse().unwrap())
            .collect();
        assert!(!pids.is_empty(), "miniupnpd runs in the router");
        *seen.lock().unwrap() = Some((lab.prefix().to_string(), pids, sleeper));
        assert_eq!(namespaces_with(lab.prefix()).len(), 3, "inet, router, host");
        panic!("deliberate panic with the lab alive");
    }));
    assert!(outcome.is_err());
    let (prefix, pids, mut sleeper) = seen.lock().unwrap().take().unwrap();
    assert!(
        namespaces_with(&prefix).is_empty(),
        "namespaces left: {:?}",
        namespaces_with(&prefix)
    );
    // The sleeper was killed by the lab (not left to run its 300 s).
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = sleeper.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the process started in the lab still runs"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success(), "{status:?}");
    // miniupnpd was killed (reaped by the lab).
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(
            stat.is_empty() || stat.contains(") Z"),
            "a process started in the lab still runs: {stat}"
        );
    }
}
