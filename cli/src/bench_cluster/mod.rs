//! `p2ps bench cluster`: a local network on loopback in one process, with default settings:
//! how long it takes to form, how fast lookups are compared with the one-hop RTT, how much
//! memory a node takes and how many bytes an idle node sends to keep its routing state.
//!
//! What each number is:
//!
//! - **Formation**: from the first `Node::start` until every node has joined (through a ticket
//!   of a random node already in, one join after another) and every node's successor and
//!   predecessor are the true ones (computed from the ids).
//! - **Lookup latency**: one lookup at a time, each from a random node to a random ring
//!   position, timed from the `lookup` call to its answer as the application sees it; every
//!   answer is checked against the truth. Each lookup is made twice in a row: "cold" (the
//!   answer comes straight back to the asker, which often needs a new QUIC connection,
//!   handshake included) and "warm" (that connection now exists).
//! - **One-hop RTT**: the target's basis is the full-stack one-hop lookup, the p50 of lookups
//!   of a key held by the asker's direct successor: one request, one reply on an existing
//!   connection, through both nodes' actors and QUIC, timed exactly like the other lookups.
//!   Also shown: a bare UDP ping-pong between two sockets of this runtime (the wire and tokio
//!   alone), and the median smoothed QUIC RTT from `Status.connections[].rtt_ms`, which on
//!   loopback is an order of magnitude above both and so is no usable basis.
//! - **Memory**: `VmRSS` after formation minus before the first start, divided by the nodes.
//! - **Upkeep**: after formation, no traffic for `--idle-secs`; the sum over nodes of
//!   `Status.counters.udp_bytes_out` before and after, per node per second: what QUIC put in
//!   UDP datagrams (headers, ACKs and keep-alive PINGs included); the frames handed to QUIC
//!   (`bytes_out`) are shown as the part of it that is ours.
//! - **Dictionary** (`dict.rs`): puts and gets one at a time against the warm lookup p50 of the
//!   same run, then lookups, puts and gets with many requests in flight; every get checked to
//!   return the value put.
//! - **OpenDHT** (`opendht.rs`, with `--opendht`): as many OpenDHT nodes on loopback, after
//!   ours have shut down, on the same keys; the two side by side.
//!
//! The rest lives beside this file: `probes.rs` (counters, RTTs, RSS), `broadcast.rs`,
//! `workload.rs` (the keys and values), `report.rs` (the numbers and the table).

mod broadcast;
mod dict;
mod opendht;
mod probes;
mod report;
mod workload;

use crate::demo::lookups::{lookup_round, plan, Ask, LookupRound};
use crate::demo::output::{run_and_print, Progress};
use crate::demo::ring_check::{true_ring, wait_for_ring, RingReport};
use crate::demo::rng::Rng;
use crate::demo::stats::quantile;
use crate::progress;
use anyhow::{bail, Context, Result};
use broadcast::broadcast_times;
use indicatif::ProgressBar;
use p2ps::id::ring_id_of;
use p2ps::{Identity, Node, NodeConfig, NodeId};
use p2ps_overlay::TrueRing;
use probes::{dials, rss_kib, rtt_sample, totals, trouble, trouble_text, udp_echo_rtt};
use report::{print_report, Pass, Report, DIAL_TARGET, LOOKUP_FACTOR};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::time::timeout;
use workload::Workload;

