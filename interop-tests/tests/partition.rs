//! A network partition between real `p2ps node` processes: six nodes on public hosts of the
//! namespace lab form one ring; the hosts are cut into two halves of three (nftables drops
//! every packet between them), each half forms a ring of its own; once the cut is lifted the
//! two rings merge into one (the nodes' merge probes reach the nodes they lost), lookups from
//! every node agree with the true ring again, and the test prints how long the merge took.
//!
//! Needs root (network namespaces); under `CI=true` it runs, elsewhere it says why it skips.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use p2ps_interop_tests::natlab::{require_root, NatLab};
use p2ps_interop_tests::{check_lookups, random_keys, wait_ring, NodeProc, Start, TestNet};
use std::time::{Duration, Instant};

/// Faster upkeep than the defaults so that the test runs in about a minute; failure detection
/// (QUIC idle timeout 5 s, stabilisation timeout 3 s) keeps its defaults.
const TIMINGS: &[&str] = &[
    "--stabilize-interval-ms",
    "500",
    "--finger-refresh-ms",
    "5000",
    "--merge-probe-ms",
    "3000",
];

/// How long the cut lasts.
const CUT: Duration = Duration::from_secs(20);

#[test]
fn rings_split_by_a_partition_merge_when_it_heals() {
    if !require_root() {
        return;
    }
    let mut lab = NatLab::new().expect("lab");
    let hosts: Vec<_> = (0..6)
        .map(|_| lab.add_public_host().expect("host"))
        .collect();
    let net = TestNet::new();
    let listen = |i: usize| format!("{}:4200", hosts[i].host_ip);
    let mut nodes: Vec<NodeProc> =
        vec![net.spawn_at(Some(&hosts[0].ns), "p0", Start::Create, &listen(0), TIMINGS)];
    let ticket = nodes[0].wait_ticket(Duration::from_secs(30));
    for (i, h) in hosts.iter().enumerate().skip(1) {
        nodes.push(net.spawn_at(
            Some(&h.ns),
            &format!("p{i}"),
            Start::Join(ticket.clone()),
            &listen(i),
            TIMINGS,
        ));
    }
    wait_ring(
        &mut nodes.iter_mut().collect::<Vec<_>>(),
        Duration::from_secs(60),
    );
    let keys = random_keys(100);
    check_lookups(&mut nodes.iter_mut().collect::<Vec<_>>(), &keys);
    eprintln!("6 nodes form one ring");

    // Cut hosts 0-2 off from hosts 3-5.
    let (a, b): (Vec<_>, Vec<_>) = (0..6).partition(|i| *i < 3);
    let ips = |side: &[usize]| side.iter().map(|i| hosts[*i].host_ip).collect::<Vec<_>>();
    for i in &a {
        lab.cut_off(&hosts[*i], &ips(&b)).expect("cut");
    }
    for i in &b {
        lab.cut_off(&hosts[*i], &ips(&a)).expect("cut");
    }
    let t_cut = Instant::now();
    let (left, right) = nodes.split_at_mut(3);
    let mut side_a: Vec<&mut NodeProc> = left.iter_mut().collect();
    let mut side_b: Vec<&mut NodeProc> = right.iter_mut().collect();
    wait_ring(&mut side_a, Duration::from_secs(60));
    wait_ring(&mut side_b, Duration::from_secs(60));
    eprintln!(
        "[{:?}] the cut halves formed two rings of 3",
        t_cut.elapsed()
    );
    check_lookups(&mut side_a, &keys);
    check_lookups(&mut side_b, &keys);
    drop((side_a, side_b));
    // Keep the cut well past the QUIC idle timeout (5 s): every connection across it is gone,
    // and each side has buried the other's nodes.
    std::thread::sleep(CUT.saturating_sub(t_cut.elapsed()));

    // Lift the cut: the two rings must merge into the true ring of six.
    for h in &hosts {
        lab.reconnect(h).expect("reconnect");
    }
    let t_heal = Instant::now();
    wait_ring(
        &mut nodes.iter_mut().collect::<Vec<_>>(),
        Duration::from_secs(90),
    );
    let merged = t_heal.elapsed();
    check_lookups(&mut nodes.iter_mut().collect::<Vec<_>>(), &keys);
    let rejoins: u64 = nodes.iter_mut().map(|n| n.status().counters.rejoins).sum();
    eprintln!(
        "[{:?}] the rings merged {merged:?} after the cut was lifted; 6 x 100 lookups agree \
         with the true ring ({rejoins} rejoins)",
        t_cut.elapsed()
    );
}
