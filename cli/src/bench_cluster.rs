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

use crate::demo::lookups::{lookup_round, plan, Ask, LookupRound};
use crate::demo::output::{run_and_print, Progress};
use crate::demo::ring_check::{status_of, true_ring, wait_for_ring, RingReport};
use crate::demo::rng::Rng;
use crate::demo::stats::quantile;
use anyhow::{bail, Context, Result};
use p2ps::id::ring_id_of;
use p2ps::{Identity, Node, NodeConfig, NodeId};
use p2ps_overlay::TrueRing;
use serde::Serialize;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::time::timeout;

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
    /// Print every number as JSON on stdout (progress lines go to stderr).
    #[arg(long)]
    pub json: bool,
}

/// Formation target, seconds (set for 64 nodes).
const FORMATION_TARGET_S: f64 = 10.0;
/// Lookup p50 target factor: p50 <= FACTOR × (mean hops + 1) × one-hop RTT.
const LOOKUP_FACTOR: f64 = 1.2;
/// Bound on the lookup phase (cold and warm lookups together).
const PASS_LIMIT: Duration = Duration::from_secs(600);
/// New connections per lookup allowed during a pass (answers take existing connections).
const DIAL_TARGET: f64 = 0.05;
/// Upkeep target, bytes per node per second.
const UPKEEP_TARGET: f64 = 2048.0;

#[derive(Clone, Debug, Serialize)]
struct Pass {
    planned: usize,
    asked: usize,
    correct: usize,
    wrong: usize,
    failed: usize,
    /// Not started because the pass ran out of time (PASS_LIMIT).
    not_asked: usize,
    hops_mean: f64,
    hops_max: u16,
    p50_us: f64,
    p90_us: f64,
    p99_us: f64,
    max_us: f64,
    /// Connections across all nodes before and after the pass.
    connections_before: usize,
    connections_after: usize,
    /// Connections dialled by all nodes during the pass (handshakes started).
    dialed: u64,
    /// `dialed` / lookups asked; the target is <= DIAL_TARGET.
    dialed_per_lookup: f64,
    dial_pass: bool,
    /// LOOKUP_FACTOR × (hops_mean + 1) × one-hop lookup p50, in µs.
    target_p50_us: f64,
    /// p50 / ((hops_mean + 1) × one-hop lookup p50): the target is <= LOOKUP_FACTOR.
    ratio_to_one_hop_lookup: f64,
    /// p50 / ((hops_mean + 1) × bare UDP round trip).
    ratio_to_udp_rtt: f64,
    /// p50 / ((hops_mean + 1) × median smoothed QUIC RTT).
    ratio_to_quic_rtt: f64,
    pass: bool,
    first_problem: Option<String>,
    /// Trouble counters that moved during the lookups (cold and warm together), summed over
    /// nodes.
    trouble: String,
}

#[derive(Clone, Debug, Serialize)]
struct Report {
    nodes: usize,
    seed: u64,
    settings: String,
    joins_secs: f64,
    join_p50_ms: f64,
    join_max_ms: f64,
    /// Joins that took over 1 s (a join request or its answer was lost and retried).
    slow_joins: usize,
    formation_secs: f64,
    formation_target_secs: f64,
    formation_pass: bool,
    lists_exact_secs: Option<f64>,
    rss_before_kib: u64,
    rss_after_kib: u64,
    memory_per_node_kib: f64,
    idle_secs: f64,
    upkeep_bytes_per_node_per_sec: f64,
    upkeep_routing_bytes_per_node_per_sec: f64,
    upkeep_messages_per_node_per_sec: f64,
    upkeep_udp_bytes_per_node_per_sec: f64,
    upkeep_target_bytes: f64,
    upkeep_pass: bool,
    /// Connections dialled by all nodes during the idle window (each costs a handshake and
    /// QUIC's path MTU probes, about 15 KB of UDP on loopback, counted in the upkeep).
    upkeep_dialed: u64,
    connections_per_node: f64,
    fingers_per_node: f64,
    rtt_quic_median_ms: f64,
    rtt_quic_p90_ms: f64,
    udp_rtt_p50_us: f64,
    one_hop_lookup_p50_us: f64,
    one_hop_lookups_in_one_hop: usize,
    one_hop_lookups: usize,
    cold: Pass,
    warm: Pass,
    all_lookups_correct: bool,
    /// Broadcasts measured (each from a random node, with the delivery count).
    broadcasts: usize,
    /// Time from the `broadcast` call to the last node's delivery, p50 over the broadcasts, ms.
    broadcast_last_p50_ms: f64,
    /// The same, worst broadcast, ms.
    broadcast_last_max_ms: f64,
    /// Deepest delivery (tree depth) seen.
    broadcast_depth: u16,
    /// broadcast_last_p50 / (depth × one-hop lookup p50): the tree's time against its depth.
    broadcast_ratio_to_depth_hops: f64,
    /// Whether every broadcast reached every other node exactly once.
    broadcasts_exact: bool,
}

