//! The dictionary phase of `p2ps bench cluster`: puts and gets of the replicated dictionary
//! (`node.dict()`, default settings: 3 replicas, writes wait for 2, reads ask 2), against the
//! same run's lookups.
//!
//! - **One at a time**: every key of the workload put from a random node, then every key read
//!   from another random node; each timed from the call to its answer, each read checked to
//!   return the value put. The basis is the same run's warm lookup p50. Then both passes again
//!   with the same nodes and keys (shown without a target: the primary answers the asker
//!   directly, so the first time a pair of nodes talks it often costs a QUIC handshake, which
//!   the second time does not).
//! - **Many in flight**: lookups (random node, random ring position, checked against the true
//!   ring), puts (random node) and gets of the keys just put (random node, checked), each kind
//!   with a fixed number of requests outstanding; operations answered (correctly) per second.

use super::probes::{dials, dict_counter, totals, trouble, trouble_text};
use super::workload::Workload;
use crate::demo::ring_check::status_of;
use crate::demo::rng::Rng;
use crate::demo::stats::quantile;
use anyhow::Result;
use p2ps::{Node, NodeId};
use p2ps_overlay::TrueRing;
use serde::Serialize;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::time::timeout;

/// Get p50 target: at most this many times the warm lookup p50.
pub(super) const GET_FACTOR: f64 = 1.2;
/// Put p50 target: at most this many times the warm lookup p50.
pub(super) const PUT_FACTOR: f64 = 1.5;
/// Throughput target: gets/s and puts/s at least this many times lookups/s.
pub(super) const RATE_FACTOR: f64 = 0.8;
/// Longest wait for one operation's answer (the dictionary's own request timeout is 5 s).
const OP_LIMIT: Duration = Duration::from_secs(15);
/// Longest a pass may start new operations for.
const PASS_LIMIT: Duration = Duration::from_secs(120);

/// Settings of the phase.
#[derive(Clone, Copy, Debug)]
pub(super) struct DictSettings {
    /// Requests outstanding at once in the many-in-flight passes.
    pub(super) in_flight: usize,
    /// The basis: the same run's warm lookup p50, µs.
    pub(super) lookup_p50_us: f64,
}

/// A pass of operations one at a time.
#[derive(Clone, Debug, Default, Serialize)]
pub(super) struct OneAtATime {
    /// Operations planned.
    pub(super) planned: usize,
    /// Operations answered as they should be (stored; read with the value put).
    pub(super) good: usize,
    /// Reads that returned another value than the one put.
    pub(super) wrong: usize,
    /// Reads that found nothing.
    pub(super) missing: usize,
    /// Operations that failed or got no answer in time.
    pub(super) failed: usize,
    /// Not started because the pass ran out of time.
    pub(super) not_asked: usize,
    /// Latency of the good operations, µs.
    pub(super) p50_us: f64,
    /// 90th percentile, µs.
    pub(super) p90_us: f64,
    /// 99th percentile, µs.
    pub(super) p99_us: f64,
    /// Slowest, µs.
    pub(super) max_us: f64,
    /// Connections dialled by all nodes during the pass.
    pub(super) dialed: u64,
    /// Frames sent by all nodes during the pass per operation (upkeep included).
    pub(super) frames_per_op: f64,
    /// The first operation that went wrong.
    pub(super) first_problem: Option<String>,
}

