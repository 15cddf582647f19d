//! `p2ps sim`: runs the Tango state machine in the discrete-event simulator and reports every
//! finger strategy side by side, measured in the same run.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use p2ps_overlay::sim::engine::Workload;
use p2ps_overlay::sim::stable::{LookupStats, StableRing};
use p2ps_overlay::sim::{LatencyModel, SimConfig, SimReport, Simulator, Summary};
use p2ps_overlay::{Config, FingerStrategy};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Arguments of `p2ps sim`.
#[derive(Debug, Args)]
pub struct SimArgs {
    #[command(subcommand)]
    mode: SimMode,
}

#[derive(Debug, Subcommand)]
enum SimMode {
    /// Hop statistics on a large stable ring built directly (exact tables, same routing code).
    Stable(StableArgs),
    /// The full protocol with churn, loss and latency: joins, leaves, crashes and lookups.
    Churn(ChurnArgs),
    /// Broadcast and group multicast: messages, depth, reach and time, stable and under churn.
    Cast(crate::sim_cast::CastArgs),
    /// The census: asks and answers, time to the answer, nodes found against the truth, and
    /// the network-size estimate's error; optionally the picture of the ring.
    Census(crate::sim_census::CensusSimArgs),
    /// The replicated dictionary: keys lost after adjacent crashes and under churn, repair
    /// time, maintenance cost.
    Dict(crate::sim_dict::DictSimArgs),
    /// Lookups under hostile nodes (drop, answer with themselves, lie in lists): correct share
    /// and message cost per lookup mode, hostile fraction and placement.
    Adversary(crate::sim_adversary::AdversaryArgs),
}

#[derive(Debug, Args)]
struct StableArgs {
    /// Nodes in the ring.
    #[arg(long, default_value_t = 100_000)]
    nodes: usize,
    /// Random lookups to route.
    #[arg(long, default_value_t = 100_000)]
    lookups: usize,
    /// Strategies to compare, comma separated (chord, tango, tango+).
    #[arg(long, default_value = "chord,tango,tango+", value_delimiter = ',')]
    strategies: Vec<String>,
    /// Successor/predecessor list length.
    #[arg(long, default_value_t = 8)]
    list_len: usize,
    /// Sources for the greedy-vs-shortest-path sample (0 to skip).
    #[arg(long, default_value_t = 16)]
    stretch_sources: usize,
    /// Nodes sampled for the distinct-finger count.
    #[arg(long, default_value_t = 10_000)]
    finger_sample: usize,
    /// Seed of the ring and the lookups.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Worker threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// A churn scenario; every field can come from a TOML file and be overridden by a flag.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Scenario {
    nodes: usize,
    /// "warm" (exact tables from the start) or "joins" (every node joins through the protocol).
    start: String,
    minutes: f64,
    churn_per_min: f64,
    graceful_share: f64,
    lookups_per_sec: f64,
    loss: f64,
    latency: LatencyModel,
    seed: u64,
    strategies: Vec<String>,
    list_len: usize,
    stabilize_interval_ms: u64,
    finger_refresh_secs: u64,
    converge_limit_secs: u64,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            nodes: 1000,
            start: "warm".into(),
            minutes: 10.0,
            churn_per_min: 0.01,
            graceful_share: 0.5,
            lookups_per_sec: 20.0,
            loss: 0.0,
            latency: LatencyModel::default(),
            seed: 1,
            strategies: vec!["chord".into(), "tango".into(), "tango+".into()],
            list_len: 8,
            stabilize_interval_ms: 2000,
            finger_refresh_secs: 120,
            converge_limit_secs: 1800,
        }
    }
}