/// Runs the benchmark and prints the numbers.
pub fn run(args: ClusterBenchArgs) -> Result<()> {
    if args.nodes < 2 {
        bail!("--nodes must be at least 2");
    }
    if args.lookups == 0 || args.idle_secs == 0 {
        bail!("--lookups and --idle-secs must be at least 1");
    }
    let report = run_and_print(bench(&args), args.json, "report", print_report)?;
    if !report.all_lookups_correct {
        bail!("some lookups named the wrong node or failed");
    }
    Ok(())
}

async fn bench(args: &ClusterBenchArgs) -> Result<Report> {
    let p = Progress::new(args.json);
    let mut nodes: Vec<Node> = Vec::new();
    let r = measure(args, &p, &mut nodes).await;
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
    r
}

async fn measure(args: &ClusterBenchArgs, p: &Progress, nodes: &mut Vec<Node>) -> Result<Report> {
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
    nodes[0]
        .create()
        .await
        .context("node 0 creating the network")?;
    let mut join_ms = Vec::new();
    for i in 1..n {
        let ticket = nodes[rng.below(i)].ticket();
        let t = Instant::now();
        timeout(Duration::from_secs(30), nodes[i].join(&ticket))
            .await
            .with_context(|| format!("node {i} got no answer to its join in 30 s"))?
            .with_context(|| format!("node {i} joining"))?;
        join_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
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
    let (ok, _, _) =
        wait_for_ring(nodes, &truth, list_len, &[], idle_for, RingReport::all_ok).await?;
    let lists_exact = ok.then(|| t0.elapsed().as_secs_f64());
    match lists_exact {
        Some(s) => p.say(format!(
            "every successor and predecessor list exact after {s:.2} s"
        )),
        None => p.say(format!(
            "note: some neighbour lists were still inexact {} s after formation",
            args.idle_secs
        )),
    }
    tokio::time::sleep(idle_for.saturating_sub(t_idle.elapsed())).await;
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
    let one_hop_n = 200;
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
    }
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
    let r1 = lookup_pass(nodes, &truth, &asks, t_pass).await;
    let d1 = dials(nodes).await?;
    let r2 = lookup_pass(nodes, &truth, &asks, t_pass).await;
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
    let b = broadcast_times(nodes, 5, &mut rng).await?;
    let b_p50 = quantile(&b.last_ms, 0.5);
    let b_max = b.last_ms.iter().copied().fold(0.0, f64::max);
    p.say(format!(
        "broadcast: last of {} other nodes reached after p50 {b_p50:.2} ms, max {b_max:.2} ms; \
         tree depth {}; exact {}",
        n - 1,
        b.depth,
        b.exact
    ));

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
    })
}

struct BroadcastTimes {
    last_ms: Vec<f64>,
    depth: u16,
    exact: bool,
}

