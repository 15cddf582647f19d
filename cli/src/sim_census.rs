//! `p2ps sim census`: a census in the simulator, on a warm stable ring, running the same
//! service code as a node: asks and answers sent, time to the answer, nodes found against the
//! truth, and how close each node's network-size estimate (from its own lists, no traffic) is.
//!
//! The figures the runtime would tell each node are made here: the dictionary keys a node
//! holds are those of `--keys` random keys it is responsible for or a replica of (3 replicas,
//! so they follow the true density of the ring), its load is the messages it sent per
//! simulated second, and NAT classes are drawn at random (60 % public, 20 % cone, 10 %
//! symmetric, 5 % port-mapped, 5 % unknown).

use anyhow::{bail, Context, Result};
use clap::Args;
use p2ps::census::{
    network_size, Census, CensusConfig, CensusEvent, CensusExt, Colouring, Figures, Focus,
    NatClass, Outcome, Report, Version,
};
use p2ps_overlay::service::Emits;
use p2ps_overlay::sim::{SimConfig, SimId, Simulator};
use p2ps_overlay::PeerId;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Arguments of `p2ps sim census`.
#[derive(Debug, Args)]
pub struct CensusSimArgs {
    /// Nodes in the ring.
    #[arg(long, default_value_t = 100_000)]
    nodes: usize,
    /// Random dictionary keys placed on the ring (each held by 3 replicas).
    #[arg(long, default_value_t = 1_000_000)]
    keys: usize,
    /// Per-node rows asked (0: sums only; with --svg, 1000 unless given).
    #[arg(long)]
    rows: Option<u32>,
    /// Also draw the ring from the census into this SVG file.
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
    /// What the picture's nodes are coloured by.
    #[arg(long, value_enum, default_value_t = crate::census_cmd::ColourArg::Nat)]
    colour: crate::census_cmd::ColourArg,
    /// Seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct SimCensus {
    nodes: usize,
    seed: u64,
    /// Nodes the census counted.
    found: u64,
    complete: bool,
    /// Census asks sent, and N - 1.
    asks: u64,
    /// Census answers sent.
    answers: u64,
    expected_messages: u64,
    /// Their bytes (postcard).
    ask_bytes: u64,
    answer_bytes: u64,
    /// Simulated seconds from the start to the answer.
    seconds: f64,
    /// The origin's own estimate and its relative error.
    origin_estimate: Option<u64>,
    /// Mean and 90th percentile of |estimate - N| / N over every node.
    estimate_error_mean: f64,
    estimate_error_p90: f64,
    /// The mean of every node's estimate (what the census reports) and its relative error.
    mean_estimate: Option<f64>,
    mean_estimate_error: Option<f64>,
    /// Dictionary records the census summed, and the truth.
    keys: u64,
    keys_truth: u64,
    wall_secs: f64,
    report: Report,
}

/// `p2ps sim census`.
pub fn run(a: CensusSimArgs) -> Result<()> {
    if a.nodes < 2 {
        bail!("--nodes must be at least 2");
    }
    let wall = Instant::now();
    let rows = a.rows.unwrap_or(if a.svg.is_some() { 1000 } else { 0 });
    let mut sim = Simulator::new(SimConfig {
        seed: a.seed,
        ..SimConfig::default()
    });
    sim.register_everywhere(|node| {
        // A fresh node has no service of this name yet.
        let _ = node.register(Census::<SimId>::new(CensusConfig::default()));
    });
    eprintln!("building a warm ring of {} nodes…", a.nodes);
    let ids = sim.warm_start(a.nodes);
    sim.run_for(Duration::from_secs(2));
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(a.seed ^ 0xce05);
    let held = keys_held(&sim, &ids, a.keys, &mut rng);
    let secs = sim.now().as_secs_f64().max(1e-9);
    let mut keys_truth = 0u64;
    for (id, keys) in ids.iter().zip(&held) {
        let nat = match rng.gen_range(0..100) {
            0..60 => NatClass::Public,
            60..80 => NatClass::Cone,
            80..90 => NatClass::Symmetric,
            90..95 => NatClass::PortMapped,
            _ => NatClass::Unknown,
        };
        let load = (sim.node(*id).stats().sent as f64 / secs).round() as u32;
        keys_truth += *keys;
        let f = Figures {
            nat,
            version: Version::new(p2ps_transport::PROTOCOL_VERSION, env!("CARGO_PKG_VERSION")),
            load,
            keys: *keys,
            bytes: *keys * 64,
        };
        sim.node_mut(*id).set_census_figures(f);
    }
    let errors = estimate_errors(&sim, &ids);
    let Some(origin) = sim.random_member() else {
        bail!("no members");
    };
    let before = sim.counters().clone();
    eprintln!("census from node {} …", origin.index());
    let seq = sim
        .command(origin, |n, now| n.census(now, rows))
        .context("the origin refused the census")?;
    let outcome = wait(&mut sim, origin, seq)?;
    let after = sim.counters();
    let diff = |k: &str| {
        let (a, b) = (after.traffic(k), before.traffic(k));
        (a.messages - b.messages, a.bytes - b.bytes)
    };
    let (asks, ask_bytes) = diff("census-ask");
    let (answers, answer_bytes) = diff("census-answer");
    let report = Report::new(&outcome, |id| format!("sim-{}", id.index()));
    let n = a.nodes as f64;
    let mean_estimate = outcome.sum.mean_estimate();
    let out = SimCensus {
        nodes: a.nodes,
        seed: a.seed,
        found: outcome.sum.nodes,
        complete: outcome.complete,
        asks,
        answers,
        expected_messages: a.nodes as u64 - 1,
        ask_bytes,
        answer_bytes,
        seconds: outcome.finished.since(outcome.started).as_secs_f64(),
        origin_estimate: outcome.estimate,
        estimate_error_mean: errors.iter().sum::<f64>() / errors.len().max(1) as f64,
        estimate_error_p90: errors.get(errors.len() * 9 / 10).copied().unwrap_or(0.0),
        mean_estimate,
        mean_estimate_error: mean_estimate.map(|m| (m - n).abs() / n),
        keys: outcome.sum.keys,
        keys_truth,
        wall_secs: wall.elapsed().as_secs_f64(),
        report,
    };
    if let Some(file) = &a.svg {
        let t = sim.node(origin).table();
        let focus = Focus {
            name: format!("sim-{}", origin.index()),
            pos: origin.ring_id(),
            successors: t.successors().iter().map(|p| p.pos).collect(),
            predecessors: t.predecessors().iter().map(|p| p.pos).collect(),
            fingers: t
                .finger_slots()
                .filter_map(|(_, _, p)| p.map(|p| p.pos))
                .collect(),
        };
        let colour: Colouring = a.colour.into();
        std::fs::write(file, p2ps::census::svg(&out.report, Some(&focus), colour))
            .with_context(|| format!("writing {}", file.display()))?;
        eprintln!("picture: {}", file.display());
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!("{}", render(&out));
    }
    Ok(())
}