/// A pass of operations with many in flight.
#[derive(Clone, Debug, Default, Serialize)]
pub(super) struct Throughput {
    /// Requests outstanding at once.
    pub(super) in_flight: usize,
    /// Operations planned.
    pub(super) planned: usize,
    /// Operations started (the pass stops starting new ones after its time limit).
    pub(super) started: usize,
    /// Operations answered as they should be.
    pub(super) good: usize,
    /// Operations answered wrongly (a lookup naming another node, a read of another value or
    /// of nothing).
    pub(super) wrong: usize,
    /// Operations that failed or got no answer in time.
    pub(super) failed: usize,
    /// From the first start to the last answer, seconds.
    pub(super) secs: f64,
    /// From the first start to the last start, seconds: the window in which `in_flight`
    /// operations were outstanding all the time.
    pub(super) loaded_secs: f64,
    /// Good answers within `loaded_secs`, per second: the rate under full load, which one
    /// operation lost and retried at the end (it holds its slot for seconds) does not drag out.
    pub(super) per_sec: f64,
    /// Latency p50 under this load, µs.
    pub(super) p50_us: f64,
    /// Latency p99 under this load, µs.
    pub(super) p99_us: f64,
    /// Slowest, µs.
    pub(super) max_us: f64,
    /// Connections dialled by all nodes during the pass.
    pub(super) dialed: u64,
    /// Trouble counters that moved during the pass, summed over nodes.
    pub(super) trouble: String,
    /// The first operation that went wrong.
    pub(super) first_problem: Option<String>,
}

/// Every number of the dictionary phase.
#[derive(Clone, Debug, Serialize)]
pub(super) struct DictReport {
    /// The basis: the same run's warm lookup p50, µs.
    pub(super) lookup_p50_us: f64,
    /// Puts one at a time.
    pub(super) put: OneAtATime,
    /// Gets one at a time (of the keys just put, from another node).
    pub(super) get: OneAtATime,
    /// The same puts again, each from the same node to the same key with the same value, right
    /// after the gets: whatever connections the first ones made exist now (shown, no target).
    pub(super) put_again: OneAtATime,
    /// The same gets again, each from the same node (shown, no target).
    pub(super) get_again: OneAtATime,
    /// put p50 / lookup p50; the target is <= PUT_FACTOR.
    pub(super) put_ratio: f64,
    /// Whether the put target is met.
    pub(super) put_pass: bool,
    /// get p50 / lookup p50; the target is <= GET_FACTOR.
    pub(super) get_ratio: f64,
    /// Whether the get target is met.
    pub(super) get_pass: bool,
    /// Lookups with many in flight.
    pub(super) many_lookups: Throughput,
    /// Puts with many in flight.
    pub(super) many_puts: Throughput,
    /// Gets with many in flight (of the keys of `many_puts`).
    pub(super) many_gets: Throughput,
    /// gets/s / lookups/s; the target is >= RATE_FACTOR.
    pub(super) gets_rate_ratio: f64,
    /// Whether the gets/s target is met.
    pub(super) gets_rate_pass: bool,
    /// puts/s / lookups/s; the target is >= RATE_FACTOR.
    pub(super) puts_rate_ratio: f64,
    /// Whether the puts/s target is met.
    pub(super) puts_rate_pass: bool,
    /// Every operation answered, every answer right.
    pub(super) all_correct: bool,
}

/// How one operation ended.
enum Outcome {
    Good(Duration),
    Wrong(String),
    Missing(String),
    Failed(String),
}

/// The steps of [`measure`], each ended by one line it `say`s (for a progress bar).
pub(super) const PHASES: u64 = 7;

