//! The NAT lab's sites behave as their kind claims, measured with plain UDP from two public
//! probe hosts: how the host's traffic is mapped (the same outer address and port towards every
//! destination, or a new one per destination) and what inbound traffic the NAT lets through
//! after the host has contacted only probe 1.
//!
//! Needs root (network namespaces, nftables, miniupnpd); without root it says so and skips,
//! except under `CI=true`, where it fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use p2ps_interop_tests::natlab::{require_root, NatKind, NatLab, Site};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// How long to wait for a packet that should arrive.
const ARRIVAL: Duration = Duration::from_secs(2);
/// How long to wait before concluding that a packet was filtered.
const SILENCE: Duration = Duration::from_millis(400);

/// Waits up to `timeout` for a datagram carrying exactly `token`; returns its source. Other
/// datagrams (late answers of earlier steps) are skipped.
fn recv_token(sock: &UdpSocket, token: &str, timeout: Duration) -> Option<SocketAddr> {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 1500];
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        match sock.recv_from(&mut buf) {
            Ok((n, from)) if &buf[..n] == token.as_bytes() => return Some(from),
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return None
            }
            // ICMP errors of earlier sends surface as ConnectionRefused on Linux: ignore.
            Err(_) => continue,
        }
    }
}

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

    Measured {
        kind: site.kind,
        local_port,
        ext: [ext1, ext2, ext3],
        from_other_port,
        from_other_host,
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

    let results: Vec<Measured> = sites
        .iter()
        .map(|s| measure(&lab, s, &probe1, &probe2))
        .collect();

    println!(
        "lab built in {built:?}; probes at {} and {}",
        probe1.host_ip, probe2.host_ip
    );
    println!(
        "{:<19} {:>6}  {:<19} {:<19} {:<19} {:<12} {:<10} {:<10}",
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
            "{:<19} {:>6}  {:<19} {:<19} {:<19} {:<12} {:<10} {:<10}",
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
    }
    println!("total {:?}", started.elapsed());
}
