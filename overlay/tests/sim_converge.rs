//! Simulator tests over several seeds: rings built by real joins, churn with joins, graceful
//! leaves and crashes, and lookups. Each run is bounded in simulated time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use p2ps_overlay::sim::engine::Workload;
use p2ps_overlay::sim::stable::StableRing;
use p2ps_overlay::sim::{SimConfig, Simulator};
use p2ps_overlay::{Config, FingerStrategy, LookupMode};
use std::time::Duration;

fn sim(strategy: FingerStrategy, seed: u64) -> Simulator {
    Simulator::new(SimConfig {
        node: Config::default().with_strategy(strategy),
        seed,
        ..SimConfig::default()
    })
}

fn grow(sim: &mut Simulator, n: usize, spacing: Duration) {
    let first = sim.add_node();
    sim.create(first);
    for _ in 1..n {
        let via = sim.random_member().expect("the ring has members");
        let id = sim.add_node();
        sim.join(id, via);
        sim.run_for(spacing);
    }
}

#[test]
fn joins_converge_to_correct_ring() {
    for strategy in FingerStrategy::ALL {
        let mut sim = sim(strategy, 7);
        grow(&mut sim, 60, Duration::from_millis(300));
        let t = sim.run_until_converged(Duration::from_secs(5), Duration::from_secs(600));
        let (errors, bad) = sim.check();
        assert!(
            t.is_some(),
            "{strategy:?}: not converged: {errors:?} on {bad} nodes"
        );
        assert_eq!(sim.member_count(), 60);
    }
}

/// 1 000 nodes joined one by one, then five minutes of heavy churn (5% of the nodes replaced
/// per minute, half by crash, half by graceful leave); once churn stops, every successor list,
/// predecessor list and finger slot must equal the true one.
#[test]
fn thousand_nodes_with_churn_converge() {
    let runs = [
        (FingerStrategy::Tango, 1),
        (FingerStrategy::Tango, 2),
        (FingerStrategy::Tango, 3),
        (FingerStrategy::Chord, 4),
        (FingerStrategy::TangoPlus, 5),
    ];
    for (strategy, seed) in runs {
        let mut sim = sim(strategy, seed);
        grow(&mut sim, 1000, Duration::from_millis(100));
        sim.set_workload(Workload::replacing(1000, 0.05, 0.5, 10.0));
        sim.run_for(Duration::from_secs(300));
        sim.set_workload(Workload::default());
        let c = sim.counters();
        assert!(
            c.crashes > 50 && c.leaves > 50 && c.joins_done > 1100,
            "{c:?}"
        );
        assert!(
            sim.check().1 > 0,
            "churn should have left some tables stale"
        );
        let t = sim.run_until_converged(Duration::from_secs(5), Duration::from_secs(900));
        let (errors, bad) = sim.check();
        assert!(
            t.is_some(),
            "{strategy:?} seed {seed}: {errors:?} on {bad} nodes"
        );
    }
}

/// Steered lookups find the responsible node on a stable ring too, for about three times the
/// messages of routed ones (queries and answers against requests and answers passed back).
#[test]
fn steered_lookups_on_a_stable_ring_are_all_correct() {
    let mut cost = Vec::new();
    for mode in [LookupMode::Routed, LookupMode::Steered] {
        let mut sim = Simulator::new(SimConfig {
            node: Config::default().with_lookup_mode(mode),
            seed: 12,
            ..SimConfig::default()
        });
        sim.warm_start(2000);
        sim.reset_counters();
        for _ in 0..1000 {
            let from = sim.random_member().expect("members");
            let key = sim.random_key();
            sim.lookup(from, key);
        }
        sim.run_for(Duration::from_secs(30));
        let c = sim.counters();
        assert_eq!(c.lookups_correct, 1000, "{mode:?}: {c:?}");
        let kinds = ["lookup", "answer", "find-near", "near"];
        let msgs: u64 = kinds.iter().map(|k| c.traffic(k).messages).sum();
        cost.push(msgs as f64 / 1000.0);
    }
    // Steered lookups widen when the gap around the key is wide (a fifth of random keys), for
    // robustness against hostile nodes: 3.3x here. The target is 3x; see BENCHMARKS.md.
    assert!(
        cost[1] <= 3.5 * cost[0],
        "steered lookups cost {:.1} messages against {:.1}",
        cost[1],
        cost[0]
    );
}

/// On a stable ring every lookup finds the responsible node.
#[test]
fn stable_ring_lookups_all_correct() {
    for strategy in FingerStrategy::ALL {
        let mut sim = sim(strategy, 11);
        sim.warm_start(2000);
        assert_eq!(sim.check().1, 0, "warm start must be exact");
        for _ in 0..2000 {
            let from = sim.random_member().expect("members");
            let key = sim.random_key();
            sim.lookup(from, key);
        }
        sim.run_for(Duration::from_secs(30));
        let c = sim.counters();
        assert_eq!(c.lookups_started, 2000);
        assert_eq!(c.lookups_correct, 2000, "{strategy:?}: {c:?}");

        let ring = StableRing::build(20_000, strategy, 8, 11, 2);
        let stats = ring.lookups(20_000, 3, 2);
        assert_eq!(stats.success, 1.0, "{strategy:?}");
        assert!(
            stats.hops.max <= 2.0 * 20_000f64.log2(),
            "{strategy:?}: {:?}",
            stats.hops
        );
    }
}