/// Runs the phase on a formed network: `w` one at a time, then with many in flight; says one
/// line per step ([`PHASES`] in all).
pub(super) async fn measure(
    nodes: &[Node],
    truth: &TrueRing<NodeId>,
    w: &Workload,
    set: DictSettings,
    rng: &mut Rng,
    say: &dyn Fn(String),
) -> Result<DictReport> {
    let n = nodes.len();
    // One at a time: every key put from a random node, then read from another one.
    let writers: Vec<usize> = w.one.iter().map(|_| rng.below(n)).collect();
    let readers: Vec<usize> = writers.iter().map(|&wr| other(rng, n, wr)).collect();
    let put = one_at_a_time(nodes, w.one.len(), |i| {
        put_op(&nodes[writers[i]], &w.one[i].0, &w.one[i].1)
    })
    .await?;
    say(describe_one("puts one at a time", &put, set.lookup_p50_us));
    let get = one_at_a_time(nodes, w.one.len(), |i| {
        get_op(&nodes[readers[i]], &w.one[i].0, &w.one[i].1)
    })
    .await?;
    say(describe_one("gets one at a time", &get, set.lookup_p50_us));
    let put_again = one_at_a_time(nodes, w.one.len(), |i| {
        put_op(&nodes[writers[i]], &w.one[i].0, &w.one[i].1)
    })
    .await?;
    say(describe_one(
        "the same puts again",
        &put_again,
        set.lookup_p50_us,
    ));
    let get_again = one_at_a_time(nodes, w.one.len(), |i| {
        get_op(&nodes[readers[i]], &w.one[i].0, &w.one[i].1)
    })
    .await?;
    say(describe_one(
        "the same gets again",
        &get_again,
        set.lookup_p50_us,
    ));

    // Many in flight: lookups, then puts, then gets of the keys just put.
    let truth = Arc::new(truth.clone());
    let count = w.many.len();
    let asks: Vec<(usize, p2ps::RingId)> = (0..count).map(|_| (rng.below(n), rng.ring())).collect();
    let many_lookups = throughput(nodes, count, set.in_flight, |i| {
        let (from, key) = asks[i];
        lookup_op(nodes[from].clone(), key, truth.clone())
    })
    .await?;
    say(describe_many("lookups", &many_lookups));
    let many_puts = throughput(nodes, count, set.in_flight, |i| {
        let node = nodes[rng.below(n)].clone();
        let (k, v) = w.many[i].clone();
        async move { put_op(&node, &k, &v).await }
    })
    .await?;
    say(describe_many("puts", &many_puts));
    // Only the keys whose put was started are read.
    let many_gets = throughput(nodes, many_puts.started, set.in_flight, |i| {
        let node = nodes[rng.below(n)].clone();
        let (k, v) = w.many[i].clone();
        async move { get_op(&node, &k, &v).await }
    })
    .await?;
    say(describe_many("gets", &many_gets));

    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::INFINITY };
    let put_ratio = ratio(put.p50_us, set.lookup_p50_us);
    let get_ratio = ratio(get.p50_us, set.lookup_p50_us);
    let gets_rate_ratio = ratio(many_gets.per_sec, many_lookups.per_sec);
    let puts_rate_ratio = ratio(many_puts.per_sec, many_lookups.per_sec);
    let all_correct = [&put, &get, &put_again, &get_again]
        .iter()
        .all(|p| p.good == p.planned)
        && [&many_lookups, &many_puts, &many_gets]
            .iter()
            .all(|t| t.good == t.planned);
    Ok(DictReport {
        lookup_p50_us: set.lookup_p50_us,
        put_pass: put.good > 0 && put_ratio <= PUT_FACTOR,
        get_pass: get.good > 0 && get_ratio <= GET_FACTOR,
        put,
        get,
        put_again,
        get_again,
        put_ratio,
        get_ratio,
        gets_rate_pass: gets_rate_ratio >= RATE_FACTOR,
        puts_rate_pass: puts_rate_ratio >= RATE_FACTOR,
        gets_rate_ratio,
        puts_rate_ratio,
        many_lookups,
        many_puts,
        many_gets,
        all_correct,
    })
}

/// A random node index below `n` other than `not` (`not` itself when `n` is 1).
fn other(rng: &mut Rng, n: usize, not: usize) -> usize {
    if n < 2 {
        return not;
    }
    let i = rng.below(n - 1);
    if i >= not {
        i + 1
    } else {
        i
    }
}

/// Puts `value` under the open key `name` from `node`.
async fn put_op(node: &Node, name: &str, value: &str) -> Outcome {
    let t = Instant::now();
    let name_b = bytes::Bytes::copy_from_slice(name.as_bytes());
    let value_b = bytes::Bytes::copy_from_slice(value.as_bytes());
    match timeout(OP_LIMIT, node.dict().put(name_b, value_b)).await {
        Ok(Ok(_)) => Outcome::Good(t.elapsed()),
        Ok(Err(e)) => Outcome::Failed(format!("put {name:?} from {}: {e}", node.id().short())),
        Err(_) => Outcome::Failed(format!(
            "put {name:?} from {}: no answer in {OP_LIMIT:?}",
            node.id().short()
        )),
    }
}

