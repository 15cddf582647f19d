//! The node's UPnP port mapper against a real gateway (miniupnpd) in the NAT lab: the mapping
//! works end to end, is renewed, and is removed on shutdown; behind a carrier NAT it is
//! reported useless; without a gateway the mapper says so within its discovery timeout.
//!
//! Needs root (network namespaces, nftables, miniupnpd); without root it says so and skips,
//! except under `CI=true`, where it fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use p2ps_interop_tests::natlab::{recv_token, require_root, NatKind, NatLab, NsPortMapper};
use p2ps_transport::portmap::{MappingState, PortMapConfig};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// How long to wait for a packet that should arrive.
const ARRIVAL: Duration = Duration::from_secs(2);
/// How long to wait before concluding that a packet was filtered.
const SILENCE: Duration = Duration::from_millis(500);

fn config(lease: Duration) -> PortMapConfig {
    PortMapConfig::default()
        .with_lease(lease)
        .with_discovery_timeout(Duration::from_millis(1500))
        .with_call_timeout(Duration::from_secs(2))
        .with_retry_interval(Duration::from_secs(60))
        .with_description("p2ps natlab test".into())
}

/// Sends `token` from a fresh socket of `probe` (a source the NAT has never seen, so no old
/// conntrack entry can let it through) to `to`; whether `host` receives it.
fn reaches(lab: &NatLab, probe: &str, to: SocketAddr, host: &UdpSocket, token: &str) -> bool {
    let probe = lab.udp_socket(probe, 0).unwrap();
    probe.send_to(token.as_bytes(), to).unwrap();
    let wait = if token.ends_with('?') {
        SILENCE
    } else {
        ARRIVAL
    };
    recv_token(host, token, wait).is_some()
}

/// How many mappings the gateway lists (GetGenericPortMappingEntry until the index is invalid),
/// asked from the site's host.
fn gateway_mappings(lab: &NatLab, ns: &str) -> Vec<(u16, String)> {
    lab.block_on(ns, async {
        let mut options = igd_next::SearchOptions::default();
        options.timeout = Some(Duration::from_secs(2));
        let gateway = igd_next::aio::tokio::search_gateway(options).await.unwrap();
        let mut found = Vec::new();
        for index in 0..16 {
            match tokio::time::timeout(
                Duration::from_secs(2),
                gateway.get_generic_port_mapping_entry(index),
            )
            .await
            .expect("GetGenericPortMappingEntry timed out")
            {
                Ok(entry) => found.push((entry.external_port, entry.internal_client)),
                Err(igd_next::GetGenericPortMappingEntryError::SpecifiedArrayIndexInvalid) => break,
                Err(e) => panic!("GetGenericPortMappingEntry: {e}"),
            }
        }
        found
    })
    .unwrap()
}

#[test]
fn upnp_mapping_is_reachable_renewed_and_removed() {
    if !require_root() {
        return;
    }
    let started = Instant::now();
    let mut lab = NatLab::new().unwrap();
    let probe = lab.add_public_host().unwrap();
    let site = lab.add_site(NatKind::Upnp).unwrap();
    let host = lab.udp_socket(&site, 0).unwrap();
    let port = host.local_addr().unwrap().port();
    let expected = SocketAddr::new(IpAddr::V4(site.public_ip), port);

    // Before any mapping the port-restricted router lets nothing in.
    assert!(!reaches(
        &lab,
        &probe.ns,
        expected,
        &host,
        "before mapping?"
    ));

    let lease = Duration::from_secs(4);
    let mut mapper = NsPortMapper::start(&site.ns, config(lease), port).unwrap();
    let t0 = Instant::now();
    let mapped = mapper.wait_settled(Duration::from_secs(8));
    let mapped_after = t0.elapsed();
    let Some(MappingState::Mapped { external, .. }) = mapped else {
        panic!(
            "expected a mapping, got {mapped:?}; states {:?}; miniupnpd: {}",
            mapper.history(),
            lab.upnpd_log(&site).unwrap_or_default()
        );
    };
    assert_eq!(
        external, expected,
        "same external port on the router's outer address"
    );
    assert!(gateway_mappings(&lab, &site.ns)
        .iter()
        .any(|(p, client)| *p == port && client == &site.host_ip.to_string()));
    assert!(reaches(
        &lab,
        &probe.ns,
        external,
        &host,
        "through the mapping"
    ));

    // A renewal at half the lease, and the mapping still works after it (past the first lease).
    let renewed = mapper.wait_for(
        Duration::from_secs(6),
        |s| matches!(s, MappingState::Mapped { renewals, .. } if *renewals >= 2),
    );
    assert!(renewed.is_some(), "no renewals: {:?}", mapper.history());
    assert!(reaches(&lab, &probe.ns, external, &host, "after renewals"));

    let t1 = Instant::now();
    mapper.shutdown().unwrap().unwrap();
    let shutdown_took = t1.elapsed();
    assert!(
        gateway_mappings(&lab, &site.ns).is_empty(),
        "the mapping must be gone from the gateway"
    );
    assert!(!reaches(
        &lab,
        &probe.ns,
        external,
        &host,
        "after shutdown?"
    ));
    println!(
        "upnp: mapped {external} after {mapped_after:?}, 2 renewals with a {lease:?} lease, \
         removed in {shutdown_took:?}; test took {:?}",
        started.elapsed()
    );
}

#[test]
fn upnp_is_useless_behind_cgnat_and_absent_without_gateway() {
    if !require_root() {
        return;
    }
    let mut lab = NatLab::new().unwrap();
    let cgnat = lab.add_site(NatKind::DoubleNat).unwrap();
    let plain = lab.add_site(NatKind::PortRestricted).unwrap();
    let config = config(Duration::from_secs(60));
    let discovery = config.discovery_timeout;
    let limit = discovery + config.call_timeout * 3;

    let t0 = Instant::now();
    let mut behind_cgnat = NsPortMapper::start(&cgnat.ns, config.clone(), 40000).unwrap();
    let mut no_gateway = NsPortMapper::start(&plain.ns, config, 40000).unwrap();

    let useless = behind_cgnat.wait_settled(limit);
    let useless_after = t0.elapsed();
    let home_outer = IpAddr::V4(cgnat.router_outer_ip.unwrap());
    match &useless {
        Some(MappingState::Useless {
            external_ip,
            reason,
            ..
        }) => {
            assert!(
                external_ip.is_none_or(|ip| ip == home_outer || ip.is_unspecified()),
                "{useless:?}"
            );
            println!("double-nat: useless after {useless_after:?}: {reason}");
        }
        other => panic!(
            "expected Useless behind a carrier NAT, got {other:?}; states {:?}; miniupnpd: {}",
            behind_cgnat.history(),
            lab.upnpd_log(&cgnat).unwrap_or_default()
        ),
    }

    let absent = no_gateway.wait_settled(limit);
    let absent_after = t0.elapsed();
    assert!(
        matches!(absent, Some(MappingState::NoGateway { .. })),
        "expected NoGateway, got {absent:?}"
    );
    assert!(
        absent_after <= discovery + Duration::from_secs(1),
        "NoGateway must come within the discovery timeout: {absent_after:?}"
    );
    println!("port-restricted (no miniupnpd): {absent:?} after {absent_after:?}");

    behind_cgnat.shutdown().unwrap().unwrap();
    no_gateway.shutdown().unwrap().unwrap();
}
