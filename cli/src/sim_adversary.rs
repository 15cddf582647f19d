//! `p2ps sim adversary`: lookups that survive hostile nodes. For each fraction of hostile
//! nodes, placement (random, or ground just before one victim) and lookup mode, the share of
//! correct lookups (keys whose responsible node is honest, from honest nodes) and their message
//! cost against routed lookups at the same fraction, measured in the same run.

use anyhow::{bail, Context, Result};
use clap::Args;
use p2ps_overlay::sim::adversary::{
    run as run_scenario, AdversaryStats, Behaviour, LookupTraffic, Outcome, Placement, Scenario,
};
use p2ps_overlay::LookupMode;
use serde::Serialize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Correct share the targets ask for at 10 % hostile nodes.
const TARGET_AT_10: f64 = 0.99;
/// Correct share the targets ask for at 20 % hostile nodes.
const TARGET_AT_20: f64 = 0.95;
/// Lookup messages allowed, as a multiple of routed lookups' at the same fraction.
const TARGET_COST: f64 = 3.0;

/// Arguments of `p2ps sim adversary`.
#[derive(Debug, Args)]
pub struct AdversaryArgs {
    /// Nodes in the ring, hostile ones included.
    #[arg(long, default_value_t = 10_000)]
    nodes: usize,
    /// Lookups measured per cell (each from a random honest node).
    #[arg(long, default_value_t = 2_000)]
    lookups: usize,
    /// Fractions of hostile nodes, comma separated.
    #[arg(long, default_value = "0,0.1,0.2", value_delimiter = ',')]
    fractions: Vec<f64>,
    /// Where hostile nodes sit, comma separated: random, ground (just before one victim,
    /// whose keys are looked up).
    #[arg(long, default_value = "random,ground", value_delimiter = ',')]
    placements: Vec<String>,
    /// Attacks, comma separated: all (combined), drop, answer-self, lie-lists, lie-near, none.
    /// `all,drop,answer-self,lie-lists,lie-near` shows them combined and one by one.
    #[arg(long, default_value = "all", value_delimiter = ',')]
    behaviours: Vec<String>,
    /// Simulated seconds the ring runs with the adversary on before the lookups.
    #[arg(long, default_value_t = 60)]
    warmup_secs: u64,
    /// Seed of the rings, hostile nodes, askers and keys.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Cells simulated at once (each is single-threaded).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// One measured cell.
#[derive(Debug, Serialize)]
struct Row {
    placement: &'static str,
    behaviour: String,
    /// Fraction of hostile nodes.
    hostile: f64,
    hostile_nodes: usize,
    mode: &'static str,
    lookups: u64,
    correct: u64,
    wrong: u64,
    failed: u64,
    /// correct / lookups.
    correct_share: f64,
    msgs_per_lookup: f64,
    /// msgs_per_lookup / that of routed lookups in the same placement, behaviour and fraction.
    cost_vs_routed: f64,
    /// The targets at this fraction (correct share, cost), where there are any.
    target_correct: Option<f64>,
    /// Whether the cell meets them.
    meets_targets: Option<bool>,
    traffic: LookupTraffic,
    attacks: AdversaryStats,
    /// Share of hostile entries in honest nodes' neighbour lists when the lookups started.
    hostile_list_share: f64,
    /// Ground placement: hostile nodes that landed between the victim and its predecessor.
    ground_in_gap: usize,
    /// Simulated seconds until every lookup was over.
    lookup_secs: f64,
    wall_secs: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    nodes: usize,
    lookups_per_cell: usize,
    warmup_secs: u64,
    seed: u64,
    target_correct_at_10pct: f64,
    target_correct_at_20pct: f64,
    target_cost_vs_routed: f64,
    rows: Vec<Row>,
    wall_secs: f64,
}

fn target_for(f: f64) -> Option<f64> {
    if (f - 0.1).abs() < 1e-9 {
        Some(TARGET_AT_10)
    } else if (f - 0.2).abs() < 1e-9 {
        Some(TARGET_AT_20)
    } else {
        None
    }
}

/// `p2ps sim adversary`.
pub fn run(a: AdversaryArgs) -> Result<()> {
    if a.nodes < 2 {
        bail!("--nodes must be at least 2");
    }
    if a.fractions.iter().any(|f| !(0.0..1.0).contains(f)) {
        bail!("--fractions must lie in [0, 1)");
    }
    let placements = a
        .placements
        .iter()
        .map(|p| match p.trim() {
            "random" => Ok(Placement::Random),
            "ground" => Ok(Placement::Ground),
            other => bail!("unknown placement {other:?} (random, ground)"),
        })
        .collect::<Result<Vec<_>>>()?;
    let behaviours = a
        .behaviours
        .iter()
        .map(|b| {
            Behaviour::parse(b.trim()).with_context(|| {
                format!("unknown behaviour {b:?} ({})", Behaviour::NAMES.join(", "))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let wall = Instant::now();
    // Every cell; with no hostile node the behaviour makes no difference: measured once.
    let mut cells = Vec::new();
    for &placement in &placements {
        for (bi, &behaviour) in behaviours.iter().enumerate() {
            for &f in &a.fractions {
                if f == 0.0 && bi > 0 {
                    continue;
                }
                for mode in [LookupMode::Routed, LookupMode::Steered] {
                    let mut s = Scenario::new(a.nodes, f, placement, mode, a.lookups, a.seed);
                    s.behaviour = behaviour;
                    s.warmup = Duration::from_secs(a.warmup_secs);
                    cells.push(s);
                }
            }
        }
    }
    if !a.json {
        eprintln!(
            "{} cells of {} nodes, {} lookups each, on {} threads…",
            cells.len(),
            a.nodes,
            a.lookups,
            a.threads.max(1)
        );
    }
    let results = run_cells(&cells, a.threads.max(1), !a.json);
    let mut rows: Vec<Row> = cells
        .iter()
        .zip(results)
        .map(|(s, (o, secs))| row(s, &o, secs))
        .collect();
    // Cost against routed lookups of the same placement, behaviour and fraction.
    let routed: Vec<(String, f64)> = rows
        .iter()
        .filter(|r| r.mode == "routed")
        .map(|r| (key(r), r.msgs_per_lookup))
        .collect();
    for r in &mut rows {
        let base = routed
            .iter()
            .find(|(k, _)| *k == key(r))
            .map(|(_, m)| *m)
            .unwrap_or(f64::NAN);
        r.cost_vs_routed = r.msgs_per_lookup / base;
        r.meets_targets = r
            .target_correct
            .map(|t| r.correct_share >= t && r.cost_vs_routed <= TARGET_COST);
    }
    let report = Report {
        nodes: a.nodes,
        lookups_per_cell: a.lookups,
        warmup_secs: a.warmup_secs,
        seed: a.seed,
        target_correct_at_10pct: TARGET_AT_10,
        target_correct_at_20pct: TARGET_AT_20,
        target_cost_vs_routed: TARGET_COST,
        rows,
        wall_secs: wall.elapsed().as_secs_f64(),
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(())
}

fn key(r: &Row) -> String {
    format!("{}/{}/{}", r.placement, r.behaviour, r.hostile)
}

/// Runs every cell on `threads` threads; results in the cells' order, each with its wall time.
fn run_cells(cells: &[Scenario], threads: usize, progress: bool) -> Vec<(Outcome, f64)> {
    let next = AtomicUsize::new(0);
    let done: Mutex<Vec<Option<(Outcome, f64)>>> =
        Mutex::new((0..cells.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..threads.min(cells.len()) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(s) = cells.get(i) else {
                    break;
                };
                let t = Instant::now();
                let o = run_scenario(s);
                let secs = t.elapsed().as_secs_f64();
                if progress {
                    eprintln!(
                        "  {} {} f={} {}: {}/{} correct, {:.2} msgs/lookup ({secs:.0} s)",
                        s.placement.name(),
                        s.behaviour.name(),
                        s.hostile,
                        s.mode.name(),
                        o.correct,
                        o.lookups,
                        o.msgs_per_lookup()
                    );
                }
                if let Ok(mut d) = done.lock() {
                    d[i] = Some((o, secs));
                }
            });
        }
    });
    done.into_inner()
        .unwrap_or_default()
        .into_iter()
        .map(|r| r.unwrap_or_default())
        .collect()
}

fn row(s: &Scenario, o: &Outcome, wall_secs: f64) -> Row {
    Row {
        placement: s.placement.name(),
        behaviour: s.behaviour.name(),
        hostile: s.hostile,
        hostile_nodes: o.hostile_nodes,
        mode: s.mode.name(),
        lookups: o.lookups,
        correct: o.correct,
        wrong: o.wrong,
        failed: o.failed,
        correct_share: o.correct_fraction(),
        msgs_per_lookup: o.msgs_per_lookup(),
        cost_vs_routed: f64::NAN,
        target_correct: target_for(s.hostile),
        meets_targets: None,
        traffic: o.traffic,
        attacks: o.attacks,
        hostile_list_share: o.hostile_list_share,
        ground_in_gap: o.ground_in_gap,
        lookup_secs: o.lookup_secs,
        wall_secs,
    }
}

fn render(r: &Report) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "N = {}, {} lookups per cell from honest nodes of keys held by honest nodes, {} s of \
         upkeep under attack first, seed {}",
        r.nodes, r.lookups_per_cell, r.warmup_secs, r.seed
    );
    let _ = writeln!(
        o,
        "targets: >= {:.0} % correct at f = 0.1, >= {:.0} % at f = 0.2, <= {:.0}x the messages \
         of routed lookups at the same f",
        r.target_correct_at_10pct * 100.0,
        r.target_correct_at_20pct * 100.0,
        r.target_cost_vs_routed
    );
    let _ = writeln!(
        o,
        "{:<9} {:<11} {:>5} {:<8} {:>8} {:>6} {:>6} {:>9} {:>9} {:>10} {:>7}",
        "placement",
        "attack",
        "f",
        "mode",
        "correct",
        "wrong",
        "failed",
        "msgs/lkp",
        "vs routed",
        "host.lists",
        "target"
    );
    for x in &r.rows {
        let _ = writeln!(
            o,
            "{:<9} {:<11} {:>5.2} {:<8} {:>7.2}% {:>6} {:>6} {:>9.2} {:>8.2}x {:>9.1}% {:>7}",
            x.placement,
            x.behaviour,
            x.hostile,
            x.mode,
            x.correct_share * 100.0,
            x.wrong,
            x.failed,
            x.msgs_per_lookup,
            x.cost_vs_routed,
            x.hostile_list_share * 100.0,
            match x.meets_targets {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "-",
            }
        );
    }
    let _ = writeln!(o, "wall time {:.0} s", r.wall_secs);
    o
}