/// Reads the open key `name` from `node`, expecting `want`.
async fn get_op(node: &Node, name: &str, want: &str) -> Outcome {
    let t = Instant::now();
    let name_b = bytes::Bytes::copy_from_slice(name.as_bytes());
    let who = node.id().short();
    match timeout(OP_LIMIT, node.dict().get(name_b)).await {
        Ok(Ok(Some((v, _)))) if v.as_ref() == want.as_bytes() => Outcome::Good(t.elapsed()),
        Ok(Ok(Some((v, _)))) => Outcome::Wrong(format!(
            "get {name:?} from {who}: {:?}, not the value put",
            String::from_utf8_lossy(&v)
        )),
        Ok(Ok(None)) => Outcome::Missing(format!("get {name:?} from {who}: nothing there")),
        Ok(Err(e)) => Outcome::Failed(format!("get {name:?} from {who}: {e}")),
        Err(_) => Outcome::Failed(format!(
            "get {name:?} from {who}: no answer in {OP_LIMIT:?}"
        )),
    }
}

/// Looks `key` up from `node`, expecting the responsible node of `truth`.
async fn lookup_op(node: Node, key: p2ps::RingId, truth: Arc<TrueRing<NodeId>>) -> Outcome {
    let t = Instant::now();
    let who = node.id().short();
    match timeout(OP_LIMIT, node.lookup(key)).await {
        Ok(Ok(a)) if Some(a.node) == truth.responsible(key) => Outcome::Good(t.elapsed()),
        Ok(Ok(a)) => Outcome::Wrong(format!(
            "lookup of {key} from {who}: answer {}, not the responsible node",
            a.node.short()
        )),
        Ok(Err(e)) => Outcome::Failed(format!("lookup of {key} from {who}: {e}")),
        Err(_) => Outcome::Failed(format!(
            "lookup of {key} from {who}: no answer in {OP_LIMIT:?}"
        )),
    }
}

/// Frames sent so far by all nodes.
async fn frames(nodes: &[Node]) -> Result<u64> {
    Ok(totals(nodes).await?.messages)
}

/// `count` operations, one at a time (`op(i)` is the i-th), until [`PASS_LIMIT`].
async fn one_at_a_time<'a, F, Fut>(nodes: &[Node], count: usize, mut op: F) -> Result<OneAtATime>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = Outcome> + 'a,
{
    let mut r = OneAtATime {
        planned: count,
        ..OneAtATime::default()
    };
    let (d0, f0) = (dials(nodes).await?, frames(nodes).await?);
    let start = Instant::now();
    let mut micros = Vec::with_capacity(count);
    for i in 0..count {
        if start.elapsed() > PASS_LIMIT {
            r.not_asked += 1;
            continue;
        }
        match op(i).await {
            Outcome::Good(t) => {
                r.good += 1;
                micros.push(t.as_secs_f64() * 1e6);
            }
            Outcome::Wrong(why) => {
                r.wrong += 1;
                r.first_problem.get_or_insert(why);
            }
            Outcome::Missing(why) => {
                r.missing += 1;
                r.first_problem.get_or_insert(why);
            }
            Outcome::Failed(why) => {
                r.failed += 1;
                r.first_problem.get_or_insert(why);
            }
        }
    }
    r.dialed = dials(nodes).await?.saturating_sub(d0);
    let asked = (count - r.not_asked).max(1) as f64;
    r.frames_per_op = frames(nodes).await?.saturating_sub(f0) as f64 / asked;
    r.p50_us = quantile(&micros, 0.5);
    r.p90_us = quantile(&micros, 0.9);
    r.p99_us = quantile(&micros, 0.99);
    r.max_us = quantile(&micros, 1.0);
    Ok(r)
}

