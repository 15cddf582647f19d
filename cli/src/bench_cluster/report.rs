//! What `p2ps bench cluster` reports: every number (also as JSON) and the table printed at the
//! end, with the targets and their verdicts.

use super::dict::{DictReport, GET_FACTOR, PUT_FACTOR, RATE_FACTOR};
use super::opendht::{Comparison, LATENCY_FACTOR, RATE_FACTOR as OPENDHT_RATE_FACTOR};
use serde::Serialize;

/// Lookup p50 target factor: p50 <= FACTOR × (mean hops + 1) × one-hop RTT.
pub(super) const LOOKUP_FACTOR: f64 = 1.2;
/// New connections per lookup allowed during a pass (answers take existing connections).
pub(super) const DIAL_TARGET: f64 = 0.05;

/// One pass of lookups (cold or warm).
#[derive(Clone, Debug, Serialize)]
pub(super) struct Pass {
    pub(super) planned: usize,
    pub(super) asked: usize,
    pub(super) correct: usize,
    pub(super) wrong: usize,
    pub(super) failed: usize,
    /// Not started because the pass ran out of time (PASS_LIMIT).
    pub(super) not_asked: usize,
    pub(super) hops_mean: f64,
    pub(super) hops_max: u16,
    pub(super) p50_us: f64,
    pub(super) p90_us: f64,
    pub(super) p99_us: f64,
    pub(super) max_us: f64,
    /// Connections across all nodes before and after the pass.
    pub(super) connections_before: usize,
    pub(super) connections_after: usize,
    /// Connections dialled by all nodes during the pass (handshakes started).
    pub(super) dialed: u64,
    /// `dialed` / lookups asked; the target is <= DIAL_TARGET.
    pub(super) dialed_per_lookup: f64,
    pub(super) dial_pass: bool,
    /// LOOKUP_FACTOR × (hops_mean + 1) × one-hop lookup p50, in µs.
    pub(super) target_p50_us: f64,
    /// p50 / ((hops_mean + 1) × one-hop lookup p50): the target is <= LOOKUP_FACTOR.
    pub(super) ratio_to_one_hop_lookup: f64,
    /// p50 / ((hops_mean + 1) × bare UDP round trip).
    pub(super) ratio_to_udp_rtt: f64,
    /// p50 / ((hops_mean + 1) × median smoothed QUIC RTT).
    pub(super) ratio_to_quic_rtt: f64,
    pub(super) pass: bool,
    pub(super) first_problem: Option<String>,
    /// Trouble counters that moved during the lookups (cold and warm together), summed over
    /// nodes.
    pub(super) trouble: String,
}

/// Every number of a run.
#[derive(Clone, Debug, Serialize)]
pub(super) struct Report {
    pub(super) nodes: usize,
    pub(super) seed: u64,
    pub(super) settings: String,
    pub(super) joins_secs: f64,
    pub(super) join_p50_ms: f64,
    pub(super) join_max_ms: f64,
    /// Joins that took over 1 s (a join request or its answer was lost and retried).
    pub(super) slow_joins: usize,
    pub(super) formation_secs: f64,
    pub(super) formation_target_secs: f64,
    pub(super) formation_pass: bool,
    pub(super) lists_exact_secs: Option<f64>,
    pub(super) rss_before_kib: u64,
    pub(super) rss_after_kib: u64,
    pub(super) memory_per_node_kib: f64,
    pub(super) idle_secs: f64,
    pub(super) upkeep_bytes_per_node_per_sec: f64,
    pub(super) upkeep_routing_bytes_per_node_per_sec: f64,
    pub(super) upkeep_messages_per_node_per_sec: f64,
    pub(super) upkeep_udp_bytes_per_node_per_sec: f64,
    pub(super) upkeep_target_bytes: f64,
    pub(super) upkeep_pass: bool,
    /// Connections dialled by all nodes during the idle window (each costs a handshake and
    /// QUIC's path MTU probes, about 15 KB of UDP on loopback, counted in the upkeep).
    pub(super) upkeep_dialed: u64,
    pub(super) connections_per_node: f64,
    pub(super) fingers_per_node: f64,
    pub(super) rtt_quic_median_ms: f64,
    pub(super) rtt_quic_p90_ms: f64,
    pub(super) udp_rtt_p50_us: f64,
    pub(super) one_hop_lookup_p50_us: f64,
    pub(super) one_hop_lookups_in_one_hop: usize,
    pub(super) one_hop_lookups: usize,
    pub(super) cold: Pass,
    pub(super) warm: Pass,
    pub(super) all_lookups_correct: bool,
    /// Broadcasts measured (each from a random node, with the delivery count).
    pub(super) broadcasts: usize,
    /// Time from the `broadcast` call to the last node's delivery, p50 over the broadcasts, ms.
    pub(super) broadcast_last_p50_ms: f64,
    /// The same, worst broadcast, ms.
    pub(super) broadcast_last_max_ms: f64,
    /// Deepest delivery (tree depth) seen.
    pub(super) broadcast_depth: u16,
    /// broadcast_last_p50 / (depth × one-hop lookup p50): the tree's time against its depth.
    pub(super) broadcast_ratio_to_depth_hops: f64,
    /// Whether every broadcast reached every other node exactly once.
    pub(super) broadcasts_exact: bool,
    /// The dictionary phase (left out with `--dict-ops 0`).
    pub(super) dict: Option<DictReport>,
    /// OpenDHT side by side (with `--opendht`).
    pub(super) opendht: Option<Comparison>,
}