/// `rounds` broadcasts, one at a time, each from a random node: the time from the call to the
/// last delivery, and whether every other node got it exactly once.
async fn broadcast_times(nodes: &[Node], rounds: usize, rng: &mut Rng) -> Result<BroadcastTimes> {
    let mut out = BroadcastTimes {
        last_ms: Vec::new(),
        depth: 0,
        exact: true,
    };
    for round in 0..rounds {
        let origin = rng.below(nodes.len());
        let payload = format!("bench broadcast {round}").into_bytes();
        let start = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for (i, n) in nodes.iter().enumerate() {
            if i == origin {
                continue;
            }
            let (n, want) = (n.clone(), payload.clone());
            set.spawn(async move {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
                let mut first: Option<(Instant, u16)> = None;
                let mut count = 0;
                while let Ok(Some(m)) = tokio::time::timeout_at(deadline, n.recv()).await {
                    if m.payload.as_ref() == want.as_slice() {
                        count += 1;
                        first.get_or_insert((Instant::now(), m.hops));
                        // Linger briefly to catch a duplicate.
                        let grace = tokio::time::Instant::now() + Duration::from_millis(200);
                        while let Ok(Some(m)) = tokio::time::timeout_at(grace, n.recv()).await {
                            count += usize::from(m.payload.as_ref() == want.as_slice());
                        }
                        break;
                    }
                }
                (first, count)
            });
        }
        let report = timeout(
            Duration::from_secs(15),
            nodes[origin].broadcast(payload.clone()),
        )
        .await
        .context("no broadcast report within 15 s")?
        .context("broadcast")?;
        let mut last = start;
        while let Some(r) = set.join_next().await {
            let (first, count) = r.context("a receiver task failed")?;
            match first {
                Some((t, hops)) if count == 1 => {
                    last = last.max(t);
                    out.depth = out.depth.max(hops);
                }
                _ => out.exact = false,
            }
        }
        if report.delivered as usize != nodes.len() - 1 {
            out.exact = false;
        }
        out.last_ms
            .push(last.duration_since(start).as_secs_f64() * 1000.0);
    }
    Ok(out)
}

/// Round trips of a 64-byte datagram between two UDP sockets on loopback, echoed by a task on
/// this runtime (µs each; a ping with no echo within 1 s is left out).
async fn udp_echo_rtt(count: usize) -> Result<Vec<f64>> {
    let a = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .context("binding a UDP socket")?;
    let b = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .context("binding a UDP socket")?;
    let b_addr = b.local_addr().context("UDP socket address")?;
    let echo = tokio::spawn(async move {
        let mut buf = [0u8; 64];
        while let Ok((len, from)) = b.recv_from(&mut buf).await {
            if b.send_to(&buf[..len], from).await.is_err() {
                return;
            }
        }
    });
    let mut out = Vec::with_capacity(count);
    let mut buf = [0u8; 64];
    for i in 0..count {
        let ping = [(i % 251) as u8; 64];
        let t = Instant::now();
        a.send_to(&ping, b_addr)
            .await
            .context("sending a UDP ping")?;
        if let Ok(Ok((len, _))) = timeout(Duration::from_secs(1), a.recv_from(&mut buf)).await {
            if buf[..len] == ping[..] {
                out.push(t.elapsed().as_secs_f64() * 1e6);
            }
        }
    }
    echo.abort();
    Ok(out)
}

#[derive(Clone, Copy, Debug, Default)]
struct Totals {
    bytes: u64,
    udp_bytes: u64,
    routing_bytes: u64,
    messages: u64,
}

async fn totals(nodes: &[Node]) -> Result<Totals> {
    let mut t = Totals::default();
    for n in nodes {
        let c = status_of(n).await?.counters;
        t.bytes += c.bytes_out;
        t.udp_bytes += c.udp_bytes_out;
        t.routing_bytes += c.routing_bytes_out;
        t.messages += c.messages_out;
    }
    Ok(t)
}

