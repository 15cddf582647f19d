//! The watcher in the simulator, driving the same service code as the runtime: crashes are
//! reported as failures within a measured bound, leaves as leaves, a lying neighbour's false
//! report produces nothing, and every bound holds against a hostile peer.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use p2ps_overlay::service::{encode, Emits};
use p2ps_overlay::sim::{SimConfig, SimId, Simulator};
use p2ps_overlay::PeerId;
use p2ps_watcher::wire::Wire;
use p2ps_watcher::{NodeWatchEvent, Watcher, WatcherConfig};
use std::time::Duration;

type W = Watcher<SimId>;

fn network(n: usize, seed: u64, cfg: WatcherConfig) -> (Simulator, Vec<SimId>) {
    let mut sim = Simulator::new(SimConfig {
        seed,
        ..SimConfig::default()
    });
    sim.register_everywhere(move |node| {
        let _ = node.register(W::new(cfg.clone()));
    });
    let ids = sim.warm_start(n);
    sim.run_for(Duration::from_secs(3));
    (sim, ids)
}

fn watch(sim: &mut Simulator, watcher: SimId, node: SimId) -> u64 {
    sim.command(watcher, |n, now| {
        n.command::<W, _>(now, |w, ctx| w.watch(ctx, node))
    })
    .expect("the service is registered")
    .expect("the watch starts")
}

fn events(sim: &mut Simulator, at: SimId) -> Vec<NodeWatchEvent<SimId>> {
    let w = sim.node_mut(at).service_mut::<W>().expect("registered");
    std::iter::from_fn(|| w.poll_event()).collect()
}

fn stats(sim: &Simulator, at: SimId) -> p2ps_watcher::WatcherStats {
    sim.node(at).service::<W>().expect("registered").stats()
}

