//! `p2ps bench metrics`: what recording metrics costs, as throughput with metrics on against
//! the same network with them off, alternated in one run.
//!
//! A network of `--nodes` nodes on loopback in one process (default settings) is kept busy by
//! `--in-flight` workers, each looping over a lookup of a random key from a random node and a
//! dictionary read of one of `--keys` keys written beforehand. The run alternates phases of
//! `--phase-secs` with every node's histograms recorded and not recorded
//! ([`p2ps::Metrics::set_enabled`]), `--rounds` of each, after a warm-up phase; each phase's
//! throughput is the operations completed divided by its length. Reported: the median
//! throughput with metrics on over the median with them off (target >= 0.97), and a scrape of
//! every node's `/metrics` text timed at the end (what a Prometheus scrape costs the node).

use crate::demo::output::{run_and_print, Progress};
use crate::demo::ring_check::{true_ring, wait_for_ring, RingReport};
use crate::demo::rng::Rng;
use crate::demo::stats::quantile;
use anyhow::{bail, Context, Result};
use p2ps::{Identity, Node, NodeConfig};
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::time::timeout;

/// Arguments of `p2ps bench metrics`.
#[derive(Debug, clap::Args)]
pub struct MetricsBenchArgs {
    /// Nodes to start in this process.
    #[arg(long, default_value_t = 16)]
    pub nodes: usize,
    /// Operations kept in flight (each worker does one at a time).
    #[arg(long, default_value_t = 32)]
    pub in_flight: usize,
    /// Dictionary keys written before the phases (read during them).
    #[arg(long, default_value_t = 200)]
    pub keys: usize,
    /// Length of each phase, seconds.
    #[arg(long, default_value_t = 3)]
    pub phase_secs: u64,
    /// Phases with metrics on (and as many with them off).
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Seed for the choices of nodes and keys.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print the report as JSON on stdout (progress goes to stderr).
    #[arg(long)]
    pub json: bool,
}

/// The target: median throughput with metrics on / with them off.
const TARGET: f64 = 0.97;

#[derive(Clone, Debug, Serialize)]
struct Phase {
    metrics: bool,
    ops: u64,
    failed: u64,
    ops_per_sec: f64,
}

#[derive(Clone, Debug, Serialize)]
struct Report {
    nodes: usize,
    in_flight: usize,
    phase_secs: u64,
    phases: Vec<Phase>,
    median_on: f64,
    median_off: f64,
    ratio: f64,
    target: f64,
    pass: bool,
    /// Time to render one node's metrics text (status snapshot included), p50 over nodes, µs.
    scrape_p50_us: f64,
    /// Its size, bytes (largest over nodes).
    scrape_bytes: usize,
}

/// Runs the benchmark and prints its report; fails if operations failed.
pub fn run(args: MetricsBenchArgs) -> Result<()> {
    if args.nodes < 2 || args.in_flight == 0 || args.rounds == 0 || args.phase_secs == 0 {
        bail!("--nodes must be at least 2, and --in-flight, --rounds, --phase-secs at least 1");
    }
    run_and_print(bench(&args), args.json, "report", print_report).map(|_| ())
}

async fn bench(args: &MetricsBenchArgs) -> Result<Report> {
    let p = Progress::new(args.json);
    let mut nodes = Vec::new();
    let r = measure(args, &p, &mut nodes).await;
    for n in &nodes {
        let _ = timeout(Duration::from_secs(10), n.shutdown()).await;
    }
    r
}