/// One lookup at a time for every `(node, key)` of `asks`, until [`PASS_LIMIT`] after `start`.
async fn lookup_pass(
    nodes: &[Node],
    truth: &TrueRing<NodeId>,
    asks: &[Ask],
    start: Instant,
) -> LookupRound {
    let mut round = LookupRound::default();
    for ask in asks.chunks(1) {
        if start.elapsed() >= PASS_LIMIT {
            round.not_asked += 1;
            continue;
        }
        round.merge(lookup_round(nodes, truth, ask, &[], PASS_LIMIT).await);
    }
    round
}

/// Connections dialled so far, summed over the nodes.
async fn dials(nodes: &[Node]) -> Result<u64> {
    let mut d = 0;
    for n in nodes {
        d += status_of(n).await?.counters.connections_dialed;
    }
    Ok(d)
}

/// Counters that point at trouble, summed over `nodes`.
async fn trouble(nodes: &[Node]) -> Result<[u64; 8]> {
    let mut t = [0u64; 8];
    for n in nodes {
        let c = status_of(n).await?.counters;
        let v = [
            c.dropped,
            c.send_failed,
            c.send_queue_full,
            c.peers_failed,
            c.peers_timed_out,
            c.lookups_failed,
            c.handshakes_failed,
            c.frame_errors,
        ];
        for (a, b) in t.iter_mut().zip(v) {
            *a += b;
        }
    }
    Ok(t)
}

fn trouble_text(before: [u64; 8], after: [u64; 8]) -> String {
    const NAMES: [&str; 8] = [
        "routed messages dropped",
        "sends failed",
        "sends dropped on full queues",
        "peers declared failed",
        "connections timed out",
        "lookups failed",
        "handshakes failed",
        "frame errors",
    ];
    let parts: Vec<String> = NAMES
        .iter()
        .zip(before.iter().zip(after.iter()))
        .filter(|(_, (b, a))| a > b)
        .map(|(n, (b, a))| format!("{} {n}", a - b))
        .collect();
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}

/// Every connection's RTT (ms), the number of connections and of fingers, over all nodes.
async fn rtt_sample(nodes: &[Node]) -> Result<(Vec<f64>, usize, usize)> {
    let mut rtts = Vec::new();
    let mut fingers = 0;
    for n in nodes {
        let s = status_of(n).await?;
        rtts.extend(s.connections.iter().map(|c| c.rtt_ms));
        fingers += s.fingers.len();
    }
    let conns = rtts.len();
    Ok((rtts, conns, fingers))
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "MISS"
    }
}

fn print_report(r: &Report) {
    println!();
    println!(
        "p2ps bench cluster: {} nodes on loopback, one process",
        r.nodes
    );
    println!("({})", r.settings);
    println!("{:<46} {:>16}  {:<30} result", "metric", "value", "target");
    println!("{}", "-".repeat(104));
    for (metric, value, target) in report_rows(r) {
        let (target, result) = target.unwrap_or_default();
        println!("{metric:<46} {value:>16}  {target:<30} {result}");
    }
    println!("{}", "-".repeat(104));
    println!(
        "Lookups run one at a time, timed from the `lookup` call to its answer. \"cold\": {} \
         random (node, key) pairs; \"warm\": each of them again right after, so the answer \
         returns on an existing connection. The lookup target is 1.2 × (h+1) × the full-stack one-hop \
         lookup. Upkeep counts UDP payload bytes sent over {:.0} s idle (QUIC headers, ACKs \
         and keep-alive PINGs included); the frames are our part of it.",
        r.cold.planned, r.idle_secs
    );
}