/// A node from `ids` other than those in `not`, chosen by `k`.
fn pick(ids: &[SimId], k: usize, not: &[SimId]) -> SimId {
    let mut i = k % ids.len();
    while not.contains(&ids[i]) {
        i = (i + 1) % ids.len();
    }
    ids[i]
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// The bound on the delay from a crash to the watcher's `Failed`: the neighbours notice a
/// crash within a stabilisation interval and its timeout (2 s + 3 s, jittered by up to 10 %),
/// their report takes a hop, and the watcher's probe waits `probe_timeout` (2 s).
const CRASH_BOUND: Duration = Duration::from_millis(8_000);

#[test]
fn crashes_are_reported_as_failures_within_the_bound() {
    let (mut sim, _) = network(200, 7, WatcherConfig::default());
    let mut delays = Vec::new();
    // 40 crashes, each node watched by 5 watchers anywhere on the ring.
    for round in 0..40 {
        let alive: Vec<SimId> = sim.members().collect();
        let target = pick(&alive, round * 37 + 11, &[]);
        let mut watchers = vec![target];
        for j in 0..5 {
            let w = pick(&alive, round * 53 + j * 41 + 3, &watchers);
            watchers.push(w);
        }
        watchers.remove(0);
        let reqs: Vec<(SimId, u64)> = watchers
            .iter()
            .map(|&a| (a, watch(&mut sim, a, target)))
            .collect();
        // Past a renewal, so that the crash falls anywhere in the watch's life.
        sim.run_for(Duration::from_millis(4_000 + 1_237 * (round as u64 % 9)));
        for &(a, req) in &reqs {
            let ev = events(&mut sim, a);
            assert_eq!(ev, vec![NodeWatchEvent::Watching { req, node: target }]);
        }
        let crashed = sim.now();
        sim.crash(target);
        sim.run_for(Duration::from_secs(20));
        for &(a, req) in &reqs {
            let ev = events(&mut sim, a);
            let [NodeWatchEvent::Failed {
                req: r, node, at, ..
            }] = ev[..]
            else {
                panic!("watch {req} of {target:?} at {a:?}: {ev:?}");
            };
            assert_eq!((r, node), (req, target));
            delays.push(at.since(crashed).as_secs_f64());
        }
        assert_eq!(
            sim.node(reqs[0].0)
                .service::<W>()
                .unwrap()
                .watched(reqs[0].1),
            None
        );
    }
    delays.sort_by(f64::total_cmp);
    let (p50, p90, max) = (
        percentile(&delays, 0.5),
        percentile(&delays, 0.9),
        delays[delays.len() - 1],
    );
    println!(
        "crash -> failed, {} watches: p50 {p50:.2} s, p90 {p90:.2} s, max {max:.2} s, min {:.2} s",
        delays.len(),
        delays[0]
    );
    assert!(max <= CRASH_BOUND.as_secs_f64(), "max {max} s");
    // The probe alone takes `probe_timeout`: nothing is reported before it ran out.
    assert!(delays[0] >= 2.0, "min {} s", delays[0]);
}

#[test]
fn silent_neighbours_still_leave_the_renewal_to_notice() {
    // The watched node hands its watches to nobody: only renewals find the crash.
    let mut cfg = WatcherConfig::default();
    cfg.replicate_to = 0;
    let (mut sim, ids) = network(64, 3, cfg.clone());
    let (a, target) = (ids[5], ids[40]);
    let req = watch(&mut sim, a, target);
    sim.run_for(Duration::from_secs(2));
    assert_eq!(
        events(&mut sim, a),
        vec![NodeWatchEvent::Watching { req, node: target }]
    );
    let crashed = sim.now();
    sim.crash(target);
    sim.run_for(Duration::from_secs(25));
    let ev = events(&mut sim, a);
    let [NodeWatchEvent::Failed {
        at, reported_by, ..
    }] = ev[..]
    else {
        panic!("{ev:?}");
    };
    assert_eq!(reported_by, None, "no holder reported it");
    // A renewal period (a third of the lease, jittered), its acknowledgement's timeout, the probe.
    let bound = cfg.lease.mul_f64(1.1 / 3.0) + cfg.ack_timeout + cfg.probe_timeout;
    assert!(at.since(crashed) <= bound, "{:?}", at.since(crashed));
}

#[test]
fn a_graceful_leave_is_reported_as_left() {
    let (mut sim, ids) = network(64, 5, WatcherConfig::default());
    let (a, b, target) = (ids[3], ids[50], ids[20]);
    let ra = watch(&mut sim, a, target);
    let rb = watch(&mut sim, b, target);
    sim.run_for(Duration::from_secs(2));
    events(&mut sim, a);
    events(&mut sim, b);
    let left = sim.now();
    sim.leave(target);
    sim.run_for(Duration::from_secs(20));
    for (w, req) in [(a, ra), (b, rb)] {
        let ev = events(&mut sim, w);
        let [NodeWatchEvent::Left { req: r, node, at }] = ev[..] else {
            panic!("{ev:?}");
        };
        assert_eq!((r, node), (req, target));
        assert!(
            at.since(left) < Duration::from_millis(500),
            "{:?}",
            at.since(left)
        );
    }
}

#[test]
fn a_lying_neighbour_cannot_fake_a_failure_or_a_leave() {
    let (mut sim, _) = network(64, 9, WatcherConfig::default());
    let ring: Vec<SimId> = sim.members().collect();
    let (a, target) = (ring[2], ring[30]);
    let liar = ring[31]; // the target's successor: it holds the watch
    let req = watch(&mut sim, a, target);
    sim.run_for(Duration::from_secs(2));
    assert_eq!(
        events(&mut sim, a),
        vec![NodeWatchEvent::Watching { req, node: target }]
    );
    assert!(sim.node(liar).service::<W>().unwrap().held() >= 1);
    // The liar says the target failed, again and again, and forges a leave it signs itself.
    for _ in 0..50 {
        sim.command(liar, |n, now| {
            n.command::<W, _>(now, |_, ctx| {
                let lie = encode(
                    &Wire::Suspect {
                        req,
                        watched: target,
                    },
                    &[],
                );
                ctx.send(a, lie);
                let left = encode(&Wire::<SimId>::Left { req }, &[]);
                let forged = ctx.seal(a.ring_id(), Some(a), left);
                ctx.send_sealed(a, encode(&Wire::<SimId>::Leaving, &[]), forged);
                // And answers a probe it was never sent, in the target's stead.
                ctx.send(a, encode(&Wire::<SimId>::Alive { nonce: 1 }, &[]));
                ctx.send(a, encode(&Wire::<SimId>::Held { req }, &[]));
            })
        });
        sim.run_for(Duration::from_millis(100));
    }
    sim.run_for(Duration::from_secs(30));
    assert_eq!(events(&mut sim, a), vec![], "no event from lies");
    let s = stats(&sim, a);
    assert_eq!((s.failed, s.left), (0, 0));
    // The target answered every probe; 50 reports over 5 s cost at most one probe a second.
    assert!(s.probes >= 1 && s.probes <= 7, "{s:?}");
    assert_eq!(s.refuted, s.probes);
    assert!(
        s.refused >= 50,
        "forged leaves and held words refused: {s:?}"
    );
    // The watch still works: a real crash is reported.
    sim.crash(target);
    sim.run_for(Duration::from_secs(15));
    assert!(matches!(
        events(&mut sim, a)[..],
        [NodeWatchEvent::Failed { node, .. }] if node == target
    ));
}

#[test]
fn holders_bound_what_a_watcher_and_a_stranger_can_make_them_keep() {
    let mut cfg = WatcherConfig::default();
    cfg.max_per_watcher = 8;
    let (mut sim, ids) = network(32, 11, cfg);
    let (a, target) = (ids[1], ids[17]);
    for _ in 0..20 {
        watch(&mut sim, a, target);
    }
    sim.run_for(Duration::from_secs(2));
    let held = |sim: &Simulator, id| sim.node(id).service::<W>().unwrap().held();
    assert_eq!(held(&sim, target), 8, "one watcher gets max_per_watcher");
    let s = stats(&sim, target);
    assert_eq!(s.refused, 12);
    // Only 8 were acknowledged; the other 12 watches probe, find the node alive, ask again.
    let watching = events(&mut sim, a)
        .iter()
        .filter(|e| matches!(e, NodeWatchEvent::Watching { .. }))
        .count();
    assert_eq!(watching, 8);

    // A stranger hands a node a watch of a third node: refused (only the watched node hands
    // on its watches), and garbage is dropped.
    let (stranger, victim) = (ids[25], ids[9]);
    let before = stats(&sim, victim);
    sim.command(stranger, |n, now| {
        n.command::<W, _>(now, |_, ctx| {
            let watch = encode(
                &Wire::<SimId>::Watch {
                    req: 5,
                    lease_ms: 30_000,
                },
                &[],
            );
            let sealed = ctx.seal(target.ring_id(), Some(target), watch);
            ctx.send_sealed(victim, encode(&Wire::<SimId>::Replica, &[]), sealed);
            ctx.send(victim, encode(&Wire::<SimId>::Replica, &[]));
            ctx.send(victim, bytes::Bytes::from_static(&[200, 1, 2, 3]));
            ctx.send(victim, bytes::Bytes::new());
        })
    });
    sim.run_for(Duration::from_secs(1));
    let after = stats(&sim, victim);
    assert_eq!(after.refused, before.refused + 1);
    assert_eq!(after.dropped, before.dropped + 3);
    assert_eq!(held(&sim, victim), 0);
}

#[test]
fn leases_run_out_without_renewal() {
    let (mut sim, ids) = network(32, 13, WatcherConfig::default());
    let (a, target) = (ids[4], ids[20]);
    watch(&mut sim, a, target);
    sim.run_for(Duration::from_secs(2));
    let holders = |sim: &Simulator| {
        sim.members()
            .filter(|id| sim.node(*id).service::<W>().unwrap().held() > 0)
            .count()
    };
    // The target and its 2 + 2 nearest neighbours hold it.
    assert_eq!(holders(&sim), 5);
    // What a watch costs while nothing happens: a renewal every 10 s (routed, acknowledged,
    // handed to the 4 neighbours).
    sim.reset_counters();
    sim.run_for(Duration::from_secs(60));
    let (msgs, bytes) = sim
        .counters()
        .by_kind
        .iter()
        .filter(|(k, _)| k.starts_with("watch-"))
        .fold((0, 0), |(m, b), (_, t)| (m + t.messages, b + t.bytes));
    println!("one idle watch, 60 s: {msgs} messages, {bytes} bytes");
    assert!((20..=60).contains(&msgs), "{msgs} messages");
    // The watcher crashes: nothing renews, and after a lease nobody holds anything.
    sim.crash(a);
    sim.run_for(Duration::from_secs(31));
    assert_eq!(holders(&sim), 0);
}

#[test]
fn watches_refuse_what_they_cannot_do() {
    let (mut sim, ids) = network(16, 17, WatcherConfig::default());
    let r = sim.command(ids[0], |n, now| {
        n.command::<W, _>(now, |w, ctx| w.watch(ctx, ctx.me().id))
    });
    assert_eq!(r, Some(Err(p2ps_watcher::WatchError::Myself)));
    // A node that never existed: the watch is not acknowledged, the probe finds nothing.
    let ghost = SimId::new(9_999, 1);
    let req = watch(&mut sim, ids[0], ghost);
    sim.run_for(Duration::from_secs(10));
    let ev = events(&mut sim, ids[0]);
    assert!(
        matches!(ev[..], [NodeWatchEvent::Failed { req: r, node, reported_by: None, .. }] if r == req && node == ghost),
        "{ev:?}"
    );
}