/// Runs until the census `seq` of `origin` is over (at most 10 simulated minutes).
fn wait(sim: &mut Simulator, origin: SimId, seq: u64) -> Result<Outcome<SimId>> {
    for _ in 0..6000 {
        sim.run_for(Duration::from_millis(100));
        let Some(c) = sim.node_mut(origin).service_mut::<Census<SimId>>() else {
            bail!("the origin has no census service");
        };
        while let Some(CensusEvent::Done(o)) = c.poll_event() {
            if o.seq == seq {
                return Ok(o);
            }
        }
    }
    bail!("the census did not end within 10 simulated minutes")
}

/// Dictionary records each node of `ids` holds when `keys` random keys sit on 3 replicas:
/// the node responsible for a key (the first at or after it) and its 2 successors.
fn keys_held(sim: &Simulator, ids: &[SimId], keys: usize, rng: &mut impl Rng) -> Vec<u64> {
    let mut by_pos: Vec<(u128, usize)> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.ring_id().0, i))
        .collect();
    by_pos.sort_unstable();
    let mut held = vec![0u64; ids.len()];
    let n = by_pos.len();
    for _ in 0..keys {
        let k: u128 = rng.gen();
        let first = by_pos.partition_point(|(p, _)| *p < k) % n;
        for r in 0..3.min(n) {
            held[by_pos[(first + r) % n].1] += 1;
        }
    }
    let _ = sim;
    held
}

/// |estimate - N| / N of every node, sorted.
fn estimate_errors(sim: &Simulator, ids: &[SimId]) -> Vec<f64> {
    let n = ids.len() as f64;
    let mut e: Vec<f64> = ids
        .iter()
        .map(|id| {
            let est = network_size(sim.node(*id).table()).unwrap_or(0) as f64;
            (est - n).abs() / n
        })
        .collect();
    e.sort_by(f64::total_cmp);
    e
}

fn render(o: &SimCensus) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "census of {} nodes (seed {}): found {}{}",
        o.nodes,
        o.seed,
        o.found,
        if o.complete { "" } else { " (incomplete)" }
    );
    let _ = writeln!(
        s,
        "messages:  {} asks + {} answers (N - 1 = {}), {:.1} + {:.1} MB",
        o.asks,
        o.answers,
        o.expected_messages,
        o.ask_bytes as f64 / 1e6,
        o.answer_bytes as f64 / 1e6
    );
    let _ = writeln!(s, "time:      {:.3} s simulated to the answer", o.seconds);
    let _ = writeln!(
        s,
        "estimate:  per node |error| mean {:.1} %, p90 {:.1} %; origin's {}; mean over nodes {} ({})",
        o.estimate_error_mean * 100.0,
        o.estimate_error_p90 * 100.0,
        o.origin_estimate
            .map_or("-".to_string(), |e| e.to_string()),
        o.mean_estimate.map_or("-".to_string(), |m| format!("{m:.0}")),
        o.mean_estimate_error
            .map_or("-".to_string(), |e| format!("{:.2} % off", e * 100.0))
    );
    let _ = writeln!(s, "keys:      {} summed, {} true", o.keys, o.keys_truth);
    let _ = writeln!(s, "wall:      {:.1} s\n", o.wall_secs);
    s.push_str(&o.report.to_text());
    s
}