/// A row of the report table: metric, value, and the target with its verdict if it has one.
type Row = (String, String, Option<(String, &'static str)>);

/// The rows of the report table, in order.
#[rustfmt::skip] // a table: a row a line
fn report_rows(r: &Report) -> Vec<Row> {
    let info = |metric: &str, value: String| -> Row { (metric.into(), value, None) };
    let goal = |metric: &str, value: String, target: String, result: &'static str| -> Row {
        (metric.into(), value, Some((target, result)))
    };
    let mut rows = vec![
        info("joins (first start to last join returned)", format!("{:.2} s", r.joins_secs)),
        goal("formation (all joined, every successor true)", format!("{:.2} s", r.formation_secs),
            format!("< {:.0} s (set for 64 nodes)", r.formation_target_secs),
            verdict(r.formation_pass)),
        info("all 8+8 neighbour lists exact", r.lists_exact_secs.map_or_else(
            || format!("not in {:.0} s", r.idle_secs), |s| format!("{s:.2} s"))),
        info("one-hop lookup p50 (full stack)", format!("{:.0} µs", r.one_hop_lookup_p50_us)),
        info("bare UDP round trip p50", format!("{:.0} µs", r.udp_rtt_p50_us)),
        info("smoothed QUIC RTT, median", format!("{:.3} ms", r.rtt_quic_median_ms)),
    ];
    for (name, x) in [("cold", &r.cold), ("warm", &r.warm)] {
        let m = |what: &str| format!("{what}, {name}");
        let all_correct = if x.correct == x.planned { "PASS" } else { "FAIL" };
        rows.extend([
            goal(&m("lookup p50"), format!("{:.0} µs", x.p50_us),
                format!("<= {:.0} µs", x.target_p50_us), verdict(x.pass)),
            info(&m("lookup p99"), format!("{:.0} µs", x.p99_us)),
            info(&m("mean hops h (max)"), format!("{:.2} ({})", x.hops_mean, x.hops_max)),
            goal(&m("p50 / ((h+1) × one-hop lookup)"), format!("{:.2}", x.ratio_to_one_hop_lookup),
                format!("<= {LOOKUP_FACTOR}"), verdict(x.pass)),
            info(&m("p50 / ((h+1) × UDP round trip)"), format!("{:.1}", x.ratio_to_udp_rtt)),
            info(&m("p50 / ((h+1) × QUIC RTT)"), format!("{:.2}", x.ratio_to_quic_rtt)),
            goal(&m("correct answers"), format!("{} / {}", x.correct, x.planned),
                "all".into(), all_correct),
            goal(&m("connections dialled per lookup"),
                format!("{:.3} ({} for {})", x.dialed_per_lookup, x.dialed, x.asked),
                format!("<= {DIAL_TARGET}"), verdict(x.dial_pass)),
        ]);
    }
    rows.extend([
        info("memory per node (RSS delta / N)", format!("{:.0} KiB", r.memory_per_node_kib)),
        goal("idle upkeep per node (UDP bytes out)",
            format!("{:.0} B/s", r.upkeep_udp_bytes_per_node_per_sec),
            format!("<= {:.0} B/s", r.upkeep_target_bytes), verdict(r.upkeep_pass)),
        info("  of which frames (B/s, frames/s)", format!("{:.0}, {:.2}",
            r.upkeep_bytes_per_node_per_sec, r.upkeep_messages_per_node_per_sec)),
        info("  connections dialled while idle (all nodes)", format!("{}", r.upkeep_dialed)),
        info("connections per node (after formation)", format!("{:.1}", r.connections_per_node)),
        info("fingers per node (after formation)", format!("{:.1}", r.fingers_per_node)),
        info("broadcast: last node reached, p50 (max)",
            format!("{:.2} ({:.2}) ms", r.broadcast_last_p50_ms, r.broadcast_last_max_ms)),
        info("  tree depth; p50 / (depth × one-hop lookup)",
            format!("{}; {:.2}", r.broadcast_depth, r.broadcast_ratio_to_depth_hops)),
        goal("  every other node exactly once", format!("{} broadcasts", r.broadcasts),
            "all".into(), verdict(r.broadcasts_exact)),
    ]);
    rows
}

/// Resident set size of this process, in KiB (`VmRSS` of `/proc/self/status`).
fn rss_kib() -> Result<u64> {
    let s = std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let line = s
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS line in /proc/self/status")?;
    line.split_whitespace()
        .nth(1)
        .context("malformed VmRSS line")?
        .parse()
        .context("malformed VmRSS value")
}
