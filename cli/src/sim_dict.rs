//! `p2ps sim dict`: the replicated dictionary in the simulator, driving the same service code
//! as the runtime: keys lost after simultaneous crashes of adjacent nodes and under churn,
//! how long until every key is back to `r` replicas, and what maintenance costs.
//!
//! Ground truth is read from the nodes' stores: a key is lost when no live node holds it, and
//! under-replicated while fewer than `r` live nodes do.

use anyhow::{bail, Result};
use clap::Args;
use p2ps_dict::{Dict, DictConfig, DictKey, MemStore, NodeStore, PutOptions, Store};
use p2ps_overlay::sim::{SimConfig, SimId, Simulator, Workload};
use p2ps_overlay::RingId;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

type D = Dict<SimId, NodeStore<SimId>>;

/// Arguments of `p2ps sim dict`.
#[derive(Debug, Args)]
pub struct DictSimArgs {
    /// Nodes in the ring.
    #[arg(long, default_value_t = 10_000)]
    nodes: usize,
    /// Keys put before the measurements.
    #[arg(long, default_value_t = 100_000)]
    keys: usize,
    /// Replicas per key.
    #[arg(long, default_value_t = 3)]
    replicas: usize,
    /// Times two adjacent nodes crash at once (each followed by repair; 0 to skip).
    #[arg(long, default_value_t = 10)]
    crash_pairs: usize,
    /// Fraction of the nodes replaced per simulated minute in the churn part (0 to skip).
    #[arg(long, default_value_t = 0.01)]
    churn_per_min: f64,
    /// Share of the departures under churn that are graceful leaves (the rest crash).
    #[arg(long, default_value_t = 0.5)]
    graceful: f64,
    /// Simulated minutes of churn.
    #[arg(long, default_value_t = 60.0)]
    minutes: f64,
    /// Seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Keys held, by how many live nodes hold them.
#[derive(Debug, Default, Clone, Copy, Serialize)]
struct Census {
    /// Keys no live node holds.
    lost: usize,
    /// Keys fewer than `r` live nodes hold.
    under: usize,
}

/// What a run measured.
#[derive(Debug, Serialize)]
struct DictReport {
    nodes: usize,
    keys: usize,
    replicas: usize,
    /// Keys whose put was answered as stored.
    stored: usize,
    /// Adjacent pairs crashed.
    crash_pairs: usize,
    /// Keys lost after the crashes (all trials).
    lost_after_crashes: usize,
    /// Longest time (simulated seconds) until no key was under-replicated after a pair crashed.
    crash_repair_secs_max: f64,
    /// Churn: fraction replaced per minute, graceful share, minutes.
    churn: (f64, f64, f64),
    /// Keys lost by the end of the churn.
    lost_after_churn: usize,
    /// Most keys under-replicated at a minute's end during the churn.
    under_during_churn_max: usize,
    /// Time (simulated seconds) after the churn stopped until no key was under-replicated
    /// (`None`: not within 120 s).
    churn_repair_secs: Option<f64>,
    /// Dictionary messages per node per second during the churn.
    dict_msgs_per_node_sec: f64,
    /// Dictionary bytes per node per second per stored byte during the churn.
    dict_bytes_per_stored_byte_sec: f64,
    wall_secs: f64,
}

/// Counts, from the live nodes' stores, the keys lost and under-replicated.
fn census(sim: &Simulator, keys: &[RingId], r: usize) -> Census {
    let mut held: BTreeMap<RingId, usize> = BTreeMap::new();
    for id in sim.members() {
        if let Some(d) = sim.node(id).service::<D>() {
            for k in d.store().keys() {
                *held.entry(k).or_insert(0) += 1;
            }
        }
    }
    let mut c = Census::default();
    for k in keys {
        match held.get(k).copied().unwrap_or(0) {
            0 => c.lost += 1,
            n if n < r => c.under += 1,
            _ => {}
        }
    }
    c
}

/// Steps until no key is under-replicated (at most `limit`); the time it took.
fn repaired_within(sim: &mut Simulator, keys: &[RingId], r: usize, limit: Duration) -> Option<f64> {
    let step = Duration::from_secs(1);
    let mut waited = Duration::ZERO;
    while waited <= limit {
        if census(sim, keys, r).under == 0 {
            return Some(waited.as_secs_f64());
        }
        sim.run_for(step);
        waited += step;
    }
    None
}

fn dict_traffic(sim: &Simulator) -> (u64, u64) {
    sim.counters()
        .by_kind
        .iter()
        .filter(|(k, _)| k.starts_with("dict-"))
        .fold((0, 0), |(m, b), (_, t)| (m + t.messages, b + t.bytes))
}

/// Runs the simulation and prints its report.
pub fn run(a: DictSimArgs) -> Result<()> {
    if a.nodes < a.replicas + 2 || a.replicas == 0 {
        bail!("need at least replicas + 2 nodes and 1 replica");
    }
    let wall = Instant::now();
    let mut sim = Simulator::new(SimConfig {
        seed: a.seed,
        ..SimConfig::default()
    });
    let mut cfg = DictConfig::default();
    cfg.replicas = a.replicas;
    cfg.write_quorum = (a.replicas / 2 + 1) as u8;
    cfg.read_quorum = (a.replicas / 2 + 1) as u8;
    // The keys must outlive the run.
    cfg.default_ttl = Duration::from_secs(24 * 3600);
    sim.register_everywhere(move |node| {
        let d = D::new(cfg.clone(), NodeStore::Memory(MemStore::default()));
        // A fresh node has no service of that name yet.
        let _ = node.register(d);
    });
    sim.warm_start(a.nodes);
    sim.run_for(Duration::from_secs(2));

    // Put every key from a random node, in batches.
    let keys: Vec<RingId> = (0..a.keys)
        .map(|i| DictKey::<SimId>::open(format!("key-{i}").into_bytes()).position())
        .collect();
    let mut reqs: Vec<(SimId, u64)> = Vec::with_capacity(a.keys);
    let bar = crate::progress::bar(a.keys as u64, "keys put", a.json);
    for chunk in (0..a.keys).collect::<Vec<_>>().chunks(1000) {
        bar.inc(chunk.len() as u64);
        for &k in chunk {
            let Some(at) = sim.random_member() else {
                bail!("no members");
            };
            let key = DictKey::open(format!("key-{k}").into_bytes());
            let value = bytes::Bytes::from(format!("value-{k}").into_bytes());
            let req = sim.command(at, |n, now| {
                n.command::<D, _>(now, |d, ctx| d.put(ctx, &key, value, PutOptions::default()))
            });
            if let Some(Ok(req)) = req {
                reqs.push((at, req));
            }
        }
        sim.run_for(Duration::from_millis(200));
    }
    bar.finish_and_clear();
    sim.run_for(Duration::from_secs(5));
    let mut stored = 0;
    let mut by_node: BTreeMap<SimId, Vec<u64>> = BTreeMap::new();
    for (at, req) in &reqs {
        by_node.entry(*at).or_default().push(*req);
    }
    for (at, _) in by_node {
        let Some(d) = sim.node_mut(at).service_mut::<D>() else {
            continue;
        };
        use p2ps_overlay::service::Emits;
        while let Some(e) = d.poll_event() {
            if matches!(e, p2ps_dict::DictEvent::Put { result: Ok(_), .. }) {
                stored += 1;
            }
        }
    }

    // Adjacent pairs crash at once.
    let mut lost_after_crashes = 0;
    let mut crash_repair_secs_max: f64 = 0.0;
    let bar = crate::progress::bar(a.crash_pairs as u64, "adjacent pairs crashed", a.json);
    for _ in 0..a.crash_pairs {
        bar.inc(1);
        let ring: Vec<SimId> = sim.members().collect();
        let Some(first) = sim.random_member() else {
            break;
        };
        let at = ring.iter().position(|m| *m == first).unwrap_or(0);
        let second = ring[(at + 1) % ring.len()];
        sim.crash(first);
        sim.crash(second);
        let t = repaired_within(&mut sim, &keys, a.replicas, Duration::from_secs(120));
        crash_repair_secs_max = crash_repair_secs_max.max(t.unwrap_or(f64::INFINITY));
        lost_after_crashes = census(&sim, &keys, a.replicas).lost;
    }

    bar.finish_and_clear();

    // Churn.
    let mut lost_after_churn = lost_after_crashes;
    let mut under_during_churn_max = 0;
    let mut churn_repair_secs = Some(0.0);
    let (mut msgs, mut bytes) = (0.0, 0.0);
    if a.churn_per_min > 0.0 && a.minutes > 0.0 {
        let (m0, b0) = dict_traffic(&sim);
        sim.set_workload(Workload::replacing(
            a.nodes,
            a.churn_per_min,
            a.graceful,
            0.0,
        ));
        let whole = a.minutes.floor() as u64;
        let bar = crate::progress::bar(whole, "simulated minutes of churn", a.json);
        for _ in 0..whole {
            sim.run_for(Duration::from_secs(60));
            bar.inc(1);
            let c = census(&sim, &keys, a.replicas);
            under_during_churn_max = under_during_churn_max.max(c.under);
        }
        bar.finish_and_clear();
        let (m1, b1) = dict_traffic(&sim);
        sim.set_workload(Workload::default());
        let secs = whole as f64 * 60.0;
        let n = sim.member_count().max(1) as f64;
        msgs = (m1 - m0) as f64 / n / secs;
        bytes = (b1 - b0) as f64 / n / secs;
        churn_repair_secs = repaired_within(&mut sim, &keys, a.replicas, Duration::from_secs(120));
        lost_after_churn = census(&sim, &keys, a.replicas).lost;
    }
    let stored_bytes: usize = sim
        .members()
        .filter_map(|id| sim.node(id).service::<D>().map(|d| d.store().usage().bytes))
        .sum();
    let per_node_stored = stored_bytes as f64 / sim.member_count().max(1) as f64;
    let report = DictReport {
        nodes: a.nodes,
        keys: a.keys,
        replicas: a.replicas,
        stored,
        crash_pairs: a.crash_pairs,
        lost_after_crashes,
        crash_repair_secs_max,
        churn: (a.churn_per_min, a.graceful, a.minutes),
        lost_after_churn,
        under_during_churn_max,
        churn_repair_secs,
        dict_msgs_per_node_sec: msgs,
        dict_bytes_per_stored_byte_sec: if per_node_stored > 0.0 {
            bytes / per_node_stored
        } else {
            0.0
        },
        wall_secs: wall.elapsed().as_secs_f64(),
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "dictionary: {} nodes, {} keys ({} stored), r = {}\n\
             {} adjacent pairs crashed: {} keys lost; replicas back to r within {:.0} s (worst)\n\
             churn {:.1} %/min ({:.0} % graceful) for {} min: {} keys lost, at most {} under-replicated; \
             back to r {} after it stopped\n\
             maintenance: {:.1} messages/node/s, {:.4} bytes/s per stored byte\n\
             ({:.0} s wall)",
            report.nodes,
            report.keys,
            report.stored,
            report.replicas,
            report.crash_pairs,
            report.lost_after_crashes,
            report.crash_repair_secs_max,
            report.churn.0 * 100.0,
            report.churn.1 * 100.0,
            report.churn.2,
            report.lost_after_churn,
            report.under_during_churn_max,
            match report.churn_repair_secs {
                Some(s) => format!("{s:.0} s"),
                None => "not within 120 s".into(),
            },
            report.dict_msgs_per_node_sec,
            report.dict_bytes_per_stored_byte_sec,
            report.wall_secs
        );
    }
    Ok(())
}