async fn measure(args: &MetricsBenchArgs, p: &Progress, nodes: &mut Vec<Node>) -> Result<Report> {
    let n = args.nodes;
    let mut rng = Rng::new(args.seed);
    for i in 0..n {
        let identity = Identity::generate().context("generating a node key")?;
        let mut cfg = NodeConfig::new(identity, SocketAddr::from(([127, 0, 0, 1], 0)));
        cfg.overlay.seed = args.seed.wrapping_add(i as u64);
        nodes.push(
            Node::start(cfg)
                .await
                .with_context(|| format!("starting node {i}"))?,
        );
    }
    nodes[0].create().await.context("creating the network")?;
    for i in 1..n {
        let ticket = nodes[rng.below(i)].ticket();
        timeout(Duration::from_secs(30), nodes[i].join(&ticket))
            .await
            .with_context(|| format!("node {i} got no answer to its join in 30 s"))?
            .with_context(|| format!("node {i} joining"))?;
    }
    let truth = true_ring(nodes.iter().map(Node::id));
    let list_len = p2ps_overlay::Config::default().list_len;
    let (ok, _, r) = wait_for_ring(
        nodes,
        &truth,
        list_len,
        &[],
        Duration::from_secs(60),
        RingReport::neighbours_ok,
    )
    .await?;
    if !ok {
        bail!("the ring did not form within 60 s: {}", r.describe());
    }
    p.say(format!(
        "{n} nodes formed a ring; writing {} keys",
        args.keys
    ));
    for k in 0..args.keys {
        let node = &nodes[rng.below(n)];
        node.dict()
            .put(format!("bench-{k}"), format!("value-{k}"))
            .await
            .with_context(|| format!("writing key bench-{k}"))?;
    }

    // Workers run through every phase; the counters are read at phase boundaries.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..args.in_flight {
        let nodes = nodes.clone();
        let (stop, done, failed) = (stop.clone(), done.clone(), failed.clone());
        let keys = args.keys.max(1);
        let mut rng = Rng::new(args.seed.wrapping_mul(31).wrapping_add(w as u64));
        workers.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let node = &nodes[rng.below(nodes.len())];
                let ok = if rng.below(2) == 0 {
                    let key = format!("lookup-{}", rng.below(1 << 30));
                    node.lookup_key(key).await.is_ok()
                } else {
                    let key = format!("bench-{}", rng.below(keys));
                    matches!(node.dict().get(key).await, Ok(Some(_)))
                };
                if ok {
                    done.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    let set = |on: bool| {
        for node in nodes.iter() {
            node.metrics().set_enabled(on);
        }
    };
    let phase_len = Duration::from_secs(args.phase_secs);
    set(true);
    p.say(format!("warm-up for {} s", args.phase_secs));
    tokio::time::sleep(phase_len).await;
    let mut phases = Vec::new();
    let bar = crate::progress::bar(2 * args.rounds as u64, "phases", args.json);
    for round in 0..args.rounds {
        // Alternate which comes first, so that a drift over the run favours neither.
        let order = if round % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for on in order {
            set(on);
            let (d0, f0) = (done.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
            let t = Instant::now();
            tokio::time::sleep(phase_len).await;
            let secs = t.elapsed().as_secs_f64();
            let ops = done.load(Ordering::Relaxed) - d0;
            let fails = failed.load(Ordering::Relaxed) - f0;
            let phase = Phase {
                metrics: on,
                ops,
                failed: fails,
                ops_per_sec: ops as f64 / secs,
            };
            bar.suspend(|| {
                p.say(format!(
                    "metrics {}: {:.0} operations/s ({fails} failed)",
                    if on { "on " } else { "off" },
                    phase.ops_per_sec
                ))
            });
            bar.inc(1);
            phases.push(phase);
        }
    }
    bar.finish_and_clear();
    stop.store(true, Ordering::Relaxed);
    while workers.join_next().await.is_some() {}
    set(true);

    let mut scrape_us = Vec::new();
    let mut scrape_bytes = 0;
    for node in nodes.iter() {
        let t = Instant::now();
        let text = node.metrics_text().await.context("rendering metrics")?;
        scrape_us.push(t.elapsed().as_secs_f64() * 1e6);
        scrape_bytes = scrape_bytes.max(text.len());
    }
    let rates = |on: bool| -> Vec<f64> {
        phases
            .iter()
            .filter(|ph| ph.metrics == on)
            .map(|ph| ph.ops_per_sec)
            .collect()
    };
    let median_on = quantile(&rates(true), 0.5);
    let median_off = quantile(&rates(false), 0.5);
    let ratio = if median_off > 0.0 {
        median_on / median_off
    } else {
        0.0
    };
    let failed_total: u64 = phases.iter().map(|ph| ph.failed).sum();
    if failed_total > 0 {
        p.say(format!("note: {failed_total} operations failed"));
    }
    Ok(Report {
        nodes: n,
        in_flight: args.in_flight,
        phase_secs: args.phase_secs,
        phases,
        median_on,
        median_off,
        ratio,
        target: TARGET,
        pass: ratio >= TARGET,
        scrape_p50_us: quantile(&scrape_us, 0.5),
        scrape_bytes,
    })
}

fn print_report(r: &Report) {
    println!(
        "{} nodes, {} operations in flight (lookups and dictionary reads), {} phases of {} s \
         each way\nthroughput with metrics on: {:.0}/s (median), off: {:.0}/s: ratio {:.3} \
         (target >= {}: {})\nrendering one node's /metrics: {:.0} µs (p50), {} bytes",
        r.nodes,
        r.in_flight,
        r.phases.len() / 2,
        r.phase_secs,
        r.median_on,
        r.median_off,
        r.ratio,
        r.target,
        if r.pass { "pass" } else { "FAIL" },
        r.scrape_p50_us,
        r.scrape_bytes
    );
}