#[derive(Debug, Args)]
struct ChurnArgs {
    /// A TOML scenario file (fields: nodes, start, minutes, churn_per_min, graceful_share,
    /// lookups_per_sec, loss, latency.min_ms, latency.max_ms, seed, strategies, list_len,
    /// stabilize_interval_ms, finger_refresh_secs, converge_limit_secs).
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// Nodes at the start.
    #[arg(long)]
    nodes: Option<usize>,
    /// How the ring is built: warm (exact tables) or joins (one join at a time).
    #[arg(long)]
    start: Option<String>,
    /// Simulated minutes of churn.
    #[arg(long)]
    minutes: Option<f64>,
    /// Fraction of the nodes replaced per simulated minute.
    #[arg(long)]
    churn_per_min: Option<f64>,
    /// Share of departures that are graceful leaves (the rest crash).
    #[arg(long)]
    graceful_share: Option<f64>,
    /// Lookups per simulated second, from random members to random keys.
    #[arg(long)]
    lookups_per_sec: Option<f64>,
    /// Probability that a message is lost.
    #[arg(long)]
    loss: Option<f64>,
    /// Seed of the run.
    #[arg(long)]
    seed: Option<u64>,
    /// Strategies to compare, comma separated.
    #[arg(long, value_delimiter = ',')]
    strategies: Option<Vec<String>>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Runs `p2ps sim`.
pub fn run(args: SimArgs) -> Result<()> {
    match args.mode {
        SimMode::Stable(a) => run_stable(a),
        SimMode::Churn(a) => run_churn(a),
        SimMode::Cast(a) => crate::sim_cast::run(a),
        SimMode::Adversary(a) => crate::sim_adversary::run(a),
        SimMode::Dict(a) => crate::sim_dict::run(a),
        SimMode::Census(a) => crate::sim_census::run(a),
    }
}

fn parse_strategies(names: &[String]) -> Result<Vec<FingerStrategy>> {
    let out = names
        .iter()
        .map(|s| {
            FingerStrategy::parse(s.trim())
                .with_context(|| format!("unknown strategy {s:?} (chord, tango, tango+)"))
        })
        .collect::<Result<Vec<_>>>()?;
    if out.is_empty() {
        bail!("no strategy given");
    }
    Ok(out)
}

#[derive(Debug, Serialize)]
struct StableRow {
    strategy: &'static str,
    nodes: usize,
    lookups: LookupStats,
    distinct_neighbours: Summary,
    distinct_fingers: Summary,
    stretch: Option<f64>,
    build_secs: f64,
    route_secs: f64,
}

fn run_stable(a: StableArgs) -> Result<()> {
    if a.nodes < 2 {
        bail!("--nodes must be at least 2");
    }
    let strategies = parse_strategies(&a.strategies)?;
    let mut rows = Vec::new();
    for s in strategies {
        if !a.json {
            eprintln!("{}: building {} tables…", s.name(), a.nodes);
        }
        let t0 = Instant::now();
        let ring = StableRing::build(a.nodes, s, a.list_len, a.seed, a.threads);
        let build_secs = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let lookups = ring.lookups(a.lookups, a.seed ^ 0x5eed, a.threads);
        let route_secs = t1.elapsed().as_secs_f64();
        let stretch = (a.stretch_sources > 0).then(|| ring.stretch(a.stretch_sources, 200, a.seed));
        rows.push(StableRow {
            strategy: s.name(),
            nodes: a.nodes,
            lookups,
            distinct_neighbours: ring.distinct_neighbours(),
            distinct_fingers: ring.distinct_fingers(a.finger_sample, a.seed),
            stretch,
            build_secs,
            route_secs,
        });
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "stable ring: {} nodes, {} random lookups, list length {}, seed {}",
        a.nodes, a.lookups, a.list_len, a.seed
    );
    println!(
        "{:<8} {:>8} {:>6} {:>5} {:>5} {:>5} {:>10} {:>10} {:>8} {:>8} {:>8}",
        "strategy",
        "success",
        "mean",
        "p50",
        "p99",
        "max",
        "fingers",
        "neighbours",
        "stretch",
        "build s",
        "route s"
    );
    for r in &rows {
        println!(
            "{:<8} {:>8.4} {:>6.3} {:>5} {:>5} {:>5} {:>10.2} {:>10.2} {:>8} {:>8.1} {:>8.1}",
            r.strategy,
            r.lookups.success,
            r.lookups.hops.mean,
            r.lookups.hops.p50,
            r.lookups.hops.p99,
            r.lookups.hops.max,
            r.distinct_fingers.mean,
            r.distinct_neighbours.mean,
            r.stretch
                .map(|x| format!("{x:.3}"))
                .unwrap_or_else(|| "-".into()),
            r.build_secs,
            r.route_secs,
        );
    }
    if let (Some(c), Some(t)) = (
        rows.iter().find(|r| r.strategy == "chord"),
        rows.iter().find(|r| r.strategy == "tango"),
    ) {
        if c.lookups.hops.mean > 0.0 {
            println!(
                "tango mean hops / chord mean hops = {:.3} (target <= 0.85)",
                t.lookups.hops.mean / c.lookups.hops.mean
            );
        }
    }
    Ok(())
}

#[derive(Debug, Serialize)]
struct ChurnRow {
    strategy: &'static str,
    report: SimReport,
    lookups_failed: u64,
    lookups_wrong: u64,
    joins: u64,
    leaves: u64,
    crashes: u64,
    lost_messages: u64,
    converge_secs: Option<f64>,
    churn_wall_secs: f64,
    converge_wall_secs: f64,
    wall_secs: f64,
}

fn load_scenario(a: &ChurnArgs) -> Result<Scenario> {
    let mut s = match &a.scenario {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading scenario {}", path.display()))?;
            toml::from_str(&text).with_context(|| format!("parsing scenario {}", path.display()))?
        }
        None => Scenario::default(),
    };
    if let Some(v) = a.nodes {
        s.nodes = v;
    }
    if let Some(v) = &a.start {
        s.start = v.clone();
    }
    if let Some(v) = a.minutes {
        s.minutes = v;
    }
    if let Some(v) = a.churn_per_min {
        s.churn_per_min = v;
    }
    if let Some(v) = a.graceful_share {
        s.graceful_share = v;
    }
    if let Some(v) = a.lookups_per_sec {
        s.lookups_per_sec = v;
    }
    if let Some(v) = a.loss {
        s.loss = v;
    }
    if let Some(v) = a.seed {
        s.seed = v;
    }
    if let Some(v) = &a.strategies {
        s.strategies = v.clone();
    }
    if s.nodes < 2 {
        bail!("a scenario needs at least 2 nodes");
    }
    if !(0.0..=1.0).contains(&s.loss) || !(0.0..=1.0).contains(&s.graceful_share) {
        bail!("loss and graceful_share must be between 0 and 1");
    }
    if !(s.minutes >= 0.0 && s.churn_per_min >= 0.0 && s.lookups_per_sec >= 0.0) {
        bail!("minutes, churn_per_min and lookups_per_sec must not be negative");
    }
    if s.start != "warm" && s.start != "joins" {
        bail!("start must be \"warm\" or \"joins\", not {:?}", s.start);
    }
    Ok(s)
}