/// Arguments of `p2ps bench cluster`.
#[derive(Debug, clap::Args)]
pub struct ClusterBenchArgs {
    /// Nodes to start in this process.
    #[arg(long, default_value_t = 64)]
    pub nodes: usize,
    /// Lookups to time, one at a time, each from a random node to a random key (each is made
    /// twice in a row: cold, then warm).
    #[arg(long, default_value_t = 1000)]
    pub lookups: usize,
    /// Seconds without traffic over which the upkeep is measured.
    #[arg(long, default_value_t = 20)]
    pub idle_secs: u64,
    /// Seed for the benchmark's choices (which node asks, which key); node keys are fresh.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Dictionary keys put one at a time (each from a random node), then read one at a time
    /// (each from another random node); 0 leaves the dictionary phase out.
    #[arg(long, default_value_t = 200)]
    pub dict_ops: usize,
    /// Operations of each kind (lookups, puts, gets) in the many-in-flight passes.
    #[arg(long, default_value_t = 2000)]
    pub many_ops: usize,
    /// Requests outstanding at once in the many-in-flight passes (ours and OpenDHT's).
    #[arg(long, default_value_t = 32)]
    pub in_flight: usize,
    /// Also run a network of as many OpenDHT nodes (Debian's python3-opendht under
    /// /usr/bin/python3, rate limits off) on loopback, after ours, on the same keys, and show
    /// the two side by side.
    #[arg(long)]
    pub opendht: bool,
    /// Print every number as JSON on stdout (progress lines go to stderr).
    #[arg(long)]
    pub json: bool,
}

/// Formation target, seconds (set for 64 nodes).
const FORMATION_TARGET_S: f64 = 10.0;
/// Bound on the lookup phase (cold and warm lookups together).
const PASS_LIMIT: Duration = Duration::from_secs(600);
/// Upkeep target, bytes per node per second.
const UPKEEP_TARGET: f64 = 2048.0;

/// Runs the benchmark and prints the numbers.
pub fn run(args: ClusterBenchArgs) -> Result<()> {
    if args.nodes < 2 {
        bail!("--nodes must be at least 2");
    }
    if args.lookups == 0 || args.idle_secs == 0 {
        bail!("--lookups and --idle-secs must be at least 1");
    }
    if args.in_flight == 0 {
        bail!("--in-flight must be at least 1");
    }
    if args.opendht && (args.dict_ops == 0 || args.many_ops == 0) {
        bail!(
            "--opendht compares the dictionary phase: --dict-ops and --many-ops must be at least 1"
        );
    }
    // Before anything starts: is OpenDHT there?
    let opendht = if args.opendht {
        Some(opendht::check()?)
    } else {
        None
    };
    let report = run_and_print(bench(&args, opendht), args.json, "report", print_report)?;
    if !report.all_lookups_correct {
        bail!("some lookups named the wrong node or failed");
    }
    if report.dict.as_ref().is_some_and(|d| !d.all_correct) {
        bail!("some dictionary operations failed or read another value than the one put");
    }
    if report
        .opendht
        .as_ref()
        .is_some_and(|c| !c.opendht_all_correct)
    {
        bail!("some OpenDHT operations failed or read another value than the one put");
    }
    Ok(())
}

/// The whole run: our network, then (with `opendht`, the version found) OpenDHT's.
async fn bench(args: &ClusterBenchArgs, opendht: Option<String>) -> Result<Report> {
    let p = Progress::new(args.json);
    let work = Workload::new(args.seed, args.dict_ops, args.many_ops);
    let mut nodes: Vec<Node> = Vec::new();
    let r = measure(args, &work, &p, &mut nodes).await;
    // Whatever happened, shut every node down (graceful leave and close), bounded.
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for n in nodes {
        set.spawn(async move { timeout(Duration::from_secs(15), n.shutdown()).await.is_ok() });
    }
    let (mut clean, mut all) = (0, 0);
    while let Some(r) = set.join_next().await {
        all += 1;
        if matches!(r, Ok(true)) {
            clean += 1;
        }
    }
    p.say(format!(
        "{clean} of {all} nodes shut down cleanly in {:.1} s",
        t.elapsed().as_secs_f64()
    ));
    let mut r = r?;
    if let (Some(version), Some(d)) = (opendht, &r.dict) {
        p.say(format!(
            "OpenDHT {version} (python3-opendht): {} nodes on 127.0.0.1 in one process, rate \
             limits off, the same {} + {} keys, {} in flight…",
            args.nodes,
            work.one.len(),
            work.many.len(),
            args.in_flight
        ));
        let (n, in_flight, seed) = (args.nodes, args.in_flight, args.seed);
        let w = work.clone();
        let o = tokio::task::spawn_blocking(move || opendht::run(n, &w, in_flight, seed))
            .await
            .context("the OpenDHT driver's thread failed")??;
        let c = opendht::Comparison::new(version, d, o);
        p.say(format!(
            "ours / OpenDHT's: put p50 {:.2}, get p50 {:.2}, puts/s {:.1}, gets/s {:.1}",
            c.put_ratio, c.get_ratio, c.puts_rate_ratio, c.gets_rate_ratio
        ));
        r.opendht = Some(c);
    }
    Ok(r)
}

