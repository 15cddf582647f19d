//! `p2ps demo`: a whole network on loopback in one process, every primitive exercised and
//! checked against ground truth.
//!
//! N nodes start on 127.0.0.1, each with a fresh key, its own UDP socket and QUIC endpoint
//! (`p2ps::Node::start`). Node 0 creates the network and the others join through tickets of
//! nodes already in. Then the demo checks, with bounded waits, that:
//!
//! - the ring forms: every node's successor and predecessor (and then whole lists) are the true
//!   ones, computed from the node ids alone;
//! - lookups from random nodes name the node whose ring position is the first at or after the
//!   key (wrapping);
//! - `send` to a node id and `route` to a key are delivered to the right node, once;
//! - a graceful leave (`leave` + `shutdown`) is seen by the leaver's neighbours and repaired;
//! - a crash (SIGKILL of a child process running `p2ps node`) is detected and repaired;
//! - every node shuts down cleanly.
//!
//! The helpers shared with `p2ps bench cluster` (ground truth, ring checks, lookup rounds, RSS,
//! a small seeded RNG) live here too.

mod cast;

use anyhow::{bail, Context, Result};
use p2ps::id::ring_id_of;
use p2ps::{key_of, Identity, Node, NodeConfig, NodeEvent, NodeId, RingId, Ticket, Via};
use p2ps_overlay::TrueRing;
use serde::Serialize;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// Arguments of `p2ps demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Nodes to start in this process (at least 4: one leaves, one more crashes).
    #[arg(long, default_value_t = 16)]
    pub nodes: usize,
    /// Seed for the demo's choices (keys, which node asks, who leaves); node keys are always
    /// fresh, so ring positions differ between runs.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Lookups per lookup check.
    #[arg(long, default_value_t = 200)]
    pub lookups: usize,
    /// Skip the crash step (which re-executes this binary as `p2ps node` in a child process).
    #[arg(long)]
    pub no_crash: bool,
    /// Print the summary as JSON on stdout (progress lines go to stderr).
    #[arg(long)]
    pub json: bool,
}

/// Bound on each round of lookups in the demo.
const ROUND_LIMIT: Duration = Duration::from_secs(60);

/// Runs the demo; fails (non-zero exit) if any check fails.
pub fn run(args: DemoArgs) -> Result<()> {
    if args.nodes < 4 {
        bail!("--nodes must be at least 4 (one node leaves and one more crashes)");
    }
    if args.lookups == 0 {
        bail!("--lookups must be at least 1");
    }
    let summary = run_and_print(demo(&args), args.json, "summary", print_summary)?;
    if summary.failed > 0 {
        bail!(
            "{} of {} checks failed",
            summary.failed,
            summary.checks.len()
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Shared helpers (also used by `p2ps bench cluster`).
// ---------------------------------------------------------------------------------------------

/// Runs `work` on a new multi-threaded runtime, then prints its outcome: as JSON on stdout with
/// `json` (`what` names it in errors), else with `print`.
pub(crate) fn run_and_print<T: Serialize>(
    work: impl std::future::Future<Output = Result<T>>,
    json: bool,
    what: &str,
    print: fn(&T),
) -> Result<T> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    let out = rt.block_on(work)?;
    drop(rt);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&out).with_context(|| format!("encoding the {what}"))?
        );
    } else {
        print(&out);
    }
    Ok(out)
}

/// A small seeded generator (SplitMix64): the demo's choices are reproducible from `--seed`.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed ^ 0x5851_f42d_4c95_7f2d)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform-enough index below `n` (0 when `n` is 0).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        (self.next_u64() % n as u64) as usize
    }

    pub(crate) fn ring(&mut self) -> RingId {
        RingId((u128::from(self.next_u64()) << 64) | u128::from(self.next_u64()))
    }
}

/// The ring as it should be for the nodes `ids`, computed from the ids alone.
pub(crate) fn true_ring(ids: impl IntoIterator<Item = NodeId>) -> TrueRing<NodeId> {
    ids.into_iter().map(|id| (ring_id_of(&id), id)).collect()
}

/// How far the nodes' routing state is from the truth.
#[derive(Clone, Debug, Default)]
pub(crate) struct RingReport {
    pub(crate) nodes: usize,
    pub(crate) not_joined: usize,
    pub(crate) wrong_successor: usize,
    pub(crate) wrong_predecessor: usize,
    pub(crate) wrong_lists: usize,
    /// Mentions of departed nodes in successor or predecessor lists.
    pub(crate) stale_mentions: usize,
    pub(crate) first_problem: Option<String>,
}

impl RingReport {
    /// Every node joined, with the true successor and predecessor.
    pub(crate) fn neighbours_ok(&self) -> bool {
        self.not_joined == 0 && self.wrong_successor == 0 && self.wrong_predecessor == 0
    }

    /// True neighbours and no departed node mentioned (lists may still be filling).
    pub(crate) fn repaired(&self) -> bool {
        self.neighbours_ok() && self.stale_mentions == 0
    }

    /// Also every list exact and no departed node mentioned.
    pub(crate) fn all_ok(&self) -> bool {
        self.neighbours_ok() && self.wrong_lists == 0 && self.stale_mentions == 0
    }

    pub(crate) fn describe(&self) -> String {
        format!(
            "{} nodes: {} not joined, {} wrong successors, {} wrong predecessors, {} inexact \
             lists, {} mentions of departed nodes{}",
            self.nodes,
            self.not_joined,
            self.wrong_successor,
            self.wrong_predecessor,
            self.wrong_lists,
            self.stale_mentions,
            self.first_problem
                .as_ref()
                .map(|p| format!(" (e.g. {p})"))
                .unwrap_or_default()
        )
    }
}

/// A node's status, bounded in time.
pub(crate) async fn status_of(node: &Node) -> Result<p2ps::Status> {
    timeout(Duration::from_secs(5), node.status())
        .await
        .with_context(|| format!("node {} did not answer a status request", node.id().short()))?
        .with_context(|| format!("status of node {}", node.id().short()))
}