fn run_churn(a: ChurnArgs) -> Result<()> {
    let sc = load_scenario(&a)?;
    let strategies = parse_strategies(&sc.strategies)?;
    let mut rows = Vec::new();
    for s in strategies {
        if !a.json {
            eprintln!(
                "{}: {} nodes, {} minutes of churn…",
                s.name(),
                sc.nodes,
                sc.minutes
            );
        }
        let wall = Instant::now();
        let node = Config::default()
            .with_strategy(s)
            .with_list_len(sc.list_len)
            .with_stabilize_interval(Duration::from_millis(sc.stabilize_interval_ms))
            .with_finger_refresh_period(Duration::from_secs(sc.finger_refresh_secs));
        node.validate().context("overlay configuration")?;
        let mut sim = Simulator::new(SimConfig {
            node,
            seed: sc.seed,
            latency: sc.latency,
            loss: sc.loss,
            ..SimConfig::default()
        });
        if sc.start == "warm" {
            sim.warm_start(sc.nodes);
        } else {
            let first = sim.add_node();
            sim.create(first);
            for _ in 1..sc.nodes {
                if let Some(via) = sim.random_member() {
                    let id = sim.add_node();
                    sim.join(id, via);
                }
                sim.run_for(Duration::from_millis(50));
            }
        }
        sim.run_for(Duration::from_secs(30));
        sim.reset_counters();
        let churn_secs = sc.minutes * 60.0;
        sim.set_workload(Workload::replacing(
            sc.nodes,
            sc.churn_per_min,
            sc.graceful_share,
            sc.lookups_per_sec,
        ));
        let churn_wall = Instant::now();
        let mut done = 0.0;
        let bar = crate::progress::bar(
            churn_secs.div_euclid(60.0) as u64 + u64::from(churn_secs % 60.0 > 0.0),
            &format!("{}: simulated minutes", s.name()),
            a.json,
        );
        while done < churn_secs {
            let step = (churn_secs - done).min(60.0);
            sim.run_for(Duration::from_secs_f64(step));
            done += step;
            bar.inc(1);
            bar.set_message(format!("{} members", sim.member_count()));
            if !a.json && bar.is_hidden() {
                eprintln!(
                    "  {:>5.1} simulated min, {} members, {:.1} s wall",
                    done / 60.0,
                    sim.member_count(),
                    churn_wall.elapsed().as_secs_f64()
                );
            }
        }
        bar.finish_and_clear();
        let churn_wall_secs = churn_wall.elapsed().as_secs_f64();
        sim.set_workload(Workload::default());
        // Let the last lookups finish before reading the counters.
        sim.run_for(Duration::from_secs(15));
        let report = sim.report(churn_secs);
        let c = sim.counters().clone();
        let converge_wall = Instant::now();
        let converge = sim.run_until_converged(
            Duration::from_secs(5),
            Duration::from_secs(sc.converge_limit_secs),
        );
        rows.push(ChurnRow {
            strategy: s.name(),
            report,
            lookups_failed: c.lookups_failed,
            lookups_wrong: c.lookups_wrong,
            joins: c.joins_done,
            leaves: c.leaves,
            crashes: c.crashes,
            lost_messages: c.lost,
            converge_secs: converge.map(|d| d.as_secs_f64()),
            churn_wall_secs,
            converge_wall_secs: converge_wall.elapsed().as_secs_f64(),
            wall_secs: wall.elapsed().as_secs_f64(),
        });
    }
    if a.json {
        #[derive(Serialize)]
        struct Out<'a> {
            scenario: &'a Scenario,
            results: &'a [ChurnRow],
        }
        println!(
            "{}",
            serde_json::to_string_pretty(&Out {
                scenario: &sc,
                results: &rows
            })?
        );
        return Ok(());
    }
    println!(
        "churn: {} nodes ({} start), {} min, {:.1}% replaced/min ({:.0}% graceful), {} lookups/s, loss {}, seed {}",
        sc.nodes,
        sc.start,
        sc.minutes,
        sc.churn_per_min * 100.0,
        sc.graceful_share * 100.0,
        sc.lookups_per_sec,
        sc.loss,
        sc.seed
    );
    println!(
        "{:<8} {:>8} {:>7} {:>6} {:>4} {:>4} {:>4} {:>10} {:>9} {:>9} {:>10} {:>12}",
        "strategy",
        "success",
        "lookups",
        "mean",
        "p50",
        "p99",
        "max",
        "neighbours",
        "upkeep/s",
        "bytes/s",
        "converge s",
        "churn wall s"
    );
    for r in &rows {
        let h = &r.report.hops;
        println!(
            "{:<8} {:>8.4} {:>7} {:>6.2} {:>4} {:>4} {:>4} {:>10.2} {:>9.2} {:>9.0} {:>10} {:>12.1}",
            r.strategy,
            r.report.lookup_success,
            r.report.lookups,
            h.mean,
            h.p50,
            h.p99,
            h.max,
            r.report.distinct_neighbours.mean,
            r.report.maintenance_msgs_per_node_sec,
            r.report.maintenance_bytes_per_node_sec,
            r.converge_secs
                .map(|x| format!("{x:.0}"))
                .unwrap_or_else(|| "never".into()),
            r.churn_wall_secs,
        );
    }
    Ok(())
}