/// `count` operations with `in_flight` outstanding at once (`op(i)` is the i-th), starting new
/// ones until [`PASS_LIMIT`]; each is bounded by [`OP_LIMIT`].
async fn throughput<F, Fut>(
    nodes: &[Node],
    count: usize,
    in_flight: usize,
    mut op: F,
) -> Result<Throughput>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let mut r = Throughput {
        in_flight,
        planned: count,
        ..Throughput::default()
    };
    let (d0, t0) = (dials(nodes).await?, trouble(nodes).await?);
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    let mut micros = Vec::with_capacity(count);
    let mut loaded: Option<(Duration, usize)> = None;
    loop {
        while r.started < count && set.len() < in_flight.max(1) && start.elapsed() < PASS_LIMIT {
            set.spawn(op(r.started));
            r.started += 1;
        }
        if loaded.is_none() && (r.started == count || start.elapsed() >= PASS_LIMIT) {
            loaded = Some((start.elapsed(), r.good));
        }
        let Some(done) = set.join_next().await else {
            break;
        };
        match done {
            Ok(Outcome::Good(t)) => {
                r.good += 1;
                micros.push(t.as_secs_f64() * 1e6);
            }
            Ok(Outcome::Wrong(why) | Outcome::Missing(why)) => {
                r.wrong += 1;
                r.first_problem.get_or_insert(why);
            }
            Ok(Outcome::Failed(why)) => {
                r.failed += 1;
                r.first_problem.get_or_insert(why);
            }
            Err(e) => {
                r.failed += 1;
                r.first_problem
                    .get_or_insert(format!("an operation's task failed: {e}"));
            }
        }
    }
    r.secs = start.elapsed().as_secs_f64();
    let (loaded_for, loaded_good) = loaded.unwrap_or((start.elapsed(), r.good));
    r.loaded_secs = loaded_for.as_secs_f64();
    r.per_sec = if r.loaded_secs > 0.0 {
        loaded_good as f64 / r.loaded_secs
    } else {
        0.0
    };
    r.p50_us = quantile(&micros, 0.5);
    r.p99_us = quantile(&micros, 0.99);
    r.max_us = quantile(&micros, 1.0);
    r.dialed = dials(nodes).await?.saturating_sub(d0);
    r.trouble = trouble_text(t0, trouble(nodes).await?);
    Ok(r)
}

fn describe_one(what: &str, r: &OneAtATime, basis: f64) -> String {
    let mut s = format!(
        "{what}: {} of {} right ({} wrong, {} missing, {} failed, {} not asked), p50 {:.0} µs \
         ({:.2} × lookup p50 {basis:.0} µs), p99 {:.0} µs; {} connections dialled, {:.1} frames \
         per operation",
        r.good,
        r.planned,
        r.wrong,
        r.missing,
        r.failed,
        r.not_asked,
        r.p50_us,
        r.p50_us / basis.max(f64::MIN_POSITIVE),
        r.p99_us,
        r.dialed,
        r.frames_per_op
    );
    if let Some(p) = &r.first_problem {
        s.push_str(&format!("; first problem: {p}"));
    }
    s
}

fn describe_many(what: &str, r: &Throughput) -> String {
    let mut s = format!(
        "{what} with {} in flight: {} of {} right ({} wrong, {} failed) in {:.2} s, {:.0}/s under \
         full load, \
         p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs; {} connections dialled; trouble: {}",
        r.in_flight,
        r.good,
        r.planned,
        r.wrong,
        r.failed,
        r.secs,
        r.per_sec,
        r.p50_us,
        r.p99_us,
        r.max_us,
        r.dialed,
        r.trouble
    );
    if let Some(p) = &r.first_problem {
        s.push_str(&format!("; first problem: {p}"));
    }
    s
}

/// Dictionary entries held across `nodes` (keys, summed over replicas), for the progress line.
pub(super) async fn keys_held(nodes: &[Node]) -> Result<u64> {
    let mut keys = 0;
    for n in nodes {
        keys += dict_counter(&status_of(n).await?, "keys");
    }
    Ok(keys)
}
