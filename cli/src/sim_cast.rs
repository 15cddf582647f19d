//! `p2ps sim cast`: broadcast and group multicast measured in the simulator, on a stable ring and
//! under churn, against the ring's own routing diameter measured in the same run.

use anyhow::{bail, Result};
use clap::Args;
use p2ps_overlay::groups::GroupExt;
use p2ps_overlay::sim::Via;
use p2ps_overlay::sim::{SimConfig, SimId, Simulator, Summary, Workload};
use p2ps_overlay::{NextHop, RingId};
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// Arguments of `p2ps sim cast`.
#[derive(Debug, Args)]
pub struct CastArgs {
    /// Nodes in the ring.
    #[arg(long, default_value_t = 100_000)]
    nodes: usize,
    /// Broadcasts measured on the stable ring (each from a random node).
    #[arg(long, default_value_t = 3)]
    broadcasts: usize,
    /// Fraction of the nodes replaced per simulated minute in the churn part (0 to skip).
    #[arg(long, default_value_t = 0.01)]
    churn_per_min: f64,
    /// Simulated minutes of churn before the churn broadcasts.
    #[arg(long, default_value_t = 1.0)]
    churn_warmup_min: f64,
    /// Broadcasts measured under churn (one every 20 simulated seconds).
    #[arg(long, default_value_t = 3)]
    churn_broadcasts: usize,
    /// Members of the measured group (0 to skip).
    #[arg(long, default_value_t = 100)]
    group_size: usize,
    /// Messages sent to the group (each by a random member).
    #[arg(long, default_value_t = 10)]
    group_messages: usize,
    /// Random lookups routed to measure the routing diameter.
    #[arg(long, default_value_t = 20_000)]
    diameter_samples: usize,
    /// Seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// One measured broadcast.
#[derive(Debug, Serialize)]
struct CastRun {
    /// Nodes other than the origin that should have received it.
    expected: usize,
    /// Of those, how many did.
    reached: usize,
    /// Deliveries beyond the first at some node (must be 0).
    duplicates: usize,
    /// Pieces sent / (N - 1).
    pieces_per_node: f64,
    /// Acknowledgements and counts sent / (N - 1).
    control_per_node: f64,
    /// Deepest delivery (tree depth).
    depth: u16,
    /// The longest greedy route from the origin to any member's position: the routing
    /// diameter seen from this origin (stable runs only).
    eccentricity: Option<u16>,
    /// Time from the send to the last delivery, in milliseconds.
    last_ms: f64,
    /// Deliveries counted back up the tree to the origin.
    counted: Option<u64>,
}

#[derive(Debug, Serialize)]
struct GroupRun {
    members: usize,
    /// Nodes holding tree state (members and forwarders).
    tree_nodes: usize,
    /// Forwarders that are not members.
    forwarders: usize,
    messages: usize,
    /// Deliveries / (messages x (members - 1)).
    delivery_ratio: f64,
    /// Group messages sent per delivery.
    msgs_per_delivery: f64,
    /// Group messages received by non-members, per group message.
    non_member_msgs_per_send: f64,
    /// Group messages received by nodes outside the tree (must be 0).
    outside_tree_msgs: usize,
}

#[derive(Debug, Serialize)]
struct Report {
    nodes: usize,
    seed: u64,
    diameter: u16,
    mean_hops: f64,
    stable: Vec<CastRun>,
    churn_per_min: f64,
    churn: Vec<CastRun>,
    group: Option<GroupRun>,
    wall_secs: f64,
}

/// `p2ps sim cast`.
pub fn run(a: CastArgs) -> Result<()> {
    if a.nodes < 2 {
        bail!("--nodes must be at least 2");
    }
    let wall = Instant::now();
    let mut sim = Simulator::new(SimConfig {
        seed: a.seed,
        ..SimConfig::default()
    });
    eprintln!("building a warm ring of {} nodes…", a.nodes);
    sim.warm_start(a.nodes);
    sim.run_for(Duration::from_secs(1));
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(a.seed ^ 0xca57);
    let (diameter, mean_hops) = diameter(&sim, a.diameter_samples, &mut rng);
    eprintln!("routing: mean {mean_hops:.2} hops, diameter {diameter}");
    sim.record_deliveries();

    let mut stable = Vec::new();
    let bar = crate::progress::bar(a.broadcasts as u64, "stable broadcasts", a.json);
    for i in 0..a.broadcasts {
        let r = measure_broadcast(&mut sim, None)?;
        bar.suspend(|| eprintln!("stable broadcast {}: {}", i + 1, line(&r)));
        bar.inc(1);
        stable.push(r);
    }
    bar.finish_and_clear();

    let group = if a.group_size >= 2 {
        let g = measure_group(&mut sim, a.group_size, a.group_messages, &mut rng)?;
        eprintln!(
            "group of {}: {} tree nodes, {:.2} msgs/delivery",
            g.members, g.tree_nodes, g.msgs_per_delivery
        );
        Some(g)
    } else {
        None
    };

    let mut churn = Vec::new();
    if a.churn_per_min > 0.0 && a.churn_broadcasts > 0 {
        sim.set_workload(Workload::replacing(a.nodes, a.churn_per_min, 0.5, 0.0));
        eprintln!("churn {:.1} %/min…", a.churn_per_min * 100.0);
        sim.run_for(Duration::from_secs_f64(a.churn_warmup_min * 60.0));
        let bar = crate::progress::bar(a.churn_broadcasts as u64, "churn broadcasts", a.json);
        for i in 0..a.churn_broadcasts {
            let r = measure_broadcast(&mut sim, Some(Duration::from_secs(20)))?;
            bar.suspend(|| eprintln!("churn broadcast {}: {}", i + 1, line(&r)));
            bar.inc(1);
            churn.push(r);
        }
        bar.finish_and_clear();
        sim.set_workload(Workload::default());
    }
    let report = Report {
        nodes: a.nodes,
        seed: a.seed,
        diameter,
        mean_hops,
        stable,
        churn_per_min: a.churn_per_min,
        churn,
        group,
        wall_secs: wall.elapsed().as_secs_f64(),
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(())
}

/// Greedy hops from `from` to `key` through the nodes' own tables.
fn route_hops(sim: &Simulator, mut at: SimId, key: RingId) -> u16 {
    let mut h = 0u16;
    while h < 128 {
        match sim.node(at).table().next_hop(key) {
            Some(NextHop::Forward(p)) => {
                at = p.id;
                h += 1;
            }
            _ => break,
        }
    }
    h
}

/// Routes `samples` random lookups through the nodes' own tables (greedy, as the protocol
/// does) and returns the longest and mean hop counts.
fn diameter(sim: &Simulator, samples: usize, rng: &mut impl Rng) -> (u16, f64) {
    let members: Vec<SimId> = sim.members().collect();
    let mut hops = Vec::with_capacity(samples);
    for _ in 0..samples {
        let at = members[rng.gen_range(0..members.len())];
        let key = RingId(rng.gen());
        hops.push(route_hops(sim, at, key));
    }
    let max = hops.iter().copied().max().unwrap_or(0);
    let mean = hops.iter().map(|h| f64::from(*h)).sum::<f64>() / hops.len().max(1) as f64;
    (max, mean)
}

/// One broadcast with a reply from a random member; under churn (`spacing`), the run lasts
/// `spacing` and only nodes that were members before and after it count.
fn measure_broadcast(sim: &mut Simulator, spacing: Option<Duration>) -> Result<CastRun> {
    let Some(origin) = sim.random_member() else {
        bail!("no members left");
    };
    let before: BTreeSet<SimId> = sim.members().collect();
    let eccentricity = spacing.is_none().then(|| {
        before
            .iter()
            .map(|m| route_hops(sim, origin, sim.node(*m).pos()))
            .max()
            .unwrap_or(0)
    });
    sim.clear_deliveries();
    let pieces0 = sim.counters().traffic("cast").messages;
    let ctl0 =
        sim.counters().traffic("cast-ack").messages + sim.counters().traffic("cast-done").messages;
    let done0 = sim.counters().casts_done.len();
    let start = sim.now();
    let Some(seq) = sim.broadcast(origin, b"bench".to_vec(), true) else {
        bail!("the origin refused the broadcast");
    };
    match spacing {
        Some(d) => sim.run_for(d),
        None => {
            for _ in 0..600 {
                sim.run_for(Duration::from_millis(100));
                if sim.counters().casts_done[done0..]
                    .iter()
                    .any(|r| r.origin == origin && r.seq == seq)
                {
                    break;
                }
            }
        }
    }
    let after: BTreeSet<SimId> = sim.members().collect();
    let mut per_node: BTreeMap<SimId, usize> = BTreeMap::new();
    let mut depth = 0;
    let mut last = start;
    for ((node, d), t) in sim.deliveries().iter().zip(sim.delivery_times()) {
        if d.via == Via::Broadcast && d.origin == origin {
            *per_node.entry(*node).or_insert(0) += 1;
            depth = depth.max(d.hops);
            last = last.max(*t);
        }
    }
    let expected: Vec<SimId> = before
        .intersection(&after)
        .copied()
        .filter(|m| *m != origin)
        .collect();
    let reached = expected.iter().filter(|m| per_node.contains_key(m)).count();
    let n1 = (before.len() - 1).max(1) as f64;
    let pieces = sim.counters().traffic("cast").messages - pieces0;
    let ctl = sim.counters().traffic("cast-ack").messages
        + sim.counters().traffic("cast-done").messages
        - ctl0;
    let counted = sim.counters().casts_done[done0..]
        .iter()
        .find(|r| r.origin == origin && r.seq == seq)
        .and_then(|r| r.delivered);
    Ok(CastRun {
        expected: expected.len(),
        reached,
        duplicates: per_node.values().map(|c| c - 1).sum(),
        pieces_per_node: pieces as f64 / n1,
        control_per_node: ctl as f64 / n1,
        depth,
        eccentricity,
        last_ms: last.since(start).as_secs_f64() * 1000.0,
        counted,
    })
}

fn measure_group(
    sim: &mut Simulator,
    size: usize,
    messages: usize,
    rng: &mut impl Rng,
) -> Result<GroupRun> {
    let group = RingId(rng.gen());
    let mut members = BTreeSet::new();
    let limit = size.min(sim.member_count());
    while members.len() < limit {
        if let Some(m) = sim.random_member() {
            members.insert(m);
        }
    }
    for m in &members {
        sim.join_group(*m, group);
    }
    sim.run_for(Duration::from_secs(5));
    let tree: BTreeSet<SimId> = sim
        .members()
        .filter(|m| !sim.node(*m).group_roles().is_empty())
        .collect();
    sim.clear_deliveries();
    sim.trace_kinds(&["group-cast", "group-cast-counted"]);
    let list: Vec<SimId> = members.iter().copied().collect();
    for _ in 0..messages {
        let from = list[rng.gen_range(0..list.len())];
        sim.send_group(from, group, b"group-bench".to_vec());
        sim.run_for(Duration::from_secs(5));
    }
    let deliveries = sim
        .deliveries()
        .iter()
        .filter(|(_, d)| d.via == Via::Group(group))
        .count();
    let traced = sim.traced();
    let non_member = traced.iter().filter(|s| !members.contains(&s.to)).count();
    let outside = traced.iter().filter(|s| !tree.contains(&s.to)).count();
    let want = messages * (members.len() - 1);
    Ok(GroupRun {
        members: members.len(),
        tree_nodes: tree.len(),
        forwarders: tree.len() - members.len(),
        messages,
        delivery_ratio: deliveries as f64 / want.max(1) as f64,
        msgs_per_delivery: traced.len() as f64 / deliveries.max(1) as f64,
        non_member_msgs_per_send: non_member as f64 / messages.max(1) as f64,
        outside_tree_msgs: outside,
    })
}

fn line(r: &CastRun) -> String {
    format!(
        "reached {}/{} (dup {}), pieces/(N-1) {:.4}, depth {}{}, last after {:.0} ms",
        r.reached,
        r.expected,
        r.duplicates,
        r.pieces_per_node,
        r.depth,
        r.eccentricity
            .map(|e| format!(" (origin's routing eccentricity {e})"))
            .unwrap_or_default(),
        r.last_ms
    )
}

fn summary(runs: &[CastRun], f: impl Fn(&CastRun) -> f64) -> Summary {
    Summary::of(&mut runs.iter().map(f).collect::<Vec<f64>>())
}

fn render(r: &Report) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "N = {}, seed {}: routing mean {:.2} hops, diameter {} (max of sampled lookups)",
        r.nodes, r.seed, r.mean_hops, r.diameter
    );
    for (name, runs) in [
        ("stable", &r.stable),
        (
            &format!("churn {:.1}%/min", r.churn_per_min * 100.0)[..],
            &r.churn,
        ),
    ] {
        if runs.is_empty() {
            continue;
        }
        let reach = summary(runs, |c| c.reached as f64 / c.expected.max(1) as f64);
        let _ = writeln!(
            o,
            "broadcast, {name}: {} runs; pieces/(N-1) mean {:.4} max {:.4}; acks+counts/(N-1) {:.3}; \
             reached min {:.5}; duplicates {}; depth max {} (sampled diameter + {}); depth - \
             origin's routing eccentricity: {}; last node after {:.0} ms mean",
            runs.len(),
            summary(runs, |c| c.pieces_per_node).mean,
            summary(runs, |c| c.pieces_per_node).max,
            summary(runs, |c| c.control_per_node).mean,
            reach.min,
            runs.iter().map(|c| c.duplicates).sum::<usize>(),
            runs.iter().map(|c| c.depth).max().unwrap_or(0),
            i32::from(runs.iter().map(|c| c.depth).max().unwrap_or(0)) - i32::from(r.diameter),
            runs.iter()
                .filter_map(|c| c.eccentricity.map(|e| format!("{:+}", i32::from(c.depth) - i32::from(e))))
                .collect::<Vec<_>>()
                .join(" "),
            summary(runs, |c| c.last_ms).mean,
        );
    }
    if let Some(g) = &r.group {
        let _ = writeln!(
            o,
            "group: {} members, {} tree nodes ({} forwarders); {} messages; delivered {:.4} of \
             expected; {:.3} msgs per delivery; {:.1} msgs to non-members per send; {} to nodes \
             outside the tree",
            g.members,
            g.tree_nodes,
            g.forwarders,
            g.messages,
            g.delivery_ratio,
            g.msgs_per_delivery,
            g.non_member_msgs_per_send,
            g.outside_tree_msgs
        );
    }
    let _ = writeln!(o, "wall time {:.0} s", r.wall_secs);
    o
}