async fn measure(
    args: &ClusterBenchArgs,
    work: &Workload,
    p: &Progress,
    nodes: &mut Vec<Node>,
) -> Result<Report> {
    let n = args.nodes;
    let mut rng = Rng::new(args.seed);
    let ov = p2ps_overlay::Config::default();
    let defaults = NodeConfig::new(
        Identity::generate().context("generating a node key")?,
        SocketAddr::from(([127, 0, 0, 1], 0)),
    );
    let settings = format!(
        "default settings: overlay stabilize {:?}, stabilize timeout {:?}, finger refresh {:?}, \
         list length {}; QUIC idle timeout {:?}, keep-alive {:?} (from the dialing side)",
        ov.stabilize_interval,
        ov.stabilize_timeout,
        ov.finger_refresh_period,
        ov.list_len,
        defaults.idle_timeout,
        defaults.keep_alive
    );
    p.say(format!(
        "p2ps bench cluster: {n} nodes on 127.0.0.1 in one process ({settings})"
    ));

    // --- Formation ----------------------------------------------------------------------
    let rss_before = rss_kib()?;
    let t0 = Instant::now();
    let bar = progress::bar(n as u64, "nodes started", args.json);
    for i in 0..n {
        let identity = Identity::generate().context("generating a node key")?;
        let mut cfg = NodeConfig::new(identity, SocketAddr::from(([127, 0, 0, 1], 0)));
        cfg.overlay.seed = args.seed.wrapping_add(i as u64);
        nodes.push(
            Node::start(cfg)
                .await
                .with_context(|| format!("starting node {i}"))?,
        );
        bar.inc(1);
    }
    bar.finish_and_clear();
    nodes[0]
        .create()
        .await
        .context("node 0 creating the network")?;
    let mut join_ms = Vec::new();
    let bar = progress::bar(n as u64 - 1, "nodes joined", args.json);
    for i in 1..n {
        let ticket = nodes[rng.below(i)].ticket();
        let t = Instant::now();
        timeout(Duration::from_secs(30), nodes[i].join(&ticket))
            .await
            .with_context(|| format!("node {i} got no answer to its join in 30 s"))?
            .with_context(|| format!("node {i} joining"))?;
        join_ms.push(t.elapsed().as_secs_f64() * 1e3);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let joins = t0.elapsed();
    let slow_joins = join_ms.iter().filter(|ms| **ms > 1000.0).count();
    let join_p50_ms = quantile(&join_ms, 0.5);
    let join_max_ms = quantile(&join_ms, 1.0);
    p.say(format!(
        "{n} nodes started and joined in {:.2} s (join p50 {join_p50_ms:.0} ms, max \
         {join_max_ms:.0} ms, {slow_joins} over 1 s)",
        joins.as_secs_f64()
    ));
    let truth = true_ring(nodes.iter().map(Node::id));
    let list_len = ov.list_len;
    let forming = progress::spinner("waiting for every list to be right", args.json);
    let (ok, _, r) = wait_for_ring(
        nodes,
        &truth,
        list_len,
        &[],
        Duration::from_secs(60),
        RingReport::neighbours_ok,
    )
    .await?;
    forming.finish_and_clear();
    if !ok {
        bail!("the ring did not form within 60 s: {}", r.describe());
    }
    let formation = t0.elapsed();
    p.say(format!(
        "ring formed {:.2} s after the first start (every successor and predecessor true)",
        formation.as_secs_f64()
    ));
    let rss_after = rss_kib()?;
    let memory_per_node = rss_after.saturating_sub(rss_before) as f64 / n as f64;
    p.say(format!(
        "RSS {} KiB before, {} KiB after: {:.0} KiB per node",
        rss_before, rss_after, memory_per_node
    ));

    // --- Idle upkeep --------------------------------------------------------------------
    // Meanwhile, watch (locally, no traffic) for every list to become exact.
    let before = totals(nodes).await?;
    let idle_d0 = dials(nodes).await?;
    let t_idle = Instant::now();
    let idle_for = Duration::from_secs(args.idle_secs);
    p.say(format!(
        "idle for {} s, no application traffic…",
        args.idle_secs
    ));
    let bar = progress::timed(args.idle_secs, "seconds idle", args.json);
    let (ok, _, _) =
        wait_for_ring(nodes, &truth, list_len, &[], idle_for, RingReport::all_ok).await?;
    let lists_exact = ok.then(|| t0.elapsed().as_secs_f64());
    bar.suspend(|| match lists_exact {
        Some(s) => p.say(format!(
            "every successor and predecessor list exact after {s:.2} s"
        )),
        None => p.say(format!(
            "note: some neighbour lists were still inexact {} s after formation",
            args.idle_secs
        )),
    });
    tokio::time::sleep(idle_for.saturating_sub(t_idle.elapsed())).await;
    bar.finish_and_clear();
    let after = totals(nodes).await?;
    let idle_dials = dials(nodes).await?.saturating_sub(idle_d0);
    let idle = t_idle.elapsed().as_secs_f64();
    let per = |a: u64, b: u64| a.saturating_sub(b) as f64 / n as f64 / idle;
    let upkeep = per(after.bytes, before.bytes);
    let upkeep_routing = per(after.routing_bytes, before.routing_bytes);
    let upkeep_msgs = per(after.messages, before.messages);
    let upkeep_udp = per(after.udp_bytes, before.udp_bytes);
    p.say(format!(
        "upkeep {upkeep:.0} B/s per node ({upkeep_routing:.0} B/s on the routing class, \
         {upkeep_msgs:.2} frames/s; {upkeep_udp:.0} B/s of UDP); {idle_dials} connections \
         dialled meanwhile"
    ));
    // --- One-hop round trips -------------------------------------------------------------
    let (rtts, conns, fingers) = rtt_sample(nodes).await?;
    let rtt_ms = quantile(&rtts, 0.5);
    let rtt_p90 = quantile(&rtts, 0.9);
    p.say(format!(
        "median smoothed QUIC RTT over {} connections: {:.3} ms (p90 {:.3} ms)",
        rtts.len(),
        rtt_ms,
        rtt_p90
    ));
    let udp = udp_echo_rtt(1000).await?;
    let udp_us = quantile(&udp, 0.5);
    p.say(format!(
        "bare UDP round trip on loopback through this runtime: p50 {udp_us:.0} µs ({} pings)",
        udp.len()
    ));
    // Full-stack one hop: a key held by the asker's direct successor, so the request goes one
    // hop and the answer comes straight back on the same connection.
    let mut one_hop = Vec::new();
    let mut one_hop_ok = 0;
    let one_hop_n: usize = 200;
    let bar = progress::bar(one_hop_n as u64, "one-hop lookups", args.json);
    for _ in 0..one_hop_n {
        let from = &nodes[rng.below(n)];
        let Some(succ) = truth.successors(&from.id(), 1).first().copied() else {
            break;
        };
        let t = Instant::now();
        if let Ok(Ok(a)) = timeout(Duration::from_secs(15), from.lookup(ring_id_of(&succ))).await {
            one_hop.push(t.elapsed().as_secs_f64() * 1e6);
            if a.node == succ && a.hops == 1 {
                one_hop_ok += 1;
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let one_hop_us = quantile(&one_hop, 0.5);
    p.say(format!(
        "one-hop lookup (key of the direct successor): p50 {one_hop_us:.0} µs, {one_hop_ok} of \
         {one_hop_n} answered by the successor in 1 hop"
    ));

    // --- Lookup latency -----------------------------------------------------------------
    let pass = |r: &LookupRound, c0: usize, c1: usize, dialed: u64, trouble: String| {
        let p50 = quantile(&r.micros, 0.5);
        let h = r.hops_mean();
        let dialed_per_lookup = dialed as f64 / r.asked.max(1) as f64;
        Pass {
            dialed,
            dialed_per_lookup,
            dial_pass: dialed_per_lookup <= DIAL_TARGET,
            planned: r.asked + r.not_asked,
            asked: r.asked,
            correct: r.correct,
            wrong: r.wrong,
            failed: r.failed,
            not_asked: r.not_asked,
            hops_mean: h,
            hops_max: r.hops_max(),
            p50_us: p50,
            p90_us: quantile(&r.micros, 0.9),
            p99_us: quantile(&r.micros, 0.99),
            max_us: quantile(&r.micros, 1.0),
            connections_before: c0,
            connections_after: c1,
            target_p50_us: LOOKUP_FACTOR * (h + 1.0) * one_hop_us,
            ratio_to_one_hop_lookup: p50 / ((h + 1.0) * one_hop_us),
            ratio_to_udp_rtt: p50 / ((h + 1.0) * udp_us),
            ratio_to_quic_rtt: p50 / ((h + 1.0) * rtt_ms * 1000.0),
            pass: p50 <= LOOKUP_FACTOR * (h + 1.0) * one_hop_us,
            first_problem: r.first_problem.clone(),
            trouble,
        }
    };
    let say_pass = |name: &str, x: &Pass| {
        p.say(format!(
            "{name} pass: {} of {} correct ({} wrong, {} failed, {} not asked in time), hops \
             mean {:.2} max {}, p50 {:.0} µs p99 {:.0} µs, connections {} -> {}, {} dialled",
            x.correct,
            x.planned,
            x.wrong,
            x.failed,
            x.not_asked,
            x.hops_mean,
            x.hops_max,
            x.p50_us,
            x.p99_us,
            x.connections_before,
            x.connections_after,
            x.dialed
        ));
        if let Some(problem) = &x.first_problem {
            p.say(format!("  first problem: {problem}"));
        }
    };
    // Every lookup once "cold" (no connection made for it yet), then all of them again
    // "warm" (whatever connections the cold pass opened exist now). Dials are counted per pass.
    let asks = plan(&mut rng, n, args.lookups, None);
    let c0 = rtt_sample(nodes).await?.1;
    let tr0 = trouble(nodes).await?;
    let d0 = dials(nodes).await?;
    let t_pass = Instant::now();
    let bar = progress::bar(asks.len() as u64, "cold lookups", args.json);
    let r1 = lookup_pass(nodes, &truth, &asks, t_pass, &bar).await;
    bar.finish_and_clear();
    let d1 = dials(nodes).await?;
    let bar = progress::bar(asks.len() as u64, "warm lookups", args.json);
    let r2 = lookup_pass(nodes, &truth, &asks, t_pass, &bar).await;
    bar.finish_and_clear();
    let d2 = dials(nodes).await?;
    let c1 = rtt_sample(nodes).await?.1;
    let tr1 = trouble(nodes).await?;
    let cold = pass(&r1, c0, c1, d1 - d0, trouble_text(tr0, tr1));
    say_pass("cold", &cold);
    let warm = pass(&r2, c0, c1, d2 - d1, trouble_text(tr0, tr1));
    say_pass("warm", &warm);
    p.say(format!(
        "  trouble counters during the lookups: {}",
        warm.trouble
    ));
    let casting = progress::spinner("broadcasts", args.json);
    let b = broadcast_times(nodes, 5, &mut rng).await;
    casting.finish_and_clear();
    let b = b?;
    let b_p50 = quantile(&b.last_ms, 0.5);
    let b_max = b.last_ms.iter().copied().fold(0.0, f64::max);
    p.say(format!(
        "broadcast: last of {} other nodes reached after p50 {b_p50:.2} ms, max {b_max:.2} ms; \
         tree depth {}; exact {}",
        n - 1,
        b.depth,
        b.exact
    ));
    let dict = if args.dict_ops > 0 {
        p.say(format!(
            "dictionary: {} keys put one at a time then read, then {} lookups, puts and gets with \
             {} in flight…",
            work.one.len(),
            work.many.len(),
            args.in_flight
        ));
        let set = dict::DictSettings {
            in_flight: args.in_flight,
            lookup_p50_us: warm.p50_us,
        };
        let bar = progress::bar(dict::PHASES, "dictionary phases", args.json);
        let say = |m: String| {
            bar.suspend(|| p.say(m));
            bar.inc(1);
        };
        let d = dict::measure(nodes, &truth, work, set, &mut rng, &say).await;
        bar.finish_and_clear();
        let d = d?;
        let held = dict::keys_held(nodes).await?;
        let keys = (work.one.len() + d.many_puts.started).max(1);
        p.say(format!(
            "dictionary entries held over all nodes: {held} ({:.2} per key)",
            held as f64 / keys as f64
        ));
        Some(d)
    } else {
        None
    };

    Ok(Report {
        nodes: n,
        seed: args.seed,
        settings,
        joins_secs: joins.as_secs_f64(),
        join_p50_ms,
        join_max_ms,
        slow_joins,
        formation_secs: formation.as_secs_f64(),
        formation_target_secs: FORMATION_TARGET_S,
        formation_pass: formation.as_secs_f64() < FORMATION_TARGET_S,
        lists_exact_secs: lists_exact,
        rss_before_kib: rss_before,
        rss_after_kib: rss_after,
        memory_per_node_kib: memory_per_node,
        idle_secs: idle,
        upkeep_bytes_per_node_per_sec: upkeep,
        upkeep_routing_bytes_per_node_per_sec: upkeep_routing,
        upkeep_messages_per_node_per_sec: upkeep_msgs,
        upkeep_udp_bytes_per_node_per_sec: upkeep_udp,
        upkeep_target_bytes: UPKEEP_TARGET,
        upkeep_pass: upkeep_udp <= UPKEEP_TARGET,
        upkeep_dialed: idle_dials,
        connections_per_node: conns as f64 / n as f64,
        fingers_per_node: fingers as f64 / n as f64,
        rtt_quic_median_ms: rtt_ms,
        rtt_quic_p90_ms: rtt_p90,
        udp_rtt_p50_us: udp_us,
        one_hop_lookup_p50_us: one_hop_us,
        one_hop_lookups_in_one_hop: one_hop_ok,
        one_hop_lookups: one_hop_n,
        all_lookups_correct: r1.ok() && r2.ok(),
        cold,
        warm,
        broadcasts: b.last_ms.len(),
        broadcast_last_p50_ms: b_p50,
        broadcast_last_max_ms: b_max,
        broadcast_depth: b.depth,
        broadcast_ratio_to_depth_hops: b_p50 * 1000.0 / (f64::from(b.depth.max(1)) * one_hop_us),
        broadcasts_exact: b.exact,
        dict,
        opendht: None,
    })
}

/// One lookup at a time for every `(node, key)` of `asks`, until [`PASS_LIMIT`] after `start`;
/// `bar` counts them.
async fn lookup_pass(
    nodes: &[Node],
    truth: &TrueRing<NodeId>,
    asks: &[Ask],
    start: Instant,
    bar: &ProgressBar,
) -> LookupRound {
    let mut round = LookupRound::default();
    for ask in asks.chunks(1) {
        if start.elapsed() >= PASS_LIMIT {
            round.not_asked += 1;
            continue;
        }
        round.merge(lookup_round(nodes, truth, ask, &[], PASS_LIMIT).await);
        bar.inc(1);
    }
    round
}