/// "PASS" or "MISS".
pub(super) fn verdict(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "MISS"
    }
}

/// Prints the report as a table.
pub(super) fn print_report(r: &Report) {
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
    if r.dict.is_some() {
        println!(
            "Dictionary: default settings (3 replicas, writes wait for 2, reads ask 2), values \
             kept in memory; each get checked to return the value put. One at a time: every key \
             put from a random node, then read from another; the basis is the warm lookup p50 \
             above. Many in flight: lookups, puts, gets, each kind with the same number \
             outstanding; rates count right answers."
        );
    }
    if r.opendht.is_some() {
        println!(
            "OpenDHT: as many nodes in one Python process on 127.0.0.1 (python3-opendht), rate \
             limits off, run after ours shut down, the same keys and values; its get is timed \
             to the first value handed back (the get is then stopped), its put to the done \
             callback."
        );
    }
}

/// A row of the report table: metric, value, and the target with its verdict if it has one.
type Row = (String, String, Option<(String, &'static str)>);

/// The rows of the report table, in order.
#[rustfmt::skip] // a table: a row a line
fn report_rows(r: &Report) -> Vec<Row> {
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
        let all_correct = all(x.correct == x.planned);
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
    if let Some(d) = &r.dict {
        rows.extend(dict_rows(d));
        if let Some(c) = &r.opendht {
            rows.extend(opendht_rows(d, c));
        }
    }
    rows
}

fn info(metric: &str, value: String) -> Row {
    (metric.into(), value, None)
}

fn goal(metric: &str, value: String, target: String, result: &'static str) -> Row {
    (metric.into(), value, Some((target, result)))
}

fn all(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "FAIL"
    }
}

/// The dictionary's rows.
#[rustfmt::skip] // a table: a row a line
fn dict_rows(d: &DictReport) -> Vec<Row> {
    let (lk, pt, gt) = (&d.many_lookups, &d.many_puts, &d.many_gets);
    vec![
        info("dict: basis, warm lookup p50", format!("{:.0} µs", d.lookup_p50_us)),
        info("dict: put p50 (p99), one at a time", format!("{:.0} ({:.0}) µs", d.put.p50_us, d.put.p99_us)),
        goal("dict: put p50 / lookup p50 (W = 2 of 3)", format!("{:.2}", d.put_ratio),
            format!("<= {PUT_FACTOR}"), verdict(d.put_pass)),
        info("dict: get p50 (p99), one at a time", format!("{:.0} ({:.0}) µs", d.get.p50_us, d.get.p99_us)),
        goal("dict: get p50 / lookup p50 (R = 2 of 3)", format!("{:.2}", d.get_ratio),
            format!("<= {GET_FACTOR}"), verdict(d.get_pass)),
        info("dict: put, get p50 again (same pair of nodes)",
            format!("{:.0}, {:.0} µs", d.put_again.p50_us, d.get_again.p50_us)),
        goal("dict: puts stored, one at a time", format!("{} / {}", d.put.good, d.put.planned),
            "all".into(), all(d.put.good == d.put.planned)),
        goal("dict: gets with the value put", format!("{} / {}", d.get.good, d.get.planned),
            "all".into(), all(d.get.good == d.get.planned)),
        info("dict: dials for puts+gets (again)", format!("{}+{} ({}+{})",
            d.put.dialed, d.get.dialed, d.put_again.dialed, d.get_again.dialed)),
        info("dict: frames per put, per get", format!("{:.1}, {:.1}",
            d.put.frames_per_op, d.get.frames_per_op)),
        info(&format!("lookups/s, {} in flight (p50)", lk.in_flight),
            format!("{:.0} ({:.0} µs)", lk.per_sec, lk.p50_us)),
        info(&format!("dict: puts/s, {} in flight (p50)", pt.in_flight),
            format!("{:.0} ({:.0} µs)", pt.per_sec, pt.p50_us)),
        info(&format!("dict: gets/s, {} in flight (p50)", gt.in_flight),
            format!("{:.0} ({:.0} µs)", gt.per_sec, gt.p50_us)),
        goal("dict: gets/s / lookups/s", format!("{:.2}", d.gets_rate_ratio),
            format!(">= {RATE_FACTOR}"), verdict(d.gets_rate_pass)),
        goal("dict: puts/s / lookups/s", format!("{:.2}", d.puts_rate_ratio),
            format!(">= {RATE_FACTOR}"), verdict(d.puts_rate_pass)),
        goal("many in flight: right answers (lk, put, get)",
            format!("{}+{}+{} / {}", lk.good, pt.good, gt.good, lk.planned + pt.planned + gt.planned),
            "all".into(), all(lk.good == lk.planned && pt.good == pt.planned && gt.good == gt.planned)),
    ]
}

/// OpenDHT's rows, ours beside them.
#[rustfmt::skip] // a table: a row a line
fn opendht_rows(d: &DictReport, c: &Comparison) -> Vec<Row> {
    let o = &c.opendht;
    let one = &o.one_in_flight;
    vec![
        info("OpenDHT: version, nodes", format!("{}, {}", c.version, o.nodes)),
        info("OpenDHT: put p50 (p99), one at a time",
            format!("{:.0} ({:.0}) µs", one.put.p50_us, one.put.p99_us)),
        goal("put p50, ours / OpenDHT's", format!("{:.2}", c.put_ratio),
            format!("<= {LATENCY_FACTOR}"), verdict(c.put_pass)),
        info("OpenDHT: get p50 to first value (p99)",
            format!("{:.0} ({:.0}) µs", one.get_first_value.p50_us, one.get_first_value.p99_us)),
        info("OpenDHT: get p50 to its end", format!("{:.0} µs", one.get_done.p50_us)),
        goal("get p50, ours / OpenDHT's first value", format!("{:.2}", c.get_ratio),
            format!("<= {LATENCY_FACTOR}"), verdict(c.get_pass)),
        info(&format!("OpenDHT: puts/s, gets/s, {} in flight", o.many_puts.in_flight),
            format!("{:.0}, {:.0}", o.many_puts.ops_per_sec, o.many_gets.ops_per_sec)),
        goal("puts/s, ours / OpenDHT's", format!("{:.1} ({:.0})", c.puts_rate_ratio, d.many_puts.per_sec),
            format!(">= {OPENDHT_RATE_FACTOR}"), verdict(c.puts_rate_pass)),
        goal("gets/s, ours / OpenDHT's", format!("{:.1} ({:.0})", c.gets_rate_ratio, d.many_gets.per_sec),
            format!(">= {OPENDHT_RATE_FACTOR}"), verdict(c.gets_rate_pass)),
        goal("OpenDHT: puts stored, gets with the value put",
            format!("{}, {} / {}", one.puts_ok, one.gets.correct, one.puts_planned),
            "all".into(), all(c.opendht_all_correct)),
    ]
}