/// Compares every node's lists with the truth; `gone` are nodes that must not be mentioned.
pub(crate) async fn ring_report(
    nodes: &[Node],
    truth: &TrueRing<NodeId>,
    list_len: usize,
    gone: &[NodeId],
) -> Result<RingReport> {
    let mut r = RingReport {
        nodes: nodes.len(),
        ..RingReport::default()
    };
    for n in nodes {
        let s = status_of(n).await?;
        let me = n.id().short();
        let succs = truth.successors(&n.id(), list_len);
        let preds = truth.predecessors(&n.id(), list_len);
        let note = |r: &mut RingReport, what: String| {
            if r.first_problem.is_none() {
                r.first_problem = Some(what);
            }
        };
        if s.state != "joined" {
            r.not_joined += 1;
            note(&mut r, format!("{me} is {}", s.state));
        }
        if s.successors.first() != succs.first() {
            r.wrong_successor += 1;
            note(
                &mut r,
                format!(
                    "{me} has successor {} instead of {}",
                    short_opt(s.successors.first()),
                    short_opt(succs.first())
                ),
            );
        }
        if s.predecessors.first() != preds.first() {
            r.wrong_predecessor += 1;
            note(
                &mut r,
                format!(
                    "{me} has predecessor {} instead of {}",
                    short_opt(s.predecessors.first()),
                    short_opt(preds.first())
                ),
            );
        }
        if s.successors != succs || s.predecessors != preds {
            r.wrong_lists += 1;
            let show = |v: &[NodeId]| {
                v.iter()
                    .map(|x| x.short().to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            note(
                &mut r,
                format!(
                    "{me} lists successors [{}] predecessors [{}], true ones [{}] [{}]",
                    show(&s.successors),
                    show(&s.predecessors),
                    show(&succs),
                    show(&preds)
                ),
            );
        }
        let stale = s
            .successors
            .iter()
            .chain(s.predecessors.iter())
            .filter(|x| gone.contains(x))
            .count();
        if stale > 0 {
            r.stale_mentions += stale;
            note(&mut r, format!("{me} still lists a departed node"));
        }
    }
    Ok(r)
}

/// Polls [`ring_report`] every 100 ms until `done` holds or `limit` passes. Returns whether it
/// held, the time waited and the last report.
pub(crate) async fn wait_for_ring(
    nodes: &[Node],
    truth: &TrueRing<NodeId>,
    list_len: usize,
    gone: &[NodeId],
    limit: Duration,
    done: fn(&RingReport) -> bool,
) -> Result<(bool, Duration, RingReport)> {
    let t = Instant::now();
    loop {
        let r = ring_report(nodes, truth, list_len, gone).await?;
        if done(&r) {
            return Ok((true, t.elapsed(), r));
        }
        if t.elapsed() >= limit {
            return Ok((false, t.elapsed(), r));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn short_opt(id: Option<&NodeId>) -> String {
    id.map(|i| i.short().to_string())
        .unwrap_or_else(|| "none".into())
}

/// The outcome of a round of lookups.
#[derive(Clone, Debug, Default)]
pub(crate) struct LookupRound {
    pub(crate) asked: usize,
    /// Planned but not started: the round ran out of time.
    pub(crate) not_asked: usize,
    pub(crate) correct: usize,
    pub(crate) wrong: usize,
    pub(crate) failed: usize,
    pub(crate) named_gone: usize,
    pub(crate) hops: Vec<u16>,
    /// Latency of each answered lookup, in microseconds (command to answer, as the
    /// application sees it).
    pub(crate) micros: Vec<f64>,
    pub(crate) first_problem: Option<String>,
}

impl LookupRound {
    pub(crate) fn ok(&self) -> bool {
        self.asked > 0 && self.not_asked == 0 && self.correct == self.asked
    }

    /// Adds the outcomes of `other` to these.
    pub(crate) fn merge(&mut self, other: LookupRound) {
        self.asked += other.asked;
        self.not_asked += other.not_asked;
        self.correct += other.correct;
        self.wrong += other.wrong;
        self.failed += other.failed;
        self.named_gone += other.named_gone;
        self.hops.extend(other.hops);
        self.micros.extend(other.micros);
        if self.first_problem.is_none() {
            self.first_problem = other.first_problem;
        }
    }

    pub(crate) fn hops_mean(&self) -> f64 {
        mean(self.hops.iter().map(|h| f64::from(*h)))
    }

    pub(crate) fn hops_max(&self) -> u16 {
        self.hops.iter().copied().max().unwrap_or(0)
    }
}

/// One planned lookup: from `nodes[from]`, for `key`.
#[derive(Clone, Debug)]
pub(crate) struct Ask {
    pub(crate) from: usize,
    pub(crate) key: RingId,
    pub(crate) label: String,
}

/// Plans `count` lookups from random nodes (of `n`). With a `tag`, every other key is the
/// application key `"{tag}-{i}"` (placed by `key_of`) and the rest random ring positions;
/// without, all are random positions.
pub(crate) fn plan(rng: &mut Rng, n: usize, count: usize, tag: Option<&str>) -> Vec<Ask> {
    (0..count)
        .map(|i| {
            let from = rng.below(n);
            match tag {
                Some(tag) if i % 2 == 0 => {
                    let k = format!("{tag}-{i}");
                    Ask {
                        from,
                        key: key_of(&k),
                        label: format!("key {k:?}"),
                    }
                }
                _ => {
                    let key = rng.ring();
                    Ask {
                        from,
                        key,
                        label: format!("position {key}"),
                    }
                }
            }
        })
        .collect()
}

/// Runs the planned lookups one at a time and checks each answer against the truth. Each
/// lookup is bounded (15 s) and so is the round (`limit`; lookups not started by then are
/// counted as not asked).
pub(crate) async fn lookup_round(
    nodes: &[Node],
    truth: &TrueRing<NodeId>,
    asks: &[Ask],
    gone: &[NodeId],
    limit: Duration,
) -> LookupRound {
    let mut r = LookupRound::default();
    let started = Instant::now();
    for ask in asks {
        let Some(from) = nodes.get(ask.from) else {
            continue;
        };
        if started.elapsed() > limit {
            r.not_asked += 1;
            continue;
        }
        r.asked += 1;
        let label = &ask.label;
        let t = Instant::now();
        let answer = timeout(Duration::from_secs(15), from.lookup(ask.key)).await;
        let took = t.elapsed();
        let want = truth.responsible(ask.key);
        match answer {
            Ok(Ok(a)) => {
                r.hops.push(a.hops);
                r.micros.push(took.as_secs_f64() * 1e6);
                if gone.contains(&a.node) {
                    r.named_gone += 1;
                }
                if Some(a.node) == want {
                    r.correct += 1;
                } else {
                    r.wrong += 1;
                    r.first_problem.get_or_insert_with(|| {
                        format!(
                            "{label} from {}: answer {} but {} is responsible",
                            from.id().short(),
                            a.node.short(),
                            short_opt(want.as_ref())
                        )
                    });
                }
            }
            Ok(Err(e)) => {
                r.failed += 1;
                r.first_problem.get_or_insert_with(|| {
                    format!(
                        "{label} from {}: {e} ({:.1} s)",
                        from.id().short(),
                        took.as_secs_f64()
                    )
                });
            }
            Err(_) => {
                r.failed += 1;
                r.first_problem.get_or_insert_with(|| {
                    format!("{label} from {}: no answer in 15 s", from.id().short())
                });
            }
        }
    }
    r
}

pub(crate) fn mean(xs: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = xs.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n == 0 {
        0.0
    } else {
        sum / n as f64
    }
}

/// The `q` quantile (0..=1) of `xs` (nearest rank); 0 for no samples.
pub(crate) fn quantile(xs: &[f64], q: f64) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// Resident set size of this process, in KiB (`VmRSS` of `/proc/self/status`).
pub(crate) fn rss_kib() -> Result<u64> {
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

/// A ticket in short form for progress lines: `p2ps1abcdefgh…wxyz (118 chars)`.
pub(crate) fn short_ticket(t: &Ticket) -> String {
    let s = t.to_string();
    match (s.get(..13), s.get(s.len().saturating_sub(4)..)) {
        (Some(head), Some(tail)) if s.len() > 20 => format!("{head}…{tail} ({} chars)", s.len()),
        _ => s,
    }
}

/// Progress lines stamped with the time since the start.
pub(crate) struct Progress {
    start: Instant,
    to_stderr: bool,
}

impl Progress {
    pub(crate) fn new(to_stderr: bool) -> Self {
        Progress {
            start: Instant::now(),
            to_stderr,
        }
    }

    pub(crate) fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    pub(crate) fn say(&self, msg: impl AsRef<str>) {
        let line = format!(
            "[{:>5.1}s] {}",
            self.start.elapsed().as_secs_f64(),
            msg.as_ref()
        );
        if self.to_stderr {
            eprintln!("{line}");
        } else {
            println!("{line}");
            let _ = std::io::stdout().flush();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The demo.
// ---------------------------------------------------------------------------------------------

/// One check's outcome.
#[derive(Clone, Debug, Serialize)]
struct Check {
    name: String,
    /// `pass`, `fail` or `skip`.
    result: &'static str,
    /// Time the step took, in seconds.
    secs: f64,
    detail: String,
}

/// What `--json` prints.
#[derive(Clone, Debug, Serialize)]
struct Summary {
    nodes: usize,
    seed: u64,
    passed: usize,
    failed: usize,
    skipped: usize,
    total_secs: f64,
    formation_secs: Option<f64>,
    lookup_hops_mean: Option<f64>,
    lookup_hops_max: Option<u16>,
    lookup_p50_us: Option<f64>,
    median_rtt_ms: Option<f64>,
    leave_detect_secs: Option<f64>,
    leave_repair_secs: Option<f64>,
    crash_detect_secs: Option<f64>,
    crash_repair_secs: Option<f64>,
    checks: Vec<Check>,
}

/// Node events of every node, collected by one forwarding task per node.
struct EventLog {
    tx: mpsc::UnboundedSender<(usize, Instant, NodeEvent)>,
    rx: mpsc::UnboundedReceiver<(usize, Instant, NodeEvent)>,
    seen: Vec<(usize, Instant, NodeEvent)>,
    tasks: Vec<JoinHandle<()>>,
}

impl EventLog {
    fn new() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        EventLog {
            tx,
            rx,
            seen: Vec::new(),
            tasks: Vec::new(),
        }
    }

    /// Starts collecting the events of node `idx` (ends when the node stops).
    fn watch(&mut self, idx: usize, node: &Node) {
        let mut sub = node.events();
        let tx = self.tx.clone();
        self.tasks.push(tokio::spawn(async move {
            loop {
                match sub.recv().await {
                    Ok(e) => {
                        if tx.send((idx, Instant::now(), e)).is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        }));
    }

    fn drain(&mut self) {
        while let Ok(e) = self.rx.try_recv() {
            self.seen.push(e);
        }
    }

    /// When node `idx` first emitted an event matching `want` at or after `since`.
    fn when(&mut self, idx: usize, since: Instant, want: &NodeEvent) -> Option<Instant> {
        self.drain();
        self.seen
            .iter()
            .find(|(i, t, e)| *i == idx && *t >= since && e == want)
            .map(|(_, t, _)| *t)
    }

    /// Waits (bounded) until every node in `idxs` emitted `want` after `since`; returns the
    /// latest of those times, or the nodes that did not.
    async fn wait_all(
        &mut self,
        idxs: &[usize],
        since: Instant,
        want: &NodeEvent,
        limit: Duration,
    ) -> std::result::Result<Instant, Vec<usize>> {
        let t = Instant::now();
        loop {
            let times: Vec<(usize, Option<Instant>)> = idxs
                .iter()
                .map(|i| (*i, self.when(*i, since, want)))
                .collect();
            if times.iter().all(|(_, t)| t.is_some()) {
                return Ok(times.iter().filter_map(|(_, t)| *t).max().unwrap_or(since));
            }
            if t.elapsed() >= limit {
                return Err(times
                    .iter()
                    .filter(|(_, t)| t.is_none())
                    .map(|(i, _)| *i)
                    .collect());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn stop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The demo's node settings: short intervals so that everything happens within seconds.
fn demo_config(seed: u64) -> Result<NodeConfig> {
    let identity = Identity::generate().context("generating a node key")?;
    let mut c = NodeConfig::new(identity, SocketAddr::from(([127, 0, 0, 1], 0)));
    c.overlay.stabilize_interval = Duration::from_millis(300);
    c.overlay.stabilize_timeout = Duration::from_millis(1500);
    c.overlay.finger_refresh_period = Duration::from_secs(5);
    c.overlay.seed = seed;
    c.idle_timeout = Duration::from_secs(2);
    c.keep_alive = Duration::from_millis(500);
    Ok(c)
}

struct Demo {
    p: Progress,
    rng: Rng,
    checks: Vec<Check>,
    nodes: Vec<Node>,
    alive: Vec<bool>,
    events: EventLog,
    list_len: usize,
    summary_formation: Option<f64>,
    summary_hops: Option<(f64, u16, f64)>,
    summary_rtt: Option<f64>,
    leave_times: (Option<f64>, Option<f64>),
    crash_times: (Option<f64>, Option<f64>),
}

/// A node that just left or crashed, as the checks after it name it.
struct Departure<'a> {
    /// `leave` or `crash`, as in the check names.
    event: &'a str,
    /// The node that went.
    gone: NodeId,
    /// How details name it: `the leaver`, `the victim`.
    who: &'a str,
    /// Every node gone so far: no list may mention one.
    departed: &'a [NodeId],
    /// When it went.
    since: Instant,
    /// A repair time as the details say it (e.g. `120 ms after it left`).
    after: fn(Duration) -> String,
}

impl Demo {
    /// The indices of `id`'s true predecessor and successor in `truth`, and the progress text
    /// `its neighbours: … before, … after`.
    fn neighbours_of(&self, truth: &TrueRing<NodeId>, id: &NodeId) -> (Vec<usize>, String) {
        let pred = truth.predecessors(id, 1);
        let succ = truth.successors(id, 1);
        let idxs = pred
            .iter()
            .chain(succ.iter())
            .filter_map(|x| self.idx_of(x))
            .collect();
        let text = format!(
            "its neighbours: {} before, {} after",
            short_opt(pred.first()),
            short_opt(succ.first())
        );
        (idxs, text)
    }

    /// Waits up to `limit` until every node in `idxs` emitted `NeighbourDown(gone)` after
    /// `since`; returns how long after `since` the last did, or the nodes that did not.
    async fn neighbour_down(
        &mut self,
        idxs: &[usize],
        gone: NodeId,
        since: Instant,
        limit: Duration,
    ) -> std::result::Result<Duration, Vec<usize>> {
        self.events
            .wait_all(idxs, since, &NodeEvent::NeighbourDown(gone), limit)
            .await
            .map(|t| t.duration_since(since))
    }

    /// After `dep`, waits (up to 20 s) for the ring of `live` to be repaired and checks it,
    /// then checks `--lookups` lookups of keys tagged `after-{event}-{seed}`, none of which may
    /// name the departed node. Returns the repair time.
    async fn check_repaired(
        &mut self,
        dep: &Departure<'_>,
        live: &[Node],
        args: &DemoArgs,
    ) -> Result<Duration> {
        let truth = true_ring(live.iter().map(Node::id));
        let (ok, _, r) = wait_for_ring(
            live,
            &truth,
            self.list_len,
            dep.departed,
            Duration::from_secs(20),
            RingReport::repaired,
        )
        .await?;
        let repaired = dep.since.elapsed();
        self.check(
            &format!("ring repaired after {}", dep.event),
            ok,
            repaired,
            if ok {
                format!(
                    "successors and predecessors true again and no list names {} {} ({} lists \
                     not yet exact)",
                    dep.who,
                    (dep.after)(repaired),
                    r.wrong_lists
                )
            } else {
                r.describe()
            },
        );

        let t = Instant::now();
        let tag = format!("after-{}-{}", dep.event, args.seed);
        let asks = plan(&mut self.rng, live.len(), args.lookups, Some(&tag));
        let round = lookup_round(live, &truth, &asks, &[dep.gone], ROUND_LIMIT).await;
        let p50 = quantile(&round.micros, 0.5);
        self.check(
            &format!("lookups after {}", dep.event),
            round.ok() && round.named_gone == 0,
            t.elapsed(),
            format!(
                "{}; {} named {}",
                lookup_detail(&round, p50),
                round.named_gone,
                dep.who
            ),
        );
        Ok(repaired)
    }

    fn check(&mut self, name: &str, ok: bool, took: Duration, detail: String) {
        let result = if ok { "pass" } else { "fail" };
        self.p.say(format!(
            "{} {name}: {detail}",
            if ok { "PASS" } else { "FAIL" }
        ));
        self.checks.push(Check {
            name: name.into(),
            result,
            secs: took.as_secs_f64(),
            detail,
        });
    }

    fn skip(&mut self, name: &str, detail: String) {
        self.p.say(format!("SKIP {name}: {detail}"));
        self.checks.push(Check {
            name: name.into(),
            result: "skip",
            secs: 0.0,
            detail,
        });
    }

    fn live(&self) -> Vec<Node> {
        self.nodes
            .iter()
            .zip(&self.alive)
            .filter(|(_, a)| **a)
            .map(|(n, _)| n.clone())
            .collect()
    }

    fn live_idx(&self) -> Vec<usize> {
        (0..self.nodes.len()).filter(|i| self.alive[*i]).collect()
    }

    fn idx_of(&self, id: &NodeId) -> Option<usize> {
        self.nodes.iter().position(|n| n.id() == *id)
    }
}

async fn demo(args: &DemoArgs) -> Result<Summary> {
    let p = Progress::new(args.json);
    p.say(format!(
        "p2ps demo: {} nodes on 127.0.0.1 in this process, seed {} (stabilize every 300 ms, \
         QUIC idle timeout 2 s)",
        args.nodes, args.seed
    ));
    let mut d = Demo {
        p,
        rng: Rng::new(args.seed),
        checks: Vec::new(),
        nodes: Vec::new(),
        alive: Vec::new(),
        events: EventLog::new(),
        list_len: p2ps_overlay::Config::default().list_len,
        summary_formation: None,
        summary_hops: None,
        summary_rtt: None,
        leave_times: (None, None),
        crash_times: (None, None),
    };
    let outcome = steps(&mut d, args).await;
    // Whatever happened, every node still running is shut down.
    let shut = shutdown_all(&mut d).await;
    d.events.stop();
    outcome?;
    shut?;

    let count = |r: &str| d.checks.iter().filter(|c| c.result == r).count();
    Ok(Summary {
        nodes: args.nodes,
        seed: args.seed,
        passed: count("pass"),
        failed: count("fail"),
        skipped: count("skip"),
        total_secs: d.p.elapsed().as_secs_f64(),
        formation_secs: d.summary_formation,
        lookup_hops_mean: d.summary_hops.map(|h| h.0),
        lookup_hops_max: d.summary_hops.map(|h| h.1),
        lookup_p50_us: d.summary_hops.map(|h| h.2),
        median_rtt_ms: d.summary_rtt,
        leave_detect_secs: d.leave_times.0,
        leave_repair_secs: d.leave_times.1,
        crash_detect_secs: d.crash_times.0,
        crash_repair_secs: d.crash_times.1,
        checks: d.checks,
    })
}

async fn steps(d: &mut Demo, args: &DemoArgs) -> Result<()> {
    let n = args.nodes;
    let t_start = Instant::now();

    // --- Start and join -----------------------------------------------------------------
    let mut ports = Vec::new();
    for i in 0..n {
        let cfg = demo_config(args.seed.wrapping_add(i as u64))?;
        let node = Node::start(cfg)
            .await
            .with_context(|| format!("starting node {i}"))?;
        ports.extend(node.addrs().iter().map(|a| a.port()));
        d.events.watch(i, &node);
        d.nodes.push(node);
        d.alive.push(false);
    }
    d.p.say(format!(
        "{n} nodes started, each with its own key, UDP socket and QUIC endpoint (ports {}..{})",
        ports.iter().min().copied().unwrap_or(0),
        ports.iter().max().copied().unwrap_or(0)
    ));
    d.nodes[0]
        .create()
        .await
        .context("node 0 creating the network")?;
    d.alive[0] = true;
    d.p.say(format!(
        "node  0 {} created the network",
        d.nodes[0].id().short()
    ));

    let t_join = Instant::now();
    let mut join_failures = Vec::new();
    for i in 1..n {
        let via = d.rng.below(i);
        let ticket = d.nodes[via].ticket();
        let t = Instant::now();
        let r = timeout(Duration::from_secs(30), d.nodes[i].join(&ticket)).await;
        match r {
            Ok(Ok(())) => {
                d.alive[i] = true;
                if n <= 32 || i % 16 == 0 || i == n - 1 {
                    d.p.say(format!(
                        "node {i:>2} {} joined via node {via} in {:>3} ms, ticket {}",
                        d.nodes[i].id().short(),
                        t.elapsed().as_millis(),
                        short_ticket(&ticket)
                    ));
                }
            }
            Ok(Err(e)) => join_failures.push(format!("node {i}: {e}")),
            Err(_) => join_failures.push(format!("node {i}: no answer in 30 s")),
        }
    }
    let joined = d.alive.iter().filter(|a| **a).count();
    let joiners: Vec<usize> = (1..n).filter(|i| d.alive[*i]).collect();
    let missing_joined_events = d
        .events
        .wait_all(
            &joiners,
            t_start,
            &NodeEvent::Joined,
            Duration::from_secs(2),
        )
        .await
        .err()
        .unwrap_or_default();
    d.p.say(format!("{joined} nodes joined"));
    d.check(
        "join through tickets",
        join_failures.is_empty() && missing_joined_events.is_empty(),
        t_join.elapsed(),
        if join_failures.is_empty() && missing_joined_events.is_empty() {
            format!(
                "{} joins succeeded, each node emitted NodeEvent::Joined",
                n - 1
            )
        } else {
            format!(
                "join failures: {join_failures:?}; joined without a Joined event: \
                 {missing_joined_events:?}"
            )
        },
    );
    if !join_failures.is_empty() {
        bail!("some nodes could not join; stopping here");
    }

    // --- Ring formation -----------------------------------------------------------------
    let live = d.live();
    let truth = true_ring(live.iter().map(Node::id));
    let (ok, _, r) = wait_for_ring(
        &live,
        &truth,
        d.list_len,
        &[],
        Duration::from_secs(30),
        RingReport::neighbours_ok,
    )
    .await?;
    let formed = t_start.elapsed();
    d.summary_formation = Some(formed.as_secs_f64());
    d.check(
        "ring formed",
        ok,
        formed,
        if ok {
            format!(
                "every node's successor and predecessor are the true ones, {:.1} s after the \
                 first start",
                formed.as_secs_f64()
            )
        } else {
            r.describe()
        },
    );
    let t = Instant::now();
    let (ok, _, r) = wait_for_ring(
        &live,
        &truth,
        d.list_len,
        &[],
        Duration::from_secs(10),
        RingReport::all_ok,
    )
    .await?;
    let k = d.list_len.min(n - 1);
    d.check(
        "neighbour lists exact",
        ok,
        t.elapsed(),
        if ok {
            format!("every node holds its {k} true successors and {k} true predecessors")
        } else {
            r.describe()
        },
    );

    // --- Status -------------------------------------------------------------------------
    let t = Instant::now();
    let mut problems = Vec::new();
    let mut rtts = Vec::new();
    let (mut fingers, mut conns) = (0usize, 0usize);
    let mut false_failures = Vec::new();
    for node in &live {
        let s = status_of(node).await?;
        if s.id != node.id() || s.ring_position != ring_id_of(&node.id()) {
            problems.push(format!("{}: wrong id or ring position", node.id().short()));
        }
        if s.addrs != node.addrs() {
            problems.push(format!(
                "{}: addresses differ from the handle's",
                node.id().short()
            ));
        }
        if s.connections.is_empty() {
            problems.push(format!("{}: no connections", node.id().short()));
        }
        fingers += s.fingers.len();
        conns += s.connections.len();
        rtts.extend(s.connections.iter().map(|c| c.rtt_ms));
        let c = s.counters;
        if c.peers_failed + c.peers_timed_out > 0 {
            false_failures.push(format!(
                "{} declared {} peers failed ({} connections timed out, {} sends failed, {} \
                 sends dropped on a full queue)",
                node.id().short(),
                c.peers_failed,
                c.peers_timed_out,
                c.send_failed,
                c.send_queue_full
            ));
        }
    }
    let rtt = quantile(&rtts, 0.5);
    d.summary_rtt = Some(rtt);
    d.check(
        "status",
        problems.is_empty(),
        t.elapsed(),
        if problems.is_empty() {
            format!(
                "ids and positions match; {:.1} fingers, {:.1} connections per node, median \
                 QUIC RTT {:.3} ms",
                fingers as f64 / live.len() as f64,
                conns as f64 / live.len() as f64,
                rtt
            )
        } else {
            problems.join("; ")
        },
    );
    d.check(
        "no false failure detection",
        false_failures.is_empty(),
        Duration::ZERO,
        if false_failures.is_empty() {
            "no node has declared a live peer failed".into()
        } else {
            false_failures.join("; ")
        },
    );

    // --- Lookups ------------------------------------------------------------------------
    let t = Instant::now();
    let asks = plan(
        &mut d.rng,
        live.len(),
        args.lookups,
        Some(&format!("demo-key-{}", args.seed)),
    );
    let round = lookup_round(&live, &truth, &asks, &[], ROUND_LIMIT).await;
    let p50 = quantile(&round.micros, 0.5);
    d.summary_hops = Some((round.hops_mean(), round.hops_max(), p50));
    d.check(
        "lookups",
        round.ok(),
        t.elapsed(),
        lookup_detail(&round, p50),
    );

    // --- send and route -----------------------------------------------------------------
    let t = Instant::now();
    let mut problems = Vec::new();
    let mut hops = Vec::new();
    for j in 0..10 {
        let a = d.rng.below(live.len());
        let mut b = d.rng.below(live.len() - 1);
        if b >= a {
            b += 1;
        }
        let (from, to) = (&live[a], &live[b]);
        let payload = format!(
            "hello #{j} from {} to {}",
            from.id().short(),
            to.id().short()
        );
        if let Err(e) = from.send(to.id(), payload.clone().into_bytes()).await {
            problems.push(format!("send #{j}: {e}"));
            continue;
        }
        match expect_message(to, payload.as_bytes()).await {
            Some(m)
                if m.from == from.id() && m.via == Via::Node && m.key == ring_id_of(&to.id()) =>
            {
                hops.push(f64::from(m.hops));
            }
            Some(m) => problems.push(format!("send #{j}: delivered with wrong fields {m:?}")),
            None => problems.push(format!(
                "send #{j}: {} never received it (5 s)",
                to.id().short()
            )),
        }
    }
    d.check(
        "send to a node id",
        problems.is_empty(),
        t.elapsed(),
        if problems.is_empty() {
            format!(
                "10 of 10 messages arrived at the named node with the right sender and payload \
                 ({:.1} hops mean)",
                mean(hops.iter().copied())
            )
        } else {
            problems.join("; ")
        },
    );

    let t = Instant::now();
    let mut problems = Vec::new();
    let mut hops = Vec::new();
    for j in 0..10 {
        let from = &live[d.rng.below(live.len())];
        let key = key_of(format!("routed-{}-{j}", args.seed));
        let Some(holder_id) = truth.responsible(key) else {
            bail!("empty ring")
        };
        let Some(holder) = live.iter().find(|x| x.id() == holder_id) else {
            bail!("responsible node not found")
        };
        let payload = format!("routed #{j} to key {key}");
        if let Err(e) = from.route(key, payload.clone().into_bytes()).await {
            problems.push(format!("route #{j}: {e}"));
            continue;
        }
        match expect_message(holder, payload.as_bytes()).await {
            Some(m) if m.from == from.id() && m.via == Via::Key && m.key == key => {
                hops.push(f64::from(m.hops));
            }
            Some(m) => problems.push(format!("route #{j}: delivered with wrong fields {m:?}")),
            None => problems.push(format!(
                "route #{j}: the responsible node {} never received it (5 s)",
                holder_id.short()
            )),
        }
    }
    d.check(
        "route to a key",
        problems.is_empty(),
        t.elapsed(),
        if problems.is_empty() {
            format!(
                "10 of 10 messages arrived at the node responsible for their key ({:.1} hops \
                 mean)",
                mean(hops.iter().copied())
            )
        } else {
            problems.join("; ")
        },
    );

    let t = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut strays = Vec::new();
    for node in &live {
        if let Ok(Some(m)) = timeout(Duration::from_millis(10), node.recv()).await {
            strays.push(format!(
                "{} got {:?}",
                node.id().short(),
                String::from_utf8_lossy(&m.payload)
            ));
        }
    }
    d.check(
        "no stray deliveries",
        strays.is_empty(),
        t.elapsed(),
        if strays.is_empty() {
            "no node received a message meant for another, nor a duplicate".into()
        } else {
            strays.join("; ")
        },
    );

    // --- Broadcast and groups -----------------------------------------------------------
    d.cast_checks(&live).await;

    // --- Graceful leave -----------------------------------------------------------------
    let candidates: Vec<usize> = d.live_idx().into_iter().filter(|i| *i != 0).collect();
    let Some(&li) = candidates.get(d.rng.below(candidates.len())) else {
        bail!("no node left to leave")
    };
    let leaver = d.nodes[li].clone();
    let lid = leaver.id();
    let (neighbours, around) = d.neighbours_of(&truth, &lid);
    d.p.say(format!(
        "node {li} {} leaves gracefully ({around})",
        lid.short()
    ));
    let t_leave = Instant::now();
    timeout(Duration::from_secs(10), leaver.leave())
        .await
        .context("leave did not return in 10 s")?
        .context("leave")?;
    // Close its endpoint in the background while the others repair.
    let closing = {
        let leaver = leaver.clone();
        tokio::spawn(async move { timeout(Duration::from_secs(15), leaver.shutdown()).await })
    };
    d.alive[li] = false;
    let left = d
        .events
        .wait_all(&[li], t_leave, &NodeEvent::Left, Duration::from_secs(5))
        .await;
    let seen = d
        .neighbour_down(&neighbours, lid, t_leave, Duration::from_secs(10))
        .await;
    d.leave_times.0 = seen.as_ref().ok().map(Duration::as_secs_f64);
    d.check(
        "graceful leave seen",
        left.is_ok() && seen.is_ok(),
        t_leave.elapsed(),
        match (&left, &seen) {
            (Ok(_), Ok(detect)) => format!(
                "the leaver emitted Left; its predecessor and successor emitted \
                 NeighbourDown({}) within {:.0} ms",
                lid.short(),
                detect.as_secs_f64() * 1e3
            ),
            _ => format!(
                "Left event: {}; neighbours without NeighbourDown: {:?}",
                if left.is_ok() { "yes" } else { "missing" },
                seen.as_ref().err().cloned().unwrap_or_default()
            ),
        },
    );
    let departure = Departure {
        event: "leave",
        gone: lid,
        who: "the leaver",
        departed: &[lid],
        since: t_leave,
        after: |t| format!("{:.0} ms after it left", t.as_secs_f64() * 1e3),
    };
    let live = d.live();
    let repaired = d.check_repaired(&departure, &live, args).await?;
    d.leave_times.1 = Some(repaired.as_secs_f64());
    let closed = closing.await.is_ok_and(|r| r.is_ok());
    d.check(
        "leaver shut down",
        closed,
        t_leave.elapsed(),
        if closed {
            format!(
                "its endpoint closed, {:.1} s after it left",
                t_leave.elapsed().as_secs_f64()
            )
        } else {
            "its shutdown did not finish within 15 s".into()
        },
    );

    // --- Crash --------------------------------------------------------------------------
    if args.no_crash {
        d.skip("crash detected and repaired", "--no-crash given".into());
    } else {
        crash_step(d, args, lid).await?;
    }
    Ok(())
}

fn lookup_detail(r: &LookupRound, p50_us: f64) -> String {
    let mut s = format!(
        "{} of {} lookups named the true responsible node; hops mean {:.2}, max {}; latency p50 \
         {:.0} µs, max {:.0} µs",
        r.correct,
        r.asked,
        r.hops_mean(),
        r.hops_max(),
        p50_us,
        quantile(&r.micros, 1.0)
    );
    if r.wrong + r.failed + r.not_asked > 0 {
        s.push_str(&format!(
            "; {} wrong, {} failed, {} not asked in time (first problem: {})",
            r.wrong,
            r.failed,
            r.not_asked,
            r.first_problem.as_deref().unwrap_or("none")
        ));
    }
    s
}

/// Waits up to 5 s for a message with `payload` on `node`; other messages are skipped (and
/// would be reported as a mismatch by the caller through the missing payload).
async fn expect_message(node: &Node, payload: &[u8]) -> Option<p2ps::Message> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, node.recv()).await {
            Ok(Some(m)) if m.payload.as_ref() == payload => return Some(m),
            Ok(Some(_)) => continue,
            Ok(None) | Err(_) => return None,
        }
    }
}

/// Kills its child process (SIGKILL on Unix) when dropped, so no child outlives the demo.
struct ChildGuard(Option<Child>);

impl ChildGuard {
    fn kill(&mut self) -> Result<()> {
        if let Some(mut c) = self.0.take() {
            c.kill().context("killing the child node")?;
            c.wait().context("reaping the child node")?;
        }
        Ok(())
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.0.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs `exe node --help` (bounded to 10 s) and returns its text if `p2ps node` takes the
/// options the crash step needs, or why not.
fn probe_node_command(exe: &Path) -> std::result::Result<String, String> {
    let mut child = Command::new(exe)
        .args(["node", "--help"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
    let t = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if t.elapsed() < Duration::from_secs(10) => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("`p2ps node --help` did not finish in 10 s".into());
            }
            Err(e) => return Err(format!("waiting for `p2ps node --help`: {e}")),
        }
    };
    let mut text = String::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = std::io::Read::read_to_string(&mut out, &mut text);
    }
    if !status.success() {
        return Err(format!("`p2ps node --help` exited with {status}"));
    }
    let missing: Vec<&str> = ["--join", "--listen", "--ticket-file"]
        .into_iter()
        .filter(|o| !text.contains(o))
        .collect();
    if !missing.is_empty() {
        return Err(format!("`p2ps node` has no {}", missing.join(", ")));
    }
    Ok(text)
}

/// A scratch directory for the child's ticket and log files, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let p = std::env::temp_dir().join(format!("p2ps-demo-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
        Ok(TempDir(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tail(path: &Path) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

async fn crash_step(d: &mut Demo, args: &DemoArgs, leaver: NodeId) -> Result<()> {
    const NAME: &str = "crash detected and repaired";
    let exe = std::env::current_exe().context("finding this program's path")?;
    let probe = {
        let exe = exe.clone();
        tokio::task::spawn_blocking(move || probe_node_command(&exe))
            .await
            .context("probing `p2ps node`")?
    };
    let help = match probe {
        Ok(h) => h,
        Err(why) => {
            d.skip(NAME, format!("crash step needs `p2ps node` ({why})"));
            return Ok(());
        }
    };

    // Start the victim as a child process joining through a random live node.
    let live_idx = d.live_idx();
    let via = live_idx[d.rng.below(live_idx.len())];
    let ticket = d.nodes[via].ticket();
    let dir = TempDir::new()?;
    let ticket_file = dir.0.join("child.ticket");
    let log_file = dir.0.join("child.log");
    let log = std::fs::File::create(&log_file).context("creating the child's log file")?;
    let log2 = log
        .try_clone()
        .context("cloning the child's log file handle")?;
    let mut cmd = Command::new(&exe);
    cmd.arg("node")
        .args(["--join", &ticket.to_string()])
        .args(["--listen", "127.0.0.1:0"])
        .arg("--ticket-file")
        .arg(&ticket_file);
    // Options `p2ps node` takes are passed when its help lists them: its own key file and
    // control socket (never a user's default ones), a name, and the demo's short intervals.
    let key_file = dir.0.join("child.key");
    let control = dir.0.join("child.sock");
    let optional: [(&str, &std::ffi::OsStr); 7] = [
        ("--key", key_file.as_os_str()),
        ("--control", control.as_os_str()),
        ("--name", "demo-crash-victim".as_ref()),
        ("--stabilize-interval-ms", "300".as_ref()),
        ("--stabilize-timeout-ms", "1500".as_ref()),
        ("--finger-refresh-ms", "5000".as_ref()),
        ("--idle-timeout-ms", "2000".as_ref()),
    ];
    for (opt, value) in optional {
        if help.contains(&format!("{opt} ")) || help.contains(&format!("{opt}=")) {
            cmd.arg(opt).arg(value);
        }
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log2));
    let t_spawn = Instant::now();
    let mut child = ChildGuard(Some(cmd.spawn().context("starting the child node")?));
    d.p.say(format!(
        "started a child process `p2ps node --join {} --listen 127.0.0.1:0 --ticket-file …` (pid \
         {})",
        short_ticket(&ticket),
        child.0.as_ref().map(Child::id).unwrap_or(0)
    ));

    // Its ticket names it.
    let victim = loop {
        if let Ok(s) = std::fs::read_to_string(&ticket_file) {
            if let Ok(t) = s.trim().parse::<Ticket>() {
                break Some(t);
            }
        }
        if let Some(st) = child.exited() {
            d.check(
                NAME,
                false,
                t_spawn.elapsed(),
                format!(
                    "the child node exited ({st}) before writing its ticket: {}",
                    tail(&log_file)
                ),
            );
            return Ok(());
        }
        if t_spawn.elapsed() > Duration::from_secs(20) {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let Some(victim) = victim else {
        d.check(
            NAME,
            false,
            t_spawn.elapsed(),
            format!("the child wrote no ticket within 20 s: {}", tail(&log_file)),
        );
        return Ok(());
    };
    let vid = victim.id;

    // Wait until the ring includes it (ground truth with the child).
    let live = d.live();
    let with_child = true_ring(live.iter().map(Node::id).chain([vid]));
    let (ok, _, r) = wait_for_ring(
        &live,
        &with_child,
        d.list_len,
        &[leaver],
        Duration::from_secs(20),
        RingReport::neighbours_ok,
    )
    .await?;
    let member = if ok {
        match timeout(Duration::from_secs(10), live[0].lookup(ring_id_of(&vid))).await {
            Ok(Ok(a)) => a.node == vid,
            _ => false,
        }
    } else {
        false
    };
    d.check(
        "child node joined",
        ok && member,
        t_spawn.elapsed(),
        if ok && member {
            format!(
                "child {} is in the ring: its neighbours point at it and a lookup of its \
                 position names it",
                vid.short()
            )
        } else {
            format!(
                "{} (lookup of its position named it: {member})",
                r.describe()
            )
        },
    );
    if !(ok && member) {
        return Ok(());
    }

    // SIGKILL: no goodbye, no QUIC close. Detection is by silence.
    let (neighbours, around) = d.neighbours_of(&with_child, &vid);
    let before = sum_counters(&live).await?;
    let t_kill = Instant::now();
    child.kill()?;
    d.p.say(format!("SIGKILLed the child {} ({around})", vid.short()));
    let seen = d
        .neighbour_down(&neighbours, vid, t_kill, Duration::from_secs(20))
        .await;
    d.crash_times.0 = seen.as_ref().ok().map(Duration::as_secs_f64);
    let after = sum_counters(&live).await?;
    d.check(
        "crash detected",
        seen.is_ok(),
        t_kill.elapsed(),
        match &seen {
            Ok(detect) => format!(
                "the victim's predecessor and successor emitted NeighbourDown({}) {:.2} s after \
                 the kill (across nodes: {} QUIC idle timeouts, {} peers declared failed by the \
                 overlay)",
                vid.short(),
                detect.as_secs_f64(),
                after.0.saturating_sub(before.0),
                after.1.saturating_sub(before.1)
            ),
            Err(missing) => format!("neighbours without NeighbourDown after 20 s: {missing:?}"),
        },
    );
    let departure = Departure {
        event: "crash",
        gone: vid,
        who: "the victim",
        departed: &[leaver, vid],
        since: t_kill,
        after: |t| format!("{:.2} s after the kill", t.as_secs_f64()),
    };
    let repaired = d.check_repaired(&departure, &live, args).await?;
    d.crash_times.1 = Some(repaired.as_secs_f64());
    Ok(())
}

/// (connections timed out, peers declared failed) summed over `nodes`.
async fn sum_counters(nodes: &[Node]) -> Result<(u64, u64)> {
    let mut sum = (0, 0);
    for n in nodes {
        let c = status_of(n).await?.counters;
        sum.0 += c.peers_timed_out;
        sum.1 += c.peers_failed;
    }
    Ok(sum)
}

/// Shuts every still-running node down at once (graceful leave and close), bounded.
async fn shutdown_all(d: &mut Demo) -> Result<()> {
    let live = d.live();
    if live.is_empty() {
        return Ok(());
    }
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for n in &live {
        let n = n.clone();
        set.spawn(async move { timeout(Duration::from_secs(15), n.shutdown()).await.is_ok() });
    }
    let mut clean = 0;
    while let Some(r) = set.join_next().await {
        if matches!(r, Ok(true)) {
            clean += 1;
        }
    }
    for a in d.alive.iter_mut() {
        *a = false;
    }
    // A stopped node answers no more commands.
    let mut stopped = 0;
    for n in &live {
        if timeout(Duration::from_secs(2), n.status())
            .await
            .is_ok_and(|r| r.is_err())
        {
            stopped += 1;
        }
    }
    let ok = clean == live.len() && stopped == live.len();
    d.check(
        "clean shutdown",
        ok,
        t.elapsed(),
        format!(
            "{clean} of {} nodes left and closed within 15 s; {stopped} report stopped",
            live.len()
        ),
    );
    Ok(())
}

fn print_summary(s: &Summary) {
    println!();
    println!("{:<32} {:<6} {:>8}  detail", "check", "result", "time");
    println!("{}", "-".repeat(100));
    for c in &s.checks {
        println!(
            "{:<32} {:<6} {:>7.2}s  {}",
            c.name,
            c.result.to_uppercase(),
            c.secs,
            c.detail
        );
    }
    println!("{}", "-".repeat(100));
    let opt = |x: Option<f64>, unit: &str| {
        x.map(|v| format!("{v:.2} {unit}"))
            .unwrap_or_else(|| "n/a".into())
    };
    println!(
        "{} passed, {} failed, {} skipped; {} nodes, total {:.1} s",
        s.passed, s.failed, s.skipped, s.nodes, s.total_secs
    );
    println!(
        "ring formed after {}; lookup hops mean {} max {}; lookup p50 {}; median QUIC RTT {}",
        opt(s.formation_secs, "s"),
        s.lookup_hops_mean
            .map(|h| format!("{h:.2}"))
            .unwrap_or_else(|| "n/a".into()),
        s.lookup_hops_max
            .map(|h| h.to_string())
            .unwrap_or_else(|| "n/a".into()),
        opt(s.lookup_p50_us, "µs"),
        opt(s.median_rtt_ms, "ms")
    );
    println!(
        "leave: seen after {}, repaired after {}; crash: detected after {}, repaired after {}",
        opt(s.leave_detect_secs, "s"),
        opt(s.leave_repair_secs, "s"),
        opt(s.crash_detect_secs, "s"),
        opt(s.crash_repair_secs, "s")
    );
}