/// With 1% of the nodes replaced per simulated minute, at least 99% of lookups reach the node
/// truly responsible when the answer comes.
#[test]
fn lookups_survive_one_percent_churn() {
    for seed in [21, 22, 23] {
        let mut sim = sim(FingerStrategy::Tango, seed);
        sim.warm_start(1000);
        sim.run_for(Duration::from_secs(10));
        sim.reset_counters();
        sim.set_workload(Workload::replacing(1000, 0.01, 0.5, 20.0));
        sim.run_for(Duration::from_secs(600));
        sim.set_workload(Workload::default());
        sim.run_for(Duration::from_secs(15));
        let c = sim.counters();
        assert!(c.lookups_started > 10_000, "{c:?}");
        assert!(c.crashes + c.leaves >= 60, "{c:?}");
        let ok = c.lookups_correct as f64 / c.lookups_started as f64;
        assert!(ok >= 0.99, "seed {seed}: {ok} ({c:?})");
    }
}

/// Routed data reaches the responsible node, sends reach the named node, once each.
#[test]
fn route_and_send_deliver_once() {
    let mut sim = sim(FingerStrategy::Tango, 5);
    let ids = sim.warm_start(300);
    sim.record_deliveries();
    for i in 0..200u32 {
        let from = ids[(i as usize * 7) % ids.len()];
        let key = sim.random_key();
        sim.route(from, key, i.to_be_bytes().to_vec());
        let to = ids[(i as usize * 13 + 1) % ids.len()];
        sim.send(from, to, (1000 + i).to_be_bytes().to_vec());
    }
    sim.run_for(Duration::from_secs(20));
    let d = sim.deliveries();
    assert_eq!(d.len(), 400);
    for (at, del) in d {
        let n = u32::from_be_bytes(del.payload[..4].try_into().unwrap());
        if n < 1000 {
            assert_eq!(del.via, p2ps_overlay::sim::Via::Key);
            assert_eq!(Some(*at), sim.responsible(del.key), "route {n}");
        } else {
            assert_eq!(del.via, p2ps_overlay::sim::Via::Node);
            let i = (n - 1000) as usize;
            assert_eq!(*at, ids[(i * 13 + 1) % ids.len()], "send {n}");
        }
    }
    let mut payloads: Vec<&[u8]> = d.iter().map(|(_, x)| &x.payload[..]).collect();
    payloads.sort();
    payloads.dedup();
    assert_eq!(payloads.len(), 400, "each payload exactly once");
}

/// A network of 1 000 cut in two halves for 5 simulated minutes forms two rings; once the cut
/// heals, the nodes' merge probes find the other ring and the two merge into one exact ring.
#[test]
fn partitioned_rings_merge_after_healing() {
    for seed in [21, 22] {
        let mut sim = sim(FingerStrategy::Tango, seed);
        sim.warm_start(1000);
        // The nodes talk for a while before the cut (a node remembers as ways back in only
        // nodes it heard from).
        sim.run_for(Duration::from_secs(30));
        sim.partition(|id| p2ps_overlay::rng::mix64(id.0 ^ seed).is_multiple_of(2));
        sim.run_for(Duration::from_secs(300));
        // Each side lost the other: the tables are far from the whole ring's.
        let (errors, bad) = sim.check();
        assert!(
            bad > 900,
            "the partition did not split the ring: {errors:?} on {bad}"
        );
        sim.heal();
        let t = sim.run_until_converged(Duration::from_secs(5), Duration::from_secs(1800));
        let (errors, bad) = sim.check();
        eprintln!("seed {seed}: merged into one exact ring {t:?} after the cut healed");
        assert!(t.is_some(), "seed {seed}: {errors:?} on {bad} nodes");
    }
    // Without merge probes the two rings stay apart.
    let mut sim = Simulator::new(SimConfig {
        node: Config::default().with_merge_probe_interval(Duration::from_secs(1 << 30)),
        seed: 21,
        ..SimConfig::default()
    });
    sim.warm_start(1000);
    sim.run_for(Duration::from_secs(30));
    sim.partition(|id| p2ps_overlay::rng::mix64(id.0 ^ 21).is_multiple_of(2));
    sim.run_for(Duration::from_secs(300));
    sim.heal();
    let t = sim.run_until_converged(Duration::from_secs(30), Duration::from_secs(600));
    assert_eq!(t, None, "the rings merged without merge probes");
}

/// Many nodes joining at once (issue 16 item 3): no node tells its application that a live
/// neighbour went down only to say it is back soon after. A peer pushed out of the lists by
/// nearer joiners is truly gone from them; one a neighbour's list merely left out is checked
/// first.
#[test]
fn concurrent_joins_tell_no_false_departures() {
    for seed in [3, 4, 5] {
        let mut sim = sim(FingerStrategy::Tango, seed);
        let ids = sim.warm_start(6);
        sim.run_for(Duration::from_secs(5));
        for i in 0..30 {
            let via = ids[i % ids.len()];
            let id = sim.add_node();
            sim.join(id, via);
        }
        sim.run_for(Duration::from_secs(60));
        let t = sim.run_until_converged(Duration::from_secs(5), Duration::from_secs(300));
        assert!(t.is_some(), "seed {seed}: not converged");
        let c = sim.counters();
        assert_eq!(sim.member_count(), 36, "seed {seed}: {c:?}");
        assert_eq!(
            c.neighbour_flaps, 0,
            "seed {seed}: live neighbours reported down, then up"
        );
    }
}
